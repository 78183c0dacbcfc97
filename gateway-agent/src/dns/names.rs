//! Names that never leave the gateway (RFC 6761, 6762, 6303, 7686, 8375) and the reverse-zone
//! arithmetic for the inside subnet.

use std::net::Ipv4Addr;

use hickory_proto::rr::Name;

use crate::config::Inside;

/// Special-use domains answered locally (NXDOMAIN) unless the local zone serves them:
/// RFC 8375 `home.arpa`, RFC 6762 `local`, RFC 6761 `localhost`, `invalid` and `test`, and
/// RFC 7686 `onion` (a `.onion` name sent to a clearnet resolver leaks what the client visits).
const SPECIAL_DOMAINS: &[&str] = &[
    "home.arpa",
    "local",
    "localhost",
    "invalid",
    "test",
    "onion",
];

/// Reverse zones of address space that is private, local or otherwise meaningless outside a
/// site (RFC 6303, RFC 6598/7793 for 100.64/10). The documentation ranges (RFC 5737, 3849)
/// are deliberately absent: their reverse zones exist in the public DNS.
const PRIVATE_REVERSE_FIXED: &[&str] = &[
    "0.in-addr.arpa",
    "10.in-addr.arpa",
    "127.in-addr.arpa",
    "254.169.in-addr.arpa",
    "168.192.in-addr.arpa",
    "255.255.255.255.in-addr.arpa",
    // fc00::/7 (ULA)
    "c.f.ip6.arpa",
    "d.f.ip6.arpa",
    // fe80::/10 (link-local)
    "8.e.f.ip6.arpa",
    "9.e.f.ip6.arpa",
    "a.e.f.ip6.arpa",
    "b.e.f.ip6.arpa",
    // ::1 and ::
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
];

/// The set of zones whose names are never forwarded upstream.
#[derive(Debug, Clone)]
pub struct NeverForward {
    apexes: Vec<Name>,
}

impl NeverForward {
    /// The fixed list plus the local zone and the inside subnet's reverse zones (which may be
    /// public address space, and still nobody outside needs to learn what we ask about it).
    pub fn new(local_zone: &Name, inside: &Inside) -> Self {
        let mut apexes: Vec<Name> = SPECIAL_DOMAINS
            .iter()
            .chain(PRIVATE_REVERSE_FIXED)
            .filter_map(|zone| fqdn(zone))
            .collect();
        // 172.16/12 and 100.64/10 span several octet-aligned zones.
        apexes.extend((16..=31).filter_map(|b| fqdn(&format!("{b}.172.in-addr.arpa"))));
        apexes.extend((64..=127).filter_map(|b| fqdn(&format!("{b}.100.in-addr.arpa"))));
        apexes.push(local_zone.clone());
        apexes.extend(reverse_zones(inside));
        NeverForward { apexes }
    }

    /// The never-forwarded zone `name` is in (its apex), if any.
    pub fn zone_of(&self, name: &Name) -> Option<&Name> {
        // The most specific apex, so the synthesized SOA names the zone a resolver expects.
        self.apexes
            .iter()
            .filter(|apex| apex.zone_of(name))
            .max_by_key(|apex| apex.num_labels())
    }
}

