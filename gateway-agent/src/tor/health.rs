//! Whether the Tor network can be reached now, from what the last attempts met.
//!
//! arti calls itself ready for traffic for as long as it has a directory and has ever made a
//! relay connection, so when the uplink or the relays go away every new stream waits out
//! arti's circuit retries (a minute) before it fails. A client then hangs instead of being
//! told. [`Health`] is a circuit breaker in front of it: an attempt that fails because Tor
//! itself could not be reached closes it, and while it is closed every stream and lookup is
//! refused at once, except one probe every [`PROBE_INTERVAL`] that finds out whether Tor is
//! back. Any attempt that Tor carried (even to a target that then refused) opens it again.
//!
//! Sans-I/O: the caller passes the time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use arti_client::ErrorKind;

/// How often, while Tor is unreachable, one attempt goes through to find out.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// What an attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Tor carried it: the stream opened, or an exit answered (even with a refusal).
    Carried,
    /// Tor itself could not be reached (no relay answered, the attempt timed out).
    Unreachable,
    /// Neither (a local error, a bad target): says nothing about the network.
    Unknown,
}

impl Outcome {
    /// The outcome an arti error stands for.
    pub fn of_error(kind: ErrorKind) -> Outcome {
        match kind {
            ErrorKind::TorAccessFailed
            | ErrorKind::TorNetworkTimeout
            | ErrorKind::LocalNetworkError => Outcome::Unreachable,
            // An exit or an onion service answered: the network is there.
            ErrorKind::RemoteHostNotFound
            | ErrorKind::RemoteConnectionRefused
            | ErrorKind::RemoteNetworkFailed
            | ErrorKind::RemoteNetworkTimeout
            | ErrorKind::RemoteStreamClosed
            | ErrorKind::RemoteStreamReset
            | ErrorKind::RemoteHostResolutionFailed
            | ErrorKind::ExitPolicyRejected
            | ErrorKind::ExitTimeout
            | ErrorKind::OnionServiceNotFound
            | ErrorKind::OnionServiceNotRunning
            | ErrorKind::OnionServiceConnectionFailed => Outcome::Carried,
            _ => Outcome::Unknown,
        }
    }
}

/// Whether an attempt may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Tor is reachable as far as anyone knows.
    Open,
    /// Tor was unreachable; this attempt is the probe.
    Probe,
    /// Tor is unreachable (since the instant given): refuse at once.
    Closed(Instant),
}

#[derive(Debug, Default)]
struct State {
    unreachable_since: Option<Instant>,
    last_probe: Option<Instant>,
}

/// The breaker. Shared by every stream and lookup of one Tor client.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

impl Health {
    /// Whether an attempt starting at `now` may go ahead.
    pub fn gate(&self, now: Instant) -> Gate {
        let mut state = self.lock();
        let Some(since) = state.unreachable_since else {
            return Gate::Open;
        };
        let probe_due = state
            .last_probe
            .is_none_or(|at| now.saturating_duration_since(at) >= PROBE_INTERVAL);
        if probe_due {
            state.last_probe = Some(now);
            Gate::Probe
        } else {
            Gate::Closed(since)
        }
    }

    /// Notes what an attempt met at `now`; true when this changed whether Tor is reachable.
    pub fn record(&self, outcome: Outcome, now: Instant) -> bool {
        let mut state = self.lock();
        match outcome {
            Outcome::Carried => {
                state.last_probe = None;
                state.unreachable_since.take().is_some()
            }
            Outcome::Unreachable if state.unreachable_since.is_none() => {
                state.unreachable_since = Some(now);
                // The failed attempt was the first probe's worth: wait an interval.
                state.last_probe = Some(now);
                true
            }
            Outcome::Unreachable | Outcome::Unknown => false,
        }
    }

    /// Since when Tor has been unreachable, if it is.
    pub fn unreachable_since(&self) -> Option<Instant> {
        self.lock().unreachable_since
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_unreachable_attempt_closes_it_and_a_probe_an_interval_later_reopens_it() {
        let health = Health::default();
        let t0 = Instant::now();
        assert_eq!(health.gate(t0), Gate::Open);
        assert!(health.record(Outcome::Unreachable, t0));
        assert_eq!(health.unreachable_since(), Some(t0));
        // Refused at once until the interval has passed; then exactly one probe.
        assert_eq!(health.gate(t0 + Duration::from_secs(1)), Gate::Closed(t0));
        let later = t0 + PROBE_INTERVAL;
        assert_eq!(health.gate(later), Gate::Probe);
        assert_eq!(health.gate(later), Gate::Closed(t0), "one probe at a time");
        // The probe failed too: still closed, the next probe an interval later.
        assert!(!health.record(Outcome::Unreachable, later + Duration::from_secs(2)));
        assert_eq!(
            health.gate(later + Duration::from_secs(3)),
            Gate::Closed(t0)
        );
        let again = later + PROBE_INTERVAL;
        assert_eq!(health.gate(again), Gate::Probe);
        // Tor carried the probe: open for everyone.
        assert!(health.record(Outcome::Carried, again));
        assert_eq!(health.gate(again), Gate::Open);
        assert_eq!(health.unreachable_since(), None);
    }

    #[test]
    fn a_target_that_refuses_is_not_an_unreachable_network() {
        let health = Health::default();
        let now = Instant::now();
        for kind in [
            ErrorKind::RemoteConnectionRefused,
            ErrorKind::RemoteHostNotFound,
            ErrorKind::ExitPolicyRejected,
            ErrorKind::OnionServiceNotRunning,
        ] {
            assert_eq!(Outcome::of_error(kind), Outcome::Carried, "{kind:?}");
            health.record(Outcome::of_error(kind), now);
        }
        assert_eq!(health.gate(now), Gate::Open);
        assert_eq!(
            Outcome::of_error(ErrorKind::TorNetworkTimeout),
            Outcome::Unreachable
        );
        assert_eq!(
            Outcome::of_error(ErrorKind::BootstrapRequired),
            Outcome::Unknown
        );
        assert!(!health.record(Outcome::Unknown, now));
        assert_eq!(health.gate(now), Gate::Open);
    }
}
