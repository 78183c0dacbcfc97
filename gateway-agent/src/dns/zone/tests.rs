//! The local zone's tests: leases and reservations in, answers out, and the cases a hostile
//! or careless client could make of names.

use super::*;
use crate::dhcp::config::ClientKey;
use crate::mac::MacAddr;

const GW: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SERVICES: &[&str] = &["gateway", "registry", "mirror", "proxy", "socks"];
const TTL: Seconds = Seconds::new(60);

fn home_arpa() -> DomainName {
    "home.arpa".parse().unwrap()
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

fn inside() -> Inside {
    Inside {
        address: GW,
        prefix_len: 24,
    }
}

fn zone() -> LocalZone {
    let reservations = [
        Reservation {
            owner: ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 5])),
            address: Ipv4Addr::new(198, 51, 100, 5),
            name: Some("NAS".parse().unwrap()),
        },
        Reservation {
            owner: ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 6])),
            address: Ipv4Addr::new(198, 51, 100, 6),
            name: None,
        },
        Reservation {
            owner: ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 7])),
            address: Ipv4Addr::new(198, 51, 100, 7),
            name: Some("registry".parse().unwrap()),
        },
    ];
    LocalZone::new(&home_arpa(), inside(), GW, SERVICES, &reservations, TTL).unwrap()
}

fn lease(last: u8, hostname: Option<&str>) -> LeaseInfo {
    LeaseInfo {
        address: Ipv4Addr::new(198, 51, 100, last),
        mac: MacAddr::new([2, 0, 0, 0, 1, last]),
        client_id: None,
        hostname: hostname.map(str::to_owned),
        expires_unix: 0,
    }
}

fn a(zone: &LocalZone, n: &str) -> Option<Ipv4Addr> {
    match zone.lookup(&name(n), RecordType::A) {
        ZoneAnswer::Records(r) => match &r[0].data {
            RData::A(a) => Some(a.0),
            other => panic!("{other:?}"),
        },
        ZoneAnswer::NxDomain { .. } => None,
        other => panic!("{n}: {other:?}"),
    }
}

fn ptr(zone: &LocalZone, ip: [u8; 4]) -> Option<String> {
    match zone.lookup(&ptr_name(Ipv4Addr::from(ip)), RecordType::PTR) {
        ZoneAnswer::Records(r) => match &r[0].data {
            RData::PTR(p) => Some(p.0.to_ascii()),
            other => panic!("{other:?}"),
        },
        ZoneAnswer::NxDomain { .. } => None,
        other => panic!("{ip:?}: {other:?}"),
    }
}

#[test]
fn service_names_point_at_the_gateway() {
    let z = zone();
    for s in SERVICES {
        assert_eq!(a(&z, &format!("{s}.home.arpa.")), Some(GW), "{s}");
    }
    assert_eq!(
        ptr(&z, [198, 51, 100, 1]).as_deref(),
        Some("gateway.home.arpa.")
    );
}

#[test]
fn named_reservations_are_published_and_cannot_take_service_names() {
    let z = zone();
    assert_eq!(
        a(&z, "nas.home.arpa."),
        Some(Ipv4Addr::new(198, 51, 100, 5))
    );
    assert_eq!(
        ptr(&z, [198, 51, 100, 5]).as_deref(),
        Some("nas.home.arpa.")
    );
    assert_eq!(ptr(&z, [198, 51, 100, 6]), None, "no name, no PTR");
    assert_eq!(a(&z, "registry.home.arpa."), Some(GW));
    assert_eq!(ptr(&z, [198, 51, 100, 7]), None);
}

