//! The in-memory lease table: one record per client, at most one record per address, plus the
//! quarantined addresses. Only records that are offered or bound (and not yet past their
//! expiry) hold their address; released and expired ones are hints that give a returning
//! client its old address, and make way for anyone else.

use crate::mac::MacAddr;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use super::config::ClientKey;
use crate::lease_events::LeaseInfo;

use super::store::{StoredLease, StoredQuarantine};

/// Where a client's record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Offered, not yet requested; memory only.
    Offered,
    /// Acknowledged: in the store, the DNS zone and the dataplane maps.
    Bound,
    /// Given back by the client.
    Released,
    /// Ran out.
    Expired,
}

impl State {
    /// The spelling `gateway-agent leases` shows.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Offered => "offered",
            State::Bound => "bound",
            State::Released => "released",
            State::Expired => "expired",
        }
    }
}

/// One client's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub key: ClientKey,
    pub address: Ipv4Addr,
    pub mac: MacAddr,
    pub client_id: Option<Vec<u8>>,
    pub hostname: Option<String>,
    /// Unix seconds.
    pub expires: u64,
    pub state: State,
}

impl Lease {
    /// Whether the record holds its address at `now`.
    pub(crate) fn is_active(&self, now: u64) -> bool {
        matches!(self.state, State::Offered | State::Bound) && self.expires > now
    }

    /// What the sinks see.
    pub(crate) fn info(&self) -> LeaseInfo {
        LeaseInfo {
            address: self.address,
            mac: self.mac,
            client_id: self.client_id.clone(),
            hostname: self.hostname.clone(),
            expires_unix: self.expires,
        }
    }

    /// What the store keeps.
    pub(crate) fn stored(&self) -> StoredLease {
        StoredLease {
            address: self.address,
            mac: self.mac,
            client_id: self.client_id.clone(),
            hostname: self.hostname.clone(),
            expires: self.expires,
        }
    }
}

/// All records, indexed by client and by address.
#[derive(Debug, Default)]
pub(crate) struct LeaseTable {
    by_key: HashMap<ClientKey, Lease>,
    by_address: BTreeMap<u32, ClientKey>,
    quarantine: BTreeMap<u32, StoredQuarantine>,
}

impl LeaseTable {
    pub(crate) fn get(&self, key: &ClientKey) -> Option<&Lease> {
        self.by_key.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &ClientKey) -> Option<&mut Lease> {
        self.by_key.get_mut(key)
    }

    /// The record at `address`, whatever its state.
    pub(crate) fn at(&self, address: Ipv4Addr) -> Option<&Lease> {
        self.by_address
            .get(&u32::from(address))
            .and_then(|key| self.by_key.get(key))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.by_key.values()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Inserts or replaces `lease` (by its key). Any other record at the same address is
    /// evicted and returned; the caller has checked it does not hold the address, and tells
    /// the sinks if it was bound.
    pub(crate) fn insert(&mut self, lease: Lease) -> Option<Lease> {
        let address = u32::from(lease.address);
        if let Some(old) = self.by_key.get(&lease.key) {
            if old.address != lease.address {
                self.by_address.remove(&u32::from(old.address));
            }
        }
        let evicted = match self.by_address.insert(address, lease.key.clone()) {
            Some(other) if other != lease.key => self.by_key.remove(&other),
            _ => None,
        };
        self.by_key.insert(lease.key.clone(), lease);
        evicted
    }

    /// Removes the client's record.
    pub(crate) fn remove(&mut self, key: &ClientKey) -> Option<Lease> {
        let lease = self.by_key.remove(key)?;
        if self.by_address.get(&u32::from(lease.address)) == Some(key) {
            self.by_address.remove(&u32::from(lease.address));
        }
        Some(lease)
    }

    /// Records that hold addresses, or hint at them, in address order from `from`.
    pub(crate) fn addresses_from(&self, from: u32) -> impl Iterator<Item = u32> + '_ {
        self.by_address.range(from..).map(|(address, _)| *address)
    }

