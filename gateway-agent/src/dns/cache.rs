//! The answer cache: bounded, least-recently-used eviction, TTLs counted down from the moment
//! an answer was stored, negative answers per RFC 2308. Time is passed in, so tests drive it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// What a cache entry is keyed by: the name lowercased, the type, the class.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    name: Name,
    rtype: RecordType,
    class: DNSClass,
}

impl CacheKey {
    /// The key for a question.
    pub fn new(name: &Name, rtype: RecordType, class: DNSClass) -> Self {
        CacheKey {
            name: name.to_lowercase(),
            rtype,
            class,
        }
    }
}

/// A cached outcome. TTLs of the records in it are the remaining time to live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Records answering the question.
    Records(Vec<Record>),
    /// The name exists, without records of the type.
    NoData { soa: Option<Record> },
    /// The name does not exist.
    NxDomain { soa: Option<Record> },
    /// An answer the rebinding filter refused as a whole; cached so that asking again does
    /// not ask upstream again.
    Blocked,
}

/// The TTL settings from `[dns]`.
#[derive(Debug, Clone, Copy)]
pub struct TtlPolicy {
    /// For answers from upstreams that give no TTL, and the cap for negative answers.
    pub default_ttl: u32,
    /// The cap for positive answers.
    pub max_ttl: u32,
}

impl TtlPolicy {
    /// How long to keep records: the smallest TTL among them (an RRset lives as long as its
    /// shortest member, RFC 2181 §5.2), capped; `default_ttl` if the upstream gives none.
    pub fn positive(&self, records: &[Record], gives_ttls: bool) -> u32 {
        if !gives_ttls {
            return self.default_ttl.min(self.max_ttl);
        }
        records
            .iter()
            .map(|r| r.ttl)
            .min()
            .unwrap_or(0)
            .min(self.max_ttl)
    }

    /// How long to keep a negative answer (RFC 2308 §5): the lesser of the SOA's TTL and its
    /// MINIMUM, capped at `default_ttl`. Without an SOA it is not cached, unless the upstream
    /// gives no TTLs at all, in which case `default_ttl` applies.
    pub fn negative(&self, soa: Option<&Record>, gives_ttls: bool) -> u32 {
        if !gives_ttls {
            return self.default_ttl;
        }
        match soa {
            Some(record) => match &record.data {
                RData::SOA(soa) => record.ttl.min(soa.minimum).min(self.default_ttl),
                _ => 0,
            },
            None => 0,
        }
    }
}

struct Entry {
    value: Cached,
    expires: Instant,
    /// Position in the recency order.
    tick: u64,
}

/// The cache itself. Not thread-safe: the server keeps it behind a mutex.
pub struct Cache {
    capacity: usize,
    entries: HashMap<CacheKey, Entry>,
    /// tick → key, oldest first.
    recency: BTreeMap<u64, CacheKey>,
    next_tick: u64,
    evictions: u64,
}

impl Cache {
    /// A cache of at most `capacity` answers; 0 disables caching.
    pub fn new(capacity: usize) -> Self {
        Cache {
            capacity,
            entries: HashMap::new(),
            recency: BTreeMap::new(),
            next_tick: 0,
            evictions: 0,
        }
    }

    /// Answers cached now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries pushed out to make room, since start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The live entry for `key` with TTLs counted down to `now`; an expired one is dropped.
    #[cfg(test)]
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Cached> {
        self.get_until(key, now).map(|(value, _)| value)
    }

    /// [`Cache::get`], with the moment the entry expires.
    pub fn get_until(&mut self, key: &CacheKey, now: Instant) -> Option<(Cached, Instant)> {
        let entry = self.entries.get_mut(key)?;
        let remaining = entry.expires.saturating_duration_since(now).as_secs();
        if remaining == 0 {
            let tick = entry.tick;
            self.entries.remove(key);
            self.recency.remove(&tick);
            return None;
        }
        // Touch: move to the young end.
        self.recency.remove(&entry.tick);
        entry.tick = self.next_tick;
        self.next_tick += 1;
        self.recency.insert(entry.tick, key.clone());
        let ttl = u32::try_from(remaining).unwrap_or(u32::MAX);
        Some((with_ttl(entry.value.clone(), ttl), entry.expires))
    }

    /// Stores `value` for `ttl` seconds from `now`, evicting the least recently used entries
    /// beyond the capacity. A zero TTL is not stored (RFC 1035: use once, do not cache).
    /// Whether it was stored.
    pub fn insert(&mut self, key: CacheKey, value: Cached, ttl: u32, now: Instant) -> bool {
        if self.capacity == 0 || ttl == 0 {
            return false;
        }
        if let Some(old) = self.entries.remove(&key) {
            self.recency.remove(&old.tick);
        }
        while self.entries.len() >= self.capacity {
            // Expired entries would be the cheapest to drop, but finding them costs a scan;
            // the oldest-used entry is close enough and O(log n).
            let Some((_, oldest)) = self.recency.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            self.evictions += 1;
        }
        let tick = self.next_tick;
        self.next_tick += 1;
        self.recency.insert(tick, key.clone());
        self.entries.insert(
            key,
            Entry {
                value: with_ttl(value, ttl),
                expires: now + Duration::from_secs(u64::from(ttl)),
                tick,
            },
        );
        true
    }
}

/// `value` with every record's TTL set to `ttl`.
pub fn with_ttl(value: Cached, ttl: u32) -> Cached {
    let set = |mut r: Record| {
        r.ttl = ttl;
        r
    };
    match value {
        Cached::Records(records) => Cached::Records(records.into_iter().map(set).collect()),
        Cached::NoData { soa } => Cached::NoData { soa: soa.map(set) },
        Cached::NxDomain { soa } => Cached::NxDomain { soa: soa.map(set) },
        Cached::Blocked => Cached::Blocked,
    }
}

