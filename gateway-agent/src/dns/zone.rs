//! The local zone: the gateway's own authoritative data. Service names, reserved hosts and
//! leased hosts under the configured zone (`home.arpa`), and their PTR records in the inside
//! subnet's reverse zones. Leases arrive through [`LeaseSink`].

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use hickory_proto::rr::rdata::{A, NS, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::names::{parse_ptr_name, ptr_name, reverse_zones};
use crate::config::{DomainName, Inside, Seconds};
use crate::dhcp::config::Reservation;
use crate::lease_events::{LeaseEvent, LeaseInfo, LeaseSink};

/// What the local zone says about a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneAnswer {
    /// The name is outside every zone the gateway is authoritative for.
    NotAuthoritative,
    /// Authoritative records.
    Records(Vec<Record>),
    /// The name exists without records of the type; the zone's SOA for the authority section.
    NoData { soa: Record },
    /// The name does not exist; the zone's SOA for the authority section.
    NxDomain { soa: Record },
}

/// A zone that cannot be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("dns zone {zone:?} is not a valid domain name: {reason}")]
    BadZone { zone: String, reason: String },
    #[error("service name {0:?} is not a valid DNS label")]
    BadServiceName(String),
}

/// Where a name in the zone comes from; earlier variants win over later ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Service,
    Reservation,
    Lease,
}

#[derive(Debug, Clone, Copy)]
struct NameEntry {
    address: Ipv4Addr,
    source: Source,
}

#[derive(Default)]
struct ZoneData {
    /// Lowercase label → address.
    names: HashMap<String, NameEntry>,
    /// Address → the label its PTR names.
    ptrs: HashMap<Ipv4Addr, String>,
    serial: u32,
}

/// The gateway's authoritative data, shared between the DNS server and the DHCP server.
pub struct LocalZone {
    origin: Name,
    reverse_apexes: Vec<Name>,
    /// Primary name server in the SOA: the gateway's own name.
    mname: Name,
    ttl: u32,
    data: RwLock<ZoneData>,
}

impl LocalZone {
    /// A zone `zone` (e.g. `home.arpa`) with `service_names` pointing at `gateway_ip`, the
    /// named `reservations`, and PTRs in the reverse zones of `inside`. Records carry `ttl`.
    pub fn new(
        zone: &DomainName,
        inside: Inside,
        gateway_ip: Ipv4Addr,
        service_names: &[&str],
        reservations: &[Reservation],
        ttl: Seconds,
    ) -> Result<Self, ZoneError> {
        let mut origin = Name::from_ascii(zone).map_err(|err| ZoneError::BadZone {
            zone: zone.to_string(),
            reason: err.to_string(),
        })?;
        origin.set_fqdn(true);
        let origin = origin.to_lowercase();

        let mut data = ZoneData {
            serial: initial_serial(),
            ..ZoneData::default()
        };
        for service in service_names {
            let label = valid_label(service)
                .ok_or_else(|| ZoneError::BadServiceName(service.to_string()))?;
            data.names.insert(
                label.clone(),
                NameEntry {
                    address: gateway_ip,
                    source: Source::Service,
                },
            );
            // The first service name (`gateway` by convention) is the gateway's PTR.
            data.ptrs.entry(gateway_ip).or_insert(label);
        }
        for reservation in reservations {
            let Some(name) = &reservation.name else {
                continue;
            };
            let label = name.to_string();
            if let Some(existing) = data.names.get(&label) {
                tracing::warn!(
                    name = %label,
                    taken_by = ?existing.source,
                    "reservation name already taken; not published"
                );
                continue;
            }
            data.names.insert(
                label.clone(),
                NameEntry {
                    address: reservation.address,
                    source: Source::Reservation,
                },
            );
            data.ptrs.entry(reservation.address).or_insert(label);
        }

        let mname = data
            .ptrs
            .get(&gateway_ip)
            .and_then(|label| Name::from_ascii(label).ok())
            .and_then(|label| label.append_domain(&origin).ok())
            .unwrap_or_else(|| origin.clone());
        Ok(LocalZone {
            reverse_apexes: reverse_zones(&inside),
            origin,
            mname,
            ttl: ttl.get(),
            data: RwLock::new(data),
        })
    }