    pub(crate) fn quarantine(&mut self, address: Ipv4Addr, entry: StoredQuarantine) {
        self.quarantine.insert(u32::from(address), entry);
    }

    /// Whether `address` is out of the pool at `now` because a client declined it.
    pub(crate) fn is_quarantined(&self, address: Ipv4Addr, now: u64) -> bool {
        self.quarantine
            .get(&u32::from(address))
            .is_some_and(|entry| entry.until > now)
    }

    /// Quarantined addresses in address order from `from`.
    pub(crate) fn quarantined_from(&self, from: u32) -> impl Iterator<Item = u32> + '_ {
        self.quarantine.range(from..).map(|(address, _)| *address)
    }

    pub(crate) fn quarantined(&self) -> impl Iterator<Item = (Ipv4Addr, &StoredQuarantine)> {
        self.quarantine
            .iter()
            .map(|(address, entry)| (Ipv4Addr::from(*address), entry))
    }

    /// Ends quarantines that are over; returns how many.
    pub(crate) fn end_quarantines(&mut self, now: u64) -> usize {
        let before = self.quarantine.len();
        self.quarantine.retain(|_, entry| entry.until > now);
        before - self.quarantine.len()
    }

    /// Drops offers past their hold time and turns bound leases past their expiry into
    /// expired hints; returns the leases that were bound (the sinks must drop them).
    pub(crate) fn expire(&mut self, now: u64) -> Vec<Lease> {
        let mut ended = Vec::new();
        let mut stale_offers = Vec::new();
        for lease in self.by_key.values_mut() {
            if lease.expires > now {
                continue;
            }
            match lease.state {
                State::Bound => {
                    lease.state = State::Expired;
                    ended.push(lease.clone());
                }
                State::Offered => stale_offers.push(lease.key.clone()),
                State::Released | State::Expired => {}
            }
        }
        for key in stale_offers {
            self.remove(&key);
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(mac_last: u8, address_last: u8, state: State) -> Lease {
        Lease {
            key: ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, mac_last])),
            address: Ipv4Addr::new(198, 51, 100, address_last),
            mac: MacAddr::new([2, 0, 0, 0, 0, mac_last]),
            client_id: None,
            hostname: None,
            expires: 100,
            state,
        }
    }

    #[test]
    fn one_record_per_client_and_per_address() {
        let mut table = LeaseTable::default();
        assert_eq!(table.insert(lease(1, 100, State::Expired)), None);
        // The same client moves: the old address is free again.
        assert_eq!(table.insert(lease(1, 101, State::Bound)), None);
        assert!(table.at(Ipv4Addr::new(198, 51, 100, 100)).is_none());
        // Another client takes 101: the first one's record goes.
        let evicted = table.insert(lease(2, 101, State::Offered)).unwrap();
        assert_eq!(
            evicted.key,
            ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 1]))
        );
        assert_eq!(table.len(), 1);
        assert_eq!(table.addresses_from(0).collect::<Vec<_>>().len(), 1);
        assert!(table
            .remove(&ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 2])))
            .is_some());
        assert_eq!(table.addresses_from(0).count(), 0);
    }

    #[test]
    fn expiry_ends_bound_and_drops_offers() {
        let mut table = LeaseTable::default();
        table.insert(lease(1, 100, State::Bound));
        table.insert(lease(2, 101, State::Offered));
        table.insert(lease(3, 102, State::Released));
        assert!(table.expire(99).is_empty());
        let ended = table.expire(100);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].address, Ipv4Addr::new(198, 51, 100, 100));
        assert_eq!(table.len(), 2);
        assert_eq!(
            table
                .get(&ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 1])))
                .unwrap()
                .state,
            State::Expired
        );
        assert!(table.expire(1000).is_empty());
    }
}
