//! The tables no one service owns: `[interfaces]`, `[inside]`, `[state]`, `[log]`, and the
//! `enabled` and `port` every service table has. Their types, defaults and readers.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use super::error::Errors;
use super::reader::{self, Section};
use super::values::{self, broadcast, network, same_subnet, PortRule, Protocol};

/// The inside subnet needs room for the gateway and at least one client.
const INSIDE_PREFIXES: RangeInclusive<u8> = 8..=30;

/// `[interfaces]`: the two NICs. Both are required; the agent never guesses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interfaces {
    /// The uplink NIC; the agent makes its macvlan on it.
    pub outside: String,
    /// The LAN NIC.
    pub inside: String,
}

/// `[inside]`: the gateway's address on the LAN and the LAN's prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inside {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl Inside {
    /// The subnet mask, e.g. 255.255.255.0 for /24.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(values::mask(self.prefix_len))
    }

    /// The subnet's network address, e.g. 198.51.100.0.
    pub fn network(&self) -> Ipv4Addr {
        network(self.address, self.prefix_len)
    }

    /// The subnet's broadcast address, e.g. 198.51.100.255.
    pub fn broadcast(&self) -> Ipv4Addr {
        broadcast(self.address, self.prefix_len)
    }

    /// Whether `ip` is in the inside subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        same_subnet(self.address, ip, self.prefix_len)
    }

    /// The address with its prefix as configured, e.g. `198.51.100.1/24` (what `ip addr add` takes).
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix_len)
    }

    /// The subnet in CIDR form, e.g. `198.51.100.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}/{}", self.network(), self.prefix_len)
    }
}

/// `[state]`: where persistent state (leases, PKI, registry) lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub dir: PathBuf,
}

impl Default for State {
    fn default() -> Self {
        State {
            dir: PathBuf::from("/var/lib/gateway"),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// One of `error`, `warn`, `info`, `debug`, `trace`.
    pub level: String,
    /// Per-query / per-connection logs; off by default for privacy.
    pub queries: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".to_owned(),
            queries: false,
        }
    }
}

/// The levels `log.level` accepts.
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// One service listening on the gateway's inside address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    pub enabled: bool,
    pub port: u16,
}

impl Service {
    /// An enabled service on `port`.
    pub const fn on(port: u16) -> Self {
        Service {
            enabled: true,
            port,
        }
    }
}

/// The services' tables: `[dns]`, `[dhcp]`, `[socks]`, `[http_proxy]`, `[registry]`, `[mirror]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Services {
    pub dns: Service,
    pub dhcp: Service,
    pub socks: Service,
    pub http_proxy: Service,
    pub registry: Service,
    pub mirror: Service,
}

impl Default for Services {
    fn default() -> Self {
        Services {
            dns: Service::on(53),
            dhcp: Service::on(67),
            socks: Service::on(9050),
            http_proxy: Service::on(3128),
            registry: Service::on(443),
            mirror: Service::on(5000),
        }
    }
}

impl Services {
    /// Each service with its table name and protocols, in config order.
    pub(crate) fn named(&self) -> [(&'static str, Service, &'static [Protocol]); 6] {
        use Protocol::{Tcp, Udp};
        [
            ("dns", self.dns, &[Tcp, Udp]),
            ("dhcp", self.dhcp, &[Udp]),
            ("socks", self.socks, &[Tcp]),
            ("http_proxy", self.http_proxy, &[Tcp]),
            ("registry", self.registry, &[Tcp]),
            ("mirror", self.mirror, &[Tcp]),
        ]
    }

    /// The ports of enabled services, each with the service's table name.
    pub(crate) fn enabled_ports(&self) -> impl Iterator<Item = (&'static str, PortRule)> {
        self.named()
            .into_iter()
            .filter(|(_, service, _)| service.enabled)
            .flat_map(|(name, service, protocols)| {
                protocols.iter().map(move |&protocol| {
                    (
                        name,
                        PortRule {
                            protocol,
                            port: service.port,
                        },
                    )
                })
            })
    }
}

/// `[interfaces]`: both NICs, which must differ.
pub(crate) fn interfaces(section: &mut Section, errors: &mut Errors) -> Option<Interfaces> {
    let outside = section.required(
        "outside",
        "the uplink NIC's name, like \"eth0\"",
        errors,
        |value| values::interface_name(&reader::string(value)?),
    );
    let inside = section.required(
        "inside",
        "the LAN NIC's name, like \"eth1\"",
        errors,
        |value| values::interface_name(&reader::string(value)?),
    );
    if let (Some(outside), Some(inside)) = (&outside, &inside) {
        if outside == inside {
            errors.push(
                &section.key("inside"),
                format!(
                    "{inside:?} is also {}; the inside and outside must be different NICs",
                    section.key("outside")
                ),
            );
            return None;
        }
    }
    Some(Interfaces {
        outside: outside?,
        inside: inside?,
    })
}

/// `[inside]`: the gateway's LAN address and prefix.
pub(crate) fn inside(section: &mut Section, errors: &mut Errors) -> Option<Inside> {
    section.required(
        "address",
        "the gateway's LAN address with the LAN's prefix length, like \"198.51.100.1/24\"",
        errors,
        |value| {
            let (address, prefix_len) = values::cidr(&reader::string(value)?)?;
            values::host_address(address, prefix_len, INSIDE_PREFIXES)?;
            Ok(Inside {
                address,
                prefix_len,
            })
        },
    )
}

/// `[state]`: the state directory.
pub(crate) fn state(section: &mut Section, errors: &mut Errors) -> Option<State> {
    let dir = section.optional("dir", State::default().dir, errors, |value| {
        values::absolute_path(&reader::string(value)?)
    });
    Some(State { dir: dir? })
}

/// `[log]`: the level and whether queries are logged.
pub(crate) fn log(section: &mut Section, errors: &mut Errors) -> Option<Log> {
    let defaults = Log::default();
    let level = section.optional("level", defaults.level, errors, |value| {
        log_level(&reader::string(value)?)
    });
    let queries = section.optional("queries", defaults.queries, errors, reader::boolean);
    Some(Log {
        level: level?,
        queries: queries?,
    })
}

/// One of [`LOG_LEVELS`].
fn log_level(text: &str) -> Result<String, String> {
    if LOG_LEVELS.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a log level; expected one of: {}",
            LOG_LEVELS.join(", ")
        ))
    }
}

/// A service table's `enabled` and `port`. An invalid service comes back disabled, which only
/// keeps it out of the port rule: its errors already reject the config.
pub(crate) fn service(section: &mut Section, default: Service, errors: &mut Errors) -> Service {
    let enabled = section.optional("enabled", default.enabled, errors, reader::boolean);
    let port = section.optional("port", default.port, errors, |value| {
        values::port(reader::integer(value)?)
    });
    match (enabled, port, section.is_broken()) {
        (Some(enabled), Some(port), false) => Service { enabled, port },
        _ => Service {
            enabled: false,
            port: default.port,
        },
    }
}
