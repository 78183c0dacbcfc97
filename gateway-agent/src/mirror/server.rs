//! The mirror's server: TLS 1.3 with a required client certificate from the gateway CA (the
//! registry's acceptor and files, reloaded when they change so `pki revoke` takes effect), the
//! API over the shared hyper setup, and a housekeeping task that keeps the cache under
//! `mirror.max_size` (after new fetches) and drops upload sessions an interrupted fetch left
//! behind.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::api::Mirror;
use crate::net::listener::{self, Clients, Listener, ListenerReader, ListenerSettings};
use crate::net::service_task::ServiceTask;
use crate::net::tls::TlsAcceptor;
use crate::registry::server::{serve_mutual_tls, TlsWatch};

/// How often the TLS files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(1);
/// How often abandoned fetches' upload sessions are looked for.
const EXPIRY_POLL: Duration = Duration::from_secs(600);
/// How often the fetch counters are looked at; when what was fetched could have taken the
/// caches over `mirror.max_size`, their size is measured and images evicted.
const EVICTION_POLL: Duration = Duration::from_secs(2);

/// How the server runs.
pub struct ServerSettings {
    /// Where it listens (the inside address and `mirror.port`).
    pub listen: SocketAddr,
    /// Who may connect.
    pub clients: Clients,
    /// Connections at once, at most.
    pub max_connections: usize,
}

/// A running mirror server.
pub struct MirrorServer {
    local_addr: SocketAddr,
    listener: Listener,
    housekeeping: ServiceTask,
    handshake_failures: Arc<AtomicU64>,
}

impl MirrorServer {
    /// Binds and serves `mirror` over TLS from `acceptor`.
    pub async fn start(
        settings: ServerSettings,
        acceptor: TlsAcceptor,
        mirror: Arc<Mirror>,
    ) -> Result<Self> {
        let (socket, local_addr) = listener::bind_tcp(settings.listen, "the mirror").await?;
        let handshake_failures = Arc::new(AtomicU64::new(0));
        let failures = handshake_failures.clone();
        let tls = acceptor.clone();
        let serving = mirror.clone();
        let listener = serve_mutual_tls(
            socket,
            ListenerSettings {
                name: "mirror",
                clients: settings.clients,
                max_connections: settings.max_connections,
            },
            tls,
            failures,
            move |caller, request| serving.clone().handle(caller, request),
        );
        let mut tls_watch = TlsWatch::new(acceptor);
        let evicting = mirror.clone();
        let stores: Vec<_> = mirror
            .caches()
            .values()
            .map(|cache| cache.store().clone())
            .collect();
        let housekeeping = ServiceTask::spawn(
            "mirror housekeeping",
            move |mut shutdown| async move {
                let mut reload = tokio::time::interval(RELOAD_POLL);
                let mut expiry = tokio::time::interval(EXPIRY_POLL);
                let mut eviction = tokio::time::interval(EVICTION_POLL);
                // (bytes the stores held at the last walk, bytes fetched then); none yet, so
                // the first tick walks: the bound may have shrunk since the last run.
                let mut measured: Option<(u64, u64)> = None;
                loop {
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = reload.tick() => tls_watch.check("mirror"),
                        _ = eviction.tick() => {
                            // The stores are walked only when what was fetched since the last
                            // walk could have taken them over the bound.
                            let now = evicting.fetched_bytes();
                            let estimate = measured
                                .map(|(bytes, at)| bytes.saturating_add(now.saturating_sub(at)));
                            if estimate.is_none_or(|estimate| estimate > evicting.max_bytes()) {
                                let mirror = evicting.clone();
                                match tokio::task::spawn_blocking(move || mirror.evict()).await {
                                    Ok(Ok(evicted)) => measured = Some((evicted.bytes_after, now)),
                                    Ok(Err(error)) => tracing::warn!("mirror: eviction: {error:#}"),
                                    Err(error) => tracing::warn!("mirror: eviction: {error}"),
                                }
                            }
                        }
                    _ = expiry.tick() => {
                            for store in &stores {
                                let store = store.clone();
                                match tokio::task::spawn_blocking(move || store.expire_uploads()).await {
                                    Ok(Ok(0)) => {}
                                    Ok(Ok(n)) => tracing::info!("mirror: {n} interrupted fetches cleaned up"),
                                    Ok(Err(error)) => tracing::warn!("mirror: expiring uploads: {error:#}"),
                                    Err(error) => tracing::warn!("mirror: expiring uploads: {error}"),
                                }
                            }
                        }
                    }
                }
            },
        );
        Ok(MirrorServer {
            local_addr,
            listener,
            housekeeping,
            handshake_failures,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listener's counters and the failed handshakes, readable after a move.
    pub fn reader(&self) -> (ListenerReader, Arc<AtomicU64>) {
        (self.listener.reader(), self.handshake_failures.clone())
    }

    /// Stops listening, closes every connection, ends housekeeping.
    pub async fn stop(self) {
        self.listener.stop().await;
        self.housekeeping.stop().await;
    }
}
