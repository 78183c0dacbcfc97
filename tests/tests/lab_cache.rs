//! The HTTP proxy's cache with the real agent in the lab and real clients: `curl -x` from the
//! inside clients against an origin in `up` (`tests/fixtures/cache_origin.py`, beside the
//! lab's own) with the cache headers the tests need, and against the lab's nginx (plain and
//! https with the lab CA, `xtask/src/lab/web_origin.rs`). `http_proxy.egress = "direct"`, so
//! no Tor is needed; the origins' logs count what crossed the uplink.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway_tests::{
    eventually, fail, lab, lab_tor, skip_unless_root, Agent, Background, Capture, DhcpClient,
    OrFail, TestLab,
};

const PROXY: &str = "http://198.51.100.1:3128";
const MIB: usize = 1 << 20;

/// The fixture origin on `port` of the lab's origin address, with its request log.
struct CacheOrigin {
    _process: Background,
    port: u16,
    log: PathBuf,
    version: PathBuf,
}

impl CacheOrigin {
    fn start(lab: &TestLab, dir: &Path, port: u16) -> CacheOrigin {
        Self::start_with(lab, dir, port, None)
    }

    fn start_with(lab: &TestLab, dir: &Path, port: u16, repo: Option<&Path>) -> CacheOrigin {
        let log = dir.join(format!("cache-origin-{port}.log"));
        let version = dir.join(format!("cache-origin-{port}.version"));
        let _ = std::fs::remove_file(&log);
        std::fs::write(&version, "1").or_fail("writing the version file");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cache_origin.py");
        let mut args = vec![
            script.display().to_string(),
            lab::ORIGIN_IP.to_owned(),
            port.to_string(),
            log.display().to_string(),
            version.display().to_string(),
        ];
        args.extend(repo.map(|r| r.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = lab.spawn("up", "/usr/bin/python3", &args);
        let origin = CacheOrigin {
            _process: process,
            port,
            log,
            version,
        };
        assert!(
            eventually(Duration::from_secs(10), || origin
                .lines()
                .iter()
                .any(|l| l == "READY")),
            "the cache origin did not start"
        );
        origin
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", lab::ORIGIN_NAME, self.port)
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// GETs of `path` the origin answered, with the If-None-Match each carried.
    fn gets(&self, path: &str) -> Vec<String> {
        let prefix = format!("GET {path} ");
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

/// A config with the direct egress, the fixture's port allowed, and the cache on.
fn config(lab: &TestLab, name: &str, port: u16) -> PathBuf {
    config_with(lab, name, &format!("ports = [80, {port}]\n"))
}

/// A config with the direct egress, the cache on, and `extra` in `[http_proxy]`.
fn config_with(lab: &TestLab, name: &str, extra: &str) -> PathBuf {
    let path = lab.config_without_tor(name);
    let mut text = std::fs::read_to_string(&path).or_fail("reading the config");
    text.push_str(&format!(
        "\n[http_proxy]\negress = \"direct\"\ncache_size = \"1 GiB\"\n{extra}"
    ));
    std::fs::write(&path, text).or_fail("writing the config");
    path
}

/// The agent's `state.dir` from a config.
fn state_dir(config: &Path) -> PathBuf {
    let text = std::fs::read_to_string(config).or_fail("reading the config");
    let table: toml::Table = text.parse().or_fail("parsing the config");
    match table
        .get("state")
        .and_then(|s| s.get("dir"))
        .and_then(|d| d.as_str())
    {
        Some(dir) => PathBuf::from(dir),
        None => fail("the lab config has no state.dir"),
    }
}

/// curl from `role` through the proxy: (status, head, body).
fn fetch(lab: &TestLab, role: &str, url: &str) -> (String, String, Vec<u8>) {
    let out = lab.exec(
        role,
        "curl",
        &["-sS", "-m", "60", "-x", PROXY, "-D", "/dev/stderr", url],
    );
    let head = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap_or("000").to_owned();
    (status, head, out.stdout)
}

fn has_header(head: &str, name: &str) -> bool {
    head.lines().any(|l| l.starts_with(&format!("{name}:")))
}

fn expected_body(mib: usize) -> Vec<u8> {
    let block: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    block.repeat(mib)
}

#[test]
fn hits_no_store_and_revalidation() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let cfg = config(&lab, "cache.toml", 8081);
    let origin = CacheOrigin::start(&lab, cfg.parent().expect("config dir"), 8081);
    let agent = Agent::start(&lab, &cfg);
    lab.wait_uplink(&cfg);
    lab.dhcp("c1", DhcpClient::Dhclient, None);
    lab.dhcp("c2", DhcpClient::Udhcpc, None);

    // Twice from c1, then from c2: one request at the origin, the later ones with Age.
    let (status, head, body) = fetch(&lab, "c1", &origin.url("/fresh"));
    assert_eq!(status, "200", "{head}\n{}", agent.log_text());
    assert_eq!(body, b"fresh body\n");
    for role in ["c1", "c2"] {
        let (status, head, body) = fetch(&lab, role, &origin.url("/fresh"));
        assert_eq!(
            (status.as_str(), body.as_slice()),
            ("200", &b"fresh body\n"[..])
        );
        assert!(has_header(&head, "age"), "a hit carries Age: {head}");
        assert!(!has_header(&head, "via"), "{head}");
    }
    assert_eq!(origin.gets("/fresh").len(), 1, "{:?}", origin.lines());

    // no-store: every time.
    for _ in 0..3 {
        let (_, _, body) = fetch(&lab, "c1", &origin.url("/nostore"));
        assert_eq!(body, b"not for keeping\n");
    }
    assert_eq!(origin.gets("/nostore").len(), 3);

    // Revalidated: 304 while unchanged, the new body after a change.
    let (_, _, body) = fetch(&lab, "c1", &origin.url("/changing"));
    assert_eq!(body, b"version 1\n");
    let (_, _, body) = fetch(&lab, "c2", &origin.url("/changing"));
    assert_eq!(body, b"version 1\n");
    std::fs::write(&origin.version, "2").expect("changing the object");
    let (_, _, body) = fetch(&lab, "c1", &origin.url("/changing"));
    assert_eq!(body, b"version 2\n");
    assert_eq!(origin.gets("/changing"), ["-", "\"v1\"", "\"v1\""]);

    let stats = lab.cli_json(&cfg, &["cache", "stats"]);
    assert_eq!(stats["hits"].as_u64(), Some(2), "{stats}");
    assert_eq!(stats["revalidated"].as_u64(), Some(1), "{stats}");
    assert!(stats["bytes_saved"].as_u64() >= Some(22), "{stats}");
    let status = lab.cli_json(&cfg, &["status"]);
    assert_eq!(
        status["http_proxy"]["cache"]["entries"].as_u64(),
        Some(2),
        "{status}"
    );
    let purge = lab.cli(&cfg, &["cache", "purge", &origin.url("/fresh")]);
    assert!(
        String::from_utf8_lossy(&purge.stdout).contains("purged"),
        "{purge:?}"
    );
    fetch(&lab, "c1", &origin.url("/fresh"));
    assert_eq!(
        origin.gets("/fresh").len(),
        2,
        "purged objects are fetched again"
    );

    // The malformed-request table from a real client: 400 and the connection closed each
    // time, nothing at the origin, and the proxy keeps serving.
    let url = origin.url("/malformed");
    let host = format!("{}:{}", lab::ORIGIN_NAME, origin.port);
    let big = "x".repeat(128 * 1024);
    let table: Vec<(&str, String)> = vec![
        ("a bad request line", "GARBAGE\r\n\r\n".into()),
        (
            "oversized headers",
            format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nX-Big: {big}\r\n\r\n"),
        ),
        (
            "invalid chunked framing",
            format!(
                "POST {url} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n\
                 zz\r\nhello\r\n0\r\n\r\n"
            ),
        ),
        (
            "Content-Length and Transfer-Encoding",
            format!(
                "POST {url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\
                 Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST {url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\
                 Content-Length: 6\r\n\r\nhello!"
            ),
        ),
        (
            "the same Content-Length twice",
            format!(
                "POST {url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\
                 Content-Length: 5\r\n\r\nhello"
            ),
        ),
    ];
    for (name, request) in &table {
        let dir = cfg
            .parent()
            .unwrap_or_else(|| fail("the config has no directory"));
        let (first_line, closed) = raw_exchange(&lab, "c1", dir, request.as_bytes());
        // 431 is the more specific 4xx for a head over the limit (hyper's answer).
        let allowed: &[&str] = if *name == "oversized headers" {
            &["HTTP/1.1 400", "HTTP/1.1 431"]
        } else {
            &["HTTP/1.1 400"]
        };
        assert!(
            allowed.iter().any(|a| first_line.starts_with(a)),
            "{name}: answered {first_line:?}"
        );
        assert!(closed, "{name}: the connection stayed open");
    }
    assert!(
        origin.lines().iter().all(|l| !l.contains("/malformed")),
        "a malformed request reached the origin: {:?}",
        origin.lines()
    );
    let (status, _, body) = fetch(&lab, "c2", &origin.url("/fresh"));
    assert_eq!(
        (status.as_str(), body.as_slice()),
        ("200", &b"fresh body\n"[..])
    );
    agent.terminate();
}

/// Sends `request` from `role` to the proxy on one connection and reads until the proxy
/// closes it (or 10 s pass): the answer's first line, and whether the proxy closed. The
/// bytes go through a file in `dir` (namespaces share the file system; an argument may not
/// exceed 128 KiB).
fn raw_exchange(lab: &TestLab, role: &str, dir: &Path, request: &[u8]) -> (String, bool) {
    const CLIENT: &str = r#"
import socket, sys
data = open(sys.argv[1], "rb").read()
s = socket.create_connection(("198.51.100.1", 3128), timeout=10)
try:
    s.sendall(data)
except OSError:
    pass
buf, closed = b"", False
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            closed = True
            break
        buf += chunk
except ConnectionResetError:
    closed = True
except socket.timeout:
    pass
print(buf.split(b"\r\n")[0].decode(errors="replace"))
print("closed" if closed else "open")
"#;
    let file = dir.join("raw-request.bin");
    std::fs::write(&file, request).or_fail("writing the raw request");
    let path = file.to_str().unwrap_or_else(|| fail("a non-UTF-8 path"));
    let out = lab.exec(role, "python3", &["-c", CLIENT, path]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("").to_owned();
    (first, lines.next() == Some("closed"))
}

#[test]
fn large_objects_collapse_and_survive_kill_9() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let cfg = config(&lab, "cache-big.toml", 8082);
    let origin = CacheOrigin::start(&lab, cfg.parent().expect("config dir"), 8082);
    let agent = Agent::start(&lab, &cfg);
    lab.wait_uplink(&cfg);
    lab.dhcp("c1", DhcpClient::Dhclient, None);
    lab.dhcp("c2", DhcpClient::Udhcpc, None);

    // Two clients at once: one origin request, identical whole bodies.
    let url = origin.url("/big");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| fetch(&lab, "c1", &url));
        let b = s.spawn(|| fetch(&lab, "c2", &url));
        (a.join(), b.join())
    });
    let ((sa, _, a), (sb, _, b)) = (a.expect("c1's curl"), b.expect("c2's curl"));
    assert_eq!((sa.as_str(), sb.as_str()), ("200", "200"));
    assert_eq!(a.len(), 200 * MIB);
    assert!(a == b, "the two bodies differ");
    assert!(a == expected_body(200), "the body is not the origin's");
    assert_eq!(origin.gets("/big").len(), 1, "{:?}", origin.lines());

    // kill -9 while a slow object is being stored.
    let slow = origin.url("/slow");
    let mut client = lab.spawn(
        "c1",
        "curl",
        &["-sS", "-m", "120", "-x", PROXY, "-o", "/dev/null", &slow],
    );
    let tmp = state_dir(&cfg).join("http-cache/tmp");
    // The 200 MiB object's commit (fsync) can hold the disk for a while on a loaded machine.
    let storing = eventually(Duration::from_secs(60), || {
        std::fs::read_dir(&tmp)
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.metadata().is_ok_and(|m| m.len() > MIB as u64))
            })
            .unwrap_or(false)
    });
    assert!(
        storing,
        "the slow object was not being stored: tmp {:?}; origin {:?}; agent log:\n{}",
        std::fs::read_dir(&tmp).map(|d| d
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect::<Vec<_>>()),
        origin.lines(),
        agent.log_text()
    );
    agent.kill9();
    client.kill();

    // After the restart: no half object; fetched again whole, then a hit.
    let agent = Agent::start(&lab, &cfg);
    lab.wait_uplink(&cfg);
    let leftovers = std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "temporary files are removed at start");
    let (status, _, body) = fetch(&lab, "c1", &slow);
    assert_eq!(status, "200");
    assert!(
        body == expected_body(64),
        "a whole body after the restart ({} bytes)",
        body.len()
    );
    assert_eq!(origin.gets("/slow").len(), 2);
    let (_, head, body) = fetch(&lab, "c2", &slow);
    assert!(has_header(&head, "age") && body.len() == 64 * MIB, "{head}");
    assert_eq!(origin.gets("/slow").len(), 2);
    // And the big one is still there.
    let (_, head, _) = fetch(&lab, "c2", &url);
    assert!(has_header(&head, "age"), "{head}");
    assert_eq!(origin.gets("/big").len(), 1);
    agent.terminate();
}

