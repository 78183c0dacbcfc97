//! The registry's server: TLS 1.3 with a required client certificate (the shared acceptor), the
//! API over the shared hyper setup, and two housekeeping tasks: reloading the TLS files when
//! they change (so `pki revoke` takes effect without a restart) and expiring abandoned
//! uploads.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use hyper::service::service_fn;
use std::future::Future;

use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::{TcpListener, TcpStream};

use super::api::{Api, Body, Caller};
use crate::config::Inside;
use crate::net::http::{serve_connection, HttpSettings};
use crate::net::listener::{self, Clients, Connection, Listener, ListenerReader, ListenerSettings};
use crate::net::service_task::ServiceTask;
use crate::net::tls::TlsAcceptor;

/// How often the TLS files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(1);
/// How often abandoned uploads are looked for.
const EXPIRY_POLL: Duration = Duration::from_secs(600);

/// How the server runs.
pub struct ServerSettings {
    /// The inside address and `registry.port`.
    pub listen: SocketAddr,
    /// Only clients in the inside subnet are served.
    pub inside: Inside,
    /// Connections at once, at most.
    pub max_connections: usize,
}

/// A running registry server.
pub struct RegistryServer {
    local_addr: SocketAddr,
    listener: Listener,
    housekeeping: ServiceTask,
    handshake_failures: Arc<AtomicU64>,
}

/// Serves an API over mutual TLS on `socket`: each connection's handshake from `acceptor` (one
/// that fails, with no certificate, another CA's, a revoked one or TLS 1.2, ends there, before
/// any HTTP, and is counted in `failures`), then HTTP through the shared hyper setup, every
/// request answered by `handle` with the client certificate's name as its caller. The
/// registry's listener, and the mirror's.
pub(crate) fn serve_mutual_tls<H, Fut>(
    socket: TcpListener,
    settings: ListenerSettings,
    acceptor: TlsAcceptor,
    failures: Arc<AtomicU64>,
    handle: H,
) -> Listener
where
    H: Fn(Caller, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let name = settings.name;
    Listener::spawn(socket, settings, move |conn: Connection<TcpStream>| {
        let (tls, failures, handle) = (acceptor.clone(), failures.clone(), handle.clone());
        async move {
            let _slot = conn.slot;
            let accepted = match tls.accept(conn.stream).await {
                Ok(accepted) => accepted,
                Err(error) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = ?conn.peer, "{name}: {error}");
                    return;
                }
            };
            let client = accepted.client_name;
            let service = service_fn(move |request| {
                let caller = Caller {
                    client: client.clone(),
                };
                let answer = handle(caller, request);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let _ = serve_connection(
                accepted.stream,
                service,
                HttpSettings::default(),
                conn.shutdown,
            )
            .await;
        }
    })
}

impl RegistryServer {
    /// Binds and serves `api` over TLS from `acceptor`.
    pub async fn start(
        settings: ServerSettings,
        acceptor: TlsAcceptor,
        api: Arc<Api>,
    ) -> Result<Self> {
        let (socket, local_addr) = listener::bind_tcp(settings.listen, "the registry").await?;
        let handshake_failures = Arc::new(AtomicU64::new(0));
        let failures = handshake_failures.clone();
        let tls = acceptor.clone();
        let serving = api.clone();
        let listener = serve_mutual_tls(
            socket,
            ListenerSettings {
                name: "registry",
                clients: Clients::Inside(settings.inside),
                max_connections: settings.max_connections,
            },
            tls,
            failures,
            move |caller, request| serving.clone().handle(caller, request),
        );
        let mut tls_watch = TlsWatch::new(acceptor);
        let store = api.store().clone();
        let housekeeping = ServiceTask::spawn(
            "registry housekeeping",
            move |mut shutdown| async move {
                let mut reload = tokio::time::interval(RELOAD_POLL);
                let mut expiry = tokio::time::interval(EXPIRY_POLL);
                loop {
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = reload.tick() => tls_watch.check("registry"),
                        _ = expiry.tick() => {
                            let store = store.clone();
                            let expired = tokio::task::spawn_blocking(move || store.expire_uploads()).await;
                            match expired {
                                Ok(Ok(0)) => {}
                                Ok(Ok(n)) => tracing::info!("registry: {n} abandoned uploads removed"),
                                Ok(Err(error)) => tracing::warn!("registry: expiring uploads: {error:#}"),
                                Err(error) => tracing::warn!("registry: expiring uploads: {error}"),
                            }
                        }
                    }
                }
            },
        );
        Ok(RegistryServer {
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

    /// Reads the counters after the server has moved elsewhere.
    pub fn reader(&self) -> (ListenerReader, Arc<AtomicU64>) {
        (self.listener.reader(), self.handshake_failures.clone())
    }

    /// Stops listening, closes every connection, ends housekeeping.
    pub async fn stop(self) {
        self.listener.stop().await;
        self.housekeeping.stop().await;
    }
}

/// `acceptor`'s TLS files and how they looked when last read: [`TlsWatch::check`] reloads the
/// acceptor when one changed, so `pki revoke` (a new CRL) takes effect without a restart.
/// The registry's and the mirror's housekeeping share it.
pub(crate) struct TlsWatch {
    acceptor: TlsAcceptor,
    files: Vec<PathBuf>,
    seen: Vec<Option<(SystemTime, u64, u64)>>,
}

impl TlsWatch {
    /// Watches the files `acceptor` reads, as they are now.
    pub(crate) fn new(acceptor: TlsAcceptor) -> Self {
        let files = watched_files(&acceptor);
        let seen = stamps(&files);
        TlsWatch {
            acceptor,
            files,
            seen,
        }
    }

    /// Reloads the acceptor if a file changed since the last look; `who` names the server in
    /// the log. A failed reload keeps the old files.
    pub(crate) fn check(&mut self, who: &str) {
        let now = stamps(&self.files);
        if now == self.seen {
            return;
        }
        match self.acceptor.reload() {
            Ok(()) => tracing::info!("{who}: TLS files changed; reloaded (CRL, certificates)"),
            Err(error) => {
                tracing::warn!("{who}: reloading TLS files failed, the old ones stay: {error:#}")
            }
        }
        self.seen = now;
    }
}

/// The TLS files `acceptor` reads.
fn watched_files(acceptor: &TlsAcceptor) -> Vec<PathBuf> {
    let settings = acceptor.settings();
    let mut files = vec![settings.cert_chain.clone(), settings.key.clone()];
    if let Some(ca) = settings.client_auth.ca() {
        files.push(ca.ca.clone());
        files.extend(ca.crl.clone());
    }
    files
}

/// Each file's modification time and size (a rewrite within one mtime tick still changes the
/// inode, so that is in too).
fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|meta| Some((meta.modified().ok()?, meta.len(), meta.ino())))
        })
        .collect()
}

#[cfg(test)]
mod tests;
