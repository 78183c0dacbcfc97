//! A strict reader of the text exposition format 0.0.4, for the tests: what Prometheus would
//! reject is an error here, and so is what this agent promises not to do (a family without
//! HELP and TYPE, a counter not ending in `_total`).

use std::collections::{HashMap, HashSet};

use super::exposition::{valid_label_name, valid_name};

/// One sample line, unescaped.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(label, _)| label == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Every sample of `text`, or the first problem, with its line number.
pub(super) fn parse(text: &str) -> Result<Vec<Sample>, String> {
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut reader = Reader::default();
    for (n, line) in text.lines().enumerate() {
        reader
            .line(line)
            .map_err(|problem| format!("line {}: {problem}: {line:?}", n + 1))?;
    }
    for name in reader.types.keys() {
        if !reader.helps.contains(name) {
            return Err(format!("family {name} has no HELP"));
        }
    }
    Ok(reader.samples)
}

#[derive(Default)]
struct Reader {
    types: HashMap<String, String>,
    helps: HashSet<String>,
    /// The family of the previous line.
    current: Option<String>,
    /// Families whose group of lines has ended: they may not appear again.
    finished: HashSet<String>,
    series: HashSet<String>,
    samples: Vec<Sample>,
}

impl Reader {
    fn line(&mut self, line: &str) -> Result<(), String> {
        if line.is_empty() {
            return Err("empty line".into());
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            return match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), help) => {
                    self.enter(name)?;
                    unescape(help.unwrap_or(""), false)?;
                    if !self.helps.insert(name.to_owned()) {
                        return Err("a second HELP".into());
                    }
                    Ok(())
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    self.enter(name)?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(format!("unknown type {kind:?}"));
                    }
                    if self.samples.iter().any(|s| s.name == name) {
                        return Err("TYPE after the family's samples".into());
                    }
                    if (kind == "counter") != name.ends_with("_total") {
                        return Err("counters, and only counters, end in _total".into());
                    }
                    match self.types.insert(name.to_owned(), kind.to_owned()) {
                        Some(_) => Err("a second TYPE".into()),
                        None => Ok(()),
                    }
                }
                (Some("TYPE"), _, _) => Err("TYPE without a name and a type".into()),
                // Any other comment is allowed.
                _ => Ok(()),
            };
        }
        if line.starts_with('#') {
            return Ok(());
        }
        let sample = sample(line)?;
        self.enter(&sample.name)?;
        match self.types.get(&sample.name).map(String::as_str) {
            None => return Err("a sample before its family's TYPE".into()),
            Some("counter") if sample.value < 0.0 || sample.value.is_nan() => {
                return Err("a counter below zero".into())
            }
            Some(_) => {}
        }
        let mut labels = sample.labels.clone();
        labels.sort();
        if !self.series.insert(format!("{}{labels:?}", sample.name)) {
            return Err("the same series twice".into());
        }
        self.samples.push(sample);
        Ok(())
    }

    /// The line belongs to family `name`: each family is one group of lines.
    fn enter(&mut self, name: &str) -> Result<(), String> {
        if !valid_name(name) {
            return Err(format!("invalid metric name {name:?}"));
        }
        if self.current.as_deref() == Some(name) {
            return Ok(());
        }
        if self.finished.contains(name) {
            return Err(format!(
                "family {name} is split; its lines must be one group"
            ));
        }
        if let Some(previous) = self.current.replace(name.to_owned()) {
            self.finished.insert(previous);
        }
        Ok(())
    }
}

/// `name{label="value",…} value [timestamp]`.
fn sample(line: &str) -> Result<Sample, String> {
    let end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let (name, mut rest) = line.split_at(end);
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
            if !valid_label_name(label) {
                return Err(format!("invalid label name {label:?}"));
            }
            if labels.iter().any(|(l, _)| l == label) {
                return Err(format!("label {label} twice"));
            }
            let (value, after) = quoted(after)?;
            labels.push((label.to_owned(), value));
            rest = match after.strip_prefix(',') {
                Some(after) => after,
                None if after.starts_with('}') => after,
                None => return Err("labels not separated by ','".into()),
            };
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split(' ');
    let value = fields.next().unwrap_or("");
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        // Rust would also take "inf" and "infinity"; Prometheus does not.
        text if text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            text.parse::<f64>()
                .map_err(|_| format!("value {text:?} is not a number"))?
        }
        text => return Err(format!("value {text:?} is not a number")),
    };
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("timestamp {timestamp:?} is not an integer"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A label value up to its closing quote, unescaped, and the text after the quote.
fn quoted(text: &str) -> Result<(String, &str), String> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, '"') => return Ok((unescape(&text[..i], true)?, &text[i + 1..])),
            _ => escaped = false,
        }
    }
    Err("a label value without its closing quote".into())
}

/// Undoes `\\`, `\n` and, in label values, `\"`; any other escape is an error.
fn unescape(text: &str, label_value: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '"' && label_value {
            return Err("an unescaped '\"' in a label value".into());
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if label_value => out.push('"'),
            other => return Err(format!("bad escape \\{}", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}
