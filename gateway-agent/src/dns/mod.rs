//! The inside DNS server: authoritative for the local zone (`home.arpa`: leases,
//! reservations, the gateway's service names) and the inside subnet's reverse zones, a
//! caching forwarder for everything else through an [`Upstream`], never forwarding
//! special-use or private names, and dropping upstream answers that point into private space.
//!
//! Served on UDP and TCP on the inside address, to inside clients only, rate limited per
//! client. Queries are logged only when `log_queries` is set. UDP goes through the fast path
//! ([`fast`]: per-core sockets, answers kept as wire bytes) in front of the hickory pipeline;
//! TCP is hickory's.

pub mod answered;
mod cache;
pub mod config;
pub mod fast;
mod handler;
mod inflight;
mod names;
pub mod offline;
mod plain_upstream;
mod rebind;
pub(crate) mod service;
mod stats;
pub mod steered;
mod zone;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use socket2::Socket;
use tokio::net::TcpListener;

use crate::config::Inside;
use crate::egress::Upstream;
use crate::ratelimit::KeyedBuckets;
use config::Dns;

pub use handler::MAX_UDP_PAYLOAD;
pub use plain_upstream::UplinkUpstream;
pub use service::SERVICE;
pub use stats::DnsStats;
pub use zone::{LocalZone, ZoneAnswer, ZoneError};

use cache::{Cache, TtlPolicy};
use fast::socket::Workers;
use fast::FastPath;
use handler::{Handler, Shared};
use inflight::InFlight;
use names::NeverForward;

/// The gateway's own names in the local zone. No client may take them, and no
/// `[[dhcp.reservations]]` name either.
pub const SERVICE_NAMES: [&str; 5] = ["gateway", "registry", "mirror", "proxy", "socks"];

/// A `tracing` filter directive that keeps hickory's own per-request logs (DEBUG and above
/// name clients and queries) out of the log; add it to the subscriber's filter.
pub const QUIET_HICKORY: &str = "hickory_server=warn,hickory_net=warn,hickory_proto=warn";

/// How long an idle TCP client may keep its connection.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 16;
/// Clients the rate limit tracks at most. The inside subnet bounds the real number; this bounds
/// the worst case (a /8 inside, or sources the ACL has not yet rejected).
const MAX_TRACKED_CLIENTS: usize = 4096;

/// What the DNS server needs from the configuration.
#[derive(Debug, Clone)]
pub struct DnsServerSettings {
    /// The address to serve on: the inside address.
    pub listen: Ipv4Addr,
    /// The port (53; 0 picks a free one, the same for UDP and TCP, for tests).
    pub port: u16,
    /// The inside subnet: who may ask, and whose reverse zone is local.
    pub inside: Inside,
    /// `[dns]`: cache size, TTLs, rate limit (the zone itself is the [`LocalZone`]'s).
    pub dns: Dns,
    /// The gateway's inside address. The [`LocalZone`] is built with it (the service names
    /// point at it); the server only logs it.
    pub gateway_ip: Ipv4Addr,
    /// Log every query (client, name, type, outcome) at INFO.
    pub log_queries: bool,
    /// Where `.onion` names get virtual addresses and answers are remembered for the
    /// transparent listener; `None`: `.onion` is NXDOMAIN and nothing is remembered.
    pub answered: Option<Arc<answered::AnsweredNames>>,
}

/// A running DNS server. Dropping it stops it too; [`DnsServer::stop`] waits for that.
pub struct DnsServer {
    /// TCP (and the steered TCP).
    server: hickory_server::Server<Handler>,
    shared: Arc<Shared>,
    fast: Arc<FastPath>,
    /// The UDP socket threads.
    udp: Option<Workers>,
    local_addr: SocketAddr,
    /// The steered-UDP task, if [`DnsServer::serve_steered`] started one.
    steered_udp: Option<tokio::task::JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `listen:port` and starts serving `zone`, forwarding other names
    /// to `upstream` (`None`: they get SERVFAIL).
    pub async fn start(
        settings: DnsServerSettings,
        zone: Arc<LocalZone>,
        upstream: Option<Arc<dyn Upstream>>,
    ) -> Result<DnsServer> {
        let (udp, tcp) = bind(settings.listen, settings.port, fast::socket::thread_count())?;
        let local_addr = tcp
            .local_addr()
            .context("reading the DNS socket's address")?;
        let never = NeverForward::new(zone.origin(), &settings.inside);
        let shared = Arc::new(Shared {
            inside: settings.inside,
            zone,
            never,
            upstream,
            cache: Mutex::new(Cache::new(settings.dns.cache_size)),
            inflight: InFlight::new(),
            limiter: Mutex::new(KeyedBuckets::new(
                settings.dns.rate_limit,
                MAX_TRACKED_CLIENTS,
            )),
            policy: TtlPolicy {
                default_ttl: settings.dns.default_ttl.get(),
                max_ttl: settings.dns.max_ttl.get(),
            },
            counters: Default::default(),
            log_queries: settings.log_queries,
            answered: settings.answered.clone(),
        });
        let fast = Arc::new(FastPath::new(
            Handler(shared.clone()),
            settings.dns.cache_size,
        ));
        let threads = udp.len();
        let workers = Workers::spawn(udp, fast.clone(), tokio::runtime::Handle::current())?;
        let mut server = hickory_server::Server::new(Handler(shared.clone()));
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        tracing::info!(
            address = %local_addr,
            gateway = %settings.gateway_ip,
            upstream = shared.upstream.as_ref().map(|u| u.name()).unwrap_or("none"),
            udp_sockets = threads,
            "DNS server listening (udp and tcp)"
        );
        Ok(DnsServer {
            server,
            shared,
            fast,
            udp: Some(workers),
            local_addr,
            steered_udp: None,
        })
    }

