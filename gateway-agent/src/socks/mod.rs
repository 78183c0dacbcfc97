//! The SOCKS server on the inside address (port 9050): SOCKS5 and SOCKS4a CONNECT by name or
//! address, Tor's RESOLVE and RESOLVE_PTR extensions, `.onion` names. Streams go through a
//! [`Connector`] (Tor), lookups through a [`Resolve`]r (Tor); both refuse while Tor is not
//! bootstrapped, and the client gets a failure code. The wire protocol is arti's
//! `tor-socksproto`; this module decides what to answer.
//!
//! Isolation: streams of one client address share circuits; a client that gives SOCKS
//! credentials gets one isolation group per credential pair (Tor's IsolateSOCKSAuth).

mod conn;
mod reply;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::hash_map::RandomState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::egress::Connector;
use crate::tor::Resolve;
use stats::Counters;
pub use stats::SocksStats;

/// What the SOCKS server needs from the configuration.
#[derive(Debug, Clone)]
pub struct SocksSettings {
    /// Where to listen: the inside address and `socks.port` (port 0 picks one, for tests).
    pub listen: SocketAddr,
    /// Log every request (client, command, target, outcome, isolation key) at INFO.
    pub log_queries: bool,
    /// How long a client may take to send its request.
    pub handshake_timeout: Duration,
    /// How long opening a stream or a lookup may take (onion services are slow).
    pub connect_timeout: Duration,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
}

impl SocksSettings {
    /// Settings for `listen` with the default timeouts and limit.
    pub fn new(listen: SocketAddr) -> Self {
        SocksSettings {
            listen,
            log_queries: false,
            handshake_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(120),
            max_connections: 1024,
        }
    }
}

/// State every connection shares.
pub(crate) struct Shared {
    settings: SocksSettings,
    connector: Arc<dyn Connector>,
    resolver: Arc<dyn Resolve>,
    counters: Counters,
    /// Keys the credential hashes in isolation keys; per process, so keys are not guessable.
    hasher: RandomState,
}

/// A running SOCKS server. Dropping it stops it too.
pub struct SocksServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl SocksServer {
    /// Binds `settings.listen` and serves, opening streams with `connector` and resolving
    /// with `resolver`.
    pub async fn start(
        settings: SocksSettings,
        connector: Arc<dyn Connector>,
        resolver: Arc<dyn Resolve>,
    ) -> Result<SocksServer> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding the SOCKS listener on {}", settings.listen))?;
        let local_addr = listener
            .local_addr()
            .context("reading the SOCKS listener's address")?;
        let shared = Arc::new(Shared {
            settings,
            connector,
            resolver,
            counters: Counters::default(),
            hasher: RandomState::new(),
        });
        tracing::info!(
            address = %local_addr,
            egress = shared.connector.name(),
            "SOCKS server listening"
        );
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(SocksServer {
            shared,
            local_addr,
            task: Some(task),
        })
    }

    /// The address served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters since start.
    pub fn stats(&self) -> SocksStats {
        self.shared.counters.snapshot()
    }

    /// A reader for [`SocksServer::stats`] while the server runs (for the control socket).
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(self.shared.clone())
    }

    /// Stops accepting and closes every connection.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for SocksServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Reads a running server's counters.
#[derive(Clone)]
pub struct StatsReader(Arc<Shared>);

impl StatsReader {
    /// Counters since start.
    pub fn stats(&self) -> SocksStats {
        self.0.counters.snapshot()
    }
}

/// Accepts until aborted; aborting drops the set, which aborts every connection.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(shared.settings.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "SOCKS accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    shared.counters.failure("busy");
                    drop(stream);
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    conn::serve(stream, peer, &shared).await;
                    drop(slot);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
