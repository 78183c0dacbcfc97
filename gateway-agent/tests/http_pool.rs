//! Upstream connections are pooled per client: a second request of one client to the same
//! origin reuses the idle connection, another client's never does. curl on loopback (the
//! inside subnet is 127.0.0.0/8, so each source address is a client of its own).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use gateway_agent::config::Inside;
use gateway_agent::egress::{BoxStream, Connector, EgressError, Isolation, Target};
use gateway_agent::http_proxy::{HttpProxy, HttpProxySettings};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Reaches 127.0.0.1, counting streams.
#[derive(Default)]
struct Loopback(AtomicU64);

impl Connector for Loopback {
    fn connect<'a>(
        &'a self,
        target: &'a Target,
        _isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<BoxStream, EgressError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, target.port))
                .await
                .map_err(|e| EgressError::Unreachable(e.to_string()))?;
            Ok(Box::new(stream) as BoxStream)
        })
    }

    fn name(&self) -> &'static str {
        "tor"
    }
}

/// A keep-alive origin: any number of GETs per connection, each answered "ok".
async fn keep_alive_origin() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if header.trim_end().is_empty() {
                            break;
                        }
                    }
                    let answer =
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: no-store\r\n\r\nok";
                    if reader.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

async fn curl_from(source: &str, proxy: &HttpProxy, url: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .env_remove("http_proxy")
        .env_remove("no_proxy")
        .args(["-sS", "-q", "--max-time", "10", "--interface", source])
        .args(["-x", &format!("http://{}", proxy.local_addr()), url])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_reused_per_client_only() {
    let port = keep_alive_origin().await;
    let inside = Inside {
        address: Ipv4Addr::LOCALHOST,
        prefix_len: 8,
    };
    let mut settings = HttpProxySettings::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), inside);
    settings.ports = vec![port];
    let connector = Arc::new(Loopback::default());
    let proxy = HttpProxy::start(settings, connector.clone()).await.unwrap();
    let url = format!("http://origin.test:{port}/");
    for _ in 0..3 {
        assert_eq!(curl_from("127.0.0.1", &proxy, &url).await, "ok");
    }
    assert_eq!(
        connector.0.load(Ordering::SeqCst),
        1,
        "one client, one upstream stream"
    );
    assert_eq!(curl_from("127.0.0.2", &proxy, &url).await, "ok");
    assert_eq!(
        connector.0.load(Ordering::SeqCst),
        2,
        "another client never gets the first one's stream"
    );
    assert_eq!(curl_from("127.0.0.1", &proxy, &url).await, "ok");
    assert_eq!(connector.0.load(Ordering::SeqCst), 2);
}