#[test]
fn leases_come_and_go() {
    let z = zone();
    z.apply(&LeaseEvent::Bound(lease(100, Some("laptop"))));
    assert_eq!(
        a(&z, "laptop.home.arpa."),
        Some(Ipv4Addr::new(198, 51, 100, 100))
    );
    assert_eq!(
        ptr(&z, [198, 51, 100, 100]).as_deref(),
        Some("laptop.home.arpa.")
    );
    // Renewal changes nothing.
    z.apply(&LeaseEvent::Bound(lease(100, Some("laptop"))));
    assert_eq!(
        a(&z, "laptop.home.arpa."),
        Some(Ipv4Addr::new(198, 51, 100, 100))
    );

    z.apply(&LeaseEvent::Removed(lease(100, Some("laptop"))));
    assert_eq!(a(&z, "laptop.home.arpa."), None);
    assert_eq!(ptr(&z, [198, 51, 100, 100]), None);
    assert!(z.names().iter().all(|(n, _)| n != "laptop.home.arpa"));
}

#[test]
fn a_renamed_or_moved_lease_leaves_no_stale_records() {
    let z = zone();
    z.apply(&LeaseEvent::Bound(lease(100, Some("old"))));
    z.apply(&LeaseEvent::Bound(lease(100, Some("new"))));
    assert_eq!(a(&z, "old.home.arpa."), None);
    assert_eq!(
        ptr(&z, [198, 51, 100, 100]).as_deref(),
        Some("new.home.arpa.")
    );

    // The name moves to another address.
    z.apply(&LeaseEvent::Bound(lease(101, Some("new"))));
    assert_eq!(
        a(&z, "new.home.arpa."),
        Some(Ipv4Addr::new(198, 51, 100, 101))
    );
    assert_eq!(ptr(&z, [198, 51, 100, 100]), None);

    // A lease without a hostname drops the name its address had.
    z.apply(&LeaseEvent::Bound(lease(101, None)));
    assert_eq!(a(&z, "new.home.arpa."), None);
    assert_eq!(ptr(&z, [198, 51, 100, 101]), None);
}

#[test]
fn clients_cannot_take_service_or_reserved_names() {
    let z = zone();
    z.apply(&LeaseEvent::Bound(lease(100, Some("registry"))));
    z.apply(&LeaseEvent::Bound(lease(101, Some("nas"))));
    assert_eq!(a(&z, "registry.home.arpa."), Some(GW));
    assert_eq!(
        a(&z, "nas.home.arpa."),
        Some(Ipv4Addr::new(198, 51, 100, 5))
    );
    assert_eq!(ptr(&z, [198, 51, 100, 100]), None);
    // Removing such a lease does not remove the name it asked for.
    z.apply(&LeaseEvent::Removed(lease(101, Some("nas"))));
    assert_eq!(
        a(&z, "nas.home.arpa."),
        Some(Ipv4Addr::new(198, 51, 100, 5))
    );
    // Invalid labels are not published.
    z.apply(&LeaseEvent::Bound(lease(102, Some("bad.name"))));
    assert_eq!(ptr(&z, [198, 51, 100, 102]), None);
}

