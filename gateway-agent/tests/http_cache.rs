//! The HTTP proxy's cache on loopback, used by real `curl -x`, in front of a scripted origin
//! that counts what reached it: hits with `Age`, `no-store`, revalidation, `Vary`, the apt
//! rules, `Range`, `stale-if-error`, collapsed forwarding of a large object, and a restart.
//! The connector is a stand-in for Tor that reaches the origin on 127.0.0.1 and can be made to
//! fail; nothing leaves loopback.

// A test whose setup fails should stop loudly (clippy's allow-*-in-tests covers #[test]
// functions only, not the helpers here).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use gateway_agent::config::Inside;
use gateway_agent::egress::{BoxStream, Connector, EgressError, Isolation, Target};
use gateway_agent::http_proxy::{CacheSettings, HttpProxy, HttpProxySettings};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const LOOPBACK_INSIDE: Inside = Inside {
    address: Ipv4Addr::LOCALHOST,
    prefix_len: 8,
};

/// Size of `/big`: big enough that two clients overlap while it streams.
const BIG: usize = 8 << 20;

// ---- the origin ----

/// An origin whose answers depend on the path; counts requests per path and remembers the
/// conditional headers it got.
#[derive(Default)]
struct Script {
    hits: Mutex<HashMap<String, u64>>,
    conditional: Mutex<Vec<String>>,
    /// The version of `/changing` and `/dists/stable/InRelease`.
    version: AtomicU64,
}

struct Origin {
    port: u16,
    script: Arc<Script>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(Script::default());
        script.version.store(1, Ordering::SeqCst);
        let shared = script.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = shared.clone();
                tokio::spawn(async move {
                    let _ = answer(stream, &script).await;
                });
            }
        });
        Origin { port, script }
    }

    fn url(&self, path: &str) -> String {
        format!("http://origin.test:{}{path}", self.port)
    }

    fn count(&self, path: &str) -> u64 {
        self.script
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

async fn answer<S>(stream: S, script: &Script) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).await?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    *script.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    if let Some(etag) = headers.get("if-none-match") {
        script
            .conditional
            .lock()
            .unwrap()
            .push(format!("{path} {etag}"));
    }
    let version = script.version.load(Ordering::SeqCst);
    let etag = format!("\"v{version}\"");
    let (cache_control, body, extra): (&str, Vec<u8>, String) = match path.as_str() {
        "/fresh" => ("max-age=600", b"fresh body".to_vec(), String::new()),
        "/nostore" => ("no-store", b"not for keeping".to_vec(), String::new()),
        "/private" => ("private, max-age=600", b"mine".to_vec(), String::new()),
        "/changing" | "/dists/stable/InRelease" => {
            if headers.get("if-none-match") == Some(&etag) {
                let head = format!(
                    "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nCache-Control: max-age=0\r\n\
                     Connection: close\r\n\r\n"
                );
                let mut stream = reader.into_inner();
                stream.write_all(head.as_bytes()).await?;
                return stream.shutdown().await;
            }
            let cc = if path == "/changing" {
                "max-age=0"
            } else {
                "max-age=600"
            };
            (
                cc,
                format!("version {version}").into_bytes(),
                format!("ETag: {etag}\r\n"),
            )
        }
        "/vary" => {
            let lang = headers.get("accept-language").cloned().unwrap_or_default();
            (
                "max-age=600",
                format!("lang {lang}").into_bytes(),
                "Vary: Accept-Language\r\n".into(),
            )
        }
        "/stale" => (
            "max-age=1, stale-if-error=600",
            b"old but usable".to_vec(),
            String::new(),
        ),
        "/strict" => (
            "max-age=1, stale-if-error=600, must-revalidate",
            b"must not go stale".to_vec(),
            String::new(),
        ),
        "/big" => (
            "max-age=600",
            (0..BIG).map(|i| (i % 251) as u8).collect(),
            String::new(),
        ),
        _ => ("max-age=600", b"other".to_vec(), String::new()),
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nCache-Control: {cache_control}\r\n{extra}\
         Connection: close\r\n\r\n",
        body.len()
    );
    let mut stream = reader.into_inner();
    stream.write_all(head.as_bytes()).await?;
    // The big body trickles, so a second client arrives while it is still being fetched.
    for chunk in body.chunks(256 * 1024) {
        stream.write_all(chunk).await?;
        if body.len() == BIG {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stream.shutdown().await
}

// ---- the connector and the proxy ----

/// Stands in for Tor: reaches 127.0.0.1 unless `down`, counting the streams it opens.
#[derive(Default)]
struct Loopback {
    down: AtomicBool,
    streams: AtomicU64,
}

impl Connector for Loopback {
    fn connect<'a>(
        &'a self,
        target: &'a Target,
        _isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<BoxStream, EgressError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(EgressError::NotReady("down for the test".into()));
            }
            self.streams.fetch_add(1, Ordering::SeqCst);
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

async fn proxy(dir: &Path, connector: Arc<Loopback>) -> HttpProxy {
    let mut settings =
        HttpProxySettings::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), LOOPBACK_INSIDE);
    settings.ports = (1..=u16::MAX).collect();
    settings.cache = Some(CacheSettings {
        dir: dir.to_owned(),
        max_bytes: 64 << 20,
        max_object: 32 << 20,
    });
    HttpProxy::start(settings, connector).await.unwrap()
}

