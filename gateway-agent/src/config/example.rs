//! `config/gateway.example.toml` is the reference: it must name every key the reader accepts
//! (keys without a default commented out, as an administrator would find them), and the README's
//! reference table must too. A reader that asks for a key neither names fails here.

use std::collections::BTreeSet;

use toml::{Table, Value};

use super::error::Errors;
use super::parse;

const EXAMPLE: &str = include_str!("../../../config/gateway.example.toml");
const README: &str = include_str!("../../../README.md");

/// `text` with its commented-out keys and tables put back: a comment line `# key = value`,
/// `# [table]` or `# [[table]]` whose rest is TOML by itself. Prose comments never parse.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[')
                    && rest.parse::<Table>().is_ok() =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every dotted key in `table` (tables and arrays of tables too, indices dropped), with whether
/// it is a leaf.
fn keys_in(table: &Table, prefix: &str, out: &mut Vec<(String, bool)>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Table(inner) => {
                out.push((key.clone(), false));
                keys_in(inner, &key, out);
            }
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_table) => {
                out.push((key.clone(), false));
                for item in items.iter().filter_map(Value::as_table) {
                    keys_in(item, &key, out);
                }
            }
            _ => out.push((key, true)),
        }
    }
}

/// `dhcp.reservations[0].mac` → `dhcp.reservations.mac`.
fn without_indices(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut depth = 0;
    for c in key.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The keys `text` names, and the keys the reader asked for while reading it.
fn named_and_read(text: &str) -> (BTreeSet<String>, BTreeSet<String>, Errors) {
    let document: Table = match uncommented(text).parse() {
        Ok(document) => document,
        Err(error) => panic!("the example, uncommented, is not TOML: {error}"),
    };
    let mut named = Vec::new();
    keys_in(&document, "", &mut named);
    let mut errors = Errors::default();
    // Some uncommented keys contradict others (outside.gateway with "dhcp"): only which keys
    // were asked for matters here, not whether the values pass.
    let _ = parse::read(document, &mut errors);
    let read = errors
        .known()
        .iter()
        .map(|key| without_indices(key))
        .collect();
    let named = named.into_iter().map(|(key, _)| key).collect();
    (named, read, errors)
}

#[test]
fn example_config_names_every_key_the_reader_accepts() {
    let (named, read, errors) = named_and_read(EXAMPLE);
    let unknown: Vec<String> = errors
        .errors()
        .iter()
        .filter(|error| error.problem.starts_with("unknown key"))
        .map(ToString::to_string)
        .collect();
    assert!(
        unknown.is_empty(),
        "the example names keys no reader accepts: {unknown:#?}"
    );
    let missing: Vec<&String> = read.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "config/gateway.example.toml does not name these keys the reader accepts; add each \
         with its default (commented out if it has none): {missing:#?}"
    );
    assert_eq!(read, named);
}

#[test]
fn a_key_left_out_of_the_example_is_caught() {
    let without: String = EXAMPLE
        .lines()
        .filter(|line| !line.starts_with("local_ttl") && !line.starts_with("# client_id"))
        .collect::<Vec<_>>()
        .join("\n");
    let (named, read, _) = named_and_read(&without);
    let missing: Vec<&String> = read.difference(&named).collect();
    assert_eq!(
        missing,
        ["dhcp.reservations.client_id", "dns.local_ttl"],
        "a reservation key and a plain key"
    );
}

#[test]
fn readme_reference_names_every_key() {
    let reference = README
        .split("## Configuration reference")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_else(|| panic!("README.md has no \"## Configuration reference\" section"));
    let document: Table = match uncommented(EXAMPLE).parse() {
        Ok(document) => document,
        Err(error) => panic!("the example, uncommented, is not TOML: {error}"),
    };
    let mut keys = Vec::new();
    keys_in(&document, "", &mut keys);
    let arrays_of_tables: Vec<&String> = keys
        .iter()
        .filter(|(key, leaf)| !leaf && reference.contains(&format!("`[[{key}]]`")))
        .map(|(key, _)| key)
        .collect();
    let mut missing = Vec::new();
    for (key, _) in keys.iter().filter(|(_, leaf)| *leaf) {
        // A key of an array of tables is described in that array's row, by its own name.
        let in_array = arrays_of_tables.iter().find_map(|array| {
            let leaf = key.strip_prefix(&format!("{array}."))?;
            let row = reference
                .lines()
                .find(|line| line.contains(&format!("`[[{array}]]`")))?;
            Some(row.contains(&format!("`{leaf}`")))
        });
        if !in_array.unwrap_or_else(|| reference.contains(&format!("`{key}`"))) {
            missing.push(key);
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's configuration reference does not name: {missing:#?}"
    );
}
