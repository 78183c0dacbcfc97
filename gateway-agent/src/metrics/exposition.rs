//! A writer for the Prometheus text exposition format 0.0.4: each family's `# HELP` and
//! `# TYPE` lines followed by its samples, label values escaped.

/// The `Content-Type` of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's type. Only what the agent exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets with the agent); its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// The text being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts family `name`: writes its HELP and TYPE lines; its samples follow.
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        // Names are literals in the renderer: a wrong one is a bug, caught by its tests.
        debug_assert!(valid_name(name), "metric name {name:?}");
        debug_assert_eq!(
            kind == Kind::Counter,
            name.ends_with("_total"),
            "{name}: counters, and only counters, end in _total"
        );
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_into(&mut self.out, help, false);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
        Family {
            out: &mut self.out,
            name,
        }
    }

    /// A family with one unlabelled counter sample.
    pub fn counter(&mut self, name: &'static str, help: &str, value: u64) {
        self.family(name, Kind::Counter, help).sample(&[], value);
    }

    /// A family with one unlabelled gauge sample.
    pub fn gauge(&mut self, name: &'static str, help: &str, value: u64) {
        self.family(name, Kind::Gauge, help).sample(&[], value);
    }

    /// The text, ending in a newline.
    pub fn finish(self) -> String {
        self.out
    }
}

/// One family being written.
pub struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    /// One sample: `name{label="value",…} value`. Label names are literals in the renderer;
    /// values are escaped.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: u64) -> &mut Self {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                debug_assert!(valid_label_name(label), "label name {label:?}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_into(self.out, text, true);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&value.to_string());
        self.out.push('\n');
        self
    }
}

/// Appends `text` escaped: `\` and line feeds always, `"` in label values.
fn escape_into(out: &mut String, text: &str, label_value: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label_value => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved for Prometheus).
pub(crate) fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples() {
        let mut out = Exposition::default();
        out.counter("gateway_things_total", "Things seen.", 3);
        out.family("gateway_parts", Kind::Gauge, "Parts now, by colour.")
            .sample(&[("colour", "red")], 1)
            .sample(&[("colour", "blue"), ("size", "big")], 0);
        assert_eq!(
            out.finish(),
            "# HELP gateway_things_total Things seen.\n\
             # TYPE gateway_things_total counter\n\
             gateway_things_total 3\n\
             # HELP gateway_parts Parts now, by colour.\n\
             # TYPE gateway_parts gauge\n\
             gateway_parts{colour=\"red\"} 1\n\
             gateway_parts{colour=\"blue\",size=\"big\"} 0\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = Exposition::default();
        out.family(
            "gateway_info",
            Kind::Gauge,
            "Back\\slash and\nnewline, \"quoted\".",
        )
        .sample(&[("v", "a\"b\\c\nd")], 1);
        assert_eq!(
            out.finish(),
            "# HELP gateway_info Back\\\\slash and\\nnewline, \"quoted\".\n\
             # TYPE gateway_info gauge\n\
             gateway_info{v=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn name_rules() {
        assert!(valid_name("gateway_dns_queries_total"));
        assert!(valid_name("a:b_c"));
        assert!(!valid_name(""));
        assert!(!valid_name("1gateway"));
        assert!(!valid_name("gateway-dns"));
        assert!(valid_label_name("reason"));
        assert!(!valid_label_name("__name__"));
        assert!(!valid_label_name("a:b"));
        assert!(!valid_label_name("9"));
    }
}
