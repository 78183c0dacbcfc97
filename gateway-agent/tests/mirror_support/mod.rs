//! What the mirror's loopback tests share: a real upstream (Debian's `docker-registry`, that
//! is distribution 2.8, with `auth.token`, behind `xtask/lab/token_service.py`), seeded
//! by writing distribution's storage layout directly; the mirror itself on 127.0.0.1 with the
//! gateway's TLS and a client bundle; and a connector standing in for Tor that reaches only
//! 127.0.0.1 (names under `.test` and `.example` are mapped there, nothing is resolved) and
//! can be made to fail. The upstream can serve TLS with a test CA and ask for Basic
//! credentials (htpasswd) instead of tokens, and `cdn_redirector.py` can stand in front of it
//! to send blob downloads to a "CDN" on another name. Nothing leaves loopback.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use gateway_agent::config::{MirrorUpstream, Seconds};
use gateway_agent::egress::{BoxStream, Connector, EgressError, Host, Isolation, Target};
use gateway_agent::mirror::api::Mirror;
use gateway_agent::mirror::cache::Cache;
use gateway_agent::mirror::config::Endpoint;
use gateway_agent::mirror::pulls::PullClock;
use gateway_agent::mirror::tags::TagClock;
use gateway_agent::mirror::upstream::UpstreamClient;
use gateway_agent::mirror::{MirrorServer, ServerSettings};
use gateway_agent::net::listener::Clients;
use gateway_agent::net::tls::{ClientAuth, ClientCa, TlsAcceptor, TlsSettings};
use gateway_agent::pki::Pki;
use gateway_agent::registry::names::Digest;
use gateway_agent::registry::storage::{FsStorage, Limits, Storage};

/// The token service fixture.
pub fn token_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../xtask/lab/token_service.py")
}

/// Whether the tools these tests need are here (else they skip, saying so).
pub fn tools_present() -> bool {
    let ok = |program: &str| Command::new(program).arg("--version").output().is_ok();
    let present = ok("docker-registry") && ok("curl") && Path::new("/usr/bin/python3").exists();
    if !present {
        eprintln!("skipped: needs docker-registry, curl and /usr/bin/python3");
    }
    present
}

/// A port free on 127.0.0.1 just now.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A token service process.
pub struct TokenService {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl TokenService {
    /// Serves tokens signed with the key in `dir` (made if missing); `credentials` are the
    /// ones it accepts (`user:password`).
    pub fn start(dir: &Path, name: &str, credentials: Option<&str>) -> TokenService {
        TokenService::start_with(dir, name, credentials, None)
    }

    /// [`TokenService::start`], serving HTTPS with `tls` (a certificate and its key) if given.
    pub fn start_with(
        dir: &Path,
        name: &str,
        credentials: Option<&str>,
        tls: Option<&TlsFiles>,
    ) -> TokenService {
        let status = Command::new("/usr/bin/python3")
            .arg(token_script())
            .arg("init")
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "token_service.py init failed");
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        std::fs::write(&log, "").unwrap();
        let mut command = Command::new("/usr/bin/python3");
        command
            .arg(token_script())
            .args(["serve", "127.0.0.1", &port.to_string()])
            .arg(dir)
            .arg("token.test")
            .arg(&log)
            .args(credentials)
            .stdout(Stdio::null());
        if let Some(tls) = tls {
            command.env("TLS_CERT", &tls.cert).env("TLS_KEY", &tls.key);
        }
        let child = command.spawn().unwrap();
        wait_for_port(port, "the token service");
        TokenService { port, log, child }
    }

    /// Its requests: (authorization seen, scopes).
    pub fn requests(&self) -> Vec<(String, Vec<String>)> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                let scopes = value["scopes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect();
                (value["authorization"].as_str().unwrap().to_owned(), scopes)
            })
            .collect()
    }

    /// Its URL.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// Its URL under `host` (a `.test` name the connector maps to loopback), over HTTPS.
    pub fn https_realm(&self, host: &str) -> String {
        format!("https://{host}:{}/token", self.port)
    }
}

