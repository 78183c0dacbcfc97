//! Counters of the DNS server, for `status` and metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A snapshot of the server's counters since start (for the control socket, both ways).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStats {
    /// Queries received (every one, refused ones included).
    pub queries: u64,
    /// Answered from the local zone (leases, reservations, service names, PTRs).
    pub local_answers: u64,
    /// Special-use and private names answered locally instead of being forwarded.
    pub never_forwarded: u64,
    /// `.onion` names answered from the virtual range (`dns.onion_virtual_range`).
    #[serde(default)]
    pub onion_answers: u64,
    /// Answered from the cache.
    pub cache_hits: u64,
    /// Sent to the upstream.
    pub forwarded: u64,
    /// Answered by joining an identical question already on its way upstream.
    #[serde(default)]
    pub coalesced: u64,
    /// The upstream failed or timed out.
    pub upstream_errors: u64,
    /// Answered SERVFAIL (upstream failure, or no upstream configured).
    pub servfail: u64,
    /// REFUSED: the client is outside the inside subnet.
    pub refused_acl: u64,
    /// REFUSED: the client exceeded its rate.
    pub rate_limited: u64,
    /// Malformed or unsupported requests (FORMERR, NOTIMP, BADVERS, REFUSED for AXFR or CH).
    pub bad_requests: u64,
    /// Upstream address records dropped by the rebinding filter.
    pub rebinding_dropped: u64,
    /// Upstream answers refused because nothing was left after the rebinding filter.
    pub rebinding_refused: u64,
    /// UDP replies truncated to the client's buffer size (TC set).
    pub truncated: u64,
    /// Answers in the cache now.
    pub cache_entries: u64,
    /// Cache entries evicted to stay within `cache_size`.
    pub cache_evictions: u64,
    /// Names in the local zone now.
    pub zone_names: u64,
    /// The upstream in use (`uplink`, `tor`), if any.
    pub upstream: Option<String>,
}

/// The live counters behind [`DnsStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub queries: AtomicU64,
    pub local_answers: AtomicU64,
    pub never_forwarded: AtomicU64,
    pub onion_answers: AtomicU64,
    pub cache_hits: AtomicU64,
    pub forwarded: AtomicU64,
    pub coalesced: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub servfail: AtomicU64,
    pub refused_acl: AtomicU64,
    pub rate_limited: AtomicU64,
    pub bad_requests: AtomicU64,
    pub rebinding_dropped: AtomicU64,
    pub rebinding_refused: AtomicU64,
    pub truncated: AtomicU64,
}

/// Adds one.
pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

/// Adds `n`.
pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl Counters {
    /// The counters' values; the gauges (cache, zone, upstream) are the caller's to fill in.
    pub fn snapshot(&self) -> DnsStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsStats {
            queries: get(&self.queries),
            local_answers: get(&self.local_answers),
            never_forwarded: get(&self.never_forwarded),
            onion_answers: get(&self.onion_answers),
            cache_hits: get(&self.cache_hits),
            forwarded: get(&self.forwarded),
            coalesced: get(&self.coalesced),
            upstream_errors: get(&self.upstream_errors),
            servfail: get(&self.servfail),
            refused_acl: get(&self.refused_acl),
            rate_limited: get(&self.rate_limited),
            bad_requests: get(&self.bad_requests),
            rebinding_dropped: get(&self.rebinding_dropped),
            rebinding_refused: get(&self.rebinding_refused),
            truncated: get(&self.truncated),
            ..DnsStats::default()
        }
    }
}