/// nginx's access log since the test began: `server scheme method uri status "inm" "range"
/// "accept-encoding"` per line.
struct WebLog {
    path: PathBuf,
    from: usize,
}

impl WebLog {
    fn new(lab: &TestLab) -> WebLog {
        let path = lab.lab.web_log();
        let from = std::fs::read_to_string(&path).map_or(0, |t| t.len());
        WebLog { path, from }
    }

    fn lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.get(self.from..)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The addresses requests came from (the log line's last field).
    fn clients(&self) -> Vec<String> {
        let lines = self.lines();
        let mut all: Vec<String> = lines
            .iter()
            .filter_map(|l| l.rsplit(' ').next().map(str::to_owned))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The requests `server` got for `uri` over `scheme`: (status, If-None-Match, Range).
    fn requests(&self, server: &str, scheme: &str, uri: &str) -> Vec<(String, String, String)> {
        let prefix = format!("{server} {scheme} GET {uri} ");
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|rest| {
                let mut quoted = rest.split('"');
                let status = quoted.next().unwrap_or_default().trim().to_owned();
                let inm = quoted.next().unwrap_or_default().to_owned();
                let range = quoted.nth(1).unwrap_or_default().to_owned();
                (status, inm, range)
            })
            .collect()
    }
}

/// curl through the proxy with `extra` arguments: (status, head, body).
fn fetch_with(lab: &TestLab, role: &str, url: &str, extra: &[&str]) -> (String, String, Vec<u8>) {
    let mut args = vec!["-sS", "-m", "60", "-x", PROXY, "-D", "/dev/stderr"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = lab.exec(role, "curl", &args);
    let head = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap_or("000").to_owned();
    (status, head, out.stdout)
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

#[test]
fn nginx_over_http_and_https_with_the_lab_ca() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    lab.lab
        .start_web_origin()
        .or_fail("starting the lab's nginx");
    let ca = lab.lab.web_ca();
    let cfg = config_with(
        &lab,
        "cache-nginx.toml",
        &format!("upstream_ca = \"{}\"\n", ca.display()),
    );
    let web = WebLog::new(&lab);
    let www = lab::WEB_HOST;
    let agent = Agent::start(&lab, &cfg);
    lab.wait_uplink(&cfg);
    lab.dhcp("c1", DhcpClient::Dhclient, None);
    lab.dhcp("c2", DhcpClient::Udhcpc, None);

    // https asked in plain HTTP (apt-cacher-ng's form), verified against the lab CA: the
    // second fetch, from another client, is a hit.
    let https = format!("http://HTTPS///{www}/fresh/a.txt");
    let (status, head, body) = fetch(&lab, "c1", &https);
    assert_eq!(status, "200", "{head}\n{}", agent.log_text());
    assert_eq!(body, b"fresh from nginx\n");
    let (status, head, body) = fetch(&lab, "c2", &https);
    assert_eq!(
        (status.as_str(), body.as_slice()),
        ("200", &b"fresh from nginx\n"[..])
    );
    assert!(has_header(&head, "age"), "a hit carries Age: {head}");
    assert!(
        has_header(&head, "etag") && has_header(&head, "last-modified"),
        "{head}"
    );
    assert_eq!(
        web.requests(www, "https", "/fresh/a.txt").len(),
        1,
        "{:?}",
        web.lines()
    );

    // An https origin whose certificate is not from that CA: a 502 that says TLS, every time,
    // and nothing of it stored or even asked over HTTP.
    let rogue = format!("http://HTTPS///{}/fresh/a.txt", lab::ROGUE_HOST);
    for role in ["c1", "c2"] {
        let (status, head, body) = fetch(&lab, role, &rogue);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, "502", "{head}{text}");
        assert!(text.contains("TLS"), "{text}");
        assert!(!text.contains("fresh from nginx"), "{text}");
    }
    assert!(
        web.lines().iter().all(|l| !l.starts_with(lab::ROGUE_HOST)),
        "the impostor got an HTTP request: {:?}",
        web.lines()
    );
    let listed = lab.cli_json(&cfg, &["cache", "ls"]);
    assert!(!listed.to_string().contains(lab::ROGUE_HOST), "{listed}");

    // Vary: Accept-Encoding: the gzip and the identity variant are both kept, each client
    // gets its own.
    let text_url = format!("http://{www}/fresh/text.txt");
    let text = "compressible line of text\n".repeat(200).into_bytes();
    for round in 0..2 {
        let (_, gz_head, gz) = fetch_with(&lab, "c1", &text_url, &["-H", "Accept-Encoding: gzip"]);
        let (_, id_head, id) = fetch_with(&lab, "c2", &text_url, &[]);
        assert_eq!(
            header_value(&gz_head, "content-encoding"),
            Some("gzip"),
            "{gz_head}"
        );
        assert!(
            gz.len() < text.len() && gz.starts_with(&[0x1f, 0x8b]),
            "{gz_head}"
        );
        assert_eq!(
            header_value(&id_head, "content-encoding"),
            None,
            "{id_head}"
        );
        assert!(id == text, "the identity variant: {id_head}");
        if round == 1 {
            assert!(has_header(&gz_head, "age") && has_header(&id_head, "age"));
        }
    }
    assert_eq!(
        web.requests(www, "http", "/fresh/text.txt").len(),
        2,
        "{:?}",
        web.lines()
    );

    // no-store: every time; no-cache: revalidated with nginx's ETag (304), new body after a
    // change (another size, so another ETag even within the same second).
    for _ in 0..2 {
        let (_, _, body) = fetch(&lab, "c1", &format!("http://{www}/nostore/a.txt"));
        assert_eq!(body, b"not for keeping\n");
    }
    assert_eq!(web.requests(www, "http", "/nostore/a.txt").len(), 2);
    let changing = format!("http://{www}/revalidate/a.txt");
    for _ in 0..2 {
        let (_, _, body) = fetch(&lab, "c1", &changing);
        assert_eq!(body, b"version 1\n");
    }
    let file = lab.lab.web_dir().join("www/revalidate/a.txt");
    std::fs::write(&file, "version two\n").or_fail("changing the object");
    let (_, _, body) = fetch(&lab, "c2", &changing);
    assert_eq!(body, b"version two\n");
    let asked = web.requests(www, "http", "/revalidate/a.txt");
    let statuses: Vec<&str> = asked.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(statuses, ["200", "304", "200"], "{asked:?}");
    // nginx logs the ETag's quotes as \x22.
    assert!(
        asked[1].1.contains("x22"),
        "revalidated with the ETag: {asked:?}"
    );

    // Range on an uncached object: forwarded, and the whole object fetched once behind it;
    // then ranges come from the cache.
    let big_url = format!("http://{www}/big.bin");
    let big: Vec<u8> = (0..lab::WEB_BIG_BYTES).map(|i| (i % 251) as u8).collect();
    let (status, _, part) = fetch_with(&lab, "c1", &big_url, &["-r", "0-99"]);
    assert_eq!((status.as_str(), part.as_slice()), ("206", &big[..100]));
    let stored = eventually(Duration::from_secs(30), || {
        lab.cli_json(&cfg, &["cache", "ls"])
            .to_string()
            .contains("/big.bin")
    });
    assert!(stored, "the whole object was not stored: {:?}", web.lines());
    let (status, head, part) = fetch_with(&lab, "c2", &big_url, &["-r", "1000-1099"]);
    assert_eq!(
        (status.as_str(), part.as_slice()),
        ("206", &big[1000..1100]),
        "{head}"
    );
    assert!(has_header(&head, "age"), "a range from the cache: {head}");
    let asked = web.requests(www, "http", "/big.bin");
    let statuses: Vec<&str> = asked.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(statuses.len(), 2, "{asked:?}");
    assert!(
        statuses.contains(&"206") && statuses.contains(&"200"),
        "{asked:?}"
    );
    agent.terminate();
}

/// Through the lab's Tor network (the default egress), then with it stopped: cached objects
/// are still served (a stale one only where `stale-if-error` allows it), everything else gets
/// a 502, and nothing leaves the uplink but attempts to reach the relays. Stopping Tor is safe
/// in the shared lab: this binary's other tests use the `direct` egress.
#[test]
fn with_tor_stopped_the_cache_serves_and_nothing_leaks() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    lab.lab
        .start_web_origin()
        .or_fail("starting the lab's nginx");
    let cfg = lab.agent_config("cache-tor.toml", |mut text| {
        text.push_str("\n[http_proxy]\ncache_size = \"1 GiB\"\n");
        text
    });
    let web = WebLog::new(&lab);
    let www = lab::WEB_HOST;
    let agent = Agent::start(&lab, &cfg);
    lab.wait_tor();
    let uplink = lab.wait_uplink(&cfg);
    lab.dhcp("c1", DhcpClient::Dhclient, None);

