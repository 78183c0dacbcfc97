//! Counters of the HTTP proxy, for `status` and metrics.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use crate::net::listener::{ListenerStats, Slot};
use serde::{Deserialize, Serialize};

use crate::egress::EgressError;

/// A snapshot of the proxy's counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpProxyStats {
    /// Absolute-form requests received (forwarded or not).
    pub requests: u64,
    /// CONNECT requests received.
    pub connects: u64,
    /// Answered 400 (origin-form, bad scheme or host), or closed as malformed by the parser.
    pub bad_requests: u64,
    /// CONNECT to a port outside `http_proxy.connect_ports`, or a request to one outside
    /// `http_proxy.ports` (403).
    pub denied_ports: u64,
    /// Connections from outside the inside subnet, closed unanswered.
    pub refused_clients: u64,
    /// Connections closed unanswered because `max_connections` were open.
    pub busy: u64,
    /// Clients that did not finish a request head in time (slow or idle keep-alive).
    pub header_timeouts: u64,
    /// Why streams to the origin failed.
    pub upstream_failures: UpstreamFailures,
    /// Client connections open now (tunnels included).
    pub active: u64,
    /// The disk cache, when it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<super::CacheStats>,
}

/// Upstream failures by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamFailures {
    /// The connector was not ready (Tor not bootstrapped): 502, nothing sent.
    pub not_ready: u64,
    /// The connector's policy refused the target: 403.
    pub refused: u64,
    /// The name did not resolve: 502.
    pub not_found: u64,
    /// The target did not answer or refused the connection: 502.
    pub unreachable: u64,
    /// Any other connector error: 502.
    pub failed: u64,
    /// No stream within the timeout (502), or no response head (504).
    pub timeout: u64,
    /// The origin's answer was not valid HTTP, or the stream broke before it: 502.
    pub protocol: u64,
    /// TLS to an https origin failed (its certificate not verified, no CA roots): 502.
    #[serde(default)]
    pub tls: u64,
}

/// The live counters behind [`HttpProxyStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub connects: AtomicU64,
    pub bad_requests: AtomicU64,
    pub denied_ports: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub not_ready: AtomicU64,
    pub refused: AtomicU64,
    pub not_found: AtomicU64,
    pub unreachable: AtomicU64,
    pub failed: AtomicU64,
    pub timeout: AtomicU64,
    pub protocol: AtomicU64,
    pub tls: AtomicU64,
    pub active: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// The counters now; the listener's refusals are the proxy's.
    pub fn snapshot(&self, listener: ListenerStats) -> HttpProxyStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HttpProxyStats {
            requests: get(&self.requests),
            connects: get(&self.connects),
            bad_requests: get(&self.bad_requests),
            denied_ports: get(&self.denied_ports),
            refused_clients: listener.not_inside,
            busy: listener.busy,
            header_timeouts: get(&self.header_timeouts),
            upstream_failures: UpstreamFailures {
                not_ready: get(&self.not_ready),
                refused: get(&self.refused),
                not_found: get(&self.not_found),
                unreachable: get(&self.unreachable),
                failed: get(&self.failed),
                timeout: get(&self.timeout),
                protocol: get(&self.protocol),
                tls: get(&self.tls),
            },
            active: get(&self.active),
            cache: None,
        }
    }

    /// Counts a connector error by kind.
    pub fn egress_error(&self, error: &EgressError) {
        bump(match error {
            EgressError::NotReady(_) => &self.not_ready,
            EgressError::Refused(_) => &self.refused,
            EgressError::NotFound(_) => &self.not_found,
            EgressError::Unreachable(_) => &self.unreachable,
            EgressError::Failed(_) => &self.failed,
        });
    }
}

/// One open client connection: counted in [`Counters::active`] and holding one of the
/// `max_connections` slots. Shared with the tunnel the connection may become, so a tunnel keeps
/// both; the last clone to go frees them.
pub(crate) struct ActiveGuard {
    counters: Arc<Counters>,
    _slot: Slot,
}

impl ActiveGuard {
    pub fn new(counters: Arc<Counters>, slot: Slot) -> Self {
        counters.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard {
            counters,
            _slot: slot,
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}
