//! Per-MAC token buckets, so one client (or one spoofing flood) cannot keep the server busy.
//! Memory is bounded: at most [`MAX_TRACKED`] MACs are remembered.

use std::collections::HashMap;

/// How many MACs are tracked at once. A home LAN has tens; more means a flood of invented
/// MACs, where forgetting everyone costs nothing but a fresh burst each.
pub(crate) const MAX_TRACKED: usize = 4096;

/// One bucket, in thousandths of a token so integer arithmetic is exact enough.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    last_ms: u64,
}

/// Token buckets keyed by MAC: `rate` packets a second, bursts of up to `rate`.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: u64,
    buckets: HashMap<[u8; 6], Bucket>,
}

impl RateLimiter {
    /// `rate` packets per second per MAC; 0 turns limiting off.
    pub(crate) fn new(rate: u32) -> RateLimiter {
        RateLimiter {
            rate: u64::from(rate),
            buckets: HashMap::new(),
        }
    }

    fn capacity(&self) -> u64 {
        self.rate * 1000
    }

    /// Whether one more packet from `mac` is allowed at `now_ms` (a monotonic clock).
    pub(crate) fn allow(&mut self, mac: [u8; 6], now_ms: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        if !self.buckets.contains_key(&mac) && self.buckets.len() >= MAX_TRACKED {
            self.forget_idle(now_ms);
        }
        let capacity = self.capacity();
        let bucket = self.buckets.entry(mac).or_insert(Bucket {
            milli_tokens: capacity,
            last_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(bucket.last_ms);
        bucket.milli_tokens = bucket
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(capacity);
        bucket.last_ms = now_ms;
        if bucket.milli_tokens >= 1000 {
            bucket.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Drops buckets that have refilled (they behave like new ones); if all are busy, drops
    /// everything rather than grow.
    fn forget_idle(&mut self, now_ms: u64) {
        let capacity = self.capacity();
        let rate = self.rate;
        self.buckets.retain(|_, bucket| {
            let refill = now_ms.saturating_sub(bucket.last_ms).saturating_mul(rate);
            bucket.milli_tokens.saturating_add(refill) < capacity
        });
        if self.buckets.len() >= MAX_TRACKED {
            self.buckets.clear();
        }
    }

    /// How many MACs are tracked (for tests).
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn burst_then_refill_per_mac() {
        let mut limiter = RateLimiter::new(3);
        assert!((0..3).all(|_| limiter.allow(A, 1000)));
        assert!(!limiter.allow(A, 1000));
        // Another MAC is not affected.
        assert!(limiter.allow(B, 1000));
        // A third of a second buys one packet.
        assert!(!limiter.allow(A, 1300));
        assert!(limiter.allow(A, 1334));
        assert!(!limiter.allow(A, 1334));
        // A long pause refills to the burst, no more.
        assert!((0..3).all(|_| limiter.allow(A, 60_000)));
        assert!(!limiter.allow(A, 60_000));
    }

    #[test]
    fn zero_means_unlimited() {
        let mut limiter = RateLimiter::new(0);
        assert!((0..10_000).all(|_| limiter.allow(A, 0)));
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn memory_is_bounded_under_a_mac_flood() {
        let mut limiter = RateLimiter::new(10);
        for i in 0..(MAX_TRACKED as u32 * 5) {
            let b = i.to_be_bytes();
            let mac = [2, 0, b[0], b[1], b[2], b[3]];
            assert!(limiter.allow(mac, u64::from(i / 100)));
            assert!(limiter.tracked() <= MAX_TRACKED);
        }
        // A clock going backwards does not underflow.
        assert!(limiter.allow(A, 0));
    }
}