    let url = |path: &str| format!("http://{www}{path}");
    for path in ["/fresh/a.txt", "/stale/a.txt", "/strict/a.txt"] {
        let ok = eventually(Duration::from_secs(60), || {
            fetch(&lab, "c1", &url(path)).0 == "200"
        });
        assert!(
            ok,
            "{path} through Tor: {:?}\n{}",
            web.lines(),
            agent.log_text()
        );
    }
    // Through Tor: nginx saw an exit, never the gateway's uplink address.
    let clients = web.clients();
    assert!(
        !clients.is_empty() && !clients.contains(&uplink),
        "{clients:?}"
    );
    // Let /stale/ and /strict/ (max-age=1) go stale.
    std::thread::sleep(Duration::from_millis(2100));

    let port = lab.lab.uplink_port();
    let capture = Capture::start(&lab, "up", &port, "cache-tor-stopped");
    lab_tor::stop(&lab.lab).or_fail("stopping the lab's Tor network");
    let before = web.lines().len();

    // The connector may take up to the proxy's connect timeout (60 s) to give up.
    let offline = |url: &str| fetch_with(&lab, "c1", url, &["-m", "150"]);
    let (status, head, body) = offline(&url("/fresh/a.txt"));
    assert_eq!(
        (status.as_str(), body.as_slice()),
        ("200", &b"fresh from nginx\n"[..])
    );
    assert!(has_header(&head, "age"), "a hit: {head}");
    let (status, head, body) = offline(&url("/stale/a.txt"));
    assert_eq!(
        (status.as_str(), body.as_slice()),
        ("200", &b"old but usable\n"[..]),
        "stale-if-error: {head}"
    );
    let (status, _, body) = offline(&url("/strict/a.txt"));
    assert_eq!(
        status,
        "502",
        "must-revalidate: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = offline(&url("/fresh/never-fetched.txt"));
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, "502", "not cached: {text}");
    assert!(text.contains("Tor"), "the 502 says why: {text}");
    let stats = lab.cli_json(&cfg, &["cache", "stats"]);
    assert!(stats["stale_served"].as_u64() >= Some(1), "{stats}");
    assert_eq!(web.lines().len(), before, "nginx was reached without Tor");

    // The uplink: only attempts to reach the relays (the positive control: the agent keeps
    // trying) and DHCP; nothing else from the gateway's address.
    let relays: Vec<String> = lab_tor::NODES
        .iter()
        .map(|n| format!("host {}", n.address))
        .collect();
    let relays = relays.join(" or ");
    let [others, tor] = &capture.stop_each(&[
        &format!("ip and src host {uplink} and not udp port 67 and not ({relays})"),
        &format!("src host {uplink} and ({relays})"),
    ])[..] else {
        fail("stop_each gave other than two lists")
    };
    assert!(
        others.is_empty(),
        "without Tor the uplink carried: {others:?}"
    );
    assert!(
        !tor.is_empty(),
        "the positive control: no attempt to reach a relay was captured"
    );
    agent.terminate();
}
