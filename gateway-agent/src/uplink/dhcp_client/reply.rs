//! What the client reads in a server's reply: the server identifier and the lease an ACK grants.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, OptionCode};

use super::timing::INFINITE_SECS;
use super::Lease;

pub(super) fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(id)) if usable_unicast(*id) => Some(*id),
        _ => None,
    }
}

/// Whether `ip` can be a host's address: not 0.0.0.0, broadcast, multicast, loopback or class E.
pub fn usable_unicast(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_loopback()
        || ip.octets()[0] >= 240)
}

/// The lease in an ACK, or `None` if the ACK is unusable (no usable address, no lease time, a
/// non-contiguous mask).
pub(super) fn parse_lease(msg: &Message, server: Ipv4Addr, obtained_at: Duration) -> Option<Lease> {
    let address = msg.yiaddr();
    if !usable_unicast(address) {
        return None;
    }
    let opts = msg.opts();
    let lease_secs = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(secs)) => *secs,
        _ => return None,
    };
    let prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => prefix_of(*mask)?,
        _ => classful_prefix(address),
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(routers)) => routers
            .iter()
            .copied()
            .find(|r| usable_unicast(*r) && *r != address),
        _ => None,
    };
    let dns_servers = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(servers)) => servers
            .iter()
            .copied()
            .filter(|s| usable_unicast(*s))
            .collect(),
        _ => Vec::new(),
    };
    let (t1, t2) = timers(
        lease_secs,
        match opts.get(OptionCode::Renewal) {
            Some(DhcpOption::Renewal(t1)) => Some(*t1),
            _ => None,
        },
        match opts.get(OptionCode::Rebinding) {
            Some(DhcpOption::Rebinding(t2)) => Some(*t2),
            _ => None,
        },
    );
    Some(Lease {
        address,
        prefix_len,
        router,
        dns_servers,
        server,
        lease_time: Duration::from_secs(u64::from(lease_secs)),
        t1,
        t2,
        obtained_at,
    })
}

/// T1 and T2 as offered if they make sense (T1 ≤ T2 ≤ lease), else the RFC 2131 §4.4.5
/// defaults of 1/2 and 7/8 of the lease.
pub(super) fn timers(lease: u32, t1: Option<u32>, t2: Option<u32>) -> (Duration, Duration) {
    let secs = |s: u64| Duration::from_secs(s);
    let lease = u64::from(lease);
    if lease == u64::from(INFINITE_SECS) {
        return (secs(lease), secs(lease));
    }
    let default_t1 = lease / 2;
    let default_t2 = lease * 7 / 8;
    match (t1.map(u64::from), t2.map(u64::from)) {
        (Some(t1), Some(t2)) if t1 <= t2 && t2 <= lease => (secs(t1), secs(t2)),
        (Some(t1), None) if t1 <= default_t2 => (secs(t1), secs(default_t2)),
        (None, Some(t2)) if default_t1 <= t2 && t2 <= lease => (secs(default_t1), secs(t2)),
        _ => (secs(default_t1), secs(default_t2)),
    }
}

/// The prefix length of a contiguous mask.
pub(super) fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    // A /0 "subnet" would put the whole Internet on-link.
    (len > 0 && bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// RFC 1122 §3.3.1.1's fallback when a server sends no mask.
pub(super) fn classful_prefix(address: Ipv4Addr) -> u8 {
    match address.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}
