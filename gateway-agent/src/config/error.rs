//! Config errors: one per offending key, gathered rather than stopping at the first.

use std::fmt;

/// One problem with the config: the dotted key it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path like `dataplane.allow[1]`; empty for file-level problems (unreadable file,
    /// TOML syntax error).
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    /// `{key}: {problem}`, or just the problem when there is no key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.problem)
        } else {
            write!(f, "{}: {}", self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one config, in the order found. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors, in the order found.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The sink every reader and rule pushes into during one pass.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    errors: Vec<ConfigError>,
    /// Under test, every dotted key a reader asked for: what the example config must list.
    #[cfg(test)]
    known: Vec<String>,
}

impl Errors {
    pub(crate) fn push(&mut self, key: &str, problem: impl Into<String>) {
        self.errors.push(ConfigError::new(key, problem));
    }

    /// The value of `result`, or `None` after recording its problem under `key`.
    pub(crate) fn check<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|problem| self.push(key, problem)).ok()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn into_errors(self) -> ConfigErrors {
        ConfigErrors(self.errors)
    }

    /// Records keys a table's reader asked for, whether or not they were set.
    #[cfg(test)]
    pub(crate) fn note_known(&mut self, keys: impl Iterator<Item = String>) {
        self.known.extend(keys);
    }

    /// Every key asked for so far, as dotted paths (`dhcp.reservations[0].mac`).
    #[cfg(test)]
    pub(crate) fn known(&self) -> &[String] {
        &self.known
    }

    /// The errors so far.
    #[cfg(test)]
    pub(crate) fn errors(&self) -> &[ConfigError] {
        &self.errors
    }
}
