//! Map names, pin layout, and the keys and values stored in the maps.

/// Program names, as the eBPF object exports them.
pub mod programs {
    /// XDP on the inside NIC: default deny.
    pub const INSIDE_INGRESS: &str = "inside_ingress";
    /// TC egress on the outside device: no inside-sourced packet leaves.
    pub const OUTSIDE_EGRESS: &str = "outside_egress";
    /// TC ingress on the uplink macvlan: nothing unsolicited.
    pub const OUTSIDE_INGRESS: &str = "outside_ingress";
    /// TC ingress on the macvlan's parent NIC: the same, with unicast to the macvlan left to
    /// its own filter.
    pub const PARENT_INGRESS: &str = "parent_ingress";
    /// sk_lookup in the agent's namespace: inside TCP to other hosts goes to the transparent
    /// listener.
    pub const INSIDE_STEER: &str = "inside_steer";
    /// TC ingress on the inside NIC: VLAN tags that receive offload hid from XDP.
    pub const INSIDE_VLAN: &str = "inside_vlan";
}

/// Map names, as the eBPF object exports them and as they are pinned.
pub mod names {
    /// `Array<DataplaneConfig>` with one entry.
    pub const CONFIG: &str = "CONFIG";
    /// `HashMap<PortKey, u8>`: ports open on the gateway's inside address.
    pub const OPEN_PORTS: &str = "OPEN_PORTS";
    /// `PerCpuArray<u64>` indexed by [`crate::DropReason`].
    pub const DROPS: &str = "DROPS";
    /// `LruPerCpuHashMap<MacKey, ClientStats>`: per inside client.
    pub const CLIENT_STATS: &str = "CLIENT_STATS";
    /// `HashMap<MacKey, LeaseValue>`: live DHCP leases, written by the agent.
    pub const LEASES: &str = "LEASES";
    /// `HashMap<u32, MacKey>`: the same leases by address (network-order encoding).
    pub const LEASES_BY_IP: &str = "LEASES_BY_IP";
    /// `SockMap` of the sockets steered traffic goes to ([`super::steer`]); not pinned: a
    /// socket leaves it when it closes, so a stopped agent's slots are empty.
    pub const STEER_SOCKETS: &str = "STEER_SOCKETS";
    /// `HashMap<MacKey, u32>`: a client's [`super::policy`] where it is not the default,
    /// written by the agent from `state.dir`.
    pub const CLIENT_POLICY: &str = "CLIENT_POLICY";
    /// `RingBuf` of [`crate::event::Event`]s for the agent; not pinned: it belongs to the
    /// agent that reads it.
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<u64>`: events thinned or lost ([`crate::event::EVENT_STAT_THINNED`]…);
    /// not pinned.
    pub const EVENT_STATS: &str = "EVENT_STATS";

    /// Every map the agent pins, in display order.
    pub const ALL: &[&str] = &[
        CONFIG,
        OPEN_PORTS,
        DROPS,
        CLIENT_STATS,
        LEASES,
        LEASES_BY_IP,
        CLIENT_POLICY,
    ];
}

/// What an inside client may do (`CLIENT_POLICY` values, `DataplaneConfig::default_policy`).
pub mod policy {
    /// Everything the gateway offers: its services, and TCP and DNS to any host steered to
    /// Tor and the DNS server.
    pub const TRANSPARENT: u32 = 0;
    /// Only the gateway's own service ports (SOCKS, the HTTP proxy, DNS on its address…).
    pub const PROXY_ONLY: u32 = 1;
    /// DHCP only.
    pub const BLOCKED: u32 = 2;
}

/// Slots of `STEER_SOCKETS`.
pub mod steer {
    /// The transparent TCP listener (inside TCP to any host but the gateway).
    pub const TCP: u32 = 0;
    /// The DNS server's transparent UDP socket (inside UDP to port 53 of any host).
    pub const DNS_UDP: u32 = 1;
    /// The DNS server's transparent TCP listener (inside TCP to port 53 of any host).
    pub const DNS_TCP: u32 = 2;
    /// Number of slots.
    pub const SLOTS: u32 = 3;
}

/// Sub-directories of the configured bpffs pin directory.
pub mod pins {
    /// Maps are pinned as `<pin dir>/maps/<NAME>`.
    pub const MAPS_DIR: &str = "maps";
    /// Program links are pinned as `<pin dir>/links/<program>`; while a link is pinned its
    /// program stays attached, even if the agent crashed (fail closed).
    pub const LINKS_DIR: &str = "links";
}

/// Maximum number of inside clients tracked in `CLIENT_STATS` before the least recently seen is
/// evicted (an LRU, so a MAC flood cannot exhaust memory).
pub const MAX_CLIENTS: u32 = 4096;
/// Maximum number of live leases (a /16 worth).
pub const MAX_LEASES: u32 = 65_536;
/// Maximum number of open (protocol, port) pairs.
pub const MAX_OPEN_PORTS: u32 = 256;

/// `DataplaneConfig::flags`: the agent has filled the entry.
pub const CONFIG_FLAG_READY: u32 = 1 << 0;
/// `DataplaneConfig::flags`: ICMP echo requests to the gateway are passed.
pub const CONFIG_FLAG_ALLOW_PING: u32 = 1 << 1;
/// `DataplaneConfig::flags`: IPv6 may arrive on the outside (`outside.ipv6`).
pub const CONFIG_FLAG_OUTSIDE_IPV6: u32 = 1 << 2;
/// `DataplaneConfig::flags`: inside TCP to other hosts is steered to the transparent listener
/// (XDP passes it, `inside_steer` redirects it).
pub const CONFIG_FLAG_STEER_TCP: u32 = 1 << 4;
/// `DataplaneConfig::flags`: inside DNS (UDP and TCP port 53) to any host is steered to the
/// gateway's DNS server (XDP passes it, `inside_steer` redirects it).
pub const CONFIG_FLAG_STEER_DNS: u32 = 1 << 5;
/// `DataplaneConfig::flags`: relayed DHCP requests (giaddr set) reach the server
/// (`dhcp.accept_relayed`), from a leased source only.
pub const CONFIG_FLAG_ACCEPT_RELAYED: u32 = 1 << 3;

/// Settings the agent writes once at start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// The gateway's inside address (network-order bytes as a native `u32`).
    pub inside_ip: u32,
    /// The inside subnet's network address (same encoding).
    pub inside_net: u32,
    /// The inside subnet's mask (same encoding).
    pub inside_mask: u32,
    /// `CONFIG_FLAG_*` bits.
    pub flags: u32,
    /// The uplink macvlan's MAC: the parent NIC's filter leaves unicast to it to the
    /// macvlan's own filter, which can look up the agent's device-bound sockets.
    pub uplink_mac: [u8; 6],
    /// Always zero.
    pub _pad: [u8; 2],
    /// The inside NIC's ifindex: only lookups for packets that arrived there are steered.
    pub inside_ifindex: u32,
    /// The [`policy`] of clients without a `CLIENT_POLICY` entry.
    pub default_policy: u32,
}

impl DataplaneConfig {
    /// Whether `addr` (network-order encoding) is in the inside subnet.
    #[inline(always)]
    pub const fn is_inside(&self, addr: u32) -> bool {
        addr & self.inside_mask == self.inside_net
    }
}

/// IP protocol numbers used in [`PortKey`].
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Key of `OPEN_PORTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u8,
    /// Always zero.
    pub _pad: u8,
    /// Destination port, host byte order.
    pub port: u16,
}

