//! The UDP fast path, in front of the hickory pipeline: a question the slow path answered
//! before is answered again from a copy of its bytes, the ID and TTLs patched, without
//! parsing the request into records or encoding a response.
//!
//! ```text
//!  datagram ─ parse_query ─┬─ not plain ──────────────────────────────┐
//!                          └─ ACL + rate limit ─┬─ refused ───────────┤ slow path (hickory
//!                                               └─ cache ─┬─ miss ────┤ Request, handler.rs)
//!                                                         └─ hit ─ reply   │
//!                                  fill the cache from its reply ◄─────────┘
//! ```
//!
//! The slow path stays the only place answers are decided: the cache holds only what it sent,
//! for the same key (the name as spelled, the type, the header flags, the EDNS fields), so a
//! hit is byte for byte what the slow path would send at that moment. It keeps only NOERROR
//! and NXDOMAIN answers that fit untruncated, from the local zone (until the zone changes), the
//! names never forwarded, and the forwarding cache (as long as that entry lives). A hit on a
//! forwarded answer tells the transparent listener who was told what, as the slow path does.
//! `.onion` answers (per client) are never kept, nor anything when queries are logged.
//!
//! Sockets: one `SO_REUSEPORT` UDP socket per core on the inside address, each read by a thread
//! of its own with `recvmmsg` and answered with `sendmmsg` ([`socket`]); misses become tasks on
//! the runtime, which reply on the same socket. The steered sockets ([`super::steered`]) use
//! [`FastPath::answer`] and [`FastPath::slow`] too.

mod cache;
pub(crate) mod socket;
pub mod wire;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hickory_proto::op::ResponseCode;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::BufDnsStreamHandle;
use hickory_server::server::{Request, ResponseHandle};

use super::handler::{question, told, Admission, Handler, Origin, Reply};
use super::stats::bump;
use cache::{AnswerCache, Kind, Lookup};

/// Slow-path answers in progress at once from the fast sockets; datagrams beyond are dropped
/// (the client retries), so a flood of misses cannot grow the task count without bound.
const MAX_SLOW: usize = 1024;

/// The fast path of one server: its cache and the slow path behind it.
pub(crate) struct FastPath {
    handler: Handler,
    cache: AnswerCache,
    slow_in_flight: AtomicUsize,
}

/// What to do with a datagram.
pub(crate) enum Outcome {
    /// The answer is in the buffer, this long.
    Answered(usize),
    /// The slow path answers it, with what is left to check.
    Slow(Admission),
}

impl FastPath {
    /// The fast path in front of `handler`, keeping about `capacity` answers.
    pub fn new(handler: Handler, capacity: usize) -> Self {
        FastPath {
            handler,
            cache: AnswerCache::new(capacity),
            slow_in_flight: AtomicUsize::new(0),
        }
    }

    /// Answers the datagram `msg` from `src`, received at `now`, into `out` if it can.
    pub fn answer(&self, msg: &[u8], src: SocketAddr, now: Instant, out: &mut [u8]) -> Outcome {
        let shared = &self.handler.0;
        if shared.log_queries {
            return Outcome::Slow(Admission::Unchecked);
        }
        let Some(query) = wire::parse_query(msg) else {
            return Outcome::Slow(Admission::Unchecked);
        };
        if let Some(refused) = shared.admit(src.ip(), now) {
            return Outcome::Slow(Admission::Refused(refused));
        }
        match self
            .cache
            .answer(&query, now, shared.zone.generation(), out)
        {
            Lookup::Hit {
                len,
                kind,
                ttl,
                told,
            } => {
                if let (Some(answered), Some(told), Some(ttl)) = (&shared.answered, told, ttl) {
                    // The addresses' TTL is the seconds left, as on the slow path.
                    answered.record(
                        src.ip(),
                        &told.name,
                        &told.addrs,
                        Duration::from_secs(u64::from(ttl)),
                        now,
                    );
                }
                let counters = &shared.counters;
                bump(match kind {
                    Kind::Local(_) => &counters.local_answers,
                    Kind::NeverForwarded => &counters.never_forwarded,
                    Kind::Cached(_) => &counters.cache_hits,
                });
                Outcome::Answered(len)
            }
            Lookup::Miss => Outcome::Slow(Admission::Admitted),
        }
    }

    /// A slot for one more slow-path answer, if under [`MAX_SLOW`].
    pub fn slow_slot(self: &Arc<Self>) -> Option<SlowSlot> {
        let before = self.slow_in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = SlowSlot(self.clone());
        (before < MAX_SLOW).then_some(slot)
    }

    /// The slow path's answer to `msg` from `src` (received at `now`), kept for next time
    /// when it may be; `None` when hickory cannot parse it (it is dropped, as hickory's own
    /// UDP path does).
    pub async fn slow(
        &self,
        msg: Vec<u8>,
        src: SocketAddr,
        admission: Admission,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let shared = &self.handler.0;
        let fill = matches!(admission, Admission::Admitted);
        // Read before the lookup: a zone change during it makes the copy stale at once.
        let generation = shared.zone.generation();
        let query = fill.then(|| wire::parse_query(&msg)).flatten();
        let Ok(request) = Request::from_bytes(msg, src, Protocol::Udp) else {
            bump(&shared.counters.bad_requests);
            return None;
        };
        let (stream, mut replies) = BufDnsStreamHandle::new(src);
        let (info, reply) = self
            .handler
            .respond(
                &request,
                ResponseHandle::new(src, stream, Protocol::Udp),
                admission,
                now,
            )
            .await;
        // The response handle (and the sender in it) is gone now: the stream ends after it.
        let bytes = replies.next().await?.into_parts().0;
        if let (Some(query), false) = (query, info.truncation) {
            if let Some(kind) = self.keeps(&reply, generation) {
                if let Some(ttls) = wire::ttl_offsets(&bytes) {
                    let told = shared
                        .answered
                        .as_ref()
                        .and_then(|_| told(&question(&request), &reply));
                    self.cache.insert(&query, &bytes, ttls, kind, told);
                }
            }
        }
        Some(bytes)
    }

    /// Whether the slow path's `reply` may be answered again from its bytes, and for how long.
    fn keeps(&self, reply: &Reply, generation: u64) -> Option<Kind> {
        if !matches!(reply.rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
            return None;
        }
        match reply.origin {
            Origin::Local => Some(Kind::Local(generation)),
            Origin::Special => Some(Kind::NeverForwarded),
            Origin::Upstream | Origin::Cache => reply.expires.map(Kind::Cached),
            _ => None,
        }
    }

    /// Answers kept now.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.cache.len()
    }
}

/// One slow-path answer in progress ([`FastPath::slow_slot`]); released when dropped.
pub(crate) struct SlowSlot(Arc<FastPath>);

impl Drop for SlowSlot {
    fn drop(&mut self) {
        self.0.slow_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
