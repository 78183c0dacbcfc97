//! TC ingress on the outside devices (the uplink macvlan and its parent NIC): nothing
//! unsolicited gets in.
//!
//! The gateway offers nothing to the uplink. What may arrive is what answers the agent itself:
//! TCP segments of its own connections (never a SYN without ACK, never to a service port), UDP
//! that answers one of its connected sockets (the DNS forwarder's) or a DHCP reply for its
//! client, ICMP errors (path-MTU discovery) and echo replies, and ARP. Everything else,
//! anything addressed to the inside subnet above all, is dropped and counted.
//!
//! The parent NIC sees the macvlan's frames first (TC runs before the macvlan's receive
//! handler), so `parent_ingress` applies the same rules there, with one difference: a socket
//! lookup from the parent cannot find the agent's sockets bound to the macvlan device, so UDP
//! unicast to the macvlan's MAC is left to the macvlan's filter, and any other UDP is dropped
//! (the parent itself has no address and no business with datagrams).

use aya_ebpf::{
    bindings::{
        bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1, BPF_F_CURRENT_NETNS,
        TC_ACT_SHOT, TC_ACT_UNSPEC,
    },
    helpers::{bpf_sk_lookup_udp, bpf_sk_release},
    macros::classifier,
    programs::TcContext,
    EbpfContext,
};
use gateway_common::{
    maps::{DataplaneConfig, PortKey, CONFIG_FLAG_OUTSIDE_IPV6, IPPROTO_TCP, IPPROTO_UDP},
    DropReason,
};

use crate::{
    counters::count_drop,
    maps::{config, OPEN_PORTS},
    packet::*,
};

const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
const BOOTREPLY: u8 = 2;

/// Where the program runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Device {
    Macvlan,
    Parent,
}

#[classifier]
pub fn outside_ingress(ctx: TcContext) -> i32 {
    verdict(check(&ctx, Device::Macvlan))
}

#[classifier]
pub fn parent_ingress(ctx: TcContext) -> i32 {
    verdict(check(&ctx, Device::Parent))
}

#[inline(always)]
fn verdict(checked: Result<(), DropReason>) -> i32 {
    match checked {
        Ok(()) => TC_ACT_UNSPEC, // let the next program or the stack decide
        Err(reason) => {
            count_drop(reason);
            TC_ACT_SHOT as i32
        }
    }
}

#[inline(always)]
fn check(ctx: &TcContext, device: Device) -> Result<(), DropReason> {
    let Ok(ethertype) = ctx.load::<u16>(12).map(u16::from_be) else {
        return Err(DropReason::Truncated);
    };
    let Some(cfg) = config() else {
        return Err(DropReason::NotConfigured);
    };
    match ethertype {
        ETH_P_IP => ipv4(ctx, cfg, device),
        // The macvlan needs ARP; the parent NIC is told never to answer it (arp_ignore).
        ETH_P_ARP => Ok(()),
        ETH_P_IPV6 if cfg.flags & CONFIG_FLAG_OUTSIDE_IPV6 != 0 => Ok(()),
        ETH_P_IPV6 => Err(DropReason::Ipv6),
        ETH_P_8021Q | ETH_P_8021AD => Err(DropReason::VlanTagged),
        _ => Err(DropReason::UnknownEthertype),
    }
}

#[inline(always)]
fn ipv4(ctx: &TcContext, cfg: &DataplaneConfig, device: Device) -> Result<(), DropReason> {
    let l3 = ETH_HLEN;
    let (Ok(version_ihl), Ok(frag), Ok(proto), Ok(src), Ok(dst)) = (
        ctx.load::<u8>(l3),
        ctx.load::<u16>(l3 + 6).map(u16::from_be),
        ctx.load::<u8>(l3 + 9),
        ctx.load::<u32>(l3 + 12),
        ctx.load::<u32>(l3 + 16),
    ) else {
        return Err(DropReason::Truncated);
    };
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || header_len < IPV4_MIN_HLEN {
        return Err(DropReason::MalformedIpv4);
    }
    if cfg.is_inside(dst) {
        return Err(DropReason::OutsideToInside);
    }
    // Nothing the agent talks needs fragments (TCP sets DF), and a later fragment hides ports.
    if frag & 0x3fff != 0 {
        return Err(DropReason::Fragment);
    }
    let l4 = l3 + header_len;
    match proto {
        IPPROTO_TCP => tcp(ctx, l4),
        IPPROTO_UDP => udp(ctx, cfg, device, l4, src, dst),
        IPPROTO_ICMP => icmp(ctx, l4),
        _ => Err(DropReason::ProtocolNotAllowed),
    }
}

