//! Settings of the inside services (`[dhcp]` and `[dns]` beyond `enabled` and `port`) and of the
//! uplink (`[outside]` beyond `address`). The types the service modules read, with defaults.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::types::Inside;
use super::values::{DnsLabel, DomainName, MacAddr, Seconds};

/// The gateway's own names in the local zone; no client may take them.
pub const SERVICE_NAMES: [&str; 5] = ["gateway", "registry", "mirror", "proxy", "socks"];

/// Who a lease or reservation belongs to (RFC 2131: the client identifier when the client sends
/// one, else the hardware address).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    /// Option 61, raw bytes (type byte included).
    ClientId(Vec<u8>),
    /// The chaddr of an Ethernet client.
    Mac([u8; 6]),
}

/// `[[dhcp.reservations]]`: a fixed address (and optionally a name) for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The client, by `mac` or `client_id`.
    pub owner: ClientKey,
    /// Its address, inside the inside subnet (it need not be in the pool).
    pub address: Ipv4Addr,
    /// Its DNS name, which no other client may take.
    pub name: Option<DnsLabel>,
}

/// `[dhcp]`: the inside DHCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp {
    /// First and last address of the dynamic pool; `None` takes [`Dhcp::default_pool`].
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Lease time, at least a minute (T1 is half, T2 seven eighths).
    pub lease_secs: Seconds,
    /// Domain search list (option 119); the first entry is also option 15 unless empty.
    /// Defaults to the DNS zone.
    pub search: Option<Vec<DomainName>>,
    /// Answer requests relayed by a DHCP relay (giaddr set); off: the LAN is one segment.
    pub accept_relayed: bool,
    /// Packets per second accepted from one MAC before the rest are dropped and counted.
    pub rate_limit: u32,
    /// How long a DECLINEd address stays out of the pool.
    pub decline_quarantine_secs: Seconds,
    /// Fixed addresses.
    pub reservations: Vec<Reservation>,
}

impl Default for Dhcp {
    fn default() -> Self {
        Dhcp {
            pool: None,
            lease_secs: Seconds::new(12 * 3600),
            search: None,
            accept_relayed: false,
            rate_limit: 10,
            decline_quarantine_secs: Seconds::new(600),
            reservations: Vec::new(),
        }
    }
}

impl Dhcp {
    /// The configured pool, or the default for `inside`: `.100`–`.199` of a /24 or larger
    /// subnet, everything but the gateway's neighbours' first few addresses on smaller ones.
    pub fn pool_range(&self, inside: &Inside) -> (Ipv4Addr, Ipv4Addr) {
        if let Some(pool) = self.pool {
            return pool;
        }
        Dhcp::default_pool(inside)
    }

    /// The default pool for `inside`.
    pub fn default_pool(inside: &Inside) -> (Ipv4Addr, Ipv4Addr) {
        let network = u32::from(inside.network());
        let broadcast = u32::from(inside.broadcast());
        if inside.prefix_len <= 24 {
            (Ipv4Addr::from(network + 100), Ipv4Addr::from(network + 199))
        } else {
            let size = broadcast - network;
            (
                Ipv4Addr::from(network + (size / 2).max(2)),
                Ipv4Addr::from(broadcast - 1),
            )
        }
    }

    /// The search list to hand out: the configured one, else just `zone`.
    pub fn search_list<'a>(&'a self, zone: &'a DomainName) -> &'a [DomainName] {
        self.search.as_deref().unwrap_or(std::slice::from_ref(zone))
    }
}

/// Where the DNS server sends questions that are not local (`dns.upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsUpstream {
    /// Nothing is forwarded: non-local names get SERVFAIL. The default when Tor is disabled.
    #[default]
    None,
    /// Tor exits (A, AAAA, PTR; other types NOTIMP). The default when Tor is enabled.
    Tor,
    /// The uplink's resolvers, in clear text through the outside interface. Only ever an
    /// explicit choice.
    Uplink,
}

