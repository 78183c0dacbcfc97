//! The accept loop every stream service uses (SOCKS, the HTTP proxy, metrics, the control
//! socket, and the coming registry, mirror and status page): who may connect (the inside-subnet
//! check), how many at once, back-off when accepting fails, one shutdown signal for the loop and
//! every connection, and a stop bounded in time.
//!
//! Services differ only in what they do with an admitted connection, so that is the one thing
//! they hand in. Turning a client away (not inside, over the limit) closes the connection
//! unanswered: a stranger learns nothing, not even which protocol runs here.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::service_task::{ServiceTask, Shutdown};
use crate::config::Inside;

/// How long the loop waits after a failed accept (out of descriptors, usually) before the next,
/// instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Who may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clients {
    /// Only addresses in the inside subnet (IPv4-mapped IPv6 counts as IPv4). Every service on
    /// the inside address uses this: the listener is the check, not the dataplane alone.
    Inside(Inside),
    /// Anyone who can reach the socket: for a loopback-only endpoint (metrics) or a unix
    /// socket, whose file permissions decide.
    Local,
}

impl Clients {
    /// Whether a peer at `ip` (`None`: a unix socket peer) is admitted.
    pub fn admits(&self, ip: Option<IpAddr>) -> bool {
        match (self, ip) {
            (Clients::Local, _) => true,
            (Clients::Inside(inside), Some(ip)) => match ip.to_canonical() {
                IpAddr::V4(ip) => inside.contains(ip),
                IpAddr::V6(_) => false,
            },
            // A unix peer on a listener meant for the inside: nothing to check it against.
            (Clients::Inside(_), None) => false,
        }
    }
}

/// How a listener runs.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// What the logs call it ("SOCKS server").
    pub name: &'static str,
    /// Who may connect.
    pub clients: Clients,
    /// Connections served at once; more are closed unanswered and counted as busy.
    pub max_connections: usize,
}

/// A listening socket the loop can accept from.
pub trait Accept: Send + Sync + 'static {
    /// One accepted connection.
    type Stream: Send + 'static;
    /// Polls for the next connection and the peer's IP address (`None` for a unix peer).
    fn poll_accept(&self, cx: &mut Context<'_>)
        -> Poll<io::Result<(Self::Stream, Option<IpAddr>)>>;
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;
    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Self::Stream, Option<IpAddr>)>> {
        TcpListener::poll_accept(self, cx).map_ok(|(stream, peer)| {
            // Request/response protocols: without TCP_NODELAY a reply written in two parts
            // (head, then a small body) waits for the client's delayed ACK, ~40 ms a request.
            let _ = stream.set_nodelay(true);
            (stream, Some(peer.ip()))
        })
    }
}

impl Accept for UnixListener {
    type Stream = tokio::net::UnixStream;
    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Self::Stream, Option<IpAddr>)>> {
        UnixListener::poll_accept(self, cx).map_ok(|(stream, _)| (stream, None))
    }
}

/// One admitted connection, handed to the service.
pub struct Connection<S> {
    /// The stream.
    pub stream: S,
    /// The peer's address (`None` for a unix socket peer).
    pub peer: Option<IpAddr>,
    /// Holds one of the `max_connections` places: keep it for as long as the connection (or a
    /// tunnel it becomes) lives.
    pub slot: Slot,
    /// Fires when the service stops; long-lived connections end on it.
    pub shutdown: Shutdown,
}

/// One place among `max_connections`, released when dropped.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// What a listener counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStats {
    /// Connections admitted.
    pub accepted: u64,
    /// Connections from outside the allowed clients, closed unanswered.
    pub not_inside: u64,
    /// Connections over the limit, closed unanswered.
    pub busy: u64,
    /// Failed accepts (each followed by a short back-off).
    pub accept_errors: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    not_inside: AtomicU64,
    busy: AtomicU64,
    accept_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ListenerStats {
        ListenerStats {
            accepted: self.accepted.load(Relaxed),
            not_inside: self.not_inside.load(Relaxed),
            busy: self.busy.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
        }
    }
}

/// Reads a listener's counters while it runs.
#[derive(Clone)]
pub struct ListenerReader(Arc<Counters>);

impl ListenerReader {
    /// The counters now.
    pub fn stats(&self) -> ListenerStats {
        self.0.snapshot()
    }
}

/// A running accept loop. Dropping it aborts the loop and every connection;
/// [`Listener::stop`] first asks them to end.
pub struct Listener {
    counters: Arc<Counters>,
    task: ServiceTask,
}

impl Listener {
    /// Serves `socket`: every admitted connection goes to `serve`, in a task of its own that
    /// ends with the listener.
    pub fn spawn<A, F, Fut>(socket: A, settings: ListenerSettings, serve: F) -> Listener
    where
        A: Accept,
        F: Fn(Connection<A::Stream>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let counters = Arc::new(Counters::default());
        let loop_counters = counters.clone();
        let task = ServiceTask::spawn(settings.name, move |shutdown| {
            accept_loop(socket, settings, loop_counters, shutdown, serve)
        });
        Listener { counters, task }
    }

    /// A reader for the counters.
    pub fn reader(&self) -> ListenerReader {
        ListenerReader(self.counters.clone())
    }

