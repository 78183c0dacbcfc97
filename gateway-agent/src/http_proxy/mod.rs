//! The HTTP proxy on the inside address (port 3128 by default): absolute-form HTTP requests
//! and CONNECT, every stream through one [`Connector`] (`tor` unless the config says otherwise).
//!
//! Fail closed: a connector that cannot serve turns into a 502 (or 403 for policy); nothing
//! ever goes out another way. Only clients in the inside subnet are served; others are closed
//! unanswered. What the origin sees: the request in origin-form without hop-by-hop headers and
//! no `Via` or `X-Forwarded-For` (see [`request`]).
//!
//! Timeouts: a client must finish each request head within `header_timeout` (slowloris, and
//! idle keep-alive connections); a stream to the origin must open within `connect_timeout`;
//! forwarded exchanges and tunnels end after `idle_timeout` without a byte either way, and so
//! do idle upstream connections kept for reuse (`pool.rs`, per client and destination).
//!
//! GET and HEAD go through the disk cache (`cache/`) unless `http_proxy.cache = false`;
//! `http://HTTPS///host/path` is fetched from `https://host/path` ([`upstream_tls`]).

pub(crate) mod cache;
pub mod config;
mod forward;
pub mod framing;
mod idle;
mod pool;
pub mod request;
pub(crate) mod service;
mod stats;
pub mod upstream_tls;

use std::{
    convert::Infallible, net::IpAddr, net::SocketAddr, path::Path, sync::Arc, time::Duration,
};

use anyhow::{Context, Result};
use hyper::service::service_fn;
use tokio::{net::TcpStream, sync::watch};

pub use cache::{CacheStats, Listed as CacheListed};
pub use service::SERVICE;
pub use stats::{HttpProxyStats, UpstreamFailures};

use crate::net::http::{serve_connection, HttpSettings};
use crate::net::listener::{self, Clients, Connection, Listener, ListenerReader, ListenerSettings};
use crate::{config::Inside, egress::Connector};
use stats::{bump, ActiveGuard, Counters};

/// Largest request head accepted (request line and headers); hyper answers 431 beyond it.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct HttpProxySettings {
    /// Where to listen: the inside address and `http_proxy.port`.
    pub listen: SocketAddr,
    /// Only clients in this subnet are served.
    pub inside: Inside,
    /// Ports CONNECT may reach (`http_proxy.connect_ports`).
    pub connect_ports: Vec<u16>,
    /// Ports absolute-form requests may reach (`http_proxy.ports`).
    pub ports: Vec<u16>,
    /// A request head must arrive within this; it also ends idle keep-alive connections.
    pub header_timeout: Duration,
    /// A stream to the origin must open within this (Tor may build a circuit first).
    pub connect_timeout: Duration,
    /// A forwarded exchange or a tunnel with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Client connections open at once, at most; more are closed unanswered.
    pub max_connections: usize,
    /// Log each request (client, method, host:port, status); off by default (`log.queries`).
    pub log_queries: bool,
    /// The disk cache, if any (`http_proxy.cache`).
    pub cache: Option<CacheSettings>,
    /// The CA certificates (PEM) https origins are verified against
    /// (`http_proxy.upstream_ca`); the system roots when `None`.
    pub upstream_ca: Option<std::path::PathBuf>,
}

/// Where the cache lives and how big it may get.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Its directory (`state.dir/http-cache`).
    pub dir: std::path::PathBuf,
    /// Bytes it may hold (`http_proxy.cache_size`).
    pub max_bytes: u64,
    /// The largest object stored (`http_proxy.max_object_size`).
    pub max_object: u64,
}

impl HttpProxySettings {
    /// The defaults for `listen` and `inside`: CONNECT to 443 only, requests to 80 and 443, 30 s for a request head,
    /// 60 s to connect, 5 min idle, 1024 connections.
    pub fn new(listen: SocketAddr, inside: Inside) -> Self {
        HttpProxySettings {
            listen,
            inside,
            connect_ports: config::HttpProxy::default().connect_ports,
            ports: config::HttpProxy::default().ports,
            header_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            max_connections: 1024,
            log_queries: false,
            cache: None,
            upstream_ca: None,
        }
    }
}

/// What every connection shares.
pub(crate) struct Shared {
    settings: Arc<HttpProxySettings>,
    connector: Arc<dyn Connector>,
    counters: Arc<Counters>,
    /// The disk cache, unless `http_proxy.cache = false`.
    cache: Option<Arc<cache::Cache>>,
    /// TLS to https origins; `None` when the system has no CA bundle (they get 502).
    upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// Idle upstream connections, per client isolation group and destination.
    pool: Arc<pool::Pool>,
    /// Never sent on: its sender going away tells every task to stop.
    shutdown: watch::Receiver<()>,
}

/// A running HTTP proxy. Dropping it stops it too; [`HttpProxy::stop`] waits for that.
pub struct HttpProxy {
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    cache: Option<Arc<cache::Cache>>,
    listener: Listener,
}

