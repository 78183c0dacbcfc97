//! [`KeyedBuckets`]: token buckets by key (a DNS client's address, a DHCP client's MAC), so one
//! client, or a flood of spoofed ones, cannot keep a server busy. Sans-I/O: the caller passes
//! the time. Memory is bounded: at most `max_keys` keys are tracked.
//!
//! The arithmetic is integer and exact: a bucket holds nano-tokens, and `rate` tokens a second
//! is `rate` nano-tokens a nanosecond, so no rounding loses or gains a token however often or
//! rarely a client asks.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// One token, in the bucket's unit.
const TOKEN: u128 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Nano-tokens left at `last`.
    level: u128,
    last: Instant,
}

/// Token buckets keyed by `K`: `rate` a second, bursts of up to `rate`.
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    rate: u128,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Eq + Hash + Copy> KeyedBuckets<K> {
    /// `rate` per second per key (0 turns limiting off), tracking at most `max_keys` keys
    /// (at least one).
    pub fn new(rate: u32, max_keys: usize) -> Self {
        KeyedBuckets {
            rate: u128::from(rate),
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    fn capacity(&self) -> u128 {
        self.rate * TOKEN
    }

    /// Takes a token for `key` at `now`; false when its bucket is empty.
    pub fn allow(&mut self, key: K, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            self.make_room(now);
        }
        let rate = self.rate;
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            level: rate * TOKEN,
            last: now,
        });
        let level = level_at(rate, bucket, now);
        // A clock that went backwards keeps the later time, so it cannot mint tokens later.
        bucket.last = now.max(bucket.last);
        match level.checked_sub(TOKEN) {
            Some(left) => {
                bucket.level = left;
                true
            }
            None => {
                bucket.level = level;
                false
            }
        }
    }

    /// Forgets keys whose buckets have refilled (forgetting them changes nothing). If every
    /// key is busy, forgets the eighth idle longest: at worst that gives each a fresh burst,
    /// and making room for many newcomers at once keeps a flood of new keys from costing a
    /// scan of the whole table per packet.
    fn make_room(&mut self, now: Instant) {
        let (rate, capacity) = (self.rate, self.capacity());
        self.buckets
            .retain(|_, bucket| level_at(rate, bucket, now) < capacity);
        if self.buckets.len() < self.max_keys {
            return;
        }
        let evict = (self.max_keys / 8).max(1);
        let mut by_age: Vec<(Instant, K)> = self
            .buckets
            .iter()
            .map(|(key, bucket)| (bucket.last, *key))
            .collect();
        by_age.select_nth_unstable_by_key(evict - 1, |(last, _)| *last);
        for (_, key) in &by_age[..evict] {
            self.buckets.remove(key);
        }
    }

    /// How many keys have a bucket now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// The level of `bucket` at `now`, refilled at `rate` and capped at the burst. A clock that
/// went backwards refills nothing.
fn level_at(rate: u128, bucket: &Bucket, now: Instant) -> u128 {
    let elapsed = now.saturating_duration_since(bucket.last).as_nanos();
    bucket
        .level
        .saturating_add(elapsed.saturating_mul(rate))
        .min(rate * TOKEN)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::*;
    use crate::mac::MacAddr;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
    }

    const A: MacAddr = MacAddr::new([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr::new([2, 0, 0, 0, 0, 2]);

    // DHCP's old cases (dhcp/rate.rs): per MAC, 4096 tracked.

    #[test]
    fn dhcp_burst_then_refill_per_mac() {
        let t0 = Instant::now();
        let mut limiter = KeyedBuckets::new(3, 4096);
        assert!((0..3).all(|_| limiter.allow(A, ms(t0, 1000))));
        assert!(!limiter.allow(A, ms(t0, 1000)));
        // Another MAC is not affected.
        assert!(limiter.allow(B, ms(t0, 1000)));
        // A third of a second buys one packet.
        assert!(!limiter.allow(A, ms(t0, 1300)));
        assert!(limiter.allow(A, ms(t0, 1334)));
        assert!(!limiter.allow(A, ms(t0, 1334)));
        // A long pause refills to the burst, no more.
        assert!((0..3).all(|_| limiter.allow(A, ms(t0, 60_000))));
        assert!(!limiter.allow(A, ms(t0, 60_000)));
    }

    #[test]
    fn dhcp_zero_means_unlimited() {
        let t0 = Instant::now();
        let mut limiter = KeyedBuckets::new(0, 4096);
        assert!((0..10_000).all(|_| limiter.allow(A, t0)));
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn dhcp_memory_is_bounded_under_a_mac_flood() {
        const MAX: usize = 4096;
        let t0 = Instant::now();
        let mut limiter = KeyedBuckets::new(10, MAX);
        for i in 0..(MAX as u32 * 5) {
            let b = i.to_be_bytes();
            let mac = MacAddr::new([2, 0, b[0], b[1], b[2], b[3]]);
            assert!(limiter.allow(mac, ms(t0, u64::from(i / 100))));
            assert!(limiter.tracked() <= MAX);
        }
        // A clock going backwards does not underflow.
        assert!(limiter.allow(A, t0));
    }

    // DNS's old cases (dns/ratelimit.rs): per source address, a small table.

    #[test]
    fn dns_burst_then_refill() {
        let t0 = Instant::now();
        let mut rl = KeyedBuckets::new(5, 16);
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
    fn dns_zero_rate_means_unlimited() {
        let t0 = Instant::now();
        let mut rl = KeyedBuckets::new(0, 16);
        for _ in 0..10_000 {
            assert!(rl.allow(ip(1), t0));
        }
        assert_eq!(rl.tracked(), 0);
    }

    #[test]
    fn dns_memory_is_bounded() {
        let t0 = Instant::now();
        let mut rl = KeyedBuckets::new(10, 8);
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
    fn dns_refilled_buckets_are_forgotten_first() {
        let t0 = Instant::now();
        let mut rl = KeyedBuckets::new(10, 2);
        rl.allow(ip(1), t0);
        rl.allow(ip(2), t0);
        // After a second both have refilled; a newcomer displaces them without harm.
        let t1 = t0 + Duration::from_secs(1);
        assert!(rl.allow(ip(3), t1));
        assert!(rl.tracked() <= 2);
    }

    // What the merge adds.

    /// Many calls closer together than a millisecond still refill: nothing is rounded away.
    #[test]
    fn sub_millisecond_calls_refill_exactly() {
        let t0 = Instant::now();
        let mut rl = KeyedBuckets::new(1000, 4);
        while rl.allow(A, t0) {}
        // 1000/s is one per millisecond; asking every 100 µs for 10 ms earns exactly 10.
        let granted = (1..=100)
            .filter(|i| rl.allow(A, t0 + Duration::from_micros(100 * i)))
            .count();
        assert_eq!(granted, 10);
    }

    /// A clock that goes backwards mints no tokens, then or later.
    #[test]
    fn backwards_clock_mints_nothing() {
        let t0 = Instant::now();
        let mut rl = KeyedBuckets::new(2, 4);
        let later = t0 + Duration::from_secs(10);
        assert!(rl.allow(A, later));
        assert!(rl.allow(A, t0));
        assert!(!rl.allow(A, t0));
        assert!(!rl.allow(A, later));
    }

    /// The largest configurable rate neither overflows nor limits.
    #[test]
    fn the_largest_rate() {
        let t0 = Instant::now();
        let mut rl = KeyedBuckets::new(u32::MAX, 4);
        assert!((0..1000).all(|_| rl.allow(A, t0)));
        assert!(rl.allow(A, t0 + Duration::from_secs(u64::from(u32::MAX))));
    }
}
