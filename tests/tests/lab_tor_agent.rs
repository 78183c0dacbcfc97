//! The agent's embedded Tor on the lab's private Tor network: SOCKS5 (names, torsocks, the
//! lab's onion service, isolation, protocol errors with their reply codes), DNS over Tor, the
//! HTTP proxy, and failing closed while the network is down, without a restart when it returns.

use std::{path::Path, time::Duration};

use gateway_tests::{
    eventually, lab, skip_unless_root, Agent, Capture, DhcpClient, OrFail, TestLab,
};
use serde_json::Value;
use xtask::lab::tor as lab_tor;

const SOCKS: &str = "198.51.100.1:9050";
const PROXY: &str = "http://198.51.100.1:3128";

fn status(lab: &TestLab, cfg: &Path) -> Value {
    lab.cli_json(cfg, &["status"])
}

/// curl from c1 with `args`; the page on success.
fn curl(lab: &TestLab, args: &[&str]) -> Option<String> {
    curl_from(lab, "c1", args)
}

/// curl from `role` with `args`; the page on success.
fn curl_from(lab: &TestLab, role: &str, args: &[&str]) -> Option<String> {
    let mut all = vec!["-s", "-f", "-m", "20"];
    all.extend_from_slice(args);
    let out = lab.exec(role, "curl", &all);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A page through the gateway's SOCKS port from c1, retried for up to `timeout` (a young
/// network may have no exits yet; an onion service may still be publishing).
fn socks_page(lab: &TestLab, url: &str, timeout: Duration) -> Option<String> {
    let mut page = None;
    eventually(timeout, || {
        page = curl(lab, &["--socks5-hostname", SOCKS, url]);
        page.is_some()
    });
    page
}

fn is_exit(addr: &str) -> bool {
    ["203.0.113.41", "203.0.113.42", "203.0.113.43"].contains(&addr)
}

/// Raw SOCKS from c1 to the gateway (tests/fixtures/socks_probe.py): the steps, then every
/// byte the server sent (hex) and whether it closed.
fn socks_probe(lab: &TestLab, steps: &[String]) -> (String, bool) {
    socks_probe_within(lab, Duration::from_secs(60), steps)
}

/// [`socks_probe`], each read waiting at most `timeout`.
fn socks_probe_within(lab: &TestLab, timeout: Duration, steps: &[String]) -> (String, bool) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/socks_probe.py");
    let script = script.to_string_lossy();
    let timeout = format!("--timeout={}", timeout.as_secs());
    let mut args = vec![script.as_ref(), timeout.as_str(), "198.51.100.1", "9050"];
    args.extend(steps.iter().map(String::as_str));
    let out = lab.exec_ok("c1", "python3", &args);
    let v: Value = serde_json::from_str(out.trim()).or_fail("socks_probe.py prints JSON");
    (
        v["received"].as_str().unwrap_or_default().to_string(),
        v["closed"] == true,
    )
}

/// A SOCKS5 exchange without authentication: greeting, then `request`.
fn socks5(request: &[u8]) -> Vec<String> {
    vec![
        "send:050100".to_string(),
        "recv:2".to_string(),
        format!("send:{}", hex(request)),
    ]
}

