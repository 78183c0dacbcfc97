//! The SOCKS server's counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;

/// What the SOCKS server has done since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SocksStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub active: u64,
    /// Streams opened (CONNECT succeeded).
    pub streams: u64,
    /// RESOLVE requests answered.
    pub resolves: u64,
    /// RESOLVE_PTR requests answered.
    pub resolve_ptrs: u64,
    /// Bytes from clients to targets.
    pub bytes_up: u64,
    /// Bytes from targets to clients.
    pub bytes_down: u64,
    /// Failed requests and handshakes by reason (`not_ready`, `host_unreachable`,
    /// `unsupported_command`, `bad_version`, `truncated`, …).
    pub failures: BTreeMap<String, u64>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub active: AtomicU64,
    pub streams: AtomicU64,
    pub resolves: AtomicU64,
    pub resolve_ptrs: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counters {
    pub fn failure(&self, reason: &'static str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        *failures.entry(reason).or_default() += 1;
    }

    pub fn snapshot(&self) -> SocksStats {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        SocksStats {
            connections: self.connections.load(Relaxed),
            active: self.active.load(Relaxed),
            streams: self.streams.load(Relaxed),
            resolves: self.resolves.load(Relaxed),
            resolve_ptrs: self.resolve_ptrs.load(Relaxed),
            bytes_up: self.bytes_up.load(Relaxed),
            bytes_down: self.bytes_down.load(Relaxed),
            failures: failures
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        }
    }
}