#[test]
fn lookups_are_case_insensitive_and_keep_the_askers_spelling() {
    let z = zone();
    z.apply(&LeaseEvent::Bound(lease(100, Some("Laptop"))));
    let asked = name("LAPTOP.Home.ARPA.");
    match z.lookup(&asked, RecordType::A) {
        ZoneAnswer::Records(r) => {
            assert!(r[0].name.eq_case(&asked));
            assert_eq!(r[0].ttl, 60);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ptr(&z, [198, 51, 100, 100]).as_deref(),
        Some("laptop.home.arpa.")
    );
    let upper = name("100.100.51.198.IN-ADDR.ARPA.");
    assert!(matches!(
        z.lookup(&upper, RecordType::PTR),
        ZoneAnswer::Records(_)
    ));
}

#[test]
fn nxdomain_nodata_and_apex() {
    let z = zone();
    let origin_soa = |answer: ZoneAnswer| match answer {
        ZoneAnswer::NxDomain { soa } | ZoneAnswer::NoData { soa } => soa,
        other => panic!("{other:?}"),
    };
    let soa = origin_soa(z.lookup(&name("nothere.home.arpa."), RecordType::A));
    assert_eq!(soa.name, name("home.arpa."));
    assert!(matches!(
        z.lookup(&name("nothere.home.arpa."), RecordType::A),
        ZoneAnswer::NxDomain { .. }
    ));
    for deeper in [
        "x.gateway.home.arpa.",
        "*.home.arpa.",
        "*.gateway.home.arpa.",
    ] {
        assert!(
            matches!(
                z.lookup(&name(deeper), RecordType::A),
                ZoneAnswer::NxDomain { .. }
            ),
            "{deeper}"
        );
    }
    assert!(matches!(
        z.lookup(&name("gateway.home.arpa."), RecordType::AAAA),
        ZoneAnswer::NoData { .. }
    ));
    assert!(matches!(
        z.lookup(&name("home.arpa."), RecordType::A),
        ZoneAnswer::NoData { .. }
    ));
    match z.lookup(&name("home.arpa."), RecordType::SOA) {
        ZoneAnswer::Records(r) => match &r[0].data {
            RData::SOA(soa) => {
                assert_eq!(soa.mname, name("gateway.home.arpa."));
                assert_eq!(soa.minimum, 60);
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        z.lookup(&name("home.arpa."), RecordType::NS),
        ZoneAnswer::Records(_)
    ));
    // Reverse: a missing address, an empty non-terminal, the apex.
    let soa = origin_soa(z.lookup(&name("9.100.51.198.in-addr.arpa."), RecordType::PTR));
    assert_eq!(soa.name, name("100.51.198.in-addr.arpa."));
    assert!(matches!(
        z.lookup(&name("100.51.198.in-addr.arpa."), RecordType::SOA),
        ZoneAnswer::Records(_)
    ));
    assert!(matches!(
        z.lookup(&name("1.100.51.198.in-addr.arpa."), RecordType::A),
        ZoneAnswer::NoData { .. }
    ));
    // Not ours at all.
    assert_eq!(
        z.lookup(&name("example.com."), RecordType::A),
        ZoneAnswer::NotAuthoritative
    );
    assert_eq!(
        z.lookup(&name("1.101.51.198.in-addr.arpa."), RecordType::PTR),
        ZoneAnswer::NotAuthoritative
    );
}

#[test]
fn empty_non_terminals_in_a_wide_reverse_zone() {
    let wide = Inside {
        address: Ipv4Addr::new(10, 1, 0, 1),
        prefix_len: 16,
    };
    let z = LocalZone::new(
        &home_arpa(),
        wide,
        Ipv4Addr::new(10, 1, 0, 1),
        SERVICES,
        &[],
        TTL,
    )
    .unwrap();
    assert!(matches!(
        z.lookup(&name("0.1.10.in-addr.arpa."), RecordType::PTR),
        ZoneAnswer::NoData { .. }
    ));
    assert!(matches!(
        z.lookup(&name("7.1.10.in-addr.arpa."), RecordType::PTR),
        ZoneAnswer::NxDomain { .. }
    ));
}

#[test]
fn serial_follows_changes() {
    let z = zone();
    let serial = |z: &LocalZone| z.read().serial;
    let s0 = serial(&z);
    z.apply(&LeaseEvent::Bound(lease(100, Some("laptop"))));
    let s1 = serial(&z);
    assert_ne!(s0, s1);
    z.apply(&LeaseEvent::Bound(lease(100, Some("laptop"))));
    assert_eq!(serial(&z), s1, "a renewal is no change");
}

#[test]
fn names_lists_everything() {
    let z = zone();
    z.apply(&LeaseEvent::Bound(lease(100, Some("laptop"))));
    let names = z.names();
    assert!(names.contains(&(
        "laptop.home.arpa".to_owned(),
        Ipv4Addr::new(198, 51, 100, 100)
    )));
    assert!(names.contains(&("gateway.home.arpa".to_owned(), GW)));
    assert!(names.contains(&("nas.home.arpa".to_owned(), Ipv4Addr::new(198, 51, 100, 5))));
    assert_eq!(names.len(), SERVICES.len() + 2);
}

#[test]
fn bad_settings_are_errors() {
    let zone = home_arpa();
    assert!(LocalZone::new(&zone, inside(), GW, &["not a label"], &[], TTL).is_err());
}
