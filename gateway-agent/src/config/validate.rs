//! Rules that span tables, run only over values that passed their own rules (so a bad value
//! never causes a second, misleading error here).

use std::collections::hash_map::{Entry, HashMap};

use std::net::{IpAddr, Ipv4Addr};

use super::common::{Inside, Interfaces, Services};
use super::error::Errors;
use super::values::{same_subnet, PortRule, Protocol};
use crate::dhcp::config::Dhcp;
use crate::dns::config::{Dns, DnsUpstream};
use crate::metrics::config::Metrics;
use crate::uplink::config::{Outside, OutsideAddress, Uplink};

/// SOCKS only goes over Tor.
pub(crate) fn socks_needs_tor(services: &Services, tor_enabled: bool, errors: &mut Errors) {
    if services.socks.enabled && !tor_enabled {
        errors.push("socks.enabled", "the SOCKS server needs tor.enabled = true");
    }
}

/// A static outside subnet must not overlap the inside subnet: the gateway could not tell the
/// LAN from the uplink, and the egress guard drops inside-sourced packets on the outside.
pub(crate) fn subnets_disjoint(inside: &Inside, outside: &Outside, errors: &mut Errors) {
    let OutsideAddress::Static {
        address,
        prefix_len,
        ..
    } = outside.address
    else {
        return;
    };
    // Two subnets overlap exactly when they agree on the shorter of the two prefixes.
    if same_subnet(address, inside.address, prefix_len.min(inside.prefix_len)) {
        errors.push(
            "outside.address",
            format!(
                "{address}/{prefix_len} overlaps the inside subnet {} (inside.address); the uplink and the LAN must be different networks",
                inside.subnet()
            ),
        );
    }
}

/// Each (protocol, port) on the inside address has one user; every later user is an error that
/// names the first.
pub(crate) fn unique_ports(users: &[(String, PortRule)], errors: &mut Errors) {
    let mut first: HashMap<PortRule, &str> = HashMap::new();
    for (key, rule) in users {
        match first.entry(*rule) {
            Entry::Occupied(owner) => {
                errors.push(key, format!("{rule} is already used by {}", owner.get()));
            }
            Entry::Vacant(slot) => {
                slot.insert(key);
            }
        }
    }
}

/// The DHCP pool and reservations must lie in the inside subnet, away from the gateway's own
/// address, the network and broadcast addresses. (That reservations are unique is `[dhcp]`'s
/// own rule.)
pub(crate) fn dhcp_fits_inside(inside: &Inside, dhcp: &Dhcp, errors: &mut Errors) {
    let usable = |ip: Ipv4Addr| -> Result<(), String> {
        if !inside.contains(ip) {
            return Err(format!(
                "{ip} is not in the inside subnet {}",
                inside.subnet()
            ));
        }
        if ip == inside.address {
            return Err(format!(
                "{ip} is the gateway's own address (inside.address)"
            ));
        }
        if ip == inside.network() || ip == inside.broadcast() {
            return Err(format!(
                "{ip} is the network or broadcast address of {}",
                inside.subnet()
            ));
        }
        Ok(())
    };
    if let Some((start, end)) = dhcp.pool {
        let problem = usable(start).and_then(|()| usable(end));
        let gateway_inside = u32::from(start) <= u32::from(inside.address)
            && u32::from(inside.address) <= u32::from(end);
        match problem {
            Err(problem) => errors.push("dhcp.pool", problem),
            Ok(()) if gateway_inside => errors.push(
                "dhcp.pool",
                format!(
                    "{start}-{end} contains the gateway's own address {}",
                    inside.address
                ),
            ),
            Ok(()) => {}
        }
    }
    for (i, r) in dhcp.reservations.iter().enumerate() {
        if let Err(problem) = usable(r.address) {
            errors.push(&format!("dhcp.reservations[{i}].address"), problem);
        }
    }
}

/// The macvlan the agent creates must not be one of the configured NICs.
pub(crate) fn macvlan_name_free(interfaces: &Interfaces, uplink: &Uplink, errors: &mut Errors) {
    if uplink.macvlan_name == interfaces.outside || uplink.macvlan_name == interfaces.inside {
        errors.push(
            "outside.macvlan_name",
            format!(
                "{:?} is one of the configured NICs; the agent creates this macvlan itself",
                uplink.macvlan_name
            ),
        );
    }
}

/// With a static uplink no DHCP lease names resolvers, so whatever uses the uplink's resolvers
/// (`dns.upstream = "uplink"`, a `direct` HTTP proxy) needs them configured; otherwise every
/// non-local name would fail.
pub(crate) fn uplink_dns_has_servers(
    outside: &Outside,
    dns: &Dns,
    direct_proxy: bool,
    errors: &mut Errors,
) {
    if !dns.upstream_servers.is_empty() || !matches!(outside.address, OutsideAddress::Static { .. })
    {
        return;
    }
    let user = if dns.upstream == DnsUpstream::Uplink {
        "dns.upstream = \"uplink\""
    } else if direct_proxy {
        "http_proxy.egress = \"direct\""
    } else {
        return;
    };
    errors.push(
        "dns.upstream_servers",
        format!(
            "empty, but {user} with a static outside.address: no DHCP lease names the uplink's resolvers, so list them here"
        ),
    );
}

/// A metrics endpoint on the inside address (or on every address) must not take an enabled
/// service's TCP port; the bind would fail only at start. `dataplane.allow` may name the port:
/// that is how the inside reaches such an endpoint.
pub(crate) fn metrics_port_free(
    inside: &Inside,
    metrics: &Metrics,
    services: &Services,
    errors: &mut Errors,
) {
    let ip = metrics.listen.ip();
    if !metrics.enabled || !(ip.is_unspecified() || ip == IpAddr::V4(inside.address)) {
        return;
    }
    let clash = services
        .enabled_ports()
        .find(|(_, rule)| rule.protocol == Protocol::Tcp && rule.port == metrics.listen.port());
    if let Some((service, rule)) = clash {
        errors.push(
            "metrics.listen",
            format!(
                "{} takes {rule} on the inside address, already used by {service}.port",
                metrics.listen
            ),
        );
    }
}

/// The `.onion` virtual range must not overlap the inside subnet or a static uplink subnet: a
/// steered connection to such an address would mean two things. A range set in the file is an
/// error then; the default gives way (onion names are then NXDOMAIN unless a range is set). (A
/// leased uplink subnet is not known here; inside clients never reach uplink hosts anyway.)
pub(crate) fn onion_range_free(
    inside: &Inside,
    outside: &Outside,
    dns: &mut crate::dns::config::Dns,
    errors: &mut Errors,
) {
    let Some(range) = dns.onion_virtual_range else {
        return;
    };
    let mut clash = None;
    if range.overlaps(inside.address, inside.prefix_len) {
        clash = Some(format!(
            "{range} overlaps the inside subnet {}",
            inside.subnet()
        ));
    }
    if let OutsideAddress::Static {
        address,
        prefix_len,
        ..
    } = outside.address
    {
        if range.overlaps(address, prefix_len) {
            clash = Some(format!(
                "{range} overlaps the uplink subnet {address}/{prefix_len}"
            ));
        }
    }
    match clash {
        Some(problem) if dns.onion_range_set => errors.push("dns.onion_virtual_range", problem),
        Some(_) => dns.onion_virtual_range = None,
        None => {}
    }
}
