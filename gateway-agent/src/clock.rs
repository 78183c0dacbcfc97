//! The wall clock, read in one place. Lease expiries, the zone's serial and the CLI's
//! "expires in" all count Unix seconds; the logic that uses them takes the time as an input
//! (so tests control it), and only the thin I/O around it calls these.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch; zero if the clock is set before it (a board without an RTC
/// before NTP), so callers never see an error for a clock they cannot fix.
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    since_epoch().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_2020() {
        // 2020-01-01: any machine running the tests has a clock past it.
        assert!(unix_now() > 1_577_836_800);
        assert_eq!(unix_now(), since_epoch().as_secs());
    }
}
