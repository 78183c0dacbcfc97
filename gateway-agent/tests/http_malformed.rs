//! Malformed requests to the HTTP proxy: each gets a 400 (431 for an oversized head) and its
//! connection closed, nothing reaches the connector, and the proxy goes on serving everyone
//! else.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use gateway_agent::config::Inside;
use gateway_agent::egress::{BoxStream, Connector, EgressError, Isolation, Target};
use gateway_agent::http_proxy::{HttpProxy, HttpProxySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Counts calls and refuses them all: none of these requests may get this far.
#[derive(Default)]
struct Counting(AtomicU64);

impl Connector for Counting {
    fn connect<'a>(
        &'a self,
        _target: &'a Target,
        _isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<BoxStream, EgressError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(EgressError::Unreachable("not in this test".into())) })
    }

    fn name(&self) -> &'static str {
        "tor"
    }
}

/// Sends `bytes` and reads until the proxy closes (5 s at most): (answer, closed).
async fn send(proxy: &HttpProxy, bytes: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400_and_closed() {
    let inside = Inside {
        address: Ipv4Addr::LOCALHOST,
        prefix_len: 8,
    };
    let settings = HttpProxySettings::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), inside);
    let connector = Arc::new(Counting::default());
    let proxy = HttpProxy::start(settings, connector.clone()).await.unwrap();
    let huge = format!(
        "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let table: [(&str, &[u8]); 9] = [
        ("a bad request line", b"GARBAGE\r\n\r\n"),
        ("oversized headers", huge.as_bytes()),
        (
            "invalid chunked framing",
            b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\
              Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "two different Content-Lengths",
            b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\
              Content-Length: 6\r\n\r\nhello!",
        ),
        // hyper accepts the rest (it frames by Transfer-Encoding, or takes equal lengths as
        // one) and hides them from the request; the proxy's framing scanner refuses them.
        (
            "Content-Length, then Transfer-Encoding",
            b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding, then Content-Length",
            b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\
              Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "the same Content-Length twice",
            b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\
              Content-Length: 5\r\n\r\nhello",
        ),
        (
            "a Content-Length list",
            b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\
              Content-Length: 5, 5\r\n\r\nhello",
        ),
        (
            "Content-Length with Transfer-Encoding on a GET",
            b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\
              Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
    ];
    for (what, bytes) in table {
        let (answer, closed) = send(&proxy, bytes).await;
        let status = answer.split_whitespace().nth(1).unwrap_or("none");
        // 431 is hyper's answer to a head over the limit: a 4xx that says which.
        assert!(status == "400" || status == "431", "{what}: {answer:?}");
        assert!(closed, "{what}: the connection stayed open");
    }
    assert_eq!(
        connector.0.load(Ordering::SeqCst),
        0,
        "a malformed request went upstream"
    );
    assert_eq!(proxy.stats().bad_requests, 9);
    // Behind a good request on the same connection: the good one is answered (its 502), the
    // ambiguous one gets its 400, and nothing after it is read.
    let mut pipelined = b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec();
    pipelined.extend_from_slice(
        b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\
          Content-Length: 5\r\n\r\nhello",
    );
    pipelined.extend_from_slice(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let (answer, closed) = send(&proxy, &pipelined).await;
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["502", "400"], "{answer:?}");
    assert!(closed, "pipelined: the connection stayed open");
    assert_eq!(connector.0.load(Ordering::SeqCst), 1);
    // Still serving: a good request reaches the connector (and gets its 502).
    let (answer, _) = send(
        &proxy,
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer:?}");
    assert_eq!(connector.0.load(Ordering::SeqCst), 2);
    assert_eq!(proxy.stats().bad_requests, 10);
}