/// A server certificate and its key (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed it.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// A test CA in `dir` and a certificate from it for `registry.<zone>`, `mirror.<zone>`
    /// and 127.0.0.1 (the gateway's own PKI code makes both).
    pub fn issue(dir: &Path, zone: &str) -> TlsFiles {
        let pki = Pki::at(dir);
        pki.init(false).unwrap();
        pki.issue_server(zone, Ipv4Addr::LOCALHOST, false).unwrap();
        TlsFiles {
            cert: pki.server_cert(),
            key: pki.server_key(),
            ca: pki.ca_cert(),
        }
    }
}

/// How an upstream registry authenticates its clients.
pub enum Auth<'a> {
    /// `auth.token`: 401s send clients to `realm`; tokens signed with the key in `token_dir`.
    Token { realm: &'a str, token_dir: &'a Path },
    /// `auth.htpasswd`: Basic, `user:password` (kept as a bcrypt hash).
    Htpasswd { credentials: &'a str },
}

impl Drop for TokenService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A docker-registry process with token auth.
pub struct Upstream {
    pub port: u16,
    pub root: PathBuf,
    pub log: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

/// An image seeded upstream.
#[derive(Debug, Clone)]
pub struct Image {
    pub repo: String,
    pub tag: String,
    pub manifest: Vec<u8>,
    pub digest: Digest,
    pub config: Digest,
    pub layers: Vec<(Digest, Vec<u8>)>,
}

impl Upstream {
    /// A registry in `dir` whose 401s send clients to `realm`, trusting tokens signed with
    /// the key in `token_dir`.
    pub fn start(dir: &Path, realm: &str, token_dir: &Path) -> Upstream {
        Upstream::start_with(dir, Auth::Token { realm, token_dir }, None)
    }