impl HttpProxy {
    /// Binds `settings.listen` and serves until stopped.
    pub async fn start(settings: HttpProxySettings, connector: Arc<dyn Connector>) -> Result<Self> {
        let (socket, local_addr) = listener::bind_tcp(settings.listen, "the HTTP proxy").await?;
        let counters = Arc::new(Counters::default());
        let cache = match settings.cache.clone() {
            Some(c) => Some(
                tokio::task::spawn_blocking(move || {
                    cache::Cache::open(&c.dir, c.max_bytes, c.max_object)
                })
                .await
                .context("opening the HTTP cache")??,
            ),
            None => None,
        };
        let upstream_tls = match &settings.upstream_ca {
            Some(ca) => Some(upstream_tls::client_config(ca).context("http_proxy.upstream_ca")?),
            None => match upstream_tls::client_config(Path::new(upstream_tls::SYSTEM_ROOTS)) {
                Ok(config) => Some(config),
                Err(error) => {
                    tracing::warn!(
                        "no system CA roots, so https origins get 502 (http_proxy.upstream_ca \
                         names others): {error:#}"
                    );
                    None
                }
            },
        };
        let listener_settings = ListenerSettings {
            name: "HTTP proxy",
            clients: Clients::Inside(settings.inside),
            max_connections: settings.max_connections,
        };
        let settings = Arc::new(settings);
        let serving = counters.clone();
        let serving_cache = cache.clone();
        let upstream_pool = Arc::new(pool::Pool::default());
        let listener = Listener::spawn(
            socket,
            listener_settings,
            move |conn: Connection<TcpStream>| {
                let shared = Arc::new(Shared {
                    settings: settings.clone(),
                    connector: connector.clone(),
                    counters: serving.clone(),
                    cache: serving_cache.clone(),
                    upstream_tls: upstream_tls.clone(),
                    pool: upstream_pool.clone(),
                    shutdown: conn.shutdown.clone(),
                });
                async move {
                    let Some(client) = conn.peer else { return };
                    let active = Arc::new(ActiveGuard::new(shared.counters.clone(), conn.slot));
                    serve(conn.stream, client, shared, active).await;
                }
            },
        );
        Ok(HttpProxy {
            local_addr,
            counters,
            cache,
            listener,
        })
    }

    /// The address it listens on (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters now.
    pub fn stats(&self) -> HttpProxyStats {
        self.stats_reader().stats()
    }

    /// A handle that reads the counters after the proxy has moved elsewhere.
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(
            self.counters.clone(),
            self.listener.reader(),
            self.cache.clone(),
        )
    }

    /// The cache's control handle, if the cache is on.
    pub fn cache_control(&self) -> Option<CacheControl> {
        self.cache.clone().map(CacheControl)
    }

    /// Stops listening and closes every connection and tunnel.
    pub async fn stop(self) {
        self.listener.stop().await;
    }
}

/// Reads the counters of a running [`HttpProxy`].
#[derive(Clone)]
pub struct StatsReader(Arc<Counters>, ListenerReader, Option<Arc<cache::Cache>>);

impl StatsReader {
    /// The counters now.
    pub fn stats(&self) -> HttpProxyStats {
        let mut stats = self.0.snapshot(self.1.stats());
        stats.cache = self.2.as_ref().map(|cache| cache.stats());
        stats
    }
}

/// What the control socket may do to a running proxy's cache.
#[derive(Clone)]
pub struct CacheControl(Arc<cache::Cache>);

impl CacheControl {
    /// The cache's counters and sizes.
    pub fn stats(&self) -> CacheStats {
        self.0.stats()
    }

    /// Every stored object's URL, size and time.
    pub fn list(&self) -> Vec<CacheListed> {
        self.0.list()
    }

    /// Removes the object stored for `url` (`http://host[:port]/path`): the URL as the cache
    /// keys it, and whether there was one.
    pub async fn purge(&self, url: &str) -> Result<(String, bool)> {
        let url = cache::normal_url(url)?;
        let purged = self.0.purge(&url).await;
        Ok((url, purged))
    }
}

/// One client connection: HTTP/1.1 requests until it closes, times out or becomes a tunnel.
async fn serve(stream: TcpStream, client: IpAddr, shared: Arc<Shared>, active: Arc<ActiveGuard>) {
    let shutdown = shared.shutdown.clone();
    let counters = shared.counters.clone();
    // The bytes hyper reads pass a framing scanner first (`framing`): hyper hides the
    // ambiguous framings the proxy refuses.
    let verdicts = Arc::new(framing::Verdicts::default());
    let stream = framing::Scanned::new(
        stream,
        framing::Scanner::new(MAX_HEAD_BYTES, verdicts.clone()),
    );
    let service = {
        let shared = shared.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let active = active.clone();
            let ambiguous = verdicts.next_request();
            async move {
                Ok::<_, Infallible>(forward::handle(shared, client, active, ambiguous, req).await)
            }
        })
    };
    let settings = HttpSettings {
        header_timeout: shared.settings.header_timeout,
        max_header_bytes: MAX_HEAD_BYTES,
        keep_alive: true,
        upgrades: true,
    };
    let result = serve_connection(stream, service, settings, shutdown).await;
    if let Err(error) = result {
        if error.is_timeout() {
            bump(&counters.header_timeouts);
        } else if error.is_parse() || error.is_parse_too_large() {
            bump(&counters.bad_requests);
        }
    }
}
