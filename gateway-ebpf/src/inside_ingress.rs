//! XDP on the inside NIC: default deny.
//!
//! Passes ARP, DHCP client traffic, and IPv4 to the gateway's own inside address on an open
//! service port (and ICMP echo when allowed). Every other frame is dropped and counted under a
//! named reason. The verdicts come from the `CONFIG` and `OPEN_PORTS` maps, so later policy
//! (steering TCP and DNS to local sockets) changes maps and branches here, not constants.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use gateway_common::{
    maps::{DataplaneConfig, PortKey, CONFIG_FLAG_ALLOW_PING, IPPROTO_TCP, IPPROTO_UDP},
    DropReason,
};

use crate::{
    counters::{count_client, count_drop},
    maps::{config, OPEN_PORTS},
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
    match ethertype {
        ETH_P_ARP => pass(0),
        ETH_P_IP => ipv4(pkt, cfg),
        ETH_P_8021Q | ETH_P_8021AD => drop(DropReason::VlanTagged),
        ETH_P_IPV6 => drop(DropReason::Ipv6),
        _ => drop(DropReason::UnknownEthertype),
    }
}

#[inline(always)]
fn ipv4(pkt: &Packet, cfg: &DataplaneConfig) -> Seen {
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
    let verdict = match proto {
        IPPROTO_UDP => udp(pkt, l4, dst, cfg),
        IPPROTO_TCP => tcp(pkt, l4, dst, cfg),
        IPPROTO_ICMP => icmp(pkt, l4, dst, cfg),
        _ => Err(DropReason::ProtocolNotAllowed),
    };
    seen(verdict, src)
}

#[inline(always)]
fn udp(pkt: &Packet, l4: usize, dst: u32, cfg: &DataplaneConfig) -> Result<(), DropReason> {
    if !pkt.has(l4, UDP_HLEN) {
        return Err(DropReason::Truncated);
    }
    let Some((sport, dport)) = pkt.ports_at(l4) else {
        return Err(DropReason::Truncated);
    };
    // A server's reply goes to the client port; a relay's request (67 -> 67) is not a reply
    // and goes on to the open-port check, and the DHCP server decides whether to accept relays.
    if sport == DHCP_SERVER_PORT && dport == DHCP_CLIENT_PORT {
        return Err(DropReason::DhcpServerReply);
    }
    // DHCP clients broadcast before they have an address (source 0.0.0.0) and unicast to the
    // gateway when they renew.
    if sport == DHCP_CLIENT_PORT
        && dport == DHCP_SERVER_PORT
        && (dst == u32::MAX || dst == cfg.inside_ip)
    {
        return Ok(());
    }
    to_gateway_port(IPPROTO_UDP, dport, dst, cfg)
}

#[inline(always)]
fn tcp(pkt: &Packet, l4: usize, dst: u32, cfg: &DataplaneConfig) -> Result<(), DropReason> {
    if !pkt.has(l4, TCP_MIN_HLEN) {
        return Err(DropReason::Truncated);
    }
    let Some((_, dport)) = pkt.ports_at(l4) else {
        return Err(DropReason::Truncated);
    };
    to_gateway_port(IPPROTO_TCP, dport, dst, cfg)
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