    /// A registry in `dir` with `auth`, serving HTTPS with `tls` if given.
    pub fn start_with(dir: &Path, auth: Auth<'_>, tls: Option<&TlsFiles>) -> Upstream {
        let port = free_port();
        let root = dir.join("upstream-root");
        std::fs::create_dir_all(&root).unwrap();
        let config = dir.join("upstream.yml");
        let auth = match auth {
            Auth::Token { realm, token_dir } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: upstream.test\n\
                 \x20   issuer: token.test\n    rootcertbundle: {}\n",
                token_dir.join("token.crt").display()
            ),
            Auth::Htpasswd { credentials } => {
                let path = dir.join("upstream.htpasswd");
                std::fs::write(&path, htpasswd_line(credentials)).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: upstream.test\n    path: {}\n",
                    path.display()
                )
            }
        };
        let tls = tls.map_or(String::new(), |tls| {
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.cert.display(),
                tls.key.display()
            )
        });
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: test\n{tls}{auth}",
                root.display(),
            ),
        )
        .unwrap();
        let mut upstream = Upstream {
            port,
            root,
            log: dir.join("upstream.log"),
            config,
            child: None,
        };
        upstream.restart();
        upstream
    }

    /// Starts it (again), appending to its log.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.port, "docker-registry");
    }

    /// Stops it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its API's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn v2(&self) -> PathBuf {
        self.root.join("docker/registry/v2")
    }

    fn put_blob(&self, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        let hex = digest.hex();
        let dir = self.v2().join("blobs/sha256").join(&hex[..2]).join(hex);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data"), data).unwrap();
        digest
    }

    fn link(&self, path: PathBuf, digest: &Digest) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, digest.to_string()).unwrap();
    }

    /// Seeds `repo:tag`: an OCI image of `layers` (random bytes of these sizes, from `seed`).
    pub fn seed(&self, repo: &str, tag: &str, layer_sizes: &[usize], seed: u64) -> Image {
        let repo_dir = self.v2().join("repositories").join(repo);
        let config_bytes = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}},\"seed\":{seed}}}"
        )
        .into_bytes();
        let config = self.put_blob(&config_bytes);
        let mut layers = Vec::new();
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for &size in layer_sizes {
            let mut data = Vec::with_capacity(size);
            while data.len() < size {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                data.extend_from_slice(&state.to_le_bytes());
            }
            data.truncate(size);
            let digest = self.put_blob(&data);
            layers.push((digest, data));
        }
        for digest in std::iter::once(&config).chain(layers.iter().map(|(d, _)| d)) {
            self.link(
                repo_dir
                    .join("_layers/sha256")
                    .join(digest.hex())
                    .join("link"),
                digest,
            );
        }
        let layer_list: Vec<String> = layers
            .iter()
            .map(|(digest, data)| {
                format!(
                    "{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"{digest}\",\"size\":{}}}",
                    data.len()
                )
            })
            .collect();
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
             \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config}\",\"size\":{}}},\
             \"layers\":[{}]}}",
            config_bytes.len(),
            layer_list.join(",")
        )
        .into_bytes();
        let digest = self.put_blob(&manifest);
        self.link(
            repo_dir
                .join("_manifests/revisions/sha256")
                .join(digest.hex())
                .join("link"),
            &digest,
        );
        self.tag(repo, tag, &digest);
        Image {
            repo: repo.to_owned(),
            tag: tag.to_owned(),
            manifest,
            digest,
            config,
            layers,
        }
    }

    /// Points `repo:tag` at `digest` (a tag moved upstream).
    pub fn tag(&self, repo: &str, tag: &str, digest: &Digest) {
        let tag_dir = self
            .v2()
            .join("repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag);
        self.link(tag_dir.join("current/link"), digest);
        self.link(
            tag_dir.join("index/sha256").join(digest.hex()).join("link"),
            digest,
        );
    }

    /// Overwrites `digest`'s content with as many other bytes (distribution serves it as is).
    pub fn corrupt(&self, digest: &Digest) {
        let hex = digest.hex();
        let path = self
            .v2()
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let mut data = std::fs::read(&path).unwrap();
        for byte in data.iter_mut().rev().take(16) {
            *byte ^= 0xff;
        }
        std::fs::write(path, data).unwrap();
    }

    /// Restores `digest`'s content.
    pub fn restore(&self, digest: &Digest, data: &[u8]) {
        let hex = digest.hex();
        let path = self
            .v2()
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        std::fs::write(path, data).unwrap();
    }

    /// The access-log lines of successful (2xx) requests starting with `method path`.
    pub fn served(&self, method: &str, path: &str) -> usize {
        let needle = format!("\"{method} {path} HTTP/1.1\" 2");
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(&needle))
            .count()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `user:password` as an htpasswd line (bcrypt, the only hash distribution reads; the
/// lowest cost, so each request's check is quick).
fn htpasswd_line(credentials: &str) -> String {
    let (user, password) = credentials.split_once(':').unwrap();
    let output = Command::new("/usr/bin/python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
            password,
        ])
        .output()
        .unwrap();
    let hash = String::from_utf8(output.stdout).unwrap();
    assert!(hash.starts_with("$2"), "no bcrypt hash: {hash:?}");
    format!("{user}:{}", hash.trim())
}

/// `cdn_redirector.py` in front of `upstream`: blob GETs get a 307 to `cdn_host` (a `.test`
/// name), which serves them from the upstream's storage.
pub struct Redirector {
    pub port: u16,
    pub cdn_port: u16,
    pub log: PathBuf,
    child: Child,
}

/// One request the redirector saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub side: String,
    pub method: String,
    pub path: String,
    pub host: String,
    pub authorization: String,
}

