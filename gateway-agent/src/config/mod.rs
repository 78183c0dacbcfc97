//! The agent's configuration: one TOML file (`/etc/gateway/gateway.toml`; every key and its
//! default is in `config/gateway.example.toml`).
//!
//! [`load`] and [`parse`] report every problem at once, each naming its dotted key, so
//! `check-config` can show the administrator the whole list. [`check_host`] adds what only the
//! running host can tell (do the interfaces exist).

mod error;
mod host;
mod parse;
mod reader;
mod service_tables;
mod services;
mod types;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use host::check_host;
pub use services::{
    ClientKey, Dhcp, Dns, DnsUpstream, Egress, HttpProxy, MacvlanMode, Reservation, Tor, Uplink,
    SERVICE_NAMES,
};
pub use types::{
    Config, Control, Dataplane, Inside, Interfaces, Log, Metrics, Outside, OutsideAddress, Service,
    Services, State, XdpMode, LOG_LEVELS,
};
pub use values::{DnsLabel, DomainName, MacAddr, PortRule, Protocol, Seconds};

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::new("", format!("cannot read the config file: {error}")))?;
    parse(&text)
}

/// Parses and validates config text.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let document = toml::from_str::<toml::Table>(text)
        .map_err(|error| ConfigError::new("", syntax_problem(text, &error)))?;
    parse::config(document)
}

/// `TOML syntax error at line L, column C: …` on one line.
fn syntax_problem(text: &str, error: &toml::de::Error) -> String {
    // toml's messages span several lines; check-config prints one error per line.
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let position = error
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!(" at line {line}, column {column}")
        })
        .unwrap_or_default();
    format!("TOML syntax error{position}: {message}")
}
