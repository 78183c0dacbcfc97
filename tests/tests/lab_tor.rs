//! The lab's private Tor network (Debian's `tor` in `up`): a C-tor client in `up` bootstraps
//! from the lab's authorities and reaches the origin by address, by name (resolved at the
//! exits by the modem's dnsmasq) and as an onion service; names resolve both ways through the
//! exits; `lab tor stop|start` keeps every key. Traffic stays inside the lab's namespaces.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use gateway_tests::lab::{LabStatus, ORIGIN_IP, ORIGIN_NAME};
use gateway_tests::lab_tor::{self, Role};
use gateway_tests::{eventually, fail, skip_unless_root, Background, OrFail, TestLab};

const SOCKS: &str = "127.0.0.1:9150";

/// A C-tor client of the lab's network in `up`, SOCKS on [`SOCKS`]; stopped when dropped.
struct TorClient {
    _process: Background,
    log: PathBuf,
}

impl TorClient {
    /// Starts it and waits until it has bootstrapped.
    fn start(lab: &TestLab, name: &str) -> TorClient {
        let data = lab.lab.state_dir().join(name);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&data)
            .or_fail(format_args!("creating {}", data.display()));
        let torrc = data.with_extension("torrc");
        let text = lab_tor::client_torrc(&lab.lab, &data, 9150).or_fail("client torrc");
        fs::write(&torrc, text).or_fail("writing the client torrc");
        let process = lab.spawn(
            "up",
            "tor",
            &["--defaults-torrc", "/dev/null", "-f", path_str(&torrc)],
        );
        let client = TorClient {
            _process: process,
            log: data.join("notice.log"),
        };
        let begin = Instant::now();
        let booted = eventually(Duration::from_secs(90), || {
            client.log_text().contains("Bootstrapped 100%")
        });
        assert!(booted, "{name} did not bootstrap: {}", client.log_text());
        eprintln!("{name} bootstrapped in {:?}", begin.elapsed());
        client
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `curl` through the client with the name resolved at the exit; retried for up to `timeout`
/// (the first streams of a young network may fail). Returns the body.
fn fetch(lab: &TestLab, url: &str, timeout: Duration) -> String {
    let mut body = String::new();
    let mut last = String::new();
    let ok = eventually(timeout, || {
        let out = lab.exec(
            "up",
            "curl",
            &["-sS", "-m", "15", "--socks5-hostname", SOCKS, url],
        );
        body = String::from_utf8_lossy(&out.stdout).into_owned();
        last = format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        out.status.success()
    });
    assert!(ok, "fetching {url} through Tor failed: {last}");
    body
}

/// `tor-resolve [-x] name` through the client.
fn tor_resolve(lab: &TestLab, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push(SOCKS);
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(30), || {
        let out = lab.exec("up", "tor-resolve", &all);
        last = String::from_utf8_lossy(&out.stdout).trim().to_string();
        out.status.success()
    });
    assert!(ok, "tor-resolve {args:?} failed: {last}");
    last
}

/// The `tor` processes in the lab's `up` namespace.
fn tor_processes(lab: &TestLab) -> Vec<String> {
    let pids = gateway_tests::host("ip", &["netns", "pids", &lab.ns("up")]).unwrap_or_default();
    pids.split_whitespace()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "tor")
        })
        .map(str::to_string)
        .collect()
}

fn identities(status: &LabStatus) -> BTreeMap<String, lab_tor::NodeKeys> {
    status
        .tor_nodes
        .iter()
        .map(|n| {
            let keys = n.keys.clone();
            (
                n.nick.clone(),
                keys.unwrap_or_else(|| fail(format_args!("no keys for {}", n.nick))),
            )
        })
        .collect()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap_or_else(|| fail("lab paths are UTF-8"))
}