    /// The zone's apex, e.g. `home.arpa.`.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// Every name in the zone with its address, sorted: `("nas.home.arpa", 198.51.100.5)`.
    pub fn names(&self) -> Vec<(String, Ipv4Addr)> {
        let zone = self.origin.to_ascii();
        let zone = zone.trim_end_matches('.');
        let mut out: Vec<(String, Ipv4Addr)> = self
            .read()
            .names
            .iter()
            .map(|(label, entry)| (format!("{label}.{zone}"), entry.address))
            .collect();
        out.sort();
        out
    }

    /// The authoritative answer for (`name`, `rtype`), class IN. Owner names in the answer
    /// are spelled as asked, so clients that randomize case (0x20) see their own spelling.
    pub fn lookup(&self, name: &Name, rtype: RecordType) -> ZoneAnswer {
        if self.origin.zone_of(name) {
            return self.lookup_forward(name, rtype);
        }
        match self.reverse_apexes.iter().find(|apex| apex.zone_of(name)) {
            Some(apex) => self.lookup_reverse(apex, name, rtype),
            None => ZoneAnswer::NotAuthoritative,
        }
    }

    fn lookup_forward(&self, name: &Name, rtype: RecordType) -> ZoneAnswer {
        let data = self.read();
        let soa = self.soa(&self.origin, data.serial);
        let depth = label_count(name);
        if depth == label_count(&self.origin) {
            return self.apex(name, rtype, soa);
        }
        let entry = (depth == label_count(&self.origin) + 1)
            .then(|| first_label(name))
            .flatten()
            .and_then(|label| data.names.get(&label).copied());
        let Some(entry) = entry else {
            return ZoneAnswer::NxDomain { soa };
        };
        match rtype {
            RecordType::A | RecordType::ANY => ZoneAnswer::Records(vec![Record::from_rdata(
                name.clone(),
                self.ttl,
                RData::A(A::from(entry.address)),
            )]),
            _ => ZoneAnswer::NoData { soa },
        }
    }

    fn lookup_reverse(&self, apex: &Name, name: &Name, rtype: RecordType) -> ZoneAnswer {
        let data = self.read();
        let soa = self.soa(apex, data.serial);
        if label_count(name) == label_count(apex) {
            return self.apex(name, rtype, soa);
        }
        if let Some(ip) = parse_ptr_name(name) {
            let Some(label) = data.ptrs.get(&ip) else {
                return ZoneAnswer::NxDomain { soa };
            };
            let Some(target) = Name::from_ascii(label)
                .ok()
                .and_then(|l| l.append_domain(&self.origin).ok())
            else {
                return ZoneAnswer::NxDomain { soa };
            };
            return match rtype {
                RecordType::PTR | RecordType::ANY => ZoneAnswer::Records(vec![Record::from_rdata(
                    name.clone(),
                    self.ttl,
                    RData::PTR(PTR(target)),
                )]),
                _ => ZoneAnswer::NoData { soa },
            };
        }
        // Between the apex and the addresses: an empty non-terminal exists (NODATA) when some
        // PTR lies below it (RFC 8020), anything else does not.
        let has_descendant = data.ptrs.keys().any(|ip| name.zone_of(&ptr_name(*ip)));
        if has_descendant {
            ZoneAnswer::NoData { soa }
        } else {
            ZoneAnswer::NxDomain { soa }
        }
    }

    /// The apex of a zone: its SOA and NS.
    fn apex(&self, name: &Name, rtype: RecordType, soa: Record) -> ZoneAnswer {
        let mut soa_here = soa.clone();
        soa_here.name = name.clone();
        let ns = Record::from_rdata(name.clone(), self.ttl, RData::NS(NS(self.mname.clone())));
        match rtype {
            RecordType::SOA => ZoneAnswer::Records(vec![soa_here]),
            RecordType::NS => ZoneAnswer::Records(vec![ns]),
            RecordType::ANY => ZoneAnswer::Records(vec![soa_here, ns]),
            _ => ZoneAnswer::NoData { soa },
        }
    }