impl PortKey {
    /// A key with zeroed padding, so lookups match.
    pub const fn new(protocol: u8, port: u16) -> Self {
        PortKey {
            protocol,
            _pad: 0,
            port,
        }
    }
}

/// A MAC address padded to eight bytes, the key of per-client maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacKey {
    /// The address.
    pub addr: [u8; 6],
    /// Always zero.
    pub _pad: [u8; 2],
}

impl MacKey {
    /// A key with zeroed padding.
    pub const fn new(addr: [u8; 6]) -> Self {
        MacKey { addr, _pad: [0; 2] }
    }
}

/// Per-client counters (one copy per CPU; readers sum them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Frames received from this MAC.
    pub packets: u64,
    /// Bytes received from this MAC (whole frames).
    pub bytes: u64,
    /// Of those frames, how many were dropped.
    pub dropped: u64,
    /// `bpf_ktime_get_ns()` when last seen (CLOCK_MONOTONIC).
    pub last_seen_ns: u64,
    /// Source IPv4 of the last IPv4 frame (network-order encoding), 0 if none yet.
    pub last_ipv4: u32,
    /// Always zero.
    pub _pad: u32,
}

/// `LeaseValue::flags`: the address comes from a static reservation.
pub const LEASE_FLAG_RESERVED: u32 = 1 << 0;

/// Value of `LEASES`: the address a MAC holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseValue {
    /// The leased IPv4 address (network-order encoding).
    pub ipv4: u32,
    /// `LEASE_FLAG_*` bits.
    pub flags: u32,
    /// Seconds since the Unix epoch when the lease ends.
    pub expires_unix: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are repr(C), Copy, with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::DataplaneConfig {}
    unsafe impl aya::Pod for super::PortKey {}
    unsafe impl aya::Pod for super::MacKey {}
    unsafe impl aya::Pod for super::ClientStats {}
    unsafe impl aya::Pod for super::LeaseValue {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<DataplaneConfig>(), 32);
        assert_eq!(core::mem::size_of::<PortKey>(), 4);
        assert_eq!(core::mem::size_of::<MacKey>(), 8);
        assert_eq!(core::mem::size_of::<ClientStats>(), 40);
        assert_eq!(core::mem::size_of::<LeaseValue>(), 16);
    }

    #[test]
    fn inside_subnet_match_uses_network_order_bytes() {
        let cfg = DataplaneConfig {
            inside_ip: u32::from_ne_bytes([198, 51, 100, 1]),
            inside_net: u32::from_ne_bytes([198, 51, 100, 0]),
            inside_mask: u32::from_ne_bytes([255, 255, 255, 0]),
            flags: CONFIG_FLAG_READY,
            ..DataplaneConfig::default()
        };
        assert!(cfg.is_inside(u32::from_ne_bytes([198, 51, 100, 77])));
        assert!(!cfg.is_inside(u32::from_ne_bytes([198, 51, 101, 77])));
        assert!(!cfg.is_inside(u32::from_ne_bytes([203, 0, 113, 10])));
    }
}
