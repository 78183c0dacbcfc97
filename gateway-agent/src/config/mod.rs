//! The agent's configuration: one TOML file (`/etc/gateway/gateway.toml`; every key and its
//! default is in `config/gateway.example.toml`).
//!
//! [`load`] and [`parse`] report every problem at once, each naming its dotted key, so
//! `check-config` can show the administrator the whole list. [`check_host`] adds what only the
//! running host can tell (do the interfaces exist).
//!
//! Each table belongs to the module that uses it: `dhcp/config.rs` has `[dhcp]`'s type,
//! defaults, reader and rules, and likewise `dns`, `uplink` (`[outside]`), `http_proxy`, `tor`,
//! `dataplane`, `metrics`, `control`, `registry`, `mirror` and `status_page`. This module keeps what they
//! share: the key-by-key `reader`, the errors, the typed values and their parsers (`values`),
//! the tables no one service owns (`common`), the composition (`parse`) and the rules across
//! tables (`validate`).

mod common;
mod error;
mod host;
mod parse;
pub(crate) mod reader;
pub mod secret;
mod validate;
pub(crate) mod values;

#[cfg(test)]
mod example;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use common::{Inside, Interfaces, Log, Service, Services, State, LOG_LEVELS};
pub(crate) use error::Errors;
pub use error::{ConfigError, ConfigErrors};
pub use host::check_host;
pub use values::{DnsLabel, DomainName, MacAddr, PortRule, Protocol, Seconds};

// The tables their services own, so `config::X` names the type of every `Config` field.
pub use crate::control::config::Control;
pub use crate::dataplane::config::{Dataplane, XdpMode};
pub use crate::dhcp::config::{ClientKey, Dhcp, Reservation};
pub use crate::dns::config::{Dns, DnsUpstream};
pub use crate::egress::Egress;
pub use crate::http_proxy::config::HttpProxy;
pub use crate::metrics::config::Metrics;
pub use crate::mirror::config::{Mirror, Upstream as MirrorUpstream};
pub use crate::registry::config::{Access, Registry};
pub use crate::status_page::config::StatusPage;
pub use crate::tor::config::Tor;
pub use crate::transparent::config::Transparent;
pub use crate::uplink::config::{MacvlanMode, Outside, OutsideAddress, Uplink};

/// The whole configuration, after every rule has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub interfaces: Interfaces,
    pub inside: Inside,
    /// `[outside]`: the uplink's address.
    pub outside: Outside,
    pub dataplane: Dataplane,
    pub control: Control,
    pub metrics: Metrics,
    pub state: State,
    pub log: Log,
    /// Every service table's `enabled` and `port`.
    pub services: Services,
    /// `[dhcp]` settings beyond enabled/port.
    pub dhcp: Dhcp,
    /// `[dns]` settings beyond enabled/port.
    pub dns: Dns,
    /// `[outside]` settings beyond the address: the macvlan and its DHCP client.
    pub uplink: Uplink,
    /// `[http_proxy]` settings beyond enabled/port.
    pub http_proxy: HttpProxy,
    /// `[tor]`: the embedded Tor client.
    pub tor: Tor,
    /// `[transparent]`.
    pub transparent: Transparent,
    /// `[registry]` settings beyond enabled/port.
    pub registry: Registry,
    /// `[mirror]` settings beyond enabled/port.
    pub mirror: Mirror,
    /// `[status_page]`.
    pub status_page: StatusPage,
}

impl Config {
    /// Whether inside DNS to other resolvers is steered to the DNS server (`dns.steer` with
    /// the DNS server on).
    pub fn steers_dns(&self) -> bool {
        self.services.dns.enabled && self.dns.steer
    }

    /// Whether anything from the inside is steered to local sockets: then the policy route
    /// delivers everything from the inside locally.
    pub fn steers(&self) -> bool {
        self.transparent.enabled || self.steers_dns()
    }

    /// Every (protocol, port) the XDP program must pass to the gateway's inside address:
    /// enabled services (dns gives tcp and udp), then `dataplane.allow`, then the status page's
    /// port when it listens on the inside address.
    pub fn open_ports(&self) -> Vec<PortRule> {
        self.services
            .enabled_ports()
            .map(|(_, rule)| rule)
            .chain(self.dataplane.allow.iter().copied())
            .chain(self.status_page.open_port(&self.inside))
            .collect()
    }
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::new(
            "",
            format!(
                "cannot read the config file: {error} (pass --config FILE; \
                     config/gateway.example.toml is the reference)"
            ),
        )
    })?;
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