    fn soa(&self, apex: &Name, serial: u32) -> Record {
        let rname = Name::from_ascii("hostmaster")
            .ok()
            .and_then(|l| l.append_domain(&self.origin).ok())
            .unwrap_or_else(|| self.origin.clone());
        let soa = SOA::new(
            self.mname.clone(),
            rname,
            serial,
            3600,
            600,
            86400,
            // Negative answers are cached as long as positive ones: a new lease must become
            // visible quickly.
            self.ttl,
        );
        Record::from_rdata(apex.clone(), self.ttl, RData::SOA(soa))
    }

    fn read(&self) -> RwLockReadGuard<'_, ZoneData> {
        // A panic while holding the lock leaves consistent data (every update is a few map
        // operations), so a poisoned lock is still usable.
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, ZoneData> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    fn bind(&self, lease: &LeaseInfo) {
        let address = lease.address;
        let wanted = match lease.hostname.as_deref() {
            Some(hostname) => match valid_label(hostname) {
                Some(label) => Some(label),
                None => {
                    tracing::warn!(%address, "lease hostname is not a DNS label; not published");
                    None
                }
            },
            None => None,
        };
        let mut data = self.write();
        let mut changed = data.remove_lease_names_at(address, wanted.as_deref());
        if let Some(label) = wanted {
            match data.names.get(&label).copied() {
                Some(existing) if existing.source != Source::Lease => {
                    // Service names and reservations are the administrator's; a client never
                    // takes them over (think `registry`).
                    if existing.address != address {
                        tracing::warn!(
                            name = %label,
                            %address,
                            taken_by = ?existing.source,
                            "lease hostname is taken; not published"
                        );
                    }
                }
                Some(existing) if existing.address == address => {}
                existing => {
                    if let Some(old) = existing {
                        // The name moved (the DHCP side keeps names unique).
                        data.names.remove(&label);
                        if data.ptrs.get(&old.address) == Some(&label) {
                            data.ptrs.remove(&old.address);
                        }
                    }
                    data.names.insert(
                        label.clone(),
                        NameEntry {
                            address,
                            source: Source::Lease,
                        },
                    );
                    data.ptrs.entry(address).or_insert(label);
                    changed = true;
                }
            }
        }
        if changed {
            data.serial = data.serial.wrapping_add(1);
        }
    }

    fn remove(&self, lease: &LeaseInfo) {
        let mut data = self.write();
        if data.remove_lease_names_at(lease.address, None) {
            data.serial = data.serial.wrapping_add(1);
        }
    }
}

impl ZoneData {
    /// Drops lease names pointing at `address`, except `keep`; true if any went.
    fn remove_lease_names_at(&mut self, address: Ipv4Addr, keep: Option<&str>) -> bool {
        let stale: Vec<String> = self
            .names
            .iter()
            .filter(|(label, entry)| {
                entry.source == Source::Lease
                    && entry.address == address
                    && Some(label.as_str()) != keep
            })
            .map(|(label, _)| label.clone())
            .collect();
        for label in &stale {
            self.names.remove(label);
            if self.ptrs.get(&address) == Some(label) {
                self.ptrs.remove(&address);
            }
        }
        !stale.is_empty()
    }
}

impl LeaseSink for LocalZone {
    fn apply(&self, event: &LeaseEvent) {
        match event {
            LeaseEvent::Bound(lease) => self.bind(lease),
            LeaseEvent::Removed(lease) => self.remove(lease),
        }
    }
}

/// `text` lowercased if it is one RFC 1123 host label.
fn valid_label(text: &str) -> Option<String> {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    ok.then(|| text.to_ascii_lowercase())
}

/// Labels in `name`, a leading `*` included (`Name::num_labels` leaves it out).
fn label_count(name: &Name) -> usize {
    name.iter().count()
}

/// The first label of `name`, lowercased.
fn first_label(name: &Name) -> Option<String> {
    let label = name.iter().next()?;
    std::str::from_utf8(label)
        .ok()
        .map(|l| l.to_ascii_lowercase())
}

/// A serial that grows across restarts: seconds since the epoch (mod 2^32, RFC 1982 copes).
fn initial_serial() -> u32 {
    // A clock before the epoch gives 1, as it always has; 0 would read as "no serial" to some.
    match crate::clock::unix_now() {
        0 => 1,
        secs => secs as u32,
    }
}

#[cfg(test)]
mod tests {
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
}
