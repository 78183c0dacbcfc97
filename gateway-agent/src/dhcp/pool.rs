//! Which address a client may have. Reservations first; then the client's own (previous)
//! address; then the one it asks for; then the lowest address nobody has ever had; then the
//! one that has been unused longest.

use crate::mac::MacAddr;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::config::{ClientKey, Reservation};
use crate::config::Inside;

use super::lease_table::LeaseTable;

/// The address space and its fixed assignments.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    inside: Inside,
    server_ip: Ipv4Addr,
    first: u32,
    last: u32,
    reservations: Vec<Reservation>,
    /// Never handed out dynamically: reserved addresses, the gateway, network and broadcast.
    blocked: BTreeSet<u32>,
}

impl Pool {
    /// Checks the range and reservations against the subnet; the error names the problem.
    pub(crate) fn new(
        inside: Inside,
        server_ip: Ipv4Addr,
        (first, last): (Ipv4Addr, Ipv4Addr),
        reservations: Vec<Reservation>,
    ) -> Result<Pool, String> {
        if !inside.contains(server_ip) {
            return Err(format!(
                "the server address {server_ip} is not in {}",
                inside.subnet()
            ));
        }
        if !inside.contains(first) || !inside.contains(last) || first > last {
            return Err(format!(
                "the pool {first}-{last} is not a range inside {}",
                inside.subnet()
            ));
        }
        let special = [server_ip, inside.network(), inside.broadcast()];
        let mut blocked: BTreeSet<u32> = special.into_iter().map(u32::from).collect();
        for reservation in &reservations {
            let address = reservation.address;
            if !inside.contains(address) || special.contains(&address) {
                return Err(format!(
                    "the reserved address {address} is not a host address in {} other than the gateway's",
                    inside.subnet()
                ));
            }
            if !blocked.insert(u32::from(address)) {
                return Err(format!("{address} is reserved twice"));
            }
        }
        Ok(Pool {
            inside,
            server_ip,
            first: u32::from(first),
            last: u32::from(last),
            reservations,
            blocked,
        })
    }

    /// The reservation for a client: by its identifier if it sends one, else (or if none
    /// matches) by its MAC, so a reservation by MAC still holds for a client that sends a DUID.
    pub(crate) fn reservation(
        &self,
        client_id: Option<&[u8]>,
        mac: MacAddr,
    ) -> Option<&Reservation> {
        let by_id = client_id.and_then(|id| {
            self.reservations
                .iter()
                .find(|r| matches!(&r.owner, ClientKey::ClientId(owner) if owner == id))
        });
        by_id.or_else(|| {
            self.reservations
                .iter()
                .find(|r| r.owner == ClientKey::Mac(mac))
        })
    }

    pub(crate) fn reservations(&self) -> &[Reservation] {
        &self.reservations
    }

    /// How many addresses the dynamic pool has.
    pub(crate) fn size(&self) -> u64 {
        let blocked = self.blocked.range(self.first..=self.last).count() as u64;
        u64::from(self.last - self.first) + 1 - blocked
    }

    /// Whether `address` may be leased to `key` (with its `reservation`) at `now`.
    pub(crate) fn leasable(
        &self,
        table: &LeaseTable,
        key: &ClientKey,
        reservation: Option<&Reservation>,
        address: Ipv4Addr,
        now: u64,
    ) -> bool {
        let raw = u32::from(address);
        if !self.inside.contains(address)
            || address == self.server_ip
            || address == self.inside.network()
            || address == self.inside.broadcast()
        {
            return false;
        }
        let allowed = match reservation {
            Some(reservation) => address == reservation.address,
            None => (self.first..=self.last).contains(&raw) && !self.blocked.contains(&raw),
        };
        allowed
            && !table.is_quarantined(address, now)
            && !table
                .at(address)
                .is_some_and(|lease| &lease.key != key && lease.is_active(now))
    }

