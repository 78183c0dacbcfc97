//! Transparent Tor: an inside client with no proxy settings reaches the origin by address and
//! by name, and the lab's onion service by its name; the origin sees an exit relay. DNS sent to
//! another resolver is answered by the gateway. Nothing leaves the uplink for the origin or
//! that resolver directly. A steered
//! connection never falls through to a host socket in the gateway, whether the agent runs, has
//! stopped or was killed.

use std::time::Duration;

use gateway_tests::{eventually, lab, Agent, Background, Capture, DhcpClient, TestLab};
use xtask::lab::tor as lab_tor;

fn is_exit(addr: &str) -> bool {
    ["203.0.113.41", "203.0.113.42", "203.0.113.43"].contains(&addr)
}

/// curl from c1, no proxy: the page on success.
fn fetch(lab: &TestLab, url: &str, seconds: u32) -> Option<String> {
    let out = lab.exec("c1", "curl", &["-s", "-f", "-m", &seconds.to_string(), url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A listener on 0.0.0.0:2222 in `gw` that records every connection in a file.
fn host_listener(lab: &TestLab) -> (Background, std::path::PathBuf) {
    let record = lab.lab.gateway_dir().join("host-2222.log");
    let _ = std::fs::remove_file(&record);
    let code = format!(
        "import socket\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', 2222))\n\
         s.listen()\n\
         while True:\n\
         \x20   c, peer = s.accept()\n\
         \x20   open('{}', 'a').write(repr(peer) + '\\n')\n\
         \x20   c.close()\n",
        record.display()
    );
    let listener = lab.spawn("gw", "/usr/bin/python3", &["-c", &code]);
    assert!(
        eventually(Duration::from_secs(10), || lab
            .exec_ok("gw", "ss", &["-Hltn", "sport = :2222"])
            .contains("2222")),
        "the host listener did not come up"
    );
    (listener, record)
}

fn reached(record: &std::path::Path) -> String {
    std::fs::read_to_string(record).unwrap_or_default()
}

#[test]
fn inside_tcp_goes_through_tor_without_proxy_settings_and_never_falls_through() {
    let lab = TestLab::up();
    let cfg = lab.agent_config("transparent.toml", |text| text);
    let agent = Agent::start(&lab, &cfg);
    lab.wait_tor();
    let uplink = lab.wait_uplink(&cfg);
    lab.dhcp("c1", DhcpClient::Dhclient, None);
    let (_listener, record) = host_listener(&lab);

    // By address, no proxy: the page arrives through Tor. The first stream may meet an early
    // consensus without exits (docs/TORLAB.md): retry for a while.
    let capture = Capture::start(&lab, "up", &lab.lab.uplink_port(), "transparent");
    let url = format!("http://{}/", lab::ORIGIN_IP);
    let mut page = None;
    eventually(Duration::from_secs(120), || {
        page = fetch(&lab, &url, 20);
        page.is_some()
    });
    let page = page.unwrap_or_else(|| {
        panic!(
            "no page through the transparent listener: {}",
            lab.cli_json(&cfg, &["status"])["transparent"]
        )
    });
    assert!(page.contains("gateway lab origin"), "{page}");
    let clients = lab.origin_clients();
    assert!(
        clients.last().is_some_and(|c| is_exit(c)),
        "the origin saw {clients:?}, not an exit"
    );

    // DNS to another resolver, hard-coded: answered by the gateway over Tor (UDP and TCP),
    // never sent to that resolver from the uplink address.
    let queries_before = lab.cli_json(&cfg, &["status"])["dns"]["queries"]
        .as_u64()
        .unwrap_or(0);
    let resolver = format!("@{}", lab::INTERNET_RESOLVER_IP);
    for transport in ["+notcp", "+tcp"] {
        let answer = lab.exec_ok(
            "c1",
            "dig",
            &[
                &resolver,
                lab::ORIGIN_NAME,
                "A",
                "+short",
                "+time=10",
                "+tries=2",
                transport,
            ],
        );
        assert_eq!(answer.trim(), lab::ORIGIN_IP, "dig {transport}: {answer:?}");
    }
    let queries = lab.cli_json(&cfg, &["status"])["dns"]["queries"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        queries >= queries_before + 2,
        "the gateway did not answer: {queries}"
    );
    let from_uplink = format!("from {uplink}");
    let leaked: Vec<String> = lab
        .modem_log()
        .lines()
        .filter(|line| line.contains("query[") && line.contains(&from_uplink))
        .map(str::to_owned)
        .collect();
    assert!(
        leaked.is_empty(),
        "the resolver heard the gateway: {leaked:?}"
    );

    // By name: c1 asks the gateway's DNS, connects to the address, and the listener opens the
    // stream by the name (the exit resolves it).
    let by_name_before = lab.cli_json(&cfg, &["status"])["transparent"]["by_name"]
        .as_u64()
        .unwrap_or(0);
    let page = fetch(&lab, lab::ORIGIN_URL, 30).expect("the origin by name");
    assert!(page.contains("gateway lab origin"), "{page}");
    let status = lab.cli_json(&cfg, &["status"])["transparent"].clone();
    assert!(
        status["by_name"].as_u64() > Some(by_name_before),
        "not connected by name: {status}"
    );
    assert!(lab.origin_clients().last().is_some_and(|c| is_exit(c)));

    // An onion site with no proxy settings: its name gets a virtual address from the gateway's
    // DNS, which the listener maps back to the onion service.
    lab.wait_onion();
    let onion = lab_tor::onion_address(&lab.lab).expect("the lab's onion address");
    let virtual_addr = lab.exec_ok("c1", "dig", &["+short", &onion, "A"]);
    assert!(
        virtual_addr.trim().starts_with("10."),
        "{onion} got {virtual_addr:?}, not a virtual address"
    );
    let mut onion_page = None;
    eventually(Duration::from_secs(180), || {
        onion_page = fetch(&lab, &format!("http://{onion}/"), 30);
        onion_page.is_some()
    });
    let onion_page = onion_page.unwrap_or_else(|| {
        panic!(
            "no page from {onion}: {}",
            lab.cli_json(&cfg, &["status"])["transparent"]
        )
    });
    assert!(onion_page.contains("gateway lab origin"), "{onion_page}");

    let direct = capture.stop(&format!(
        "src host {uplink} and (dst host {} or dst host {})",
        lab::ORIGIN_IP,
        lab::INTERNET_RESOLVER_IP
    ));
    assert!(
        direct.is_empty(),
        "the gateway went to the origin directly: {direct:?}"
    );
    let status = lab.cli_json(&cfg, &["status"])["transparent"].clone();
    assert!(status["streams"].as_u64() >= Some(1), "{status}");

    // proxy-only: the SOCKS port still takes c1 to the origin (through Tor); the same page
    // without proxy settings is refused and counted as a policy drop.
    let c1_mac = lab.mac("c1");
    let set = |policy: &str| {
        let out = lab.cli(&cfg, &["clients", "set", &c1_mac, policy]);
        assert!(out.status.success(), "clients set {policy}");
    };
    set("proxy-only");
    let before = lab.drops(&cfg, "policy");
    assert!(fetch(&lab, &url, 10).is_none(), "proxy-only was steered");
    assert!(
        lab.drops(&cfg, "policy") > before,
        "the refusal is not counted"
    );
    let socks = format!("{}:9050", lab::GATEWAY_INSIDE_IP);
    let out = lab.exec(
        "c1",
        "curl",
        &["-s", "-f", "-m", "60", "--socks5-hostname", &socks, &url],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gateway lab origin"),
        "proxy-only could not use the SOCKS port: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    set("transparent");

    // Port 2222 by the origin's address and by the uplink address: steered to Tor, never to
    // the host's own listener on 0.0.0.0:2222.
    for target in [lab::ORIGIN_IP, uplink.as_str()] {
        let url = format!("http://{target}:2222/");
        assert!(fetch(&lab, &url, 15).is_none(), "{url} answered");
    }
    assert_eq!(
        reached(&record),
        "",
        "a steered connection reached a host socket"
    );

    // Stopped, then killed: the slot is empty and the program drops; still no fall-through.
    assert!(agent.terminate().success());
    for target in [lab::ORIGIN_IP, uplink.as_str()] {
        let url = format!("http://{target}:2222/");
        assert!(
            fetch(&lab, &url, 3).is_none(),
            "{url} answered a stopped gateway"
        );
    }
    assert!(fetch(&lab, &format!("http://{}/", lab::ORIGIN_IP), 3).is_none());
    // Steered DNS is dropped too: no answer, from anyone.
    let out = lab.exec(
        "c1",
        "dig",
        &[&resolver, lab::ORIGIN_NAME, "+short", "+time=2", "+tries=1"],
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(lab::ORIGIN_IP),
        "a stopped gateway's DNS was answered"
    );
    let agent = Agent::start(&lab, &cfg);
    agent.kill9();
    for target in [lab::ORIGIN_IP, uplink.as_str()] {
        let url = format!("http://{target}:2222/");
        assert!(
            fetch(&lab, &url, 3).is_none(),
            "{url} answered a killed gateway"
        );
    }
    assert_eq!(reached(&record), "", "a connection reached a host socket");
}