    /// Stops accepting, signals every connection, and waits for them within the service-task
    /// bound; whatever is left then is aborted.
    pub async fn stop(self) {
        self.task.stop().await;
    }
}

async fn accept_loop<A, F, Fut>(
    socket: A,
    settings: ListenerSettings,
    counters: Arc<Counters>,
    mut shutdown: Shutdown,
    serve: F,
) where
    A: Accept,
    F: Fn(Connection<A::Stream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    // Dropping the set (when this task ends or is aborted) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = std::future::poll_fn(|cx| socket.poll_accept(cx)) => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                counters.accept_errors.fetch_add(1, Relaxed);
                tracing::warn!(%error, "{}: accept failed", settings.name);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if !settings.clients.admits(peer) {
            counters.not_inside.fetch_add(1, Relaxed);
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            counters.busy.fetch_add(1, Relaxed);
            continue;
        };
        counters.accepted.fetch_add(1, Relaxed);
        connections.spawn(serve(Connection {
            stream,
            peer,
            slot: Slot(permit),
            shutdown: shutdown.clone(),
        }));
    }
    // Stopping: the connections saw the same signal; give them the time the owner allows.
    while connections.join_next().await.is_some() {}
}

/// Binds a TCP listener on `listen`, naming `what` (and the config key) when it fails.
pub async fn bind_tcp(listen: SocketAddr, what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    use anyhow::Context as _;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {what} to tcp {listen}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("reading the address of {what}"))?;
    Ok((listener, local))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    const LOOPBACK: Inside = Inside {
        address: Ipv4Addr::LOCALHOST,
        prefix_len: 8,
    };
    const ELSEWHERE: Inside = Inside {
        address: Ipv4Addr::new(198, 51, 100, 1),
        prefix_len: 24,
    };

    /// An echo service behind the toolkit on 127.0.0.1.
    async fn echo(clients: Clients, max: usize) -> (Listener, SocketAddr) {
        let (socket, addr) = bind_tcp("127.0.0.1:0".parse().unwrap(), "a test listener")
            .await
            .unwrap();
        let settings = ListenerSettings {
            name: "test listener",
            clients,
            max_connections: max,
        };
        let listener = Listener::spawn(
            socket,
            settings,
            |mut conn: Connection<TcpStream>| async move {
                let _slot = conn.slot;
                let mut buf = [0u8; 64];
                loop {
                    tokio::select! {
                        _ = conn.shutdown.changed() => return,
                        read = conn.stream.read(&mut buf) => match read {
                            Ok(0) | Err(_) => return,
                            Ok(n) => if conn.stream.write_all(&buf[..n]).await.is_err() { return },
                        },
                    }
                }
            },
        );
        (listener, addr)
    }

    /// What a client gets back for `ping`: the echo, or nothing (closed unanswered).
    async fn ping(addr: SocketAddr) -> Vec<u8> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(b"ping").await;
        let mut got = Vec::new();
        let mut buf = [0u8; 4];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
        {
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[test]
    fn inside_admits_the_subnet_only() {
        let inside = Clients::Inside(ELSEWHERE);
        assert!(inside.admits(Some("198.51.100.23".parse().unwrap())));
        assert!(inside.admits(Some("::ffff:198.51.100.23".parse().unwrap())));
        assert!(!inside.admits(Some("198.51.101.23".parse().unwrap())));
        assert!(!inside.admits(Some("127.0.0.1".parse().unwrap())));
        assert!(!inside.admits(Some("2001:db8::1".parse().unwrap())));
        assert!(!inside.admits(None));
        assert!(Clients::Local.admits(None));
        assert!(Clients::Local.admits(Some("203.0.113.9".parse().unwrap())));
    }

    #[tokio::test]
    async fn a_client_outside_the_subnet_is_closed_unanswered_and_counted() {
        let (listener, addr) = echo(Clients::Inside(ELSEWHERE), 4).await;
        assert_eq!(ping(addr).await, b"", "127.0.0.1 is not in 198.51.100.0/24");
        let stats = listener.reader().stats();
        assert_eq!((stats.not_inside, stats.accepted), (1, 0), "{stats:?}");

        let (listener, addr) = echo(Clients::Inside(LOOPBACK), 4).await;
        assert_eq!(ping(addr).await, b"ping");
        assert_eq!(listener.reader().stats().accepted, 1);
    }

    #[tokio::test]
    async fn over_the_limit_is_closed_unanswered_and_counted() {
        let (listener, addr) = echo(Clients::Local, 1).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        first.read_exact(&mut one).await.unwrap();
        assert_eq!(ping(addr).await, b"", "the only place is taken");
        assert_eq!(listener.reader().stats().busy, 1);
        drop(first);
        // The place comes back once the first connection's task has ended.
        let mut answered = false;
        for _ in 0..50 {
            if ping(addr).await == b"ping" {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered, "the slot was released");
    }

    #[tokio::test]
    async fn stop_ends_open_connections_and_frees_the_port() {
        let (listener, addr) = echo(Clients::Local, 4).await;
        let mut open = TcpStream::connect(addr).await.unwrap();
        open.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await.unwrap();
        listener.stop().await;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the open connection ended: {read:?}"
        );
        TcpListener::bind(addr)
            .await
            .expect("the port is free again");
    }
}
