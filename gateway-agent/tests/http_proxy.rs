//! The HTTP proxy on loopback, used by real `curl -x`, in front of a tiny HTTP origin that
//! records what reached it. The connector is a stand-in for Tor that maps `origin.test` to the
//! origin on 127.0.0.1 and a few other names to each connector error; the proxy and curl are
//! the real thing. Every test has its own proxy and origin on free ports, so they run in
//! parallel; nothing leaves 127.0.0.1.

// Clippy's allow-*-in-tests covers #[test] functions only, not the setup helpers in this
// file; a test whose setup fails should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use gateway_agent::config::Inside;
use gateway_agent::egress::{BoxStream, Connector, EgressError, Host, Isolation, Target};
use gateway_agent::http_proxy::{HttpProxy, HttpProxySettings};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Loopback as the inside subnet, so the proxy serves the test's clients.
const LOOPBACK_INSIDE: Inside = Inside {
    address: Ipv4Addr::LOCALHOST,
    prefix_len: 8,
};

// ---- the origin ----

/// One request as the origin read it.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    /// Lower-cased names, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 origin on 127.0.0.1: one request per connection, answered with a body that
/// names what it saw, plus hop-by-hop headers the proxy must not pass back.
struct Origin {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the origin");
        let port = listener.local_addr().expect("origin address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = Origin::answer(stream, log).await;
                });
            }
        });
        Origin { port, seen }
    }

    async fn answer(stream: TcpStream, log: Arc<Mutex<Vec<Seen>>>) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).await?;
        let request_line = request_line.trim_end().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut seen = Seen {
            request_line,
            headers,
            body: Vec::new(),
        };
        if seen.header("transfer-encoding") == Some("chunked") {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).await?;
                let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
                seen.body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(length) = seen.header("content-length") {
            let mut body = vec![0; length.parse().unwrap_or(0)];
            reader.read_exact(&mut body).await?;
            seen.body = body;
        }
        let mut parts = seen.request_line.split(' ');
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        log.lock().unwrap().push(seen.clone());

        let body = format!(
            "origin saw {method} {path} with {} body bytes",
            seen.body.len()
        );
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\
             X-Origin: yes\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\n\
             Keep-Alive: timeout=5\r\n\r\n",
            body.len()
        );
        let mut stream = reader.into_inner();
        stream.write_all(head.as_bytes()).await?;
        if method != "HEAD" {
            stream.write_all(body.as_bytes()).await?;
        }
        stream.shutdown().await
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

// ---- the connector ----

/// Stands in for Tor: `origin.test` and 127.0.0.1 reach the origin on loopback; the other
/// `*.test` names fail the way their name says. Records every request.
#[derive(Default)]
struct LoopbackConnector {
    asked: Mutex<Vec<(Target, Isolation)>>,
}