/// `curl -x`: (status, lower-cased head, body bytes).
async fn curl(proxy: &HttpProxy, url: &str, extra: &[&str]) -> (u16, String, Vec<u8>) {
    curl_at(proxy.local_addr(), url, extra).await
}

/// `curl -x` through the proxy at `proxy`.
async fn curl_at(proxy: SocketAddr, url: &str, extra: &[&str]) -> (u16, String, Vec<u8>) {
    let out = tokio::process::Command::new("curl")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .args(["-sS", "-q", "--max-time", "30", "-D", "/dev/stderr"])
        .args(["-x", &format!("http://{proxy}")])
        .args(extra)
        .arg(url)
        .output()
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, out.stdout)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

// ---- the tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_fetch_is_a_hit_with_age() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path(), Arc::default()).await;
    let (status, head, body) = curl(&proxy, &origin.url("/fresh"), &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"fresh body"[..]),
        "{head}"
    );
    let (status, head, body) = curl(&proxy, &origin.url("/fresh"), &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"fresh body"[..]),
        "{head}"
    );
    assert!(header(&head, "age").is_some(), "a hit carries Age: {head}");
    assert!(header(&head, "via").is_none(), "{head}");
    assert_eq!(origin.count("/fresh"), 1);
    let cache = proxy.stats().cache.unwrap();
    assert_eq!(
        (cache.hits, cache.misses, cache.entries),
        (1, 1, 1),
        "{cache:?}"
    );
    assert_eq!(cache.bytes_saved, 10);
    // The client's Host header plays no part for an absolute-form target (RFC 9112 §3.2.2).
    let (status, head, _) = curl(
        &proxy,
        &origin.url("/fresh"),
        &["-H", "Host: elsewhere.test"],
    )
    .await;
    assert!(status == 200 && header(&head, "age").is_some(), "{head}");
    assert_eq!(
        origin.count("/fresh"),
        1,
        "another Host header missed the stored answer"
    );
    // HEAD and a range come from the cache too.
    let (status, head, _) = curl(&proxy, &origin.url("/fresh"), &["-I"]).await;
    assert_eq!(status, 200, "{head}");
    assert!(
        header(&head, "age").is_some(),
        "a HEAD is answered from the stored GET: {head}"
    );
    let (status, head, body) = curl(&proxy, &origin.url("/fresh"), &["-r", "6-9"]).await;
    assert_eq!((status, body.as_slice()), (206, &b"body"[..]), "{head}");
    assert_eq!(header(&head, "content-range"), Some("bytes 6-9/10"));
    assert_eq!(origin.count("/fresh"), 1);
    // Purged: fetched again.
    let control = proxy.cache_control().unwrap();
    let shouted = format!("http://ORIGIN.test:{}/fresh", origin.port);
    assert_eq!(
        control.purge(&shouted).await.unwrap(),
        (origin.url("/fresh"), true)
    );
    assert!(!control.purge(&shouted).await.unwrap().1);
    curl(&proxy, &origin.url("/fresh"), &[]).await;
    assert_eq!(origin.count("/fresh"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_stored_is_fetched_every_time() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path(), Arc::default()).await;
    for _ in 0..2 {
        let (status, _, body) = curl(&proxy, &origin.url("/nostore"), &[]).await;
        assert_eq!((status, body.as_slice()), (200, &b"not for keeping"[..]));
        curl(&proxy, &origin.url("/private"), &[]).await;
        curl(
            &proxy,
            &origin.url("/fresh"),
            &["-H", "Authorization: Basic eDp5"],
        )
        .await;
    }
    assert_eq!(origin.count("/nostore"), 2);
    assert_eq!(origin.count("/private"), 2);
    assert_eq!(
        origin.count("/fresh"),
        2,
        "a request with credentials is never cached"
    );
    assert_eq!(proxy.stats().cache.unwrap().entries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_objects_are_revalidated() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path(), Arc::default()).await;
    let (_, _, body) = curl(&proxy, &origin.url("/changing"), &[]).await;
    assert_eq!(body, b"version 1");
    // Unchanged: a 304 upstream, the stored body to the client.
    let (status, head, body) = curl(&proxy, &origin.url("/changing"), &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"version 1"[..]),
        "{head}"
    );
    assert_eq!(
        origin.script.conditional.lock().unwrap().as_slice(),
        ["/changing \"v1\""]
    );
    assert_eq!(proxy.stats().cache.unwrap().revalidated, 1);
    // Changed: the new body, stored in place of the old.
    origin.script.version.store(2, Ordering::SeqCst);
    let (_, _, body) = curl(&proxy, &origin.url("/changing"), &[]).await;
    assert_eq!(body, b"version 2");
    let (_, _, body) = curl(&proxy, &origin.url("/changing"), &[]).await;
    assert_eq!(body, b"version 2");
    assert_eq!(origin.count("/changing"), 4);
    assert_eq!(proxy.stats().cache.unwrap().entries, 1);
    // The client's own copy is current: 304 from the cache.
    let (status, head, body) = curl(
        &proxy,
        &origin.url("/changing"),
        &["-H", "If-None-Match: \"v2\""],
    )
    .await;
    assert_eq!((status, body.len()), (304, 0), "{head}");
    let (status, _, body) = curl(
        &proxy,
        &origin.url("/changing"),
        &["-H", "If-None-Match: \"v1\""],
    )
    .await;
    assert_eq!((status, body.as_slice()), (200, &b"version 2"[..]));
    let listed = proxy.cache_control().unwrap().list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].url, origin.url("/changing"));
    assert_eq!(listed[0].size, 9);

    // An apt index is revalidated even while fresh.
    let index = origin.url("/dists/stable/InRelease");
    curl(&proxy, &index, &[]).await;
    let (_, _, body) = curl(&proxy, &index, &[]).await;
    assert_eq!(body, b"version 2");
    assert_eq!(origin.count("/dists/stable/InRelease"), 2);
    assert_eq!(origin.count("/changing"), 6);
    origin.script.version.store(3, Ordering::SeqCst);
    let (_, _, body) = curl(&proxy, &index, &[]).await;
    assert_eq!(body, b"version 3", "apt sees the new InRelease at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_variants_apart() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path(), Arc::default()).await;
    let lang = |l: &str| format!("Accept-Language: {l}");
    let fetch = |proxy: &HttpProxy, l: &str| {
        let (url, header) = (origin.url("/vary"), lang(l));
        let proxy_addr = proxy.local_addr();
        async move {
            let out = curl_at(proxy_addr, &url, &["-H", &header]).await;
            (out.1, out.2)
        }
    };
    let (_, en) = fetch(&proxy, "en").await;
    let (_, de) = fetch(&proxy, "de").await;
    assert_eq!(
        (en.as_slice(), de.as_slice()),
        (&b"lang en"[..], &b"lang de"[..])
    );
    // Both are kept: each client gets its own variant from the cache.
    for l in ["en", "de", "en"] {
        let (head, body) = fetch(&proxy, l).await;
        assert_eq!(body, format!("lang {l}").into_bytes());
        assert!(header(&head, "age").is_some(), "{l}: {head}");
    }
    assert_eq!(origin.count("/vary"), 2);
    assert_eq!(proxy.stats().cache.unwrap().entries, 2);
    proxy.stop().await;

    // After a restart too; then more variants than are kept: the least recently used go.
    let proxy = self::proxy(dir.path(), Arc::default()).await;
    for l in ["de", "en"] {
        let (head, body) = fetch(&proxy, l).await;
        assert_eq!(body, format!("lang {l}").into_bytes());
        assert!(
            header(&head, "age").is_some(),
            "after a restart, {l}: {head}"
        );
    }
    assert_eq!(origin.count("/vary"), 2);
    let others: Vec<String> = (0..7).map(|i| format!("x{i}")).collect();
    for l in &others {
        fetch(&proxy, l).await;
    }
    // Nine variants were asked for; eight are kept, and `de` was used least recently.
    assert_eq!(origin.count("/vary"), 9);
    let cache = proxy.stats().cache.unwrap();
    assert_eq!((cache.entries, cache.evicted), (8, 1), "{cache:?}");
    let (head, _) = fetch(&proxy, "en").await;
    assert!(header(&head, "age").is_some(), "en stays: {head}");
    let (head, body) = fetch(&proxy, "de").await;
    assert_eq!(body, b"lang de");
    assert!(header(&head, "age").is_none(), "de was dropped: {head}");
    assert_eq!(origin.count("/vary"), 10);
    // A purge takes every variant.
    let purged = proxy
        .cache_control()
        .unwrap()
        .purge(&origin.url("/vary"))
        .await
        .unwrap();
    assert!(purged.1);
    assert_eq!(proxy.stats().cache.unwrap().entries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_only_where_allowed() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let connector = Arc::new(Loopback::default());
    let proxy = proxy(dir.path(), connector.clone()).await;
    curl(&proxy, &origin.url("/stale"), &[]).await;
    curl(&proxy, &origin.url("/strict"), &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    connector.down.store(true, Ordering::SeqCst);
    let (status, _, body) = curl(&proxy, &origin.url("/stale"), &[]).await;
    assert_eq!((status, body.as_slice()), (200, &b"old but usable"[..]));
    let (status, _, _) = curl(&proxy, &origin.url("/strict"), &[]).await;
    assert_eq!(status, 502, "must-revalidate forbids a stale answer");
    assert_eq!(proxy.stats().cache.unwrap().stale_served, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_collapse_and_survive_a_restart() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let connector = Arc::new(Loopback::default());
    let proxy = proxy(dir.path(), connector.clone()).await;
    let url = origin.url("/big");
    let first = curl(&proxy, &url, &[]);
    let second = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        curl(&proxy, &url, &[]).await
    };
    let ((s1, _, b1), (s2, _, b2)) = tokio::join!(first, second);
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(b1.len(), BIG);
    assert!(b1 == b2, "the two bodies differ");
    assert_eq!(origin.count("/big"), 1, "one upstream fetch for both");
    assert_eq!(proxy.stats().cache.unwrap().collapsed, 1);
    proxy.stop().await;

    // Restarted, with the origin out of reach: served from disk.
    connector.down.store(true, Ordering::SeqCst);
    let proxy = self::proxy(dir.path(), connector).await;
    let (status, _, body) = curl(&proxy, &url, &[]).await;
    assert_eq!(status, 200);
    assert!(body == b1, "the stored body after a restart");
    let cache = proxy.stats().cache.unwrap();
    assert_eq!(
        (cache.hits, cache.entries, cache.size_bytes),
        (1, 1, BIG as u64)
    );
    // What is not cached fails closed while the egress is down.
    let (status, _, _) = curl(&proxy, &origin.url("/fresh"), &[]).await;
    assert_eq!(status, 502);
    assert_eq!(origin.count("/fresh"), 0);
    assert_eq!(proxy.stats().upstream_failures.not_ready, 1);
}

/// An https origin on loopback for `origin.test`, its certificate from a CA of the test's.
async fn tls_origin(dir: &Path) -> (Origin, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["origin.test".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = Arc::new(Script::default());
    script.version.store(1, Ordering::SeqCst);
    let shared = script.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (script, acceptor) = (shared.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    let _ = answer(tls, &script).await;
                }
            });
        }
    });
    (Origin { port, script }, ca_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origins_in_the_apt_cacher_ng_form() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, ca) = tls_origin(dir.path()).await;
    let mut settings =
        HttpProxySettings::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), LOOPBACK_INSIDE);
    settings.ports = (1..=u16::MAX).collect();
    settings.upstream_ca = Some(ca);
    settings.cache = Some(CacheSettings {
        dir: dir.path().join("cache"),
        max_bytes: 1 << 20,
        max_object: 1 << 20,
    });
    let proxy = HttpProxy::start(settings, Arc::new(Loopback::default()))
        .await
        .unwrap();
    let url = format!("http://HTTPS///origin.test:{}/fresh", origin.port);
    let (status, head, body) = curl(&proxy, &url, &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"fresh body"[..]),
        "{head}"
    );
    let (_, head, body) = curl(&proxy, &url, &[]).await;
    assert_eq!(body, b"fresh body");
    assert!(header(&head, "age").is_some(), "{head}");
    assert_eq!(origin.count("/fresh"), 1);
    let listed = proxy.cache_control().unwrap().list();
    assert_eq!(
        listed[0].url,
        format!("https://origin.test:{}/fresh", origin.port)
    );

    // Against the system roots the test's CA is unknown: 502, nothing served unverified.
    let mut settings =
        HttpProxySettings::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), LOOPBACK_INSIDE);
    settings.ports = (1..=u16::MAX).collect();
    let strict = HttpProxy::start(settings, Arc::new(Loopback::default()))
        .await
        .unwrap();
    let (status, _, _) = curl(
        &strict,
        &format!("http://HTTPS///origin.test:{}/other", origin.port),
        &[],
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(origin.count("/other"), 0);
    assert_eq!(strict.stats().upstream_failures.tls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_of_an_uncached_object_fetches_it_whole() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(dir.path(), Arc::default()).await;
    // This origin ignores Range: the client gets its 200, passed through.
    let (status, _, _) = curl(&proxy, &origin.url("/fresh"), &["-r", "0-4"]).await;
    assert_eq!(status, 200);
    let stored = async {
        while proxy.stats().cache.unwrap().entries == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), stored)
        .await
        .expect("the whole object was stored in the background");
    assert_eq!(
        origin.count("/fresh"),
        2,
        "the range as asked, and the whole object"
    );
    let (status, head, body) = curl(&proxy, &origin.url("/fresh"), &["-r", "0-4"]).await;
    assert_eq!((status, body.as_slice()), (206, &b"fresh"[..]), "{head}");
    assert_eq!(origin.count("/fresh"), 2);
}
