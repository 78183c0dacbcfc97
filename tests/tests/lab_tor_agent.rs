//! The agent's embedded Tor on the lab's private Tor network: SOCKS5 (names, torsocks,
//! isolation), DNS over Tor, the HTTP proxy, and failing closed while the network is
//! down, without a restart when it returns.

use std::{path::Path, time::Duration};

use gateway_tests::{eventually, lab, Agent, Capture, DhcpClient, TestLab};
use serde_json::Value;
use xtask::lab_tor;

const SOCKS: &str = "198.51.100.1:9050";
const PROXY: &str = "http://198.51.100.1:3128";

fn status(lab: &TestLab, cfg: &Path) -> Value {
    lab.cli_json(cfg, &["status"])
}

/// curl from c1 with `args`; the page on success.
fn curl(lab: &TestLab, args: &[&str]) -> Option<String> {
    let mut all = vec!["-s", "-f", "-m", "20"];
    all.extend_from_slice(args);
    let out = lab.exec("c1", "curl", &all);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn origin_clients(lab: &TestLab) -> Vec<String> {
    std::fs::read_to_string(lab.lab.origin_log())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"GET "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn is_exit(addr: &str) -> bool {
    ["203.0.113.41", "203.0.113.42", "203.0.113.43"].contains(&addr)
}

#[test]
fn tor_serves_the_inside_and_fails_closed() {
    let lab = TestLab::up();
    let cfg = lab.lab.agent_config();
    let _agent = Agent::start(&lab, &cfg);
    lab.wait_tor();
    lab.dhcp("c1", DhcpClient::Dhclient, None);
    let bootstrapped = eventually(Duration::from_secs(180), || {
        status(&lab, &cfg)["tor"]["bootstrapped"] == true
    });
    assert!(bootstrapped, "{}", status(&lab, &cfg)["tor"]);

    // SOCKS5 with a remote name: the origin sees an exit relay, not the gateway. The first
    // stream may meet an early consensus without exits (TORLAB.md): retry for a while.
    let url = format!("http://{}/", lab::ORIGIN_NAME);
    let mut page = None;
    let fetched = eventually(Duration::from_secs(90), || {
        page = curl(&lab, &["--socks5-hostname", SOCKS, &url]);
        page.is_some()
    });
    assert!(
        fetched,
        "no page through SOCKS: {}",
        status(&lab, &cfg)["tor"]
    );
    assert!(page.unwrap_or_default().contains("gateway lab origin"));
    let clients = origin_clients(&lab);
    assert!(
        clients.last().is_some_and(|c| is_exit(c)),
        "the origin saw {clients:?}, not an exit"
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

    // The HTTP proxy goes through Tor too.
    let proxied = curl(&lab, &["-x", PROXY, &url]).unwrap_or_default();
    assert!(proxied.contains("gateway lab origin"), "{proxied}");
    assert!(origin_clients(&lab).last().is_some_and(|c| is_exit(c)));

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

    // Tor down: SOCKS fails, DNS SERVFAILs, the proxy answers 502; nothing goes out directly.
    lab_tor::stop(&lab.lab).expect("stopping the lab's Tor nodes");
    let capture = Capture::start(&lab, "up", "br0", "tor-down");
    let socks = lab.exec(
        "c1",
        "curl",
        &["-s", "-m", "30", "--socks5-hostname", SOCKS, &url],
    );
    assert!(!socks.status.success(), "SOCKS fetched with Tor down");
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
