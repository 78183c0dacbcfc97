//! The one HTTP/1.1 server setup every HTTP service uses (metrics, the HTTP proxy, the
//! registry, the mirror, the status page), over plain TCP or TLS alike.
//!
//! A connection ends when the client closes it, when hyper gives up on it (a request head
//! too slow or too large, a malformed request), or at once when the service stops: requests
//! in flight are not waited for, since the service's stop is bounded and a proxied download
//! can take any time.

use std::error::Error as StdError;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::service_task::Shutdown;

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// A request head must arrive within this; it also ends idle keep-alive connections.
    pub header_timeout: Duration,
    /// Largest request head accepted (request line and headers); hyper answers 431 beyond it.
    pub max_header_bytes: usize,
    /// Serve more than one request per connection.
    pub keep_alive: bool,
    /// Let the service take over the connection (CONNECT, `Upgrade:`) via `hyper::upgrade::on`.
    pub upgrades: bool,
}

impl Default for HttpSettings {
    /// 30 s for a request head, 64 KiB of it at most, keep-alive, no upgrades.
    fn default() -> Self {
        HttpSettings {
            header_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            keep_alive: true,
            upgrades: false,
        }
    }
}

/// Serves HTTP/1.1 requests on `io` with `service` until the connection ends or `shutdown`
/// fires (then `Ok`, and the connection is dropped).
///
/// hyper's error is returned as it is so the caller can count it: `is_timeout()` for a
/// request head that did not arrive in time, `is_parse()` / `is_parse_too_large()` for a bad
/// one.
pub async fn serve_connection<IO, S, B>(
    io: IO,
    service: S,
    settings: HttpSettings,
    mut shutdown: Shutdown,
) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_header_size(settings.max_header_bytes)
        .keep_alive(settings.keep_alive);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    // The two connection types differ, hence two selects.
    if settings.upgrades {
        tokio::select! {
            result = connection.with_upgrades() => result,
            _ = shutdown.changed() => Ok(()),
        }
    } else {
        tokio::select! {
            result = connection => result,
            _ = shutdown.changed() => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;
    use tokio::task::JoinHandle;

    use super::*;

    /// Bounds every wait, so a broken server fails a test instead of hanging it.
    const BOUND: Duration = Duration::from_secs(5);

    struct OneConnection {
        addr: SocketAddr,
        served: JoinHandle<Result<(), hyper::Error>>,
        shutdown: watch::Sender<()>,
    }

    /// Serves the first connection to a loopback listener with a service that says hello.
    async fn serve_one(settings: HttpSettings) -> OneConnection {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, watch) = watch::channel(());
        let served = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service_fn(|_request| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
            });
            serve_connection(stream, service, settings, watch).await
        });
        OneConnection {
            addr,
            served,
            shutdown,
        }
    }

    /// Everything the server sends until it closes (or resets) the connection.
    async fn read_until_closed(stream: &mut TcpStream) -> String {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(BOUND, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
                Err(_) => panic!("the server kept the connection open past {BOUND:?}"),
            }
        }
        String::from_utf8_lossy(&received).into_owned()
    }

    async fn finished(served: JoinHandle<Result<(), hyper::Error>>) -> Result<(), hyper::Error> {
        tokio::time::timeout(BOUND, served)
            .await
            .expect("the connection ended")
            .unwrap()
    }

    #[tokio::test]
    async fn serves_a_request() {
        let server = serve_one(HttpSettings::default()).await;
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let response = read_until_closed(&mut client).await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nhello"), "{response}");
        assert!(finished(server.served).await.is_ok());
    }

    #[tokio::test]
    async fn a_client_silent_past_the_header_timeout_is_disconnected() {
        let server = serve_one(HttpSettings {
            header_timeout: Duration::from_millis(200),
            ..HttpSettings::default()
        })
        .await;
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        let response = read_until_closed(&mut client).await;
        assert!(!response.contains("200 OK"), "{response}");
        let error = finished(server.served).await.unwrap_err();
        assert!(error.is_timeout(), "counted as a header timeout: {error}");
    }

    #[tokio::test]
    async fn a_head_over_the_limit_gets_431() {
        let server = serve_one(HttpSettings {
            max_header_bytes: 8 * 1024,
            ..HttpSettings::default()
        })
        .await;
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "GET / HTTP/1.1\r\nHost: gateway\r\nX-Filler: {}\r\n\r\n",
            "a".repeat(16 * 1024)
        );
        // The server may close before it has read all of it.
        let _ = client.write_all(head.as_bytes()).await;
        let response = read_until_closed(&mut client).await;
        assert!(response.starts_with("HTTP/1.1 431 "), "{response}");
        let error = finished(server.served).await.unwrap_err();
        assert!(
            error.is_parse_too_large(),
            "counted as a bad request: {error}"
        );
    }

    #[tokio::test]
    async fn without_keep_alive_the_connection_closes_after_one_response() {
        let server = serve_one(HttpSettings {
            keep_alive: false,
            ..HttpSettings::default()
        })
        .await;
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        // Two pipelined requests; only the first is answered.
        client
            .write_all(
                b"GET /1 HTTP/1.1\r\nHost: gateway\r\n\r\nGET /2 HTTP/1.1\r\nHost: gateway\r\n\r\n",
            )
            .await
            .unwrap();
        let response = read_until_closed(&mut client).await;
        assert_eq!(response.matches("HTTP/1.1 200 OK").count(), 1, "{response}");
        assert!(response.contains("connection: close"), "{response}");
        assert!(finished(server.served).await.is_ok());
    }

    #[tokio::test]
    async fn keep_alive_serves_pipelined_requests() {
        let server = serve_one(HttpSettings::default()).await;
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        client
            .write_all(b"GET /1 HTTP/1.1\r\nHost: gateway\r\n\r\nGET /2 HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let response = read_until_closed(&mut client).await;
        assert_eq!(response.matches("HTTP/1.1 200 OK").count(), 2, "{response}");
    }

    #[tokio::test]
    async fn shutdown_closes_an_idle_connection() {
        let server = serve_one(HttpSettings::default()).await;
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(BOUND, client.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
        // Kept alive (30 s header timeout) until the service stops.
        drop(server.shutdown);
        assert!(finished(server.served).await.is_ok());
        assert_eq!(read_until_closed(&mut client).await, "");
    }

    /// CONNECT answered with 200, then the connection echoes what it gets, as a tunnel would.
    async fn serve_one_tunnel(settings: HttpSettings) -> (SocketAddr, JoinHandle<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tunnel_tx, tunnel_rx) = tokio::sync::oneshot::channel();
        let tunnel_tx = std::sync::Mutex::new(Some(tunnel_tx));
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (_shutdown, watch) = watch::channel(());
            let service = service_fn(move |request: Request<Incoming>| {
                if let Some(tx) = tunnel_tx.lock().unwrap().take() {
                    tokio::spawn(async move {
                        let opened = match hyper::upgrade::on(request).await {
                            Ok(upgraded) => {
                                let mut upgraded = TokioIo::new(upgraded);
                                let mut buf = [0u8; 4];
                                upgraded.read_exact(&mut buf).await.unwrap();
                                upgraded.write_all(&buf).await.unwrap();
                                true
                            }
                            Err(_) => false,
                        };
                        let _ = tx.send(opened);
                    });
                }
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
            });
            let _ = serve_connection(stream, service, settings, watch).await;
        });
        let tunnel = tokio::spawn(async move { tunnel_rx.await.unwrap() });
        (addr, tunnel)
    }

    #[tokio::test]
    async fn with_upgrades_a_connect_becomes_a_tunnel() {
        for upgrades in [true, false] {
            let (addr, tunnel) = serve_one_tunnel(HttpSettings {
                upgrades,
                ..HttpSettings::default()
            })
            .await;
            let mut client = TcpStream::connect(addr).await.unwrap();
            client
                .write_all(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(BOUND, client.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
            if upgrades {
                client.write_all(b"ping").await.unwrap();
                let mut echo = [0u8; 4];
                tokio::time::timeout(BOUND, client.read_exact(&mut echo))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(&echo, b"ping");
            }
            let opened = tokio::time::timeout(BOUND, tunnel).await.unwrap().unwrap();
            assert_eq!(opened, upgrades, "upgrades: {upgrades}");
        }
    }
}
