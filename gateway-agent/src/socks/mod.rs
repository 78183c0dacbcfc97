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
pub(crate) mod service;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::hash_map::RandomState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::net::TcpStream;

use crate::config::Inside;
use crate::egress::Connector;
use crate::net::listener::{self, Clients, Connection, Listener, ListenerReader, ListenerSettings};
use crate::tor::Resolve;
pub use service::SERVICE;
use stats::Counters;
pub use stats::SocksStats;

/// What the SOCKS server needs from the configuration.
#[derive(Debug, Clone)]
pub struct SocksSettings {
    /// Where to listen: the inside address and `socks.port` (port 0 picks one, for tests).
    pub listen: SocketAddr,
    /// Only clients in this subnet are served; others are closed unanswered.
    pub inside: Inside,
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
    /// Settings for `listen`, serving `inside`, with the default timeouts and limit.
    pub fn new(listen: SocketAddr, inside: Inside) -> Self {
        SocksSettings {
            listen,
            inside,
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
    listener: Listener,
}

impl SocksServer {
    /// Binds `settings.listen` and serves, opening streams with `connector` and resolving
    /// with `resolver`.
    pub async fn start(
        settings: SocksSettings,
        connector: Arc<dyn Connector>,
        resolver: Arc<dyn Resolve>,
    ) -> Result<SocksServer> {
        let (socket, local_addr) = listener::bind_tcp(settings.listen, "the SOCKS server").await?;
        let listener_settings = ListenerSettings {
            name: "SOCKS server",
            clients: Clients::Inside(settings.inside),
            max_connections: settings.max_connections,
        };
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
        let serving = shared.clone();
        let listener = Listener::spawn(
            socket,
            listener_settings,
            move |conn: Connection<TcpStream>| {
                let shared = serving.clone();
                async move {
                    let Some(peer) = conn.peer else { return };
                    let _slot = conn.slot;
                    let mut shutdown = conn.shutdown;
                    tokio::select! {
                        _ = conn::serve(conn.stream, peer, &shared) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            },
        );
        Ok(SocksServer {
            shared,
            local_addr,
            listener,
        })
    }

    /// The address served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters since start.
    pub fn stats(&self) -> SocksStats {
        self.stats_reader().stats()
    }

    /// A reader for [`SocksServer::stats`] while the server runs (for the control socket).
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(self.shared.clone(), self.listener.reader())
    }

    /// Stops accepting and closes every connection.
    pub async fn stop(self) {
        self.listener.stop().await;
    }
}

/// Reads a running server's counters.
#[derive(Clone)]
pub struct StatsReader(Arc<Shared>, ListenerReader);

impl StatsReader {
    /// Counters since start; the listener's refusals count as failures.
    pub fn stats(&self) -> SocksStats {
        let mut stats = self.0.counters.snapshot();
        let listener = self.1.stats();
        for (reason, count) in [("busy", listener.busy), ("not_inside", listener.not_inside)] {
            if count > 0 {
                *stats.failures.entry(reason.to_owned()).or_default() += count;
            }
        }
        stats
    }
}