#[inline(always)]
fn tcp(ctx: &TcContext, l4: usize) -> Result<(), DropReason> {
    let (Ok(dport), Ok(flags)) = (
        ctx.load::<u16>(l4 + 2).map(u16::from_be),
        ctx.load::<u8>(l4 + 13),
    ) else {
        return Err(DropReason::Truncated);
    };
    if flags & TCP_FLAG_SYN != 0 && flags & TCP_FLAG_ACK == 0 {
        return Err(DropReason::OutsideUnsolicited);
    }
    if is_service_port(IPPROTO_TCP, dport) {
        return Err(DropReason::OutsideUnsolicited);
    }
    Ok(())
}

#[inline(always)]
fn udp(
    ctx: &TcContext,
    cfg: &DataplaneConfig,
    device: Device,
    l4: usize,
    src: u32,
    dst: u32,
) -> Result<(), DropReason> {
    // Kept in network order: the socket lookup takes them as they are on the wire.
    let (Ok(sport_be), Ok(dport_be)) = (ctx.load::<u16>(l4), ctx.load::<u16>(l4 + 2)) else {
        return Err(DropReason::Truncated);
    };
    let (sport, dport) = (u16::from_be(sport_be), u16::from_be(dport_be));
    if is_service_port(IPPROTO_UDP, dport) {
        return Err(DropReason::OutsideUnsolicited);
    }
    // The uplink DHCP client's socket is bound, not connected: a reply is a BOOTREPLY from the
    // server port.
    if sport == DHCP_SERVER_PORT && dport == DHCP_CLIENT_PORT {
        return match ctx.load::<u8>(l4 + UDP_HLEN) {
            Ok(BOOTREPLY) => Ok(()),
            Ok(_) => Err(DropReason::OutsideUnsolicited),
            Err(_) => Err(DropReason::Truncated),
        };
    }
    if device == Device::Parent {
        // Unicast to the macvlan meets the macvlan's filter next; nothing else is wanted.
        return match ctx.load::<[u8; 6]>(0) {
            Ok(dst_mac) if dst_mac == cfg.uplink_mac => Ok(()),
            Ok(_) => Err(DropReason::OutsideUnsolicited),
            Err(_) => Err(DropReason::Truncated),
        };
    }
    if answers_connected_socket(ctx, src, dst, sport_be, dport_be) {
        Ok(())
    } else {
        Err(DropReason::OutsideUnsolicited)
    }
}

/// Whether a UDP socket connected to exactly this sender waits for the datagram. A socket
/// bound to a wildcard (a host service on 0.0.0.0) does not count: nobody asked this sender.
#[inline(always)]
fn answers_connected_socket(ctx: &TcContext, src: u32, dst: u32, sport: u16, dport: u16) -> bool {
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: aya_ebpf::bindings::bpf_sock_tuple__bindgen_ty_1 {
            ipv4: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                saddr: src,
                daddr: dst,
                sport,
                dport,
            },
        },
    };
    // SAFETY: the tuple is a valid, fully initialised IPv4 tuple of the size passed; a socket
    // the lookup returns is released before returning.
    unsafe {
        let sk = bpf_sk_lookup_udp(
            ctx.as_ptr(),
            &mut tuple,
            core::mem::size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32,
            BPF_F_CURRENT_NETNS as u64,
            0,
        );
        if sk.is_null() {
            return false;
        }
        let connected = (*sk).dst_port != 0;
        bpf_sk_release(sk as *mut _);
        connected
    }
}

#[inline(always)]
fn icmp(ctx: &TcContext, l4: usize) -> Result<(), DropReason> {
    let Ok(icmp_type) = ctx.load::<u8>(l4) else {
        return Err(DropReason::Truncated);
    };
    match icmp_type {
        ICMP_ECHO_REPLY | ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM => Ok(()),
        _ => Err(DropReason::OutsideUnsolicited),
    }
}

/// Whether `port` is one the gateway serves on the inside (`OPEN_PORTS`): never to the uplink.
#[inline(always)]
fn is_service_port(protocol: u8, port: u16) -> bool {
    OPEN_PORTS.get_ptr(PortKey::new(protocol, port)).is_some()
}
