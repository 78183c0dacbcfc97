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
//! forwarded exchanges and tunnels end after `idle_timeout` without a byte either way.

pub mod config;
mod forward;
mod idle;
pub mod request;
mod stats;

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, Semaphore},
};

pub use stats::{HttpProxyStats, UpstreamFailures};

use crate::net::service_task::ServiceTask;
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
}

impl HttpProxySettings {
    /// The defaults for `listen` and `inside`: CONNECT to 443 only, 30 s for a request head,
    /// 60 s to connect, 5 min idle, 1024 connections.
    pub fn new(listen: SocketAddr, inside: Inside) -> Self {
        HttpProxySettings {
            listen,
            inside,
            connect_ports: config::HttpProxy::default().connect_ports,
            header_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            max_connections: 1024,
            log_queries: false,
        }
    }
}

/// What every connection shares.
pub(crate) struct Shared {
    settings: HttpProxySettings,
    connector: Arc<dyn Connector>,
    counters: Arc<Counters>,
    /// Never sent on: its sender going away tells every task to stop.
    shutdown: watch::Receiver<()>,
}

/// A running HTTP proxy. Dropping it stops it too; [`HttpProxy::stop`] waits for that.
pub struct HttpProxy {
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    task: ServiceTask,
}

impl HttpProxy {
    /// Binds `settings.listen` and serves until stopped.
    pub async fn start(settings: HttpProxySettings, connector: Arc<dyn Connector>) -> Result<Self> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding the HTTP proxy to tcp {}", settings.listen))?;
        let local_addr = listener
            .local_addr()
            .context("reading the HTTP proxy's address")?;
        let counters = Arc::new(Counters::default());
        let task = ServiceTask::spawn("HTTP proxy", |shutdown| {
            accept_loop(
                listener,
                Arc::new(Shared {
                    settings,
                    connector,
                    counters: counters.clone(),
                    shutdown,
                }),
            )
        });
        Ok(HttpProxy {
            local_addr,
            counters,
            task,
        })
    }

    /// The address it listens on (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters now.
    pub fn stats(&self) -> HttpProxyStats {
        self.counters.snapshot()
    }

    /// A handle that reads the counters after the proxy has moved elsewhere.
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(self.counters.clone())
    }

    /// Stops listening and closes every connection and tunnel.
    pub async fn stop(self) {
        self.task.stop().await;
    }
}

/// Reads the counters of a running [`HttpProxy`].
#[derive(Clone)]
pub struct StatsReader(Arc<Counters>);

impl StatsReader {
    /// The counters now.
    pub fn stats(&self) -> HttpProxyStats {
        self.0.snapshot()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(shared.settings.max_connections));
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of descriptors, usually: back off instead of spinning.
                tracing::warn!(%error, "HTTP proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !is_inside(&shared.settings.inside, peer.ip()) {
            bump(&shared.counters.refused_clients);
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            bump(&shared.counters.busy);
            continue;
        };
        let shared = shared.clone();
        let active = Arc::new(ActiveGuard::new(shared.counters.clone(), slot));
        tokio::spawn(serve(stream, peer.ip(), shared, active));
    }
}

/// Whether `ip` is an inside client (IPv4-mapped IPv6 counts as IPv4).
fn is_inside(inside: &Inside, ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(ip) => inside.contains(ip),
        IpAddr::V6(_) => false,
    }
}

/// One client connection: HTTP/1.1 requests until it closes, times out or becomes a tunnel.
async fn serve(stream: TcpStream, client: IpAddr, shared: Arc<Shared>, active: Arc<ActiveGuard>) {
    let mut shutdown = shared.shutdown.clone();
    let counters = shared.counters.clone();
    let service = {
        let shared = shared.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let active = active.clone();
            async move { Ok::<_, Infallible>(forward::handle(shared, client, active, req).await) }
        })
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.settings.header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let result = tokio::select! {
        result = connection => result,
        _ = shutdown.changed() => return,
    };
    if let Err(error) = result {
        if error.is_timeout() {
            bump(&counters.header_timeouts);
        } else if error.is_parse() || error.is_parse_too_large() {
            bump(&counters.bad_requests);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn inside_clients_only() {
        let inside = Inside {
            address: Ipv4Addr::new(198, 51, 100, 1),
            prefix_len: 24,
        };
        assert!(is_inside(&inside, "198.51.100.23".parse().unwrap()));
        assert!(is_inside(&inside, "::ffff:198.51.100.23".parse().unwrap()));
        assert!(!is_inside(&inside, "198.51.101.23".parse().unwrap()));
        assert!(!is_inside(&inside, "127.0.0.1".parse().unwrap()));
        assert!(!is_inside(&inside, "2001:db8::1".parse().unwrap()));
    }
}
