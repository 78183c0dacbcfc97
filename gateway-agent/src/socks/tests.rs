//! The SOCKS server over real sockets on loopback, with a fake connector (to a local echo
//! server) and a fake resolver: the protocol is the real one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::*;
use crate::egress::{BoxStream, EgressError, Host, Isolation, Target};
use crate::tor::fake::FakeResolver;

/// Connects every target to the echo server, except a few names that fail; records what it
/// was asked.
struct FakeConnector {
    echo: SocketAddr,
    seen: Mutex<Vec<(Target, Isolation)>>,
}

impl Connector for FakeConnector {
    fn connect<'a>(
        &'a self,
        target: &'a Target,
        isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<BoxStream, EgressError>> {
        Box::pin(async move {
            self.seen
                .lock()
                .unwrap()
                .push((target.clone(), isolation.clone()));
            match &target.host {
                Host::Name(n) if n == "unreachable.example" => {
                    Err(EgressError::Unreachable("no route".into()))
                }
                Host::Name(n) if n == "broken.example" => Err(EgressError::Failed("bug".into())),
                Host::Name(n) if n == "notready.example" => {
                    Err(EgressError::NotReady("not bootstrapped".into()))
                }
                Host::Name(n) if n == "slow.example" => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Err(EgressError::Failed("late".into()))
                }
                _ => {
                    let stream = TcpStream::connect(self.echo)
                        .await
                        .map_err(|e| EgressError::Unreachable(e.to_string()))?;
                    Ok(Box::new(stream) as BoxStream)
                }
            }
        })
    }

    fn name(&self) -> &'static str {
        "fake"
    }
}

struct Harness {
    server: SocksServer,
    connector: Arc<FakeConnector>,
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Every loopback address is "inside" for these tests (clients bind 127.0.0.x).
const LOOPBACK_INSIDE: Inside = Inside {
    address: std::net::Ipv4Addr::LOCALHOST,
    prefix_len: 8,
};

async fn harness() -> Harness {
    harness_serving(LOOPBACK_INSIDE).await
}

async fn harness_serving(inside: Inside) -> Harness {
    let connector = Arc::new(FakeConnector {
        echo: echo_server().await,
        seen: Mutex::new(Vec::new()),
    });
    let mut settings = SocksSettings::new("127.0.0.1:0".parse().unwrap(), inside);
    settings.handshake_timeout = Duration::from_secs(2);
    settings.connect_timeout = Duration::from_secs(2);
    let server = SocksServer::start(
        settings,
        connector.clone(),
        Arc::new(FakeResolver::new(true)),
    )
    .await
    .unwrap();
    Harness { server, connector }
}

impl Harness {
    async fn client(&self) -> TcpStream {
        self.client_from("127.0.0.1").await
    }

    async fn client_from(&self, source: &str) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(source.parse().unwrap(), 0))
            .unwrap();
        socket.connect(self.server.local_addr()).await.unwrap()
    }

    fn seen(&self) -> Vec<(Target, Isolation)> {
        self.connector.seen.lock().unwrap().clone()
    }

    /// Waits until the server has closed every connection, then reads the counters.
    async fn settled_stats(&self) -> SocksStats {
        for _ in 0..100 {
            let stats = self.server.stats();
            if stats.active == 0 {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("connections still active: {:?}", self.server.stats());
    }
}

/// Reads exactly `n` bytes, or panics after a second.
async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut buf))
        .await
        .expect("reply in time")
        .expect("reply bytes");
    buf
}

/// Reads to EOF (the server closed), or panics after a second.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut buf))
        .await
        .expect("closed in time")
        .expect("clean close");
    buf
}

/// The SOCKS5 greeting (optionally with credentials), then `request` (from CMD on).
async fn socks5(stream: &mut TcpStream, auth: Option<(&str, &str)>, request: &[u8]) {
    match auth {
        None => {
            stream.write_all(&[5, 1, 0]).await.unwrap();
            assert_eq!(read_n(stream, 2).await, [5, 0]);
        }
        Some((user, pass)) => {
            stream.write_all(&[5, 1, 2]).await.unwrap();
            assert_eq!(read_n(stream, 2).await, [5, 2]);
            let mut msg = vec![1, user.len() as u8];
            msg.extend(user.as_bytes());
            msg.push(pass.len() as u8);
            msg.extend(pass.as_bytes());
            stream.write_all(&msg).await.unwrap();
            assert_eq!(read_n(stream, 2).await, [1, 0]);
        }
    }
    let mut msg = vec![5];
    msg.extend(request);
    stream.write_all(&msg).await.unwrap();
}

