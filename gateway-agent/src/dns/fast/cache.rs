//! The fast path's answers: the slow path's response bytes for a question, kept as they were
//! sent, with where their TTLs are and how long they hold. A hit is a copy, the ID and TTLs
//! patched in place.
//!
//! Sharded so that the per-core sockets rarely wait on each other; each shard is bounded, and
//! when full gives up an arbitrary entry (the `RandomState` order), which costs no bookkeeping
//! on the hot path.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::wire::Query;
use crate::dns::handler::Told;

const SHARDS: usize = 16;

/// Which counter a hit bumps (the one the slow path would have).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The local zone: good while the zone's generation is unchanged.
    Local(u64),
    /// A name never forwarded (`localhost`, private reverse zones): fixed answers.
    NeverForwarded,
    /// A forwarded answer, from the slow path's cache or the upstream: good until then, its
    /// TTLs the seconds left.
    Cached(Instant),
}

struct Entry {
    wire: Box<[u8]>,
    ttls: Box<[u16]>,
    kind: Kind,
    /// What the transparent listener learns from each hit, when it listens.
    told: Option<Arc<Told>>,
}

/// The answer cache.
pub(crate) struct AnswerCache {
    shards: Vec<Mutex<HashMap<Box<[u8]>, Entry>>>,
    per_shard: usize,
    hasher: RandomState,
}

/// What [`AnswerCache::answer`] found.
pub(crate) enum Lookup {
    /// The answer is in the buffer: its length, where it came from, and for a forwarded
    /// answer the seconds left and what the transparent listener learns from it.
    Hit {
        len: usize,
        kind: Kind,
        ttl: Option<u32>,
        told: Option<Arc<Told>>,
    },
    /// Not cached (or no longer good).
    Miss,
}

impl AnswerCache {
    /// A cache of about `capacity` answers; 0 keeps none.
    pub fn new(capacity: usize) -> Self {
        AnswerCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, HashMap<Box<[u8]>, Entry>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A map left by a panic is still a valid map.
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the answer to `query` at `now` into `out`, if there is a good one and it fits;
    /// `generation` is the zone's now.
    pub fn answer(&self, query: &Query, now: Instant, generation: u64, out: &mut [u8]) -> Lookup {
        let mut shard = self.shard(query.key());
        let Some(entry) = shard.get(query.key()) else {
            return Lookup::Miss;
        };
        let ttl = match entry.kind {
            Kind::Local(made) if made != generation => None,
            Kind::Local(_) | Kind::NeverForwarded => Some(None),
            // Seconds left, rounded down, as the slow path's cache counts them.
            Kind::Cached(until) => match until.saturating_duration_since(now).as_secs() {
                0 => None,
                left => Some(Some(u32::try_from(left).unwrap_or(u32::MAX))),
            },
        };
        let Some(ttl) = ttl else {
            shard.remove(query.key());
            return Lookup::Miss;
        };
        let len = entry.wire.len();
        let Some(out) = out.get_mut(..len) else {
            return Lookup::Miss;
        };
        out.copy_from_slice(&entry.wire);
        let kind = entry.kind;
        let told = entry.told.clone();
        if let Some(ttl) = ttl {
            for &at in entry.ttls.iter() {
                let at = usize::from(at);
                out[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
            }
        }
        drop(shard);
        out[..2].copy_from_slice(&query.id);
        Lookup::Hit {
            len,
            kind,
            ttl,
            told,
        }
    }

    /// Keeps `wire`, the response to `query`, with the TTL fields at `ttls`.
    pub fn insert(
        &self,
        query: &Query,
        wire: &[u8],
        ttls: Vec<u16>,
        kind: Kind,
        told: Option<Told>,
    ) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(query.key());
        if shard.len() >= self.per_shard && !shard.contains_key(query.key()) {
            if let Some(victim) = shard.keys().next().cloned() {
                shard.remove(&victim);
            }
        }
        shard.insert(
            query.key().into(),
            Entry {
                wire: wire.into(),
                ttls: ttls.into(),
                kind,
                told: told.map(Arc::new),
            },
        );
    }

    /// Answers kept now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}
