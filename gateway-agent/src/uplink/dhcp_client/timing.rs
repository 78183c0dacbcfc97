//! The client's clocks: retransmission back-off (RFC 2131 §4.1, §4.4.5), the pause after NAKs,
//! and the generator behind xids and jitter.

use std::time::Duration;

use super::Client;

/// RFC 2131 §4.1: the first retransmission after 4 s, doubling up to 64 s, each ±1 s.
const FIRST_RETRANSMIT: Duration = Duration::from_secs(4);
const MAX_RETRANSMIT: Duration = Duration::from_secs(64);
const JITTER_MS: u64 = 1000;
/// REQUESTs sent for one offer before starting over with DISCOVER (4 + 8 + 16 + 32 s).
pub(super) const MAX_REQUESTS: u32 = 4;
/// INIT-REBOOT gives up sooner: a server that does not know the lease stays silent when it is
/// not authoritative (dnsmasq's default), and DISCOVER then finds the address again.
pub(super) const MAX_REBOOT_REQUESTS: u32 = 2;
/// RFC 2131 §4.4.5: in RENEWING and REBINDING, retransmit after half the time left, but not
/// sooner than 60 s.
const MIN_RENEW_RETRANSMIT: Duration = Duration::from_secs(60);
/// A lease of 0xffffffff seconds is infinite (RFC 2132 §9.2).
pub(super) const INFINITE_SECS: u32 = u32::MAX;

/// xorshift64*: xids and jitter need to be unpredictable to other hosts only loosely, and a
/// seeded generator keeps the machine deterministic under test.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        // xorshift is stuck at zero.
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

impl Client {
    /// 4, 8, 16, 32, 64, 64… seconds, each ±1 s (RFC 2131 §4.1).
    pub(super) fn backoff(&mut self, attempt: u32) -> Duration {
        let base = FIRST_RETRANSMIT
            .saturating_mul(1u32 << attempt.min(4))
            .min(MAX_RETRANSMIT);
        let jitter = self.rng.next_u64() % (2 * JITTER_MS + 1);
        (base + Duration::from_millis(jitter)).saturating_sub(Duration::from_millis(JITTER_MS))
    }
}

/// Half the time left until `limit`, at least [`MIN_RENEW_RETRANSMIT`].
pub(super) fn renew_retransmit(now: Duration, limit: Duration) -> Duration {
    now.saturating_add((limit.saturating_sub(now) / 2).max(MIN_RENEW_RETRANSMIT))
}

/// No pause after the first NAK; then 4, 8, … 64 s.
pub(super) fn nak_pause(naks: u32) -> Duration {
    match naks {
        0 | 1 => Duration::ZERO,
        n => FIRST_RETRANSMIT
            .saturating_mul(1u32 << (n - 2).min(4))
            .min(MAX_RETRANSMIT),
    }
}