/// `CMD RSV ATYP=name LEN name PORT`.
fn by_name(cmd: u8, name: &str, port: u16) -> Vec<u8> {
    let mut msg = vec![cmd, 0, 3, name.len() as u8];
    msg.extend(name.as_bytes());
    msg.extend(port.to_be_bytes());
    msg
}

async fn echo_check(stream: &mut TcpStream) {
    stream.write_all(b"ping").await.unwrap();
    assert_eq!(read_n(stream, 4).await, b"ping");
}

#[tokio::test]
async fn socks5_connect_by_name_and_by_address() {
    let h = harness().await;
    let mut c = h.client().await;
    socks5(&mut c, None, &by_name(1, "origin.example", 80)).await;
    assert_eq!(read_n(&mut c, 10).await, [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    echo_check(&mut c).await;
    drop(c);

    let mut c = h.client().await;
    socks5(&mut c, None, &[1, 0, 1, 203, 0, 113, 10, 1, 187]).await;
    assert_eq!(read_n(&mut c, 10).await[1], 0);
    echo_check(&mut c).await;
    drop(c);

    let mut c = h.client().await;
    let mut v6 = vec![1, 0, 4];
    v6.extend(
        "2001:db8::10"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v6.extend(443u16.to_be_bytes());
    socks5(&mut c, None, &v6).await;
    assert_eq!(read_n(&mut c, 22).await[1], 0, "IPv6 target, IPv6 reply");
    drop(c);

    let seen = h.seen();
    assert_eq!(
        seen[0].0,
        Target {
            host: Host::Name("origin.example".into()),
            port: 80
        }
    );
    assert_eq!(
        seen[1].0,
        Target {
            host: Host::Ip("203.0.113.10".parse().unwrap()),
            port: 443
        }
    );
    assert_eq!(seen[2].0.host, Host::Ip("2001:db8::10".parse().unwrap()));
    assert!(seen
        .iter()
        .all(|(_, iso)| iso == &Isolation::client("127.0.0.1".parse().unwrap())));
    let stats = h.settled_stats().await;
    assert_eq!((stats.connections, stats.streams), (3, 3));
    assert_eq!(stats.bytes_up, 8);
    assert!(stats.failures.is_empty(), "{stats:?}");
}

#[tokio::test]
async fn socks4_and_socks4a() {
    let h = harness().await;
    let mut c = h.client().await;
    c.write_all(&[4, 1, 0, 80, 203, 0, 113, 10, b'u', 0])
        .await
        .unwrap();
    assert_eq!(read_n(&mut c, 8).await[..2], [0, 0x5a]);
    echo_check(&mut c).await;
    drop(c);

    let mut c = h.client().await;
    let mut msg = vec![4, 1, 0, 80, 0, 0, 0, 1, 0];
    msg.extend(b"origin.example\0");
    c.write_all(&msg).await.unwrap();
    assert_eq!(read_n(&mut c, 8).await[..2], [0, 0x5a]);
    echo_check(&mut c).await;
    drop(c);

    let seen = h.seen();
    assert_eq!(seen[1].0.host, Host::Name("origin.example".into()));
    assert_ne!(
        seen[0].1, seen[1].1,
        "a SOCKS4 user id isolates like credentials"
    );
}

#[tokio::test]
async fn resolve_and_resolve_ptr() {
    let h = harness().await;
    let mut c = h.client().await;
    socks5(&mut c, None, &by_name(0xf0, "origin.example", 0)).await;
    // IPv4 preferred when there is one.
    assert_eq!(
        read_n(&mut c, 10).await,
        [5, 0, 0, 1, 203, 0, 113, 10, 0, 0]
    );
    assert!(read_to_close(&mut c).await.is_empty());

    let mut c = h.client().await;
    socks5(&mut c, None, &by_name(0xf0, "v6only.example", 0)).await;
    let reply = read_n(&mut c, 22).await;
    assert_eq!(reply[..4], [5, 0, 0, 4]);

    let mut c = h.client().await;
    socks5(&mut c, None, &by_name(0xf0, "missing.example", 0)).await;
    assert_eq!(read_n(&mut c, 10).await[1], 4, "host unreachable");

    let mut c = h.client().await;
    socks5(&mut c, None, &[0xf1, 0, 1, 192, 0, 2, 77, 0, 0]).await;
    let reply = read_n(&mut c, 5 + "doc.example".len() + 2).await;
    assert_eq!(reply[..5], [5, 0, 0, 3, 11]);
    assert_eq!(&reply[5..16], b"doc.example");

    // SOCKS4a RESOLVE, as tor-resolve sends it.
    let mut c = h.client().await;
    let mut msg = vec![4, 0xf0, 0, 0, 0, 0, 0, 1, 0];
    msg.extend(b"origin.example\0");
    c.write_all(&msg).await.unwrap();
    assert_eq!(read_n(&mut c, 8).await, [0, 0x5a, 0, 0, 203, 0, 113, 10]);

    let stats = h.settled_stats().await;
    assert_eq!((stats.resolves, stats.resolve_ptrs), (3, 1));
    assert_eq!(stats.failures.get("host_not_found"), Some(&1));
    assert!(h.seen().is_empty(), "lookups never open streams");
}

#[tokio::test]
async fn protocol_errors_get_their_codes_or_a_clean_close() {
    let h = harness().await;

    // Bad version: closed without a reply.
    let mut c = h.client().await;
    c.write_all(&[6, 1, 0]).await.unwrap();
    assert!(read_to_close(&mut c).await.is_empty());

    // Unknown command (BIND): 07.
    let mut c = h.client().await;
    socks5(&mut c, None, &by_name(2, "origin.example", 80)).await;
    assert_eq!(read_n(&mut c, 10).await[..2], [5, 7]);
    assert!(read_to_close(&mut c).await.is_empty());

    // A command nobody defined: 07.
    let mut c = h.client().await;
    socks5(&mut c, None, &[0x42, 0, 1, 1, 2, 3, 4, 0, 80]).await;
    assert_eq!(read_n(&mut c, 10).await[..2], [5, 7]);

    // Address type 5: 08.
    let mut c = h.client().await;
    socks5(&mut c, None, &[1, 0, 5, 1, 2, 3, 4, 0, 80]).await;
    assert_eq!(read_n(&mut c, 10).await[..2], [5, 8]);

    // Truncated greeting, then EOF: a clean close.
    let mut c = h.client().await;
    c.write_all(&[5, 3, 0]).await.unwrap();
    c.shutdown().await.unwrap();
    assert!(read_to_close(&mut c).await.is_empty());

    // Truncated request, then EOF.
    let mut c = h.client().await;
    c.write_all(&[5, 1, 0]).await.unwrap();
    assert_eq!(read_n(&mut c, 2).await, [5, 0]);
    c.write_all(&[5, 1, 0, 3, 20, b'a']).await.unwrap();
    c.shutdown().await.unwrap();
    assert!(read_to_close(&mut c).await.is_empty());

    // Silent client: closed at the handshake timeout.
    let mut c = h.client().await;
    tokio::time::timeout(Duration::from_secs(4), c.read_to_end(&mut Vec::new()))
        .await
        .expect("closed at the handshake timeout")
        .unwrap();

    // No acceptable authentication method: [5, ff].
    let mut c = h.client().await;
    c.write_all(&[5, 1, 0x80]).await.unwrap();
    assert_eq!(read_to_close(&mut c).await, [5, 0xff]);

    // Credentials sub-negotiation with a bad version: failed (RFC 1929).
    let mut c = h.client().await;
    c.write_all(&[5, 1, 2]).await.unwrap();
    assert_eq!(read_n(&mut c, 2).await, [5, 2]);
    c.write_all(&[9, 1, b'u', 1, b'p']).await.unwrap();
    assert_eq!(
        read_to_close(&mut c).await,
        [1, 1],
        "{:?}",
        h.server.stats()
    );

    // SOCKS4 with an unknown command: rejected.
    let mut c = h.client().await;
    c.write_all(&[4, 9, 0, 80, 1, 2, 3, 4, 0]).await.unwrap();
    assert_eq!(read_to_close(&mut c).await[..2], [0, 0x5b]);

    let stats = h.settled_stats().await;
    for (reason, n) in [
        ("bad_version", 1),
        ("unsupported_command", 3),
        ("unsupported_address", 1),
        ("truncated", 2),
        ("handshake_timeout", 1),
        ("no_acceptable_auth", 1),
        ("bad_auth", 1),
    ] {
        assert_eq!(stats.failures.get(reason), Some(&n), "{reason}: {stats:?}");
    }
    assert!(h.seen().is_empty());
}

#[tokio::test]
async fn long_hostnames() {
    let h = harness().await;
    // 255 bytes: the SOCKS5 maximum, accepted.
    let long = format!("{}.example", "a".repeat(255 - ".example".len()));
    assert_eq!(long.len(), 255);
    let mut c = h.client().await;
    socks5(&mut c, None, &by_name(1, &long, 80)).await;
    assert_eq!(read_n(&mut c, 10).await[1], 0);
    echo_check(&mut c).await;
    drop(c);
    assert_eq!(h.seen()[0].0.host, Host::Name(long));

    // 300 bytes in SOCKS4a: more than a name may be, rejected.
    let mut c = h.client().await;
    let mut msg = vec![4, 1, 0, 80, 0, 0, 0, 1, 0];
    msg.extend("b".repeat(300).as_bytes());
    msg.push(0);
    c.write_all(&msg).await.unwrap();
    assert_eq!(read_to_close(&mut c).await[..2], [0, 0x5b]);

    // 2000 bytes, past the codec's buffer: rejected too.
    let mut c = h.client().await;
    let mut msg = vec![4, 1, 0, 80, 0, 0, 0, 1, 0];
    msg.extend("c".repeat(2000).as_bytes());
    msg.push(0);
    let _ = c.write_all(&msg).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), c.read_to_end(&mut rest)).await;
    assert_eq!(h.seen().len(), 1);

    // The server is still there.
    let mut c = h.client().await;
    socks5(&mut c, None, &by_name(1, "origin.example", 80)).await;
    assert_eq!(read_n(&mut c, 10).await[1], 0);
}

#[tokio::test]
async fn connector_errors_map_to_reply_codes() {
    let h = harness().await;
    for (name, code) in [
        ("unreachable.example", 4),
        ("broken.example", 1),
        ("notready.example", 1),
        ("slow.example", 6),
    ] {
        let mut c = h.client().await;
        socks5(&mut c, None, &by_name(1, name, 80)).await;
        // The slow one waits out the 2 s connect timeout.
        let mut reply = [0; 10];
        tokio::time::timeout(Duration::from_secs(4), c.read_exact(&mut reply))
            .await
            .expect("reply in time")
            .expect("reply bytes");
        assert_eq!(reply[1], code, "{name}");
        assert!(read_to_close(&mut c).await.is_empty());
    }
    let stats = h.settled_stats().await;
    assert_eq!(stats.failures.get("host_unreachable"), Some(&1));
    assert_eq!(stats.failures.get("general_failure"), Some(&1));
    assert_eq!(stats.failures.get("not_ready"), Some(&1));
    assert_eq!(stats.failures.get("timeout"), Some(&1));
    assert_eq!(stats.streams, 0);
}

#[tokio::test]
async fn isolation_by_client_and_by_credentials() {
    let h = harness().await;
    for (source, auth) in [
        ("127.0.0.1", None),
        ("127.0.0.2", None),
        ("127.0.0.1", Some(("alice", "one"))),
        ("127.0.0.1", Some(("alice", "two"))),
        ("127.0.0.1", Some(("alice", "one"))),
        ("127.0.0.1", None),
    ] {
        let mut c = h.client_from(source).await;
        socks5(&mut c, auth, &by_name(1, "origin.example", 80)).await;
        assert_eq!(read_n(&mut c, 10).await[1], 0);
    }
    let keys: Vec<Isolation> = h.seen().into_iter().map(|(_, iso)| iso).collect();
    assert_eq!(keys[0], Isolation::client("127.0.0.1".parse().unwrap()));
    assert_eq!(keys[1], Isolation::client("127.0.0.2".parse().unwrap()));
    assert_ne!(keys[0], keys[2], "credentials isolate from the bare client");
    assert_ne!(keys[2], keys[3], "two credentials, two groups");
    assert_eq!(keys[2], keys[4], "the same credentials, the same group");
    assert_eq!(keys[0], keys[5]);
}

#[tokio::test]
async fn a_client_outside_the_inside_subnet_gets_no_answer() {
    let h = harness_serving(Inside {
        address: std::net::Ipv4Addr::new(198, 51, 100, 1),
        prefix_len: 24,
    })
    .await;
    let mut c = h.client().await;
    // A greeting offering "no authentication": an inside client would get 05 00.
    let _ = c.write_all(&[5, 1, 0]).await;
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut reply)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "closed, not left hanging"
    );
    assert!(reply.is_empty(), "127.0.0.1 got an answer: {reply:02x?}");
    let stats = h.server.stats();
    assert_eq!(stats.failures.get("not_inside"), Some(&1), "{stats:?}");
    assert_eq!(stats.connections, 0, "never served: {stats:?}");
}
