//! The HTTP proxy's cache with the real agent in the lab and real clients: `curl -x` from the
//! inside clients against an origin in `up` (`tests/fixtures/cache_origin.py`, beside the
//! lab's own) with the cache headers the tests need. `http_proxy.egress = "direct"`, so no Tor
//! is needed; the origin's log counts what crossed the uplink.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway_tests::{
    eventually, fail, lab, skip_unless_root, Agent, Background, DhcpClient, OrFail, TestLab,
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
    let path = lab.config_without_tor(name);
    let mut text = std::fs::read_to_string(&path).or_fail("reading the config");
    text.push_str(&format!(
        "\n[http_proxy]\negress = \"direct\"\nports = [80, {port}]\ncache_size = \"1 GiB\"\n"
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
    agent.terminate();
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