    /// The address to offer, or `None` when the pool is exhausted (or the client's reserved
    /// address is unusable).
    pub(crate) fn choose(
        &self,
        table: &LeaseTable,
        key: &ClientKey,
        reservation: Option<&Reservation>,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        let leasable = |address| self.leasable(table, key, reservation, address, now);
        if let Some(reservation) = reservation {
            return leasable(reservation.address).then_some(reservation.address);
        }
        if let Some(previous) = table.get(key).map(|lease| lease.address) {
            if leasable(previous) {
                return Some(previous);
            }
        }
        if let Some(requested) = requested.filter(|&address| leasable(address)) {
            return Some(requested);
        }
        self.first_unused(table).or_else(|| {
            // Everything has been used: take the hint least recently used by someone else.
            table
                .iter()
                .filter(|lease| lease.key != *key && leasable(lease.address))
                .min_by_key(|lease| (lease.expires, u32::from(lease.address)))
                .map(|lease| lease.address)
        })
    }

    /// The lowest pool address with no record, reservation or quarantine at all. Walks only
    /// the taken addresses, so a large pool costs nothing until it fills.
    fn first_unused(&self, table: &LeaseTable) -> Option<Ipv4Addr> {
        let mut candidate = self.first;
        loop {
            if candidate > self.last {
                return None;
            }
            let next_taken = [
                self.blocked.range(candidate..).next().copied(),
                table.addresses_from(candidate).next(),
                table.quarantined_from(candidate).next(),
            ]
            .into_iter()
            .flatten()
            .min();
            if next_taken != Some(candidate) {
                return Some(Ipv4Addr::from(candidate));
            }
            candidate = candidate.checked_add(1)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::lease_table::{Lease, State};
    use crate::dhcp::store::StoredQuarantine;

    const NOW: u64 = 1_000;

    fn inside() -> Inside {
        Inside {
            address: Ipv4Addr::new(198, 51, 100, 1),
            prefix_len: 24,
        }
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 51, 100, last)
    }

    fn mac(last: u8) -> ClientKey {
        ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, last]))
    }

    fn pool(first: u8, last: u8, reservations: Vec<Reservation>) -> Pool {
        Pool::new(inside(), ip(1), (ip(first), ip(last)), reservations).unwrap()
    }

    fn record(key: ClientKey, address: Ipv4Addr, state: State, expires: u64) -> Lease {
        Lease {
            key,
            address,
            mac: MacAddr::new([2, 0, 0, 0, 0, 0]),
            client_id: None,
            hostname: None,
            expires,
            state,
        }
    }

    #[test]
    fn rejects_bad_ranges() {
        assert!(Pool::new(inside(), ip(1), (ip(10), ip(5)), vec![]).is_err());
        assert!(Pool::new(
            inside(),
            ip(1),
            (ip(10), Ipv4Addr::new(10, 0, 0, 1)),
            vec![]
        )
        .is_err());
        assert!(Pool::new(
            inside(),
            Ipv4Addr::new(10, 0, 0, 1),
            (ip(10), ip(20)),
            vec![]
        )
        .is_err());
        let on_gateway = Reservation {
            owner: mac(1),
            address: ip(1),
            name: None,
        };
        assert!(Pool::new(inside(), ip(1), (ip(10), ip(20)), vec![on_gateway]).is_err());
        let twice = |n| Reservation {
            owner: mac(n),
            address: ip(50),
            name: None,
        };
        assert!(Pool::new(inside(), ip(1), (ip(10), ip(20)), vec![twice(1), twice(2)]).is_err());
    }

    #[test]
    fn lowest_unused_skips_taken_reserved_and_quarantined() {
        let reserved = Reservation {
            owner: mac(9),
            address: ip(11),
            name: None,
        };
        let pool = pool(10, 15, vec![reserved]);
        assert_eq!(pool.size(), 5);
        let mut table = LeaseTable::default();
        table.insert(record(mac(1), ip(10), State::Bound, NOW + 10));
        table.quarantine(
            ip(12),
            StoredQuarantine {
                until: NOW + 10,
                mac: MacAddr::new([0; 6]),
            },
        );
        assert_eq!(pool.choose(&table, &mac(2), None, None, NOW), Some(ip(13)));
        // A requested free address wins over the lowest.
        assert_eq!(
            pool.choose(&table, &mac(2), None, Some(ip(15)), NOW),
            Some(ip(15))
        );
        // Requested but held, reserved, quarantined or outside: ignored.
        for requested in [ip(10), ip(11), ip(12), ip(200), Ipv4Addr::new(10, 0, 0, 1)] {
            assert_eq!(
                pool.choose(&table, &mac(2), None, Some(requested), NOW),
                Some(ip(13))
            );
        }
        // The owner of the lease gets its own address back.
        assert_eq!(pool.choose(&table, &mac(1), None, None, NOW), Some(ip(10)));
        // The reserved client gets its reservation even outside the pool.
        let reservation = pool
            .reservation(None, MacAddr::new([2, 0, 0, 0, 0, 9]))
            .cloned();
        assert_eq!(
            pool.choose(&table, &mac(9), reservation.as_ref(), Some(ip(14)), NOW),
            Some(ip(11))
        );
    }

    #[test]
    fn exhaustion_then_reuse_of_the_oldest_hint() {
        let pool = pool(10, 12, vec![]);
        let mut table = LeaseTable::default();
        table.insert(record(mac(1), ip(10), State::Bound, NOW + 10));
        table.insert(record(mac(2), ip(11), State::Offered, NOW + 10));
        table.insert(record(mac(3), ip(12), State::Bound, NOW + 10));
        assert_eq!(pool.choose(&table, &mac(4), None, None, NOW), None);
        // Past their expiry, both bound leases are reusable, the older first.
        table.insert(record(mac(1), ip(10), State::Expired, NOW - 5));
        table.insert(record(mac(3), ip(12), State::Released, NOW - 50));
        assert_eq!(pool.choose(&table, &mac(4), None, None, NOW), Some(ip(12)));
        // But the old owner comes first for its own.
        assert_eq!(pool.choose(&table, &mac(1), None, None, NOW), Some(ip(10)));
    }

    #[test]
    fn reservation_by_client_id_then_mac() {
        let by_id = Reservation {
            owner: ClientKey::ClientId(vec![0xff, 1, 2]),
            address: ip(20),
            name: None,
        };
        let by_mac = Reservation {
            owner: mac(7),
            address: ip(21),
            name: None,
        };
        let pool = pool(100, 199, vec![by_id, by_mac]);
        let id: &[u8] = &[0xff, 1, 2];
        assert_eq!(
            pool.reservation(Some(id), MacAddr::new([2, 0, 0, 0, 0, 7]))
                .unwrap()
                .address,
            ip(20)
        );
        assert_eq!(
            pool.reservation(Some(&[1, 2]), MacAddr::new([2, 0, 0, 0, 0, 7]))
                .unwrap()
                .address,
            ip(21)
        );
        assert_eq!(
            pool.reservation(None, MacAddr::new([2, 0, 0, 0, 0, 7]))
                .unwrap()
                .address,
            ip(21)
        );
        assert!(pool
            .reservation(None, MacAddr::new([2, 0, 0, 0, 0, 8]))
            .is_none());
    }

    #[test]
    fn a_full_pool_walk_is_cheap() {
        // A /16 pool with its first 60000 addresses held: still found by walking.
        let inside = Inside {
            address: Ipv4Addr::new(10, 1, 0, 1),
            prefix_len: 16,
        };
        let pool = Pool::new(
            inside,
            inside.address,
            (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 255, 254)),
            vec![],
        )
        .unwrap();
        let mut table = LeaseTable::default();
        for i in 0..60_000u32 {
            let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 2)) + i);
            table.insert(record(
                ClientKey::ClientId(i.to_be_bytes().to_vec()),
                address,
                State::Bound,
                NOW + 10,
            ));
        }
        let expected = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 2)) + 60_000);
        assert_eq!(
            pool.choose(&table, &mac(1), None, None, NOW),
            Some(expected)
        );
    }
}
