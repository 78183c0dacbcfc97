//! The local zone: the gateway's own authoritative data. Service names, reserved hosts and
//! leased hosts under the configured zone (`home.arpa`), and their PTR records in the inside
//! subnet's reverse zones. Leases arrive through [`LeaseSink`].

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Bumped after every change, under the write lock: the fast path's copies of zone
    /// answers are good while it stays what it was when they were made.
    generation: AtomicU64,
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
            generation: AtomicU64::new(0),
        })
    }

    /// A number that changes whenever the zone's data does. Read it before a lookup: an
    /// answer is current while the number is unchanged.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
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
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn remove(&self, lease: &LeaseInfo) {
        let mut data = self.write();
        if data.remove_lease_names_at(lease.address, None) {
            data.serial = data.serial.wrapping_add(1);
            self.generation.fetch_add(1, Ordering::AcqRel);
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
mod tests;