/// `[dns]`: the inside DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// The local zone (RFC 8375 `home.arpa` by default): leases, reservations, service names.
    pub zone: DomainName,
    /// Where other names go.
    pub upstream: DnsUpstream,
    /// Upstream servers for `uplink`; empty: the resolvers from the outside DHCP lease.
    pub upstream_servers: Vec<SocketAddr>,
    /// Cached answers at most.
    pub cache_size: usize,
    /// TTL given to upstream answers that carry none (and the cap for negative answers); at
    /// most `max_ttl`.
    pub default_ttl: Seconds,
    /// Upstream TTLs are capped here.
    pub max_ttl: Seconds,
    /// TTL of local records (leases change).
    pub local_ttl: Seconds,
    /// Queries per second accepted from one client; the rest are REFUSED.
    pub rate_limit: u32,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            zone: default_zone(),
            upstream: DnsUpstream::None,
            upstream_servers: Vec::new(),
            cache_size: 10_000,
            default_ttl: Seconds::new(300),
            max_ttl: Seconds::new(86_400),
            local_ttl: Seconds::new(60),
            rate_limit: 200,
        }
    }
}

/// `home.arpa` (RFC 8375).
fn default_zone() -> DomainName {
    match "home.arpa".parse() {
        Ok(zone) => zone,
        // A constant; the zone tests parse it.
        Err(problem) => unreachable!("the default zone: {problem}"),
    }
}

/// How a service's outbound streams leave the gateway (`<service>.egress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Egress {
    /// Through Tor; while Tor is not bootstrapped, streams fail. The default.
    #[default]
    Tor,
    /// Clear text out of the outside interface, names resolved by the uplink's resolvers. Only
    /// ever an explicit choice.
    Direct,
}

/// `[http_proxy]` beyond enabled/port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProxy {
    /// Ports CONNECT may reach. Only 443 by default, like Squid's `SSL_ports`: plain HTTP goes
    /// in absolute form, and a CONNECT to any port would make the proxy a general TCP relay
    /// (that is what SOCKS is for).
    pub connect_ports: Vec<u16>,
    /// Where the proxy's requests go out.
    pub egress: Egress,
}

impl Default for HttpProxy {
    fn default() -> Self {
        HttpProxy {
            connect_ports: vec![443],
            egress: Egress::Tor,
        }
    }
}

/// `[tor]`: the embedded Tor client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tor {
    /// Run the Tor client (and with it, by default, the SOCKS server and DNS over Tor).
    pub enabled: bool,
    /// An arti TOML file merged into arti's defaults (a private network, say); its state and
    /// cache directories are always under `state.dir`.
    pub arti_config: Option<PathBuf>,
}

impl Default for Tor {
    fn default() -> Self {
        Tor {
            enabled: true,
            arti_config: None,
        }
    }
}

/// `outside.macvlan_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MacvlanMode {
    #[default]
    Bridge,
    Private,
    Vepa,
    Passthru,
}

/// `[outside]` beyond the address: the macvlan the agent makes on the uplink NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// Name of the macvlan the agent creates on `interfaces.outside`.
    pub macvlan_name: String,
    /// Its mode.
    pub macvlan_mode: MacvlanMode,
    /// Its MAC, a unicast one; `None` derives one from the NIC's MAC, the same on every start,
    /// so the upstream DHCP server hands back the same lease.
    pub mac: Option<MacAddr>,
    /// IPv6 on the uplink (off: the inside has no IPv6 yet, and it would only leak).
    pub ipv6: bool,
    /// Host name sent to the upstream DHCP server (option 12); none by default (privacy).
    pub hostname: Option<DnsLabel>,
}

impl Default for Uplink {
    fn default() -> Self {
        Uplink {
            macvlan_name: "gw-uplink".to_owned(),
            macvlan_mode: MacvlanMode::Bridge,
            mac: None,
            ipv6: false,
            hostname: None,
        }
    }
}
