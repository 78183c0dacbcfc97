//! Per-client query rate limit: a token bucket per source address, with a bound on how many
//! clients are tracked so a flood of sources cannot grow memory without limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Clients tracked at most. The inside subnet bounds the real number; this bounds the worst
/// case (a /8 inside, or sources the ACL has not yet rejected).
pub const MAX_TRACKED_CLIENTS: usize = 4096;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets, one per client: `rate` queries per second, bursts of up to `rate`.
pub struct RateLimiter {
    rate: f64,
    max_clients: usize,
    buckets: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    /// `rate` queries per second per client; 0 turns the limit off.
    pub fn new(rate: u32, max_clients: usize) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            max_clients: max_clients.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Clients with a bucket now.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Takes a token for `client` at `now`; false when its bucket is empty.
    pub fn allow(&mut self, client: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if !self.buckets.contains_key(&client) && self.buckets.len() >= self.max_clients {
            self.make_room(now);
        }
        let rate = self.rate;
        let bucket = self.buckets.entry(client).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets clients whose buckets have refilled (forgetting them changes nothing); if
    /// every client is busy, forgets the one idle longest, which at worst gives it a fresh
    /// burst.
    fn make_room(&mut self, now: Instant) {
        let rate = self.rate;
        self.buckets.retain(|_, b| {
            let refilled = b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate;
            refilled < rate
        });
        if self.buckets.len() >= self.max_clients {
            if let Some(stalest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(ip, _)| *ip)
            {
                self.buckets.remove(&stalest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
    }

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(5, 16);
        for i in 0..5 {
            assert!(rl.allow(ip(10), t0), "query {i} of the burst");
        }
        assert!(!rl.allow(ip(10), t0), "the sixth in the same instant");
        // Another client has its own bucket.
        assert!(rl.allow(ip(11), t0));
        // 200 ms at 5/s is one token.
        let t1 = t0 + Duration::from_millis(200);
        assert!(rl.allow(ip(10), t1));
        assert!(!rl.allow(ip(10), t1));
        // Long idle refills to the burst size, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(rl.allow(ip(10), t2));
        }
        assert!(!rl.allow(ip(10), t2));
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(0, 16);
        for _ in 0..10_000 {
            assert!(rl.allow(ip(1), t0));
        }
        assert_eq!(rl.tracked(), 0);
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(10, 8);
        for i in 0..=255u8 {
            rl.allow(ip(i), t0 + Duration::from_millis(u64::from(i)));
            assert!(rl.tracked() <= 8);
        }
        // A busy client that was just seen keeps its (empty) bucket.
        let busy = ip(255);
        let now = t0 + Duration::from_millis(255);
        while rl.allow(busy, now) {}
        rl.allow(IpAddr::V4(Ipv4Addr::new(198, 51, 101, 1)), now);
        assert!(
            !rl.allow(busy, now),
            "an exhausted bucket is not reset by newcomers"
        );
    }

    #[test]
    fn refilled_buckets_are_forgotten_first() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(10, 2);
        rl.allow(ip(1), t0);
        rl.allow(ip(2), t0);
        // After a second both have refilled; a newcomer displaces them without harm.
        let t1 = t0 + Duration::from_secs(1);
        assert!(rl.allow(ip(3), t1));
        assert!(rl.tracked() <= 2);
    }
}
