//! XDP on the inside NIC: default deny.
//!
//! Passes ARP, DHCP client traffic, and IPv4 to the gateway's own inside address on an open
//! service port (and ICMP echo when allowed). Every other frame is dropped and counted under a
//! named reason. The verdicts come from the `CONFIG`, `OPEN_PORTS` and `LEASES` maps, so later
//! policy (steering TCP and DNS to local sockets) changes maps and branches here, not constants.
//!
//! Clients are told apart by MAC, and the leases bind each MAC to one address: IPv4 passes only
//! from the address leased to the frame's source MAC (IP source guard), ARP only with the
//! frame's own MAC and that address (or 0.0.0.0, a probe) as sender (ARP guard). DHCP from a
//! client always reaches the server, whatever its source address (it has none yet, or a lease
//! that just ended), but only with its own MAC as `chaddr`, so one MAC cannot drain the pool.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use gateway_common::{
    maps::{
        DataplaneConfig, PortKey, CONFIG_FLAG_ACCEPT_RELAYED, CONFIG_FLAG_ALLOW_PING,
        policy, CONFIG_FLAG_STEER_DNS, CONFIG_FLAG_STEER_TCP, IPPROTO_TCP, IPPROTO_UDP,
    },
    DropReason,
};

use crate::{
    counters::{count_client, count_drop},
    events,
    maps::{client_policy, config, leased_ipv4, OPEN_PORTS},
    packet::*,
};

/// What the classifier learnt about a frame besides its verdict.
struct Seen {
    verdict: Result<(), DropReason>,
    ipv4_src: u32,
}

#[xdp]
pub fn inside_ingress(ctx: XdpContext) -> u32 {
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    let seen = classify(&pkt);
    if let Some(mac) = pkt.mac_at(6) {
        count_client(mac, pkt.len() as u64, seen.verdict.is_err(), seen.ipv4_src);
    }
    match seen.verdict {
        Ok(()) => XDP_PASS,
        Err(reason) => {
            count_drop(reason);
            if let (Some(kind), Some(mac)) = (events::for_drop(reason), pkt.mac_at(6)) {
                events::report(kind, Some(reason), mac, seen.ipv4_src);
            }
            XDP_DROP
        }
    }
}

#[inline(always)]
fn classify(pkt: &Packet) -> Seen {
    let Some(ethertype) = pkt.be16_at(12) else {
        return drop(DropReason::Truncated);
    };
    let Some(cfg) = config() else {
        return drop(DropReason::NotConfigured);
    };
    let Some(src_mac) = pkt.mac_at(6) else {
        return drop(DropReason::Truncated);
    };
    match ethertype {
        ETH_P_ARP => arp(pkt, src_mac),
        ETH_P_IP => ipv4(pkt, cfg, src_mac),
        ETH_P_8021Q | ETH_P_8021AD => drop(DropReason::VlanTagged),
        ETH_P_IPV6 => drop(DropReason::Ipv6),
        _ => drop(DropReason::UnknownEthertype),
    }
}

/// The Ethernet source MAC.
const ETH_SRC: usize = 6;
/// ARP header offsets (Ethernet/IPv4 ARP).
const ARP_SENDER_MAC: usize = ETH_HLEN + 8;
const ARP_SENDER_IP: usize = ETH_HLEN + 14;

#[inline(always)]
fn arp(pkt: &Packet, src_mac: [u8; 6]) -> Seen {
    let (Some(same_mac), Some(sender_ip)) = (
        pkt.same_mac(ARP_SENDER_MAC, ETH_SRC),
        pkt.addr_at(ARP_SENDER_IP),
    ) else {
        return drop(DropReason::Truncated);
    };
    if !same_mac {
        return drop(DropReason::SpoofedArp);
    }
    // 0.0.0.0: an address probe (RFC 5227) before a client uses its new lease.
    if sender_ip != 0 && leased_ipv4(src_mac) != Some(sender_ip) {
        return seen(Err(DropReason::SpoofedArp), sender_ip);
    }
    pass(sender_ip)
}