    /// Also answers the DNS the dataplane steers from inside clients to other resolvers.
    pub fn serve_steered(&mut self, sockets: steered::SteeredSockets) {
        self.server
            .register_listener(sockets.tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        if let Some(old) = self
            .steered_udp
            .replace(steered::serve_udp(sockets.udp, self.fast.clone()))
        {
            old.abort();
        }
    }

    /// The address served on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters since start, with the cache and zone sizes now.
    pub fn stats(&self) -> DnsStats {
        self.stats_reader().stats()
    }

    /// A handle that reads [`DnsServer::stats`] while the server runs, for the control socket.
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(self.shared.clone())
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(udp) = self.steered_udp.take() {
            udp.abort();
        }
    }
}

/// Reads a running server's counters (see [`DnsServer::stats_reader`]).
#[derive(Clone)]
pub struct StatsReader(Arc<Shared>);

impl StatsReader {
    /// The counters since start, with the cache and zone sizes now.
    pub fn stats(&self) -> DnsStats {
        let shared = &self.0;
        let mut stats = shared.counters.snapshot();
        {
            let cache = shared.cache();
            stats.cache_entries = cache.len() as u64;
            stats.cache_evictions = cache.evictions();
        }
        stats.zone_names = shared.zone.names().len() as u64;
        stats.upstream = shared.upstream.as_ref().map(|u| u.name().to_owned());
        stats
    }
}

impl DnsServer {
    /// Stops serving and waits (briefly) for the sockets to close.
    pub async fn stop(mut self) {
        if let Some(udp) = self.steered_udp.take() {
            udp.abort();
        }
        if let Some(workers) = self.udp.take() {
            workers.stop().await;
        }
        match tokio::time::timeout(Duration::from_secs(5), self.server.shutdown_gracefully()).await
        {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "DNS server stopped with an error"),
            Err(_) => tracing::warn!("DNS server did not stop within 5s; its tasks are dropped"),
        }
    }
}

/// `count` UDP sockets sharing one address and port, and TCP on the same. With port 0 the
/// kernel picks the UDP port and TCP takes the same number, retried a few times in case it is
/// taken for TCP.
fn bind(listen: Ipv4Addr, port: u16, count: usize) -> Result<(Vec<Socket>, TcpListener)> {
    let mut last_err = None;
    for _ in 0..if port == 0 { 8 } else { 1 } {
        let first = fast::socket::bind_udp(SocketAddrV4::new(listen, port))
            .with_context(|| format!("binding DNS udp {listen}:{port}"))?;
        let actual = first
            .local_addr()
            .ok()
            .and_then(|addr| addr.as_socket())
            .context("reading the DNS socket's address")?;
        let tcp = match std::net::TcpListener::bind(actual) {
            Ok(tcp) => tcp,
            Err(err) => {
                last_err = Some(err);
                continue;
            }
        };
        tcp.set_nonblocking(true)
            .context("making the DNS tcp listener non-blocking")?;
        let tcp = TcpListener::from_std(tcp).context("registering the DNS tcp listener")?;
        let mut udp = vec![first];
        for _ in 1..count {
            let SocketAddr::V4(actual) = actual else {
                break;
            };
            udp.push(
                fast::socket::bind_udp(actual)
                    .with_context(|| format!("binding another DNS udp socket on {actual}"))?,
            );
        }
        return Ok((udp, tcp));
    }
    let err = last_err
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no attempt"));
    Err(err.context(format!("binding DNS tcp {listen}:{port}")))
}