/// A fully qualified name from text; `None` only for malformed constants.
fn fqdn(text: &str) -> Option<Name> {
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// Whether `name` is `localhost.` or under it (RFC 6761 §6.3: answered with loopback).
pub fn is_localhost(name: &Name) -> bool {
    name.is_localhost()
}

/// The octet-aligned reverse zones that together cover the inside subnet: one for a /24,
/// four for a /22, one /16 zone for a /16, one /24 zone for a /25 (the rest of that /24 is
/// answered locally too; it is the LAN's neighbourhood, not the public's business).
pub fn reverse_zones(inside: &Inside) -> Vec<Name> {
    // Below a /24 one /24 zone holds it all: zones are whole octets (no RFC 2317 games).
    let prefix = u32::from(inside.prefix_len.min(24));
    // Octets that name a zone: at least one, enough to cover the prefix.
    let octets = prefix.div_ceil(8).max(1);
    let spare_bits = octets * 8 - prefix;
    let network = u32::from(inside.network());
    (0..(1u32 << spare_bits))
        .filter_map(|i| {
            let base = network | (i << (32 - octets * 8));
            let bytes = base.to_be_bytes();
            let labels: Vec<String> = bytes[..octets as usize]
                .iter()
                .rev()
                .map(u8::to_string)
                .collect();
            fqdn(&format!("{}.in-addr.arpa", labels.join(".")))
        })
        .collect()
}

/// The address a full `d.c.b.a.in-addr.arpa.` name stands for; strict (no leading zeros, no
/// partial names), so one address has exactly one name.
pub fn parse_ptr_name(name: &Name) -> Option<Ipv4Addr> {
    if name.iter().count() != 6 {
        return None;
    }
    let labels: Vec<&[u8]> = name.iter().collect();
    if !labels[4].eq_ignore_ascii_case(b"in-addr") || !labels[5].eq_ignore_ascii_case(b"arpa") {
        return None;
    }
    let mut octets = [0u8; 4];
    for (i, label) in labels[..4].iter().enumerate() {
        octets[3 - i] = parse_octet(label)?;
    }
    Some(Ipv4Addr::from(octets))
}

fn parse_octet(label: &[u8]) -> Option<u8> {
    if label.is_empty() || label.len() > 3 || (label.len() > 1 && label[0] == b'0') {
        return None;
    }
    std::str::from_utf8(label).ok()?.parse().ok()
}

/// `d.c.b.a.in-addr.arpa.` for `ip`.
pub fn ptr_name(ip: Ipv4Addr) -> Name {
    Name::from(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        fqdn(text).unwrap()
    }

    fn inside(address: [u8; 4], prefix_len: u8) -> Inside {
        Inside {
            address: Ipv4Addr::from(address),
            prefix_len,
        }
    }

    fn never() -> NeverForward {
        NeverForward::new(&name("home.arpa"), &inside([198, 51, 100, 1], 24))
    }

    #[test]
    fn special_use_domains_are_never_forwarded() {
        let nf = never();
        for n in [
            "home.arpa",
            "printer.home.arpa",
            "HOST.Home.Arpa",
            "foo.local",
            "localhost",
            "a.b.localhost",
            "x.invalid",
            "x.test",
            "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion",
        ] {
            assert!(nf.zone_of(&name(n)).is_some(), "{n} must not be forwarded");
        }
    }

    #[test]
    fn private_reverse_zones_are_never_forwarded() {
        let nf = never();
        for n in [
            "1.0.0.10.in-addr.arpa",
            "1.0.16.172.in-addr.arpa",
            "1.0.31.172.in-addr.arpa",
            "1.1.168.192.in-addr.arpa",
            "1.0.0.127.in-addr.arpa",
            "1.1.254.169.in-addr.arpa",
            "1.0.64.100.in-addr.arpa",
            "1.0.127.100.in-addr.arpa",
            "1.d.f.ip6.arpa",
            "1.8.e.f.ip6.arpa",
            // the inside subnet's own reverse zone, public (documentation) space or not
            "7.100.51.198.in-addr.arpa",
        ] {
            assert!(nf.zone_of(&name(n)).is_some(), "{n} must not be forwarded");
        }
    }

    #[test]
    fn public_and_documentation_names_are_forwarded() {
        let nf = never();
        for n in [
            "example.com",
            "arpa",
            "in-addr.arpa",
            "1.0.15.172.in-addr.arpa",
            "1.0.32.172.in-addr.arpa",
            "1.0.63.100.in-addr.arpa",
            "1.0.128.100.in-addr.arpa",
            "10.2.0.192.in-addr.arpa",
            "10.113.0.203.in-addr.arpa",
            "10.101.51.198.in-addr.arpa",
            "1.1.e.f.ip6.arpa",
            "homearpa.example",
            "local.example.com",
        ] {
            assert!(nf.zone_of(&name(n)).is_none(), "{n} should be forwarded");
        }
    }

    #[test]
    fn most_specific_apex_wins() {
        let nf = NeverForward::new(&name("lan.home.arpa"), &inside([10, 1, 2, 1], 24));
        assert_eq!(
            nf.zone_of(&name("x.lan.home.arpa")),
            Some(&name("lan.home.arpa"))
        );
        assert_eq!(nf.zone_of(&name("x.home.arpa")), Some(&name("home.arpa")));
        assert_eq!(
            nf.zone_of(&name("5.2.1.10.in-addr.arpa")),
            Some(&name("2.1.10.in-addr.arpa"))
        );
    }

    #[test]
    fn reverse_zones_cover_the_subnet() {
        let zones = |a, p| -> Vec<String> {
            reverse_zones(&inside(a, p))
                .iter()
                .map(|n| n.to_ascii())
                .collect()
        };
        assert_eq!(zones([198, 51, 100, 1], 24), ["100.51.198.in-addr.arpa."]);
        assert_eq!(
            zones([198, 51, 101, 1], 22),
            [
                "100.51.198.in-addr.arpa.",
                "101.51.198.in-addr.arpa.",
                "102.51.198.in-addr.arpa.",
                "103.51.198.in-addr.arpa.",
            ]
        );
        assert_eq!(zones([10, 1, 2, 3], 16), ["1.10.in-addr.arpa."]);
        assert_eq!(zones([127, 0, 0, 1], 8), ["127.in-addr.arpa."]);
        assert_eq!(zones([198, 51, 100, 129], 25), ["100.51.198.in-addr.arpa."]);
    }

    #[test]
    fn ptr_names_round_trip_strictly() {
        let ip = Ipv4Addr::new(198, 51, 100, 7);
        assert_eq!(ptr_name(ip).to_ascii(), "7.100.51.198.in-addr.arpa.");
        assert_eq!(parse_ptr_name(&ptr_name(ip)), Some(ip));
        assert_eq!(parse_ptr_name(&name("7.100.51.198.IN-ADDR.ARPA")), Some(ip));
        assert_eq!(parse_ptr_name(&name("07.100.51.198.in-addr.arpa")), None);
        assert_eq!(parse_ptr_name(&name("256.100.51.198.in-addr.arpa")), None);
        assert_eq!(parse_ptr_name(&name("100.51.198.in-addr.arpa")), None);
        assert_eq!(parse_ptr_name(&name("1.7.100.51.198.in-addr.arpa")), None);
        assert_eq!(parse_ptr_name(&name("7.100.51.198.ip6.arpa")), None);
    }
}