#[inline(always)]
fn ipv4(pkt: &Packet, cfg: &DataplaneConfig, src_mac: [u8; 6]) -> Seen {
    let l3 = ETH_HLEN;
    let (Some(version_ihl), Some(total_len), Some(frag), Some(proto), Some(src), Some(dst)) = (
        pkt.u8_at(l3),
        pkt.be16_at(l3 + 2),
        pkt.be16_at(l3 + 6),
        pkt.u8_at(l3 + 9),
        pkt.addr_at(l3 + 12),
        pkt.addr_at(l3 + 16),
    ) else {
        return drop(DropReason::Truncated);
    };
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || header_len < IPV4_MIN_HLEN || (total_len as usize) < header_len {
        return seen(Err(DropReason::MalformedIpv4), src);
    }
    if !pkt.has(l3, total_len as usize) {
        return seen(Err(DropReason::Truncated), src);
    }
    // More-fragments set or a non-zero offset: any fragment at all.
    if frag & 0x3fff != 0 {
        return seen(Err(DropReason::Fragment), src);
    }
    let l4 = l3 + header_len;
    let leased = leased_ipv4(src_mac) == Some(src);
    let policy = client_policy(src_mac, cfg);
    let verdict = match proto {
        IPPROTO_UDP => udp(pkt, l4, dst, cfg, leased, policy),
        _ if !leased => Err(DropReason::SpoofedSource),
        _ if policy == policy::BLOCKED => Err(DropReason::Policy),
        IPPROTO_TCP => tcp(pkt, l4, dst, cfg, policy),
        IPPROTO_ICMP => icmp(pkt, l4, dst, cfg),
        _ => Err(DropReason::ProtocolNotAllowed),
    };
    seen(verdict, src)
}

/// BOOTP offsets from the start of the UDP payload.
const BOOTP_GIADDR: usize = 24;
const BOOTP_CHADDR: usize = 28;

#[inline(always)]
fn udp(
    pkt: &Packet,
    l4: usize,
    dst: u32,
    cfg: &DataplaneConfig,
    leased: bool,
    policy: u32,
) -> Result<(), DropReason> {
    if !pkt.has(l4, UDP_HLEN) {
        return Err(DropReason::Truncated);
    }
    let Some((sport, dport)) = pkt.ports_at(l4) else {
        return Err(DropReason::Truncated);
    };
    // A server's reply goes to the client port; a relay's request (67 -> 67) is not a reply.
    if sport == DHCP_SERVER_PORT && dport == DHCP_CLIENT_PORT {
        return Err(DropReason::DhcpServerReply);
    }
    let bootp = l4 + UDP_HLEN;
    // DHCP clients broadcast before they have an address (source 0.0.0.0) and unicast to the
    // gateway when they renew.
    if sport == DHCP_CLIENT_PORT
        && dport == DHCP_SERVER_PORT
        && (dst == u32::MAX || dst == cfg.inside_ip)
    {
        let (Some(giaddr), Some(own_chaddr)) = (
            pkt.addr_at(bootp + BOOTP_GIADDR),
            pkt.same_mac(bootp + BOOTP_CHADDR, ETH_SRC),
        ) else {
            return Err(DropReason::Truncated);
        };
        if giaddr != 0 {
            return relayed(cfg, leased);
        }
        if !own_chaddr {
            return Err(DropReason::ChaddrMismatch);
        }
        return Ok(());
    }
    if !leased {
        return Err(DropReason::SpoofedSource);
    }
    // Blocked: the DHCP above, nothing else.
    if policy == policy::BLOCKED {
        return Err(DropReason::Policy);
    }
    // A relay agent's request (67 -> 67, giaddr set) from a leased relay host.
    if sport == DHCP_SERVER_PORT && dport == DHCP_SERVER_PORT && dst == cfg.inside_ip {
        return relayed(cfg, leased);
    }
    if steered_dns(dport, dst, cfg) {
        return transparent_allowed(policy);
    }
    to_gateway_port(IPPROTO_UDP, dport, dst, cfg)
}

