//! One steered connection: its original destination (by the name the gateway's DNS gave it,
//! where it did), a Tor stream to it, the bytes both ways.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::net::TcpStream;

use crate::config::Inside;
use crate::dns::answered::AnsweredNames;
use crate::egress::{relay, Connector, Host, Isolation, Target};

/// What the listener counts.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub streams: AtomicU64,
    pub by_name: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

/// The counters as `status` shows them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TransparentStats {
    /// Steered connections accepted.
    pub connections: u64,
    /// Connections that got a Tor stream.
    pub streams: u64,
    /// Of those, opened by the name the gateway's DNS answered (an onion name included).
    #[serde(default)]
    pub by_name: u64,
    /// Refused before any stream: to the inside subnet or the gateway itself.
    pub refused: u64,
    /// The stream could not be opened (Tor down, the exit refused): reset.
    pub failed: u64,
    /// Bytes from clients.
    pub bytes_up: u64,
    /// Bytes to clients.
    pub bytes_down: u64,
}

impl Counters {
    pub fn snapshot(&self) -> TransparentStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransparentStats {
            connections: get(&self.connections),
            streams: get(&self.streams),
            by_name: get(&self.by_name),
            refused: get(&self.refused),
            failed: get(&self.failed),
            bytes_up: get(&self.bytes_up),
            bytes_down: get(&self.bytes_down),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Serves one accepted connection from `client`.
pub async fn serve(
    mut stream: TcpStream,
    client: IpAddr,
    inside: Inside,
    connector: Arc<dyn Connector>,
    counters: Arc<Counters>,
    answered: Arc<AnsweredNames>,
    log_queries: bool,
) {
    bump(&counters.connections);
    // The accepted socket's local address is where the client meant to go.
    let destination = match stream.local_addr() {
        Ok(SocketAddr::V4(addr)) => addr,
        _ => return reset(stream, &counters.refused),
    };
    // Another inside host or the gateway itself are never reached through Tor.
    if inside.contains(*destination.ip()) {
        return reset(stream, &counters.refused);
    }
    // Where the gateway's DNS gave this client the address: by name, so the exit resolves it
    // (and an onion service is reached at all).
    let host = match answered.name_for(client, *destination.ip(), Instant::now()) {
        Some(name) => Host::Name(name),
        // A virtual address this client was not given (or no longer has) leads nowhere.
        None if answered
            .onion_range()
            .is_some_and(|range| range.contains(*destination.ip())) =>
        {
            return reset(stream, &counters.refused);
        }
        None => Host::Ip(IpAddr::V4(*destination.ip())),
    };
    let target = Target {
        host,
        port: destination.port(),
    };
    let isolation = Isolation::client(client);
    let mut upstream = match connector.connect(&target, &isolation).await {
        Ok(upstream) => upstream,
        Err(error) => {
            if log_queries {
                tracing::info!(%client, %target, "transparent: {error}");
            }
            return reset(stream, &counters.failed);
        }
    };
    bump(&counters.streams);
    if matches!(target.host, Host::Name(_)) {
        bump(&counters.by_name);
    }
    if log_queries {
        tracing::info!(%client, %target, "transparent stream");
    }
    if let Ok((up, down)) = relay(&mut stream, &mut upstream).await {
        counters.bytes_up.fetch_add(up, Ordering::Relaxed);
        counters.bytes_down.fetch_add(down, Ordering::Relaxed);
    }
}

/// Closes with a reset (SO_LINGER 0): the client fails at once instead of waiting.
fn reset(stream: TcpStream, counter: &AtomicU64) {
    bump(counter);
    if let Ok(std) = stream.into_std() {
        let socket = socket2::Socket::from(std);
        let _ = socket.set_linger(Some(std::time::Duration::ZERO));
    }
}
