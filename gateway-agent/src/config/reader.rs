//! A small reader over a parsed TOML table: it takes keys out one by one (recording type errors
//! under their dotted path), and whatever is left at the end is an unknown key. This is what lets
//! one pass gather every error instead of stopping at the first, as serde would.

use toml::{Table, Value};

use super::error::Errors;

/// One TOML table being read, with its dotted path.
pub(crate) struct Section {
    /// Dotted path of this table; empty for the document root.
    path: String,
    table: Table,
    /// Keys asked for so far, to list them when reporting an unknown key.
    known: Vec<&'static str>,
    /// The table itself had the wrong type, so its missing keys were already reported.
    broken: bool,
}

/// What reading one key found.
pub(crate) enum Field<T> {
    Absent,
    /// Present but wrong; already recorded.
    Invalid,
    Valid(T),
}

impl<T> Field<T> {
    /// The value, the default when absent, or `None` when invalid.
    pub(crate) fn or(self, default: T) -> Option<T> {
        match self {
            Field::Absent => Some(default),
            Field::Invalid => None,
            Field::Valid(value) => Some(value),
        }
    }
}

impl Section {
    /// The document root.
    pub(crate) fn root(table: Table) -> Self {
        Section {
            path: String::new(),
            table,
            known: Vec::new(),
            broken: false,
        }
    }

    /// A table found at `path` some other way than by name (an element of an array of tables).
    pub(crate) fn nested(path: String, table: Table) -> Self {
        Section {
            path,
            table,
            known: Vec::new(),
            broken: false,
        }
    }

    /// The dotted path of `name` in this table.
    pub(crate) fn key(&self, name: &str) -> String {
        let name = quote_key(name);
        if self.path.is_empty() {
            name
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// The sub-table `name`. An absent table reads as empty, so its keys take their defaults.
    pub(crate) fn table(&mut self, name: &'static str, errors: &mut Errors) -> Section {
        let path = self.key(name);
        let (table, broken) = match self.take(name) {
            None => (Table::new(), false),
            Some(Value::Table(table)) => (table, false),
            Some(other) => {
                errors.push(&path, expected("a table", &other));
                (Table::new(), true)
            }
        };
        Section {
            path,
            table,
            known: Vec::new(),
            broken,
        }
    }

    /// Reads `name` with `read`, recording its problem if it has one.
    pub(crate) fn field<T>(
        &mut self,
        name: &'static str,
        errors: &mut Errors,
        read: impl FnOnce(Value) -> Result<T, String>,
    ) -> Field<T> {
        let key = self.key(name);
        match self.take(name) {
            None => Field::Absent,
            Some(value) => match errors.check(&key, read(value)) {
                Some(value) => Field::Valid(value),
                None => Field::Invalid,
            },
        }
    }

    /// Reads `name`, taking `default` when it is absent.
    pub(crate) fn optional<T>(
        &mut self,
        name: &'static str,
        default: T,
        errors: &mut Errors,
        read: impl FnOnce(Value) -> Result<T, String>,
    ) -> Option<T> {
        self.field(name, errors, read).or(default)
    }

    /// Reads `name`, which must be set; `hint` tells the administrator what to set it to.
    pub(crate) fn required<T>(
        &mut self,
        name: &'static str,
        hint: &str,
        errors: &mut Errors,
        read: impl FnOnce(Value) -> Result<T, String>,
    ) -> Option<T> {
        match self.field(name, errors, read) {
            Field::Valid(value) => Some(value),
            Field::Invalid => None,
            Field::Absent => {
                if !self.broken {
                    errors.push(
                        &self.key(name),
                        format!("missing; this key is required: {hint}"),
                    );
                }
                None
            }
        }
    }

    /// Whether this table had the wrong type (already recorded), so its keys read as defaults.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Reports every key nobody asked for as unknown.
    pub(crate) fn finish(self, errors: &mut Errors) {
        #[cfg(test)]
        errors.note_known(self.known.iter().map(|name| self.key(name)));
        for name in self.table.keys() {
            errors.push(
                &self.key(name),
                format!("unknown key (known here: {})", self.known.join(", ")),
            );
        }
    }

    fn take(&mut self, name: &'static str) -> Option<Value> {
        self.known.push(name);
        self.table.remove(name)
    }
}

/// Reads a string.
pub(crate) fn string(value: Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(expected("a string", &other)),
    }
}

/// Reads a boolean.
pub(crate) fn boolean(value: Value) -> Result<bool, String> {
    match value {
        Value::Boolean(flag) => Ok(flag),
        other => Err(expected("a boolean (true or false)", &other)),
    }
}

/// Reads an integer.
pub(crate) fn integer(value: Value) -> Result<i64, String> {
    match value {
        Value::Integer(number) => Ok(number),
        other => Err(expected("an integer", &other)),
    }
}

/// Reads an array.
pub(crate) fn array(value: Value) -> Result<Vec<Value>, String> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(expected("an array", &other)),
    }
}

/// `expected {what}, found {what the value is}`.
pub(crate) fn expected(what: &str, found: &Value) -> String {
    let article = match found {
        Value::Integer(_) | Value::Array(_) => "an",
        _ => "a",
    };
    let kind = found.type_str();
    match found {
        // Quoting a whole table or array would swamp the message.
        Value::Table(_) | Value::Array(_) => format!("expected {what}, found {article} {kind}"),
        scalar => format!("expected {what}, found {article} {kind} ({scalar})"),
    }
}

/// A key as it would be written in TOML: bare if it can be, quoted otherwise.
fn quote_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}