impl Connector for LoopbackConnector {
    fn connect<'a>(
        &'a self,
        target: &'a Target,
        isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<BoxStream, EgressError>> {
        self.asked
            .lock()
            .unwrap()
            .push((target.clone(), isolation.clone()));
        Box::pin(async move {
            let failure = match &target.host {
                Host::Name(name) if name == "origin.test" => None,
                Host::Ip(ip) if ip.is_loopback() => None,
                Host::Name(name) if name == "notready.test" => {
                    Some(EgressError::NotReady("not bootstrapped".into()))
                }
                Host::Name(name) if name == "refused.test" => {
                    Some(EgressError::Refused("policy".into()))
                }
                Host::Name(name) if name == "notfound.test" => {
                    Some(EgressError::NotFound(name.clone()))
                }
                _ => Some(EgressError::Unreachable(target.to_string())),
            };
            if let Some(error) = failure {
                return Err(error);
            }
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

// ---- the proxy and curl ----

struct Proxy {
    proxy: HttpProxy,
    connector: Arc<LoopbackConnector>,
}

impl Proxy {
    async fn start(configure: impl FnOnce(&mut HttpProxySettings)) -> Proxy {
        let mut settings =
            HttpProxySettings::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), LOOPBACK_INSIDE);
        // The origins listen on random ports; the port rule has its own test.
        settings.ports = (1..=u16::MAX).collect();
        configure(&mut settings);
        let connector = Arc::new(LoopbackConnector::default());
        let proxy = HttpProxy::start(settings, connector.clone())
            .await
            .expect("start the proxy");
        Proxy { proxy, connector }
    }

    fn url(&self) -> String {
        format!("http://{}", self.proxy.local_addr())
    }

    fn asked(&self) -> Vec<(Target, Isolation)> {
        self.connector.asked.lock().unwrap().clone()
    }
}

/// What curl printed: the response head(s) and body (`-i`), the status of the last response
/// and of a CONNECT, and its exit code.
#[derive(Debug)]
struct Curl {
    exit: i32,
    output: String,
    status: u16,
    connect_status: u16,
    /// Only read through `Debug`, in assertion messages.
    #[allow(dead_code)]
    stderr: String,
}

impl Curl {
    /// The body after the last response head.
    fn body(&self) -> &str {
        self.output.rsplit("\r\n\r\n").next().unwrap_or_default()
    }

    fn has_header(&self, name: &str) -> bool {
        let name = format!("\r\n{}:", name.to_ascii_lowercase());
        self.output.to_ascii_lowercase().contains(&name)
    }
}

async fn curl(args: &[&str]) -> Curl {
    let mut command = tokio::process::Command::new("curl");
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        command.env_remove(var);
    }
    let output = command
        .args(["-sS", "-i", "--max-time", "15", "-q"])
        .args(["-w", "\n@@%{http_code} %{http_connect}"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (output_text, codes) = stdout.rsplit_once("\n@@").unwrap_or((&stdout, "0 0"));
    let mut codes = codes.split(' ').map(|c| c.trim().parse().unwrap_or(0));
    Curl {
        exit: output.status.code().unwrap_or(-1),
        output: output_text.to_owned(),
        status: codes.next().unwrap_or(0),
        connect_status: codes.next().unwrap_or(0),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Sends raw bytes to the proxy and reads until it closes (or 5 s pass).
async fn raw(proxy: &Proxy, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy.proxy.local_addr())
        .await
        .expect("connect to the proxy");
    stream.write_all(bytes).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

// ---- the tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_goes_only_to_the_allowed_ports() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(|s| s.ports = HttpProxySettings::new(s.listen, s.inside).ports).await;
    let url = format!("http://origin.test:{}/", origin.port);
    let out = curl(&["-x", &proxy.url(), &url]).await;
    assert_eq!(out.status, 403, "{out:?}");
    assert!(out.output.contains("http_proxy.ports"), "{out:?}");
    assert!(proxy.asked().is_empty(), "the connector was asked anyway");
    assert_eq!(proxy.proxy.stats().denied_ports, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_in_absolute_form_reaches_the_origin_without_hop_by_hop_headers() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(|_| {}).await;
    let url = format!("http://origin.test:{}/hello?x=1", origin.port);
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "Connection: X-Secret",
        "-H",
        "X-Secret: 1",
        "-H",
        "Keep-Alive: 300",
        "-H",
        "Proxy-Authorization: Basic Zm9vOmJhcg==",
        "-H",
        "TE: trailers",
        "-H",
        "Upgrade: foo/1",
        "-H",
        "X-Kept: yes",
        &url,
    ])
    .await;
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.body(), "origin saw GET /hello?x=1 with 0 body bytes");
    assert!(out.has_header("x-origin"), "{out:?}");
    for hop in ["x-hop", "keep-alive"] {
        assert!(!out.has_header(hop), "{hop} came back: {out:?}");
    }

    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.request_line, "GET /hello?x=1 HTTP/1.1");
    assert_eq!(
        request.header("host"),
        Some(format!("origin.test:{}", origin.port).as_str())
    );
    assert_eq!(request.header("x-kept"), Some("yes"));
    for hop in [
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "upgrade",
        "via",
        "x-forwarded-for",
        "forwarded",
    ] {
        assert_eq!(request.header(hop), None, "{hop} reached the origin");
    }

    // The name went to the connector as a name, isolated per client.
    assert_eq!(
        proxy.asked(),
        [(
            Target {
                host: Host::Name("origin.test".into()),
                port: origin.port
            },
            Isolation::client(Ipv4Addr::LOCALHOST.into())
        )]
    );
    let stats = proxy.proxy.stats();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.bad_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_post_put_delete_and_chunked_bodies() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(|_| {}).await;
    let url = format!("http://origin.test:{}/thing", origin.port);

    let head = curl(&["-x", &proxy.url(), "-I", &url]).await;
    assert_eq!(head.status, 200, "{head:?}");
    assert!(
        head.output
            .to_ascii_lowercase()
            .contains("content-length: 40"),
        "{head:?}"
    );
    assert_eq!(head.body(), "");

    let post = curl(&["-x", &proxy.url(), "--data-binary", "hello body", &url]).await;
    assert_eq!(post.status, 200, "{post:?}");
    assert_eq!(post.body(), "origin saw POST /thing with 10 body bytes");

    let chunked = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "twelve bytes",
        &url,
    ])
    .await;
    assert_eq!(chunked.status, 200, "{chunked:?}");
    assert_eq!(chunked.body(), "origin saw POST /thing with 12 body bytes");

    let put = curl(&["-x", &proxy.url(), "-X", "PUT", "--data-binary", "x", &url]).await;
    assert_eq!(put.body(), "origin saw PUT /thing with 1 body bytes");
    let delete = curl(&["-x", &proxy.url(), "-X", "DELETE", &url]).await;
    assert_eq!(delete.body(), "origin saw DELETE /thing with 0 body bytes");

    let seen = origin.seen();
    let lines: Vec<&str> = seen.iter().map(|s| s.request_line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "HEAD /thing HTTP/1.1",
            "POST /thing HTTP/1.1",
            "POST /thing HTTP/1.1",
            "PUT /thing HTTP/1.1",
            "DELETE /thing HTTP/1.1"
        ]
    );
    assert_eq!(seen[1].body, b"hello body");
    assert_eq!(seen[1].header("content-length"), Some("10"));
    // Decoded by the proxy and framed again for the origin.
    assert_eq!(seen[2].body, b"twelve bytes");
    assert_eq!(seen[2].header("transfer-encoding"), Some("chunked"));
    assert_eq!(proxy.proxy.stats().requests, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnel_to_an_allowed_port() {
    let origin = Origin::start().await;
    let port = origin.port;
    let proxy = Proxy::start(|s| s.connect_ports = vec![443, port]).await;
    let url = format!("http://origin.test:{port}/tunneled");
    let out = curl(&["-x", &proxy.url(), "-p", &url]).await;
    assert_eq!(out.connect_status, 200, "{out:?}");
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.body(), "origin saw GET /tunneled with 0 body bytes");
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    // Through the tunnel the origin gets curl's own request, untouched.
    assert_eq!(seen[0].request_line, "GET /tunneled HTTP/1.1");
    assert_eq!(
        proxy.asked()[0].0,
        Target {
            host: Host::Name("origin.test".into()),
            port
        }
    );
    assert_eq!(proxy.proxy.stats().connects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tunnel_is_closed_after_the_idle_timeout() {
    let origin = Origin::start().await;
    let port = origin.port;
    let proxy = Proxy::start(|s| {
        s.connect_ports = vec![port];
        s.idle_timeout = Duration::from_millis(500);
    })
    .await;
    let mut stream = TcpStream::connect(proxy.proxy.local_addr())
        .await
        .expect("connect to the proxy");
    let request =
        format!("CONNECT origin.test:{port} HTTP/1.1\r\nHost: origin.test:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let started = Instant::now();
    let mut answer = Vec::new();
    // The origin waits for a request that never comes; the proxy must not wait with it.
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the tunnel is closed")
        .expect("read the tunnel");
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(took >= Duration::from_millis(400), "closed after {took:?}");
    // The tunnel held the connection's place until it ended.
    let deadline = Instant::now() + Duration::from_secs(2);
    while proxy.proxy.stats().active != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.proxy.stats().active, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_port_not_allowed_is_403() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(|_| {}).await;
    let url = format!("http://origin.test:{}/", origin.port);
    let out = curl(&["-x", &proxy.url(), "-p", &url]).await;
    assert_ne!(out.exit, 0, "{out:?}");
    assert_eq!(out.connect_status, 403, "{out:?}");
    assert!(origin.seen().is_empty());
    assert!(proxy.asked().is_empty(), "nothing may be opened");
    assert_eq!(proxy.proxy.stats().denied_ports, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_not_for_a_proxy_are_400() {
    let proxy = Proxy::start(|_| {}).await;
    // Origin-form: curl talks to the proxy as if it were the site.
    let out = curl(&[&format!("{}/index.html", proxy.url())]).await;
    assert_eq!(out.status, 400, "{out:?}");
    assert!(out.body().contains("absolute form"), "{out:?}");

    let https = raw(
        &proxy,
        b"GET https://origin.test/ HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(https.starts_with("HTTP/1.1 400"), "{https}");
    assert!(https.contains("use CONNECT for https"), "{https}");

    let no_port = raw(
        &proxy,
        b"CONNECT origin.test HTTP/1.1\r\nHost: origin.test\r\n\r\n",
    )
    .await;
    assert!(no_port.starts_with("HTTP/1.1 400"), "{no_port}");
    assert!(proxy.asked().is_empty());
    assert_eq!(proxy.proxy.stats().bad_requests, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_errors_fail_closed() {
    let proxy = Proxy::start(|_| {}).await;

    let out = curl(&["-x", &proxy.url(), "http://notready.test/"]).await;
    assert_eq!(out.status, 502, "{out:?}");
    assert!(out.body().contains("Tor is not ready"), "{out:?}");

    let out = curl(&["-x", &proxy.url(), "-p", "https://notready.test/"]).await;
    assert_eq!(out.connect_status, 502, "{out:?}");

    let out = curl(&["-x", &proxy.url(), "http://unreachable.test/"]).await;
    assert_eq!(out.status, 502, "{out:?}");
    assert!(out.body().contains("unreachable"), "{out:?}");

    let out = curl(&["-x", &proxy.url(), "http://notfound.test/"]).await;
    assert_eq!(out.status, 502, "{out:?}");
    assert!(out.body().contains("host not found"), "{out:?}");

    let out = curl(&["-x", &proxy.url(), "http://refused.test/"]).await;
    assert_eq!(out.status, 403, "{out:?}");

    let failures = proxy.proxy.stats().upstream_failures;
    assert_eq!(failures.not_ready, 2);
    assert_eq!(failures.unreachable, 1);
    assert_eq!(failures.not_found, 1);
    assert_eq!(failures.refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_origin_is_504() {
    // Accepts, reads, never answers.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind the silent origin");
    let port = silent.local_addr().expect("silent origin address").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let proxy = Proxy::start(|s| s.idle_timeout = Duration::from_millis(500)).await;
    let out = curl(&["-x", &proxy.url(), &format!("http://127.0.0.1:{port}/")]).await;
    assert_eq!(out.status, 504, "{out:?}");
    assert_eq!(proxy.proxy.stats().upstream_failures.timeout, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_outside_the_inside_subnet_are_closed() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(|s| {
        s.inside = Inside {
            address: Ipv4Addr::new(198, 51, 100, 1),
            prefix_len: 24,
        }
    })
    .await;
    let url = format!("http://origin.test:{}/", origin.port);
    let out = curl(&["-x", &proxy.url(), &url]).await;
    assert_ne!(out.exit, 0, "{out:?}");
    assert_eq!(out.status, 0, "no answer at all: {out:?}");
    assert!(origin.seen().is_empty());
    assert!(proxy.asked().is_empty());
    assert_eq!(proxy.proxy.stats().refused_clients, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400_and_the_proxy_carries_on() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(|_| {}).await;
    let garbage = raw(&proxy, b"THIS IS NOT HTTP AT ALL\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
    let binary = raw(&proxy, &[0u8, 159, 146, 150, b'\r', b'\n', b'\r', b'\n']).await;
    assert!(binary.starts_with("HTTP/1.1 400"), "{binary:?}");
    let huge = format!(
        "GET http://origin.test/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let huge = raw(&proxy, huge.as_bytes()).await;
    assert!(huge.starts_with("HTTP/1.1 431"), "{huge:?}");

    let url = format!("http://origin.test:{}/after", origin.port);
    let out = curl(&["-x", &proxy.url(), &url]).await;
    assert_eq!(out.status, 200, "{out:?}");
    assert!(proxy.proxy.stats().bad_requests >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_head_is_closed() {
    let proxy = Proxy::start(|s| s.header_timeout = Duration::from_millis(500)).await;
    let started = Instant::now();
    let answer = raw(
        &proxy,
        b"GET http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\nX-Slow: ",
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    assert!(!answer.contains("200"), "{answer:?}");
    assert!(proxy.asked().is_empty());
    assert_eq!(proxy.proxy.stats().header_timeouts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_the_listener() {
    let proxy = Proxy::start(|_| {}).await;
    let addr = proxy.proxy.local_addr();
    proxy.proxy.stop().await;
    assert!(TcpStream::connect(addr).await.is_err());
}