#[test]
fn tor_network_carries_streams_and_restarts_with_its_keys() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    // A lab of its own: this test stops and restarts the Tor network.
    let lab = TestLab::up_own();
    let took = lab.wait_tor();
    eprintln!("consensus ready {took:?} after `lab up`");

    let status = lab.lab.status().expect("lab status");
    assert!(status.tor_ready, "{:?}", status.tor_not_ready_because);
    assert_eq!(status.tor_nodes.len(), 9);
    assert!(status.tor_nodes.iter().all(|n| n.running));
    for role in [Role::Authority, Role::Relay, Role::Exit] {
        let count = status.tor_nodes.iter().filter(|n| n.role == role).count();
        assert_eq!(count, 3, "{role:?}");
    }
    let onion = status.onion_address.clone().expect("an onion address");
    assert!(onion.ends_with(".onion") && onion.len() == 62, "{onion}");
    let json = serde_json::to_value(&status).expect("status as JSON");
    for key in [
        "tor_ready",
        "tor_nodes",
        "onion_address",
        "onion_published",
        "arti_config",
    ] {
        assert!(json.get(key).is_some(), "lab status --json lacks {key}");
    }

    // The arti settings name every authority with its identities and ORPort.
    assert_eq!(
        status.arti_config,
        lab.lab.state_dir().join("arti.toml").display().to_string()
    );
    let arti = fs::read_to_string(&status.arti_config).expect("arti.toml");
    for node in status
        .tor_nodes
        .iter()
        .filter(|n| n.role == Role::Authority)
    {
        let keys = node.keys.as_ref().expect("keys");
        for id in [
            keys.v3ident.as_deref().unwrap_or("no v3ident"),
            &keys.rsa_identity,
            &keys.ed_identity,
            &format!("{}:5000", node.address),
        ] {
            assert!(arti.contains(id), "arti.toml lacks {id}:\n{arti}");
        }
    }

    let client = TorClient::start(&lab, "torclient1");
    let exits = ["203.0.113.41", "203.0.113.42", "203.0.113.43"];
    let before = lab.origin_clients().len();
    assert_eq!(
        fetch(&lab, "http://203.0.113.10/", Duration::from_secs(60)),
        "gateway lab origin\n"
    );
    assert_eq!(
        fetch(&lab, "http://origin.example.com/", Duration::from_secs(30)),
        "gateway lab origin\n"
    );
    // Requests reach the origin from the exits, never from the client's side.
    let by_exits = lab.origin_clients();
    assert!(by_exits.len() >= before + 2, "{by_exits:?}");
    assert!(
        by_exits.iter().all(|c| exits.contains(&c.as_str())),
        "{by_exits:?}"
    );

    // Names resolve at the exits with the modem's dnsmasq, forward and reverse.
    assert_eq!(tor_resolve(&lab, &["origin.example.com"]), ORIGIN_IP);
    assert_eq!(tor_resolve(&lab, &["-x", ORIGIN_IP]), ORIGIN_NAME);
    // Tor randomises the case of names it asks for, and its resolver does not bind the exit's
    // own address: the queries come from inet0's first address, on the stand-in internet.
    let dnsmasq = fs::read_to_string(lab.lab.dnsmasq_log())
        .unwrap_or_default()
        .to_lowercase();
    let asked_by_exit = |query: &str| {
        dnsmasq
            .lines()
            .any(|l| l.contains(query) && l.contains(" from 203.0.113."))
    };
    assert!(
        asked_by_exit("query[a] origin.example.com")
            && asked_by_exit("query[ptr] 10.113.0.203.in-addr.arpa"),
        "the exits did not ask the modem:\n{dnsmasq}"
    );

    // The onion service on relay1 forwards to the origin, once `lab status` says it published.
    lab.wait_onion();
    let begin = Instant::now();
    assert_eq!(
        fetch(&lab, &format!("http://{onion}/"), Duration::from_secs(180)),
        "gateway lab origin\n"
    );
    eprintln!("onion service answered after {:?}", begin.elapsed());
    assert_eq!(
        lab.origin_clients().last().map(String::as_str),
        Some("203.0.113.31"),
        "the onion service's host connects to the origin"
    );
    drop(client);

    // `lab tor stop` stops every node and keeps the keys; `start` brings the same network back.
    let ids = identities(&status);
    lab_tor::stop(&lab.lab).expect("tor stop");
    assert!(
        eventually(Duration::from_secs(5), || tor_processes(&lab).is_empty()),
        "tor still runs: {:?}",
        tor_processes(&lab)
    );
    let stopped = lab_tor::status(&lab.lab);
    assert!(!stopped.ready);
    assert_eq!(stopped.running, 0);
    assert!(
        !stopped.onion_published,
        "no onion service without its host"
    );

    lab_tor::start(&lab.lab).expect("tor start");
    assert_eq!(tor_processes(&lab).len(), 9);
    // Uploads of the last run do not count: the restarted service has to publish again.
    assert!(!lab_tor::status(&lab.lab).onion_published);
    let took = lab.wait_tor();
    eprintln!("consensus ready {took:?} after `lab tor start`");
    let again = lab.lab.status().expect("lab status");
    assert_eq!(
        identities(&again),
        ids,
        "the keys changed across stop/start"
    );
    assert_eq!(again.onion_address.as_deref(), Some(onion.as_str()));

    let _client = TorClient::start(&lab, "torclient2");
    assert_eq!(
        fetch(&lab, "http://origin.example.com/", Duration::from_secs(60)),
        "gateway lab origin\n"
    );
    lab.wait_onion();
    // After a restart the service's intro circuits can still be rebuilding when its
    // descriptor is out (seen on a loaded machine: 180 s of timeouts); C tor retries within
    // its 300 s intro-circuit period.
    assert_eq!(
        fetch(&lab, &format!("http://{onion}/"), Duration::from_secs(330)),
        "gateway lab origin\n"
    );
}