impl Redirector {
    /// Starts it; the CDN redirects `hops` times more before it serves.
    pub fn start(dir: &Path, upstream: &Upstream, cdn_host: &str, hops: u32) -> Redirector {
        let port = free_port();
        let cdn_port = loop {
            let other = free_port();
            if other != port && other != upstream.port {
                break other;
            }
        };
        let log = dir.join("redirector.log");
        std::fs::write(&log, "").unwrap();
        let child = Command::new("/usr/bin/python3")
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/mirror_support/cdn_redirector.py"),
            )
            .args([
                port.to_string(),
                cdn_port.to_string(),
                upstream.port.to_string(),
            ])
            .arg(&upstream.root)
            .args([cdn_host, &hops.to_string()])
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, "the redirector");
        wait_for_port(cdn_port, "the redirector's CDN");
        Redirector {
            port,
            cdn_port,
            log,
            child,
        }
    }

    /// Every request it saw.
    pub fn seen(&self) -> Vec<Seen> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let get = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                Seen {
                    side: get("side"),
                    method: get("method"),
                    path: get("path"),
                    host: get("host"),
                    authorization: get("authorization"),
                }
            })
            .collect()
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in for Tor: streams to 127.0.0.1 only; a name under `.test` or `.example` is
/// mapped there (and remembered), any other name is refused, nothing is resolved. A switch
/// makes it refuse like Tor before bootstrap; an optional delay.
#[derive(Default)]
pub struct Loopback {
    pub down: AtomicBool,
    pub streams: AtomicU64,
    pub delay_ms: AtomicU64,
    /// The names it was asked for, with their ports, in order.
    pub names: Mutex<Vec<String>>,
}

impl Loopback {
    /// The names asked for so far (`host:port`).
    pub fn names(&self) -> Vec<String> {
        self.names.lock().unwrap().clone()
    }
}

impl Connector for Loopback {
    fn connect<'a>(
        &'a self,
        target: &'a Target,
        _isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<BoxStream, EgressError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(EgressError::NotReady(
                    "Tor is not bootstrapped (the test)".into(),
                ));
            }
            match &target.host {
                Host::Ip(ip) if *ip == std::net::IpAddr::from(Ipv4Addr::LOCALHOST) => {}
                Host::Name(name) if name.ends_with(".test") || name.ends_with(".example") => {
                    self.names
                        .lock()
                        .unwrap()
                        .push(format!("{name}:{}", target.port));
                }
                _ => return Err(EgressError::Refused(format!("{target} is not loopback"))),
            }
            self.streams.fetch_add(1, Ordering::SeqCst);
            let delay = self.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, target.port))
                .await
                .map_err(|e| EgressError::Unreachable(e.to_string()))?;
            Ok(Box::new(stream) as BoxStream)
        })
    }

    fn name(&self) -> &'static str {
        "tor"
    }
}

/// An upstream entry for the mirror.
pub fn upstream_config(name: &str, url: &str) -> MirrorUpstream {
    MirrorUpstream {
        name: name.to_owned(),
        url: Endpoint::parse(url).unwrap(),
        library: true,
        realm: None,
        credentials: None,
        ca: None,
    }
}

/// The mirror on 127.0.0.1 with the gateway's TLS, and a client bundle for it.
pub struct MirrorUnderTest {
    pub server: Option<MirrorServer>,
    pub mirror: Arc<Mirror>,
    pub addr: SocketAddr,
    pub bundle: PathBuf,
    pub ca: PathBuf,
    pub stores: BTreeMap<String, Arc<dyn Storage>>,
}

impl MirrorUnderTest {
    /// Starts a mirror of `upstreams` (the first is the default) through `connector`, its
    /// cache in `dir/cache`, tags trusted for `tag_ttl` seconds.
    pub async fn start(
        dir: &Path,
        upstreams: Vec<(MirrorUpstream, Option<String>)>,
        connector: Arc<dyn Connector>,
        tag_ttl: u32,
    ) -> MirrorUnderTest {
        MirrorUnderTest::bounded(dir, upstreams, connector, tag_ttl, u64::MAX).await
    }

