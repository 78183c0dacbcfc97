//! The validated configuration: the types the rest of the agent reads, and their defaults.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::values::{broadcast, mask, network, same_subnet, PortRule, Protocol};

/// The whole configuration, after every rule has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub interfaces: Interfaces,
    pub inside: Inside,
    pub outside: Outside,
    pub dataplane: Dataplane,
    pub control: Control,
    pub metrics: Metrics,
    pub state: State,
    pub log: Log,
    pub services: Services,
    /// `[dhcp]` settings beyond enabled/port.
    pub dhcp: super::services::Dhcp,
    /// `[dns]` settings beyond enabled/port.
    pub dns: super::services::Dns,
    /// `[outside]` settings beyond the address: the macvlan and its DHCP client.
    pub uplink: super::services::Uplink,
    /// `[http_proxy]` settings beyond enabled/port.
    pub http_proxy: super::services::HttpProxy,
    /// `[tor]`: the embedded Tor client.
    pub tor: super::services::Tor,
}

impl Config {
    /// Every (protocol, port) the XDP program must pass to the gateway's inside address:
    /// enabled services (dns gives tcp and udp), then `dataplane.allow`.
    pub fn open_ports(&self) -> Vec<PortRule> {
        self.services
            .enabled_ports()
            .map(|(_, rule)| rule)
            .chain(self.dataplane.allow.iter().copied())
            .collect()
    }
}

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
        Ipv4Addr::from(mask(self.prefix_len))
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

/// How the outside interface gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutsideAddress {
    /// From the uplink's DHCP server (the default).
    #[default]
    Dhcp,
    /// A fixed address; `gateway` is the default router, inside that subnet.
    Static {
        address: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
    },
}

/// `[outside]`: the uplink side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outside {
    pub address: OutsideAddress,
}

/// How the XDP program is attached (`dataplane.xdp_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native if the driver supports it, else generic (skb).
    #[default]
    Auto,
    Native,
    Skb,
}

impl XdpMode {
    /// The config spelling: `auto`, `native` or `skb`.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[dataplane]`: the eBPF side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataplane {
    /// The bpffs directory maps and links are pinned in.
    pub bpf_pin_dir: PathBuf,
    pub xdp_mode: XdpMode,
    /// Pass ICMP echo to the gateway's inside address.
    pub allow_ping: bool,
    /// Extra ports open on the gateway's inside address, beyond the enabled services.
    pub allow: Vec<PortRule>,
}

impl Default for Dataplane {
    fn default() -> Self {
        Dataplane {
            bpf_pin_dir: PathBuf::from("/sys/fs/bpf/gateway"),
            xdp_mode: XdpMode::Auto,
            allow_ping: true,
            allow: Vec::new(),
        }
    }
}

/// `[control]`: the agent's control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub socket: PathBuf,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: PathBuf::from("/run/gateway/control.sock"),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint. Aggregate counters only: no client addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    pub enabled: bool,
    /// Where `GET /metrics` is served; loopback by default, so only the host can read it.
    pub listen: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            enabled: true,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9101)),
        }
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