/// A relayed DHCP request: only with `dhcp.accept_relayed`, and from a leased source.
#[inline(always)]
fn relayed(cfg: &DataplaneConfig, leased: bool) -> Result<(), DropReason> {
    if cfg.flags & CONFIG_FLAG_ACCEPT_RELAYED == 0 {
        Err(DropReason::RelayRefused)
    } else if !leased {
        Err(DropReason::SpoofedSource)
    } else {
        Ok(())
    }
}

#[inline(always)]
fn tcp(
    pkt: &Packet,
    l4: usize,
    dst: u32,
    cfg: &DataplaneConfig,
    policy: u32,
) -> Result<(), DropReason> {
    if !pkt.has(l4, TCP_MIN_HLEN) {
        return Err(DropReason::Truncated);
    }
    let Some((_, dport)) = pkt.ports_at(l4) else {
        return Err(DropReason::Truncated);
    };
    // To any other host: steered to the transparent listener (`inside_steer`), never routed.
    // Other inside hosts stay out of reach: the gateway does not connect clients to each other.
    if steered_dns(dport, dst, cfg) {
        return transparent_allowed(policy);
    }
    if dst != cfg.inside_ip && !cfg.is_inside(dst) && cfg.flags & CONFIG_FLAG_STEER_TCP != 0 {
        return transparent_allowed(policy);
    }
    to_gateway_port(IPPROTO_TCP, dport, dst, cfg)
}

/// Steered traffic (to any host but the gateway) is for `transparent` clients only.
#[inline(always)]
fn transparent_allowed(policy: u32) -> Result<(), DropReason> {
    if policy == policy::TRANSPARENT {
        Ok(())
    } else {
        Err(DropReason::Policy)
    }
}

/// DNS to any host but the gateway's own address: `inside_steer` hands it to the gateway's
/// DNS server, so a client with a hard-coded resolver is answered by the gateway (over Tor),
/// never by the resolver it named.
#[inline(always)]
fn steered_dns(dport: u16, dst: u32, cfg: &DataplaneConfig) -> bool {
    dport == DNS_PORT && dst != cfg.inside_ip && cfg.flags & CONFIG_FLAG_STEER_DNS != 0
}

#[inline(always)]
fn icmp(pkt: &Packet, l4: usize, dst: u32, cfg: &DataplaneConfig) -> Result<(), DropReason> {
    // Read the whole 8-byte ICMP header: a one-byte read at a variable offset compiles to a
    // `ptr >= end` check that this kernel's verifier does not turn into a packet range.
    let Some(header) = pkt.icmp_header_at(l4) else {
        return Err(DropReason::Truncated);
    };
    let icmp_type = header[0];
    if dst != cfg.inside_ip {
        return Err(DropReason::ForeignDestination);
    }
    if icmp_type == ICMP_ECHO_REQUEST && cfg.flags & CONFIG_FLAG_ALLOW_PING != 0 {
        Ok(())
    } else {
        Err(DropReason::ProtocolNotAllowed)
    }
}

#[inline(always)]
fn to_gateway_port(
    protocol: u8,
    port: u16,
    dst: u32,
    cfg: &DataplaneConfig,
) -> Result<(), DropReason> {
    if dst != cfg.inside_ip {
        return Err(DropReason::ForeignDestination);
    }
    if OPEN_PORTS.get_ptr(PortKey::new(protocol, port)).is_some() {
        Ok(())
    } else {
        Err(DropReason::PortClosed)
    }
}

#[inline(always)]
fn seen(verdict: Result<(), DropReason>, ipv4_src: u32) -> Seen {
    Seen { verdict, ipv4_src }
}

#[inline(always)]
fn pass(ipv4_src: u32) -> Seen {
    seen(Ok(()), ipv4_src)
}

#[inline(always)]
fn drop(reason: DropReason) -> Seen {
    seen(Err(reason), 0)
}