    /// [`MirrorUnderTest::start`] with the caches bounded to `max_bytes`.
    pub async fn bounded(
        dir: &Path,
        upstreams: Vec<(MirrorUpstream, Option<String>)>,
        connector: Arc<dyn Connector>,
        tag_ttl: u32,
        max_bytes: u64,
    ) -> MirrorUnderTest {
        let pki = Pki::under(&dir.join("state"));
        pki.ensure_server("home.arpa", Ipv4Addr::LOCALHOST).unwrap();
        let bundle = dir.join("bundle");
        if !bundle.exists() {
            pki.issue_client("puller", &bundle, false).unwrap();
        }
        let acceptor = TlsAcceptor::new(TlsSettings {
            client_auth: ClientAuth::Required(ClientCa {
                ca: pki.ca_cert(),
                crl: Some(pki.crl()),
            }),
            ..TlsSettings::new(pki.server_cert(), pki.server_key())
        })
        .unwrap();
        let default = upstreams[0].0.name.clone();
        let mut caches = BTreeMap::new();
        let mut stores = BTreeMap::new();
        for (upstream, credentials) in upstreams {
            let store: Arc<dyn Storage> = Arc::new(
                FsStorage::open(dir.join("cache").join(&upstream.name), Limits::default()).unwrap(),
            );
            stores.insert(upstream.name.clone(), store.clone());
            let name = upstream.name.clone();
            // The service's own choice: the upstream's `ca`, else the system roots.
            let tls = gateway_agent::mirror::service::tls_for(&upstream).unwrap();
            let client = UpstreamClient::new(upstream, connector.clone(), tls, credentials);
            let tags = TagClock::new(Seconds::new(tag_ttl).as_duration());
            let pulls = PullClock::new(dir.join("cache").join(format!("{name}.pulls")));
            // No pull window: an image is in use only while a request for it runs, so the
            // eviction tests need not wait the window out.
            let cache = Cache::new(client, store, tags, pulls).with_pull_window(Duration::ZERO);
            caches.insert(name, Arc::new(cache));
        }
        let mirror = Arc::new(Mirror::new(caches, default, max_bytes));
        let server = MirrorServer::start(
            ServerSettings {
                listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                clients: Clients::Local,
                max_connections: 64,
            },
            acceptor,
            mirror.clone(),
        )
        .await
        .unwrap();
        MirrorUnderTest {
            addr: server.local_addr(),
            server: Some(server),
            mirror,
            bundle,
            ca: pki.ca_cert(),
            stores,
        }
    }

    /// The cache of upstream `name`.
    pub fn cache(&self, name: &str) -> &Arc<Cache> {
        &self.mirror.caches()[name]
    }

    /// `curl` of `path` on the mirror with the bundle: (exit success, status, headers, body).
    pub async fn get(&self, method: &str, path: &str) -> Fetched {
        let output = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "60",
                "-X",
                method,
                "-D",
                "-",
                "--cacert",
            ])
            .arg(&self.ca)
            .arg("--cert")
            .arg(self.bundle.join("client.cert"))
            .arg("--key")
            .arg(self.bundle.join("client.key"))
            .args([
                "--resolve",
                &format!("mirror.home.arpa:{}:127.0.0.1", self.addr.port()),
            ])
            .args(if method == "HEAD" { vec!["-I"] } else { vec![] })
            .arg(format!(
                "https://mirror.home.arpa:{}{path}",
                self.addr.port()
            ))
            .output()
            .await
            .unwrap();
        Fetched::parse(output.status.success(), &output.stdout, &output.stderr)
    }

    /// Stops the server.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }
}

/// What curl got.
#[derive(Debug)]
pub struct Fetched {
    pub ok: bool,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub stderr: String,
}

impl Fetched {
    fn parse(ok: bool, out: &[u8], stderr: &[u8]) -> Fetched {
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(out.len(), |i| i + 4);
        let head = String::from_utf8_lossy(&out[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Fetched {
            ok,
            status,
            headers,
            body: out[split..].to_vec(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
        }
    }

    /// Header `name`'s value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}