/// A SOCKS5 request for `name`:`port` with command `cmd`.
fn by_name(cmd: u8, name: &str, port: u16) -> Vec<u8> {
    let mut req = vec![5, cmd, 0, 3, name.len() as u8];
    req.extend_from_slice(name.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    req
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn tor_serves_the_inside_and_fails_closed() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    // A lab of its own: this test stops and restarts the Tor network.
    let lab = TestLab::up_own();
    // CONNECT to port 80 as well, so that a tunnel can be tested against the lab's origin.
    let cfg = lab.agent_config("tor.toml", |text| {
        format!("{text}\n[http_proxy]\nconnect_ports = [443, 80]\n")
    });
    let _agent = Agent::start(&lab, &cfg);
    lab.wait_tor();
    lab.dhcp("c1", DhcpClient::Dhclient, None);
    let bootstrapped = eventually(Duration::from_secs(180), || {
        status(&lab, &cfg)["tor"]["bootstrapped"] == true
    });
    assert!(bootstrapped, "{}", status(&lab, &cfg)["tor"]);

    // SOCKS5 with a remote name: the origin sees an exit relay, not the gateway. The first
    // stream may meet an early consensus without exits (docs/TORLAB.md): retry for a while.
    let url = format!("http://{}/", lab::ORIGIN_NAME);
    let page = socks_page(&lab, &url, Duration::from_secs(90))
        .unwrap_or_else(|| panic!("no page through SOCKS: {}", status(&lab, &cfg)["tor"]));
    assert!(page.contains("gateway lab origin"));
    let clients = lab.origin_clients();
    assert!(
        clients.last().is_some_and(|c| is_exit(c)),
        "the origin saw {clients:?}, not an exit"
    );

    // A stream held open (a slow download) counts as a circuit in use while it lasts.
    let slow = lab.lab.state_dir().join("www").join("slow.bin");
    std::fs::write(&slow, vec![7u8; 4 << 20]).expect("writing slow.bin");
    let slow_url = format!("http://{}/slow.bin", lab::ORIGIN_NAME);
    let download = lab.spawn(
        "c1",
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "--limit-rate",
            "20k",
            "--socks5-hostname",
            SOCKS,
            &slow_url,
        ],
    );
    let in_use = |at_least: u64| {
        let tor = &status(&lab, &cfg)["tor"];
        tor["streams_open"].as_u64() >= Some(at_least)
            && tor["circuits_in_use"].as_u64() >= Some(at_least)
    };
    assert!(
        eventually(Duration::from_secs(60), || in_use(1)),
        "no circuit in use during a download: {}",
        status(&lab, &cfg)["tor"]
    );
    drop(download);
    assert!(
        eventually(Duration::from_secs(30), || {
            status(&lab, &cfg)["tor"]["streams_open"] == 0
        }),
        "the stream still counts after its client went: {}",
        status(&lab, &cfg)["tor"]
    );

    // torsocks, pointed at the gateway.
    let conf = lab.lab.state_dir().join("torsocks.conf");
    std::fs::write(&conf, "TorAddress 198.51.100.1\nTorPort 9050\n").expect("torsocks.conf");
    let env = format!("TORSOCKS_CONF_FILE={}", conf.display());
    let out = lab.exec(
        "c1",
        "env",
        &[&env, "torsocks", "curl", "-s", "-f", "-m", "20", &url],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gateway lab origin"),
        "torsocks: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The lab's onion service (on relay1, in front of the origin), by its .onion name, once
    // its descriptor is on the HSDirs (arti may have asked them earlier and been told 404).
    let waited = lab.wait_onion();
    eprintln!("the onion service published after another {waited:?}");
    let onion = lab_tor::onion_address(&lab.lab).expect("the lab's onion address");
    let onion_url = format!("http://{onion}/");
    let onion_page = socks_page(&lab, &onion_url, Duration::from_secs(180))
        .unwrap_or_else(|| panic!("no page from {onion}: {}", status(&lab, &cfg)["tor"]));
    assert!(onion_page.contains("gateway lab origin"));
    let onion_host = lab_tor::NODES
        .iter()
        .find(|n| n.nick == lab_tor::ONION_HOST)
        .map(|n| n.address.to_string())
        .expect("the onion host is a lab node");
    assert_eq!(
        lab.origin_clients().last(),
        Some(&onion_host),
        "the onion service's host fetched the page"
    );

    // SOCKS protocol errors from a real client: RFC 1928 codes or a clean close, and the
    // server carries on.
    // Four 60-byte labels: fine for SOCKS, too long for a DNS name (253 at most).
    let long_name = format!("{}.example.com", vec!["a".repeat(60); 4].join("."));
    assert_eq!(long_name.len(), 255);
    let mut socks4a_long = vec![4, 1, 0, 80, 0, 0, 0, 1, 0];
    socks4a_long.extend_from_slice("c".repeat(300).as_bytes());
    socks4a_long.push(0);
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("bad version", vec!["send:060100".into()], ""),
        (
            "truncated greeting",
            vec!["send:0503".into(), "shut".into()],
            "",
        ),
        (
            "BIND: 07",
            socks5(&by_name(2, lab::ORIGIN_NAME, 80)),
            "05000507",
        ),
        (
            "address type 5: 08",
            socks5(&[5, 1, 0, 5, 1, 2, 3, 4, 0, 80]),
            "05000508",
        ),
        (
            "a 255-byte name that cannot exist: 04",
            socks5(&by_name(1, &long_name, 80)),
            "05000504",
        ),
        (
            "a name the exits cannot resolve: 04",
            socks5(&by_name(1, "nonexistent.example.com", 80)),
            "05000504",
        ),
        (
            "a 300-byte SOCKS4a name: rejected",
            vec![format!("send:{}", hex(&socks4a_long))],
            "005b",
        ),
    ];
    for (what, steps, want) in cases {
        let (got, closed) = socks_probe(&lab, &steps);
        assert!(closed, "{what}: the server left the connection open");
        assert!(
            got.starts_with(want) && (!want.is_empty() || got.is_empty()),
            "{what}: got {got:?}, want {want:?}…"
        );
    }
    assert!(
        curl(&lab, &["--socks5-hostname", SOCKS, &url]).is_some(),
        "SOCKS serves after the bad requests"
    );

    // DNS over Tor: the modem's resolver is asked by an exit, never by the gateway.
    let uplink_ip = status(&lab, &cfg)["uplink"]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let answer = lab.exec_ok(
        "c1",
        "dig",
        &["+short", "+time=10", "@198.51.100.1", "origin.example.com"],
    );
    assert_eq!(answer.trim(), lab::ORIGIN_IP);
    let log = std::fs::read_to_string(lab.lab.dnsmasq_log()).unwrap_or_default();
    let asked: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.to_ascii_lowercase()
                .contains("query[a] origin.example.com")
        })
        .collect();
    assert!(!asked.is_empty(), "no query reached the resolver");
    assert!(
        asked
            .iter()
            .all(|l| !l.ends_with(&format!("from {uplink_ip}"))),
        "the gateway asked the resolver itself: {asked:?}"
    );

    // PTR through RESOLVE_PTR at an exit; types Tor cannot look up are NOTIMP.
    let ptr = lab.exec_ok(
        "c1",
        "dig",
        &["+short", "+time=10", "@198.51.100.1", "-x", lab::ORIGIN_IP],
    );
    assert_eq!(ptr.trim(), format!("{}.", lab::ORIGIN_NAME));
    let mx = lab.exec_ok(
        "c1",
        "dig",
        &["+time=10", "@198.51.100.1", "MX", lab::ORIGIN_NAME],
    );
    assert!(mx.contains("status: NOTIMP"), "{mx}");

    // The HTTP proxy goes through Tor too: absolute form, and a CONNECT tunnel.
    let proxied = curl(&lab, &["-x", PROXY, &url]).unwrap_or_default();
    assert!(proxied.contains("gateway lab origin"), "{proxied}");
    assert!(lab.origin_clients().last().is_some_and(|c| is_exit(c)));
    let before = lab.origin_clients().len();
    let tunnelled = curl(&lab, &["-p", "-x", PROXY, &url]).unwrap_or_default();
    assert!(
        tunnelled.contains("gateway lab origin"),
        "CONNECT: {tunnelled}"
    );
    let clients = lab.origin_clients();
    assert_eq!(
        clients.len(),
        before + 1,
        "the tunnel's request reached the origin"
    );
    assert!(clients.last().is_some_and(|c| is_exit(c)), "{clients:?}");

    // Isolation: two credentials of one client are two groups (what the agent controls).
    let created = |lab: &TestLab| {
        status(lab, &cfg)["tor"]["isolation_groups_created"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = created(&lab);
    for user in ["alice:one", "bob:two"] {
        curl(
            &lab,
            &["--socks5-hostname", SOCKS, "--proxy-user", user, &url],
        )
        .unwrap_or_else(|| panic!("no page as {user}"));
    }
    assert_eq!(created(&lab), before + 2, "{}", status(&lab, &cfg)["tor"]);

    // Isolation: a second client gets a group of its own, once.
    lab.dhcp("c2", DhcpClient::Udhcpc, None);
    let before = created(&lab);
    for _ in 0..2 {
        curl_from(&lab, "c2", &["--socks5-hostname", SOCKS, &url]).expect("no page from c2");
    }
    assert_eq!(created(&lab), before + 1, "{}", status(&lab, &cfg)["tor"]);

    // Tor down: SOCKS fails, DNS SERVFAILs, the proxy answers 502; nothing goes out directly.
    lab_tor::stop(&lab.lab).expect("stopping the lab's Tor nodes");
    let capture = Capture::start(&lab, "up", "br0", "tor-down");
    let socks = lab.exec(
        "c1",
        "curl",
        &["-s", "-m", "30", "--socks5-hostname", SOCKS, &url],
    );
    assert!(!socks.status.success(), "SOCKS fetched with Tor down");
    // arti may notice at once (01: Tor is not usable) or keep trying until the SOCKS server's
    // connect timeout (120 s: 06, TTL expired); never a verdict on the host (04), never success.
    let (reply, _) = socks_probe_within(
        &lab,
        Duration::from_secs(150),
        &socks5(&by_name(1, lab::ORIGIN_NAME, 80)),
    );
    assert!(
        reply.starts_with("05000501") || reply.starts_with("05000506"),
        "Tor down must be a general failure or a timeout: {reply}"
    );
    let dns = lab.exec_ok(
        "c1",
        "dig",
        &["+time=40", "+tries=1", "@198.51.100.1", "fresh.example.com"],
    );
    assert!(dns.contains("SERVFAIL"), "{dns}");
    let proxy = lab.exec(
        "c1",
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "90",
            "-x",
            PROXY,
            &url,
        ],
    );
    assert_eq!(String::from_utf8_lossy(&proxy.stdout), "502");
    let direct = capture.stop(&format!(
        "src host {uplink_ip} and (dst host {} or dst port 53)",
        lab::ORIGIN_IP
    ));
    assert!(
        direct.is_empty(),
        "direct traffic with Tor down: {direct:?}"
    );

    // Tor back: service resumes without restarting the agent (arti backs off between retries).
    lab_tor::start(&lab.lab).expect("starting the lab's Tor nodes");
    lab.wait_tor();
    let resumed = eventually(Duration::from_secs(300), || {
        curl(&lab, &["--socks5-hostname", SOCKS, &url]).is_some()
    });
    assert!(
        resumed,
        "SOCKS did not resume: {}",
        status(&lab, &cfg)["tor"]
    );
}