/// An SOA record, for tests here and in the server.
#[cfg(test)]
pub(crate) fn soa_record(zone: &str, ttl: u32, minimum: u32) -> Record {
    let zone = Name::from_ascii(zone).unwrap_or_default();
    let soa = hickory_proto::rr::rdata::SOA::new(
        zone.clone(),
        zone.clone(),
        1,
        3600,
        600,
        86400,
        minimum,
    );
    Record::from_rdata(zone, ttl, RData::SOA(soa))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::A;
    use std::net::Ipv4Addr;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn a(owner: &str, ttl: u32, last: u8) -> Record {
        Record::from_rdata(
            name(owner),
            ttl,
            RData::A(A::from(Ipv4Addr::new(203, 0, 113, last))),
        )
    }

    fn key(owner: &str, rtype: RecordType) -> CacheKey {
        CacheKey::new(&name(owner), rtype, DNSClass::IN)
    }

    const POLICY: TtlPolicy = TtlPolicy {
        default_ttl: 300,
        max_ttl: 3600,
    };

    #[test]
    fn ttls_count_down_and_expire() {
        let t0 = Instant::now();
        let mut cache = Cache::new(10);
        cache.insert(
            key("a.example.com.", RecordType::A),
            Cached::Records(vec![a("a.example.com.", 100, 1)]),
            100,
            t0,
        );
        let at = |s| t0 + Duration::from_secs(s);
        match cache.get(&key("a.example.com.", RecordType::A), at(30)) {
            Some(Cached::Records(r)) => assert_eq!(r[0].ttl, 70),
            other => panic!("{other:?}"),
        }
        assert!(cache
            .get(&key("a.example.com.", RecordType::A), at(99))
            .is_some());
        assert!(cache
            .get(&key("a.example.com.", RecordType::A), at(100))
            .is_none());
        assert!(cache.is_empty(), "expired entries are dropped on access");
    }

    #[test]
    fn keys_are_case_insensitive_and_typed() {
        let t0 = Instant::now();
        let mut cache = Cache::new(10);
        cache.insert(
            key("A.Example.COM.", RecordType::A),
            Cached::Records(vec![a("a.example.com.", 60, 1)]),
            60,
            t0,
        );
        assert!(cache
            .get(&key("a.example.com.", RecordType::A), t0)
            .is_some());
        assert!(cache
            .get(&key("a.example.com.", RecordType::AAAA), t0)
            .is_none());
        let ch = CacheKey::new(&name("a.example.com."), RecordType::A, DNSClass::CH);
        assert!(cache.get(&ch, t0).is_none());
    }

    #[test]
    fn zero_ttl_and_zero_capacity_store_nothing() {
        let t0 = Instant::now();
        let mut cache = Cache::new(10);
        cache.insert(key("a.", RecordType::A), Cached::Blocked, 0, t0);
        assert!(cache.is_empty());
        let mut off = Cache::new(0);
        off.insert(key("a.", RecordType::A), Cached::Blocked, 60, t0);
        assert!(off.is_empty());
    }

    #[test]
    fn size_is_bounded_least_recently_used_goes_first() {
        let t0 = Instant::now();
        let mut cache = Cache::new(3);
        for n in ["a.", "b.", "c."] {
            cache.insert(key(n, RecordType::A), Cached::Blocked, 60, t0);
        }
        // Use a., so b. is now the oldest.
        assert!(cache.get(&key("a.", RecordType::A), t0).is_some());
        cache.insert(key("d.", RecordType::A), Cached::Blocked, 60, t0);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.evictions(), 1);
        assert!(cache.get(&key("b.", RecordType::A), t0).is_none());
        for n in ["a.", "c.", "d."] {
            assert!(cache.get(&key(n, RecordType::A), t0).is_some(), "{n}");
        }
        // Replacing an entry does not evict another.
        cache.insert(key("d.", RecordType::A), Cached::Blocked, 30, t0);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.evictions(), 1);
    }

    #[test]
    fn negative_entries_carry_their_soa_with_remaining_ttl() {
        let t0 = Instant::now();
        let mut cache = Cache::new(10);
        let soa = soa_record("example.com.", 900, 120);
        let ttl = POLICY.negative(Some(&soa), true);
        assert_eq!(ttl, 120, "MINIMUM below the SOA TTL wins");
        cache.insert(
            key("nx.example.com.", RecordType::A),
            Cached::NxDomain { soa: Some(soa) },
            ttl,
            t0,
        );
        match cache.get(
            &key("nx.example.com.", RecordType::A),
            t0 + Duration::from_secs(20),
        ) {
            Some(Cached::NxDomain { soa: Some(soa) }) => assert_eq!(soa.ttl, 100),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ttl_policy() {
        let recs = [a("x.", 500, 1), a("x.", 50, 2)];
        assert_eq!(POLICY.positive(&recs, true), 50);
        assert_eq!(POLICY.positive(&[a("x.", 99_999, 1)], true), 3600);
        assert_eq!(POLICY.positive(&recs, false), 300, "no TTLs: default");
        assert_eq!(POLICY.positive(&[a("x.", 0, 1)], true), 0);

        assert_eq!(
            POLICY.negative(Some(&soa_record("x.", 30, 600)), true),
            30,
            "SOA TTL below MINIMUM wins"
        );
        assert_eq!(
            POLICY.negative(Some(&soa_record("x.", 86400, 86400)), true),
            300,
            "capped at default_ttl"
        );
        assert_eq!(POLICY.negative(None, true), 0, "no SOA: not cached");
        assert_eq!(POLICY.negative(None, false), 300, "no TTLs at all: default");
    }
}
