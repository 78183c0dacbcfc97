//! Fail closed for real: the inside stays filtered through every restart (a crash, a failed
//! start, the first start included, a clean stop), only the macvlan speaks upstream, nothing
//! unsolicited gets in from the uplink, the inside learns nothing of the outside by ARP, and
//! forwarding turned on behind the agent's back is turned off again.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_tests::{
    eventually, lab, metric, Agent, Background, Capture, DhcpClient, OrFail, TestLab,
};

const PYTHON: &str = "/usr/bin/python3";

/// Runs `gateway-agent run` in `gw` to its exit (bounded), for starts that must fail.
fn start_that_fails(lab: &TestLab, config: &Path) -> Output {
    let bin = gateway_tests::agent_bin().to_string_lossy().into_owned();
    let config = config.to_string_lossy();
    let out = lab.exec("gw", "timeout", &["60", &bin, "--config", &config, "run"]);
    assert!(
        !out.status.success(),
        "the start was meant to fail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Holds 127.0.0.1:9101 in `gw` (the lab config's metrics address), so a start fails late,
/// after the dataplane is up.
fn take_metrics_port(lab: &TestLab) -> Background {
    let holder = lab.spawn(
        "gw",
        PYTHON,
        &[
            "-c",
            "import socket, time\n\
             s = socket.socket()\n\
             s.bind(('127.0.0.1', 9101))\n\
             s.listen()\n\
             time.sleep(600)\n",
        ],
    );
    assert!(
        eventually(Duration::from_secs(10), || lab
            .exec_ok("gw", "ss", &["-Hltn", "sport = :9101"])
            .contains("127.0.0.1:9101")),
        "the port holder did not come up"
    );
    holder
}

/// inside0 has its XDP program, and a probe from c1 to the origin is dropped and counted.
fn assert_closed(lab: &TestLab, config: &Path, when: &str) {
    let link = lab.exec_ok("gw", "ip", &["link", "show", lab::INSIDE_IF]);
    assert!(
        link.contains("prog/xdp"),
        "{when}: no XDP on inside0: {link}"
    );
    let before = lab.drops(config, "foreign_destination");
    let origin = format!("http://{}/", lab::ORIGIN_IP);
    let probe = lab.exec("c1", "curl", &["-s", "-o", "/dev/null", "-m", "2", &origin]);
    assert!(!probe.status.success(), "{when}: c1 reached the origin");
    let after = lab.drops(config, "foreign_destination");
    assert!(
        after > before,
        "{when}: the probe was not dropped by the filter ({before} -> {after})"
    );
}

#[test]
fn every_restart_leaves_the_inside_closed_and_only_detach_opens_it() {
    let lab = TestLab::up();
    let cfg = lab.config_without_tor("restarts.toml");
    let agent = Agent::start(&lab, &cfg);
    lab.dhcp("c1", DhcpClient::Dhclient, None);

    // kill -9, then a restart that fails late (the metrics port is taken).
    agent.kill9();
    assert_closed(&lab, &cfg, "after kill -9");
    let holder = take_metrics_port(&lab);
    let failed = start_that_fails(&lab, &cfg);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("9101"),
        "it failed at the metrics bind: {stderr}"
    );
    assert_closed(&lab, &cfg, "after a failed restart");
    drop(holder);

    // A running agent owns its dataplane: detach is refused.
    let agent = Agent::start(&lab, &cfg);
    let detach = lab.cli(&cfg, &["dataplane", "detach"]);
    assert!(!detach.status.success(), "detach ran under a live agent");
    assert!(
        String::from_utf8_lossy(&detach.stderr).contains("an agent is answering"),
        "{}",
        String::from_utf8_lossy(&detach.stderr)
    );
    let status = lab.cli_json(&cfg, &["status"]);
    assert_eq!(
        status["dataplane"]["programs"].as_array().map(Vec::len),
        Some(6),
        "detach removed nothing: {}",
        status["dataplane"]
    );

    // A clean stop, then stop and start again.
    assert!(agent.terminate().success());
    assert_closed(&lab, &cfg, "after a clean stop");
    let agent = Agent::start(&lab, &cfg);
    assert!(
        agent.log_text().contains("in place"),
        "the start swapped its programs into the pinned links: {}",
        agent.log_text()
    );
    assert!(agent.terminate().success());
    assert_closed(&lab, &cfg, "after stop and start");

    // Detach: the only way to an unfiltered inside.
    let detach = lab.cli(&cfg, &["dataplane", "detach"]);
    assert!(
        detach.status.success(),
        "{}",
        String::from_utf8_lossy(&detach.stderr)
    );
    let link = lab.exec_ok("gw", "ip", &["link", "show", lab::INSIDE_IF]);
    assert!(!link.contains("prog/xdp"), "XDP left after detach: {link}");

    // A first start (nothing pinned) that fails still leaves the inside closed.
    let _holder = take_metrics_port(&lab);
    start_that_fails(&lab, &cfg);
    assert_closed(&lab, &cfg, "after a failed first start");
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn frame_time(line: &str) -> f64 {
    line.split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_default()
}

fn link_json(lab: &TestLab, device: &str) -> serde_json::Value {
    let out = lab.exec_ok("gw", "ip", &["-j", "addr", "show", "dev", device]);
    serde_json::from_str::<serde_json::Value>(&out).or_fail("ip -j prints JSON")[0].clone()
}

#[test]
fn only_the_macvlan_speaks_upstream_and_nothing_unsolicited_gets_in() {
    let lab = TestLab::up_own();
    let cfg = lab.agent_config("outside.toml", |text| {
        text.replace("[tor]\n", "[tor]\nenabled = false\n")
            .replace("upstream = \"tor\"", "upstream = \"uplink\"")
            + "\n[http_proxy]\negress = \"direct\"\n"
    });
    let parent = link_json(&lab, lab::OUTSIDE_IF);
    let parent_mac = parent["address"].as_str().expect("a MAC").to_owned();
    let parent_ll = parent["addr_info"]
        .as_array()
        .and_then(|addrs| {
            addrs
                .iter()
                .find(|a| a["family"] == "inet6" && a["scope"] == "link")
        })
        .and_then(|a| a["local"].as_str())
        .expect("outside0 has an IPv6 link-local address before the agent")
        .to_owned();

    // A listener on 0.0.0.0 in gw: any host service the uplink must not reach.
    let _listener = lab.spawn(
        "gw",
        PYTHON,
        &["-m", "http.server", "8080", "--bind", "0.0.0.0"],
    );
    let capture = Capture::start(&lab, "up", &lab.lab.uplink_port(), "uplink");
    let agent = Agent::start(&lab, &cfg);
    let started = unix_now();
    let uplink_ip = lab.wait_uplink(&cfg);
    let status = lab.cli_json(&cfg, &["status"]);
    let macvlan_mac = status["uplink"]["mac"].as_str().expect("a MAC").to_owned();
    assert_ne!(macvlan_mac, parent_mac);

    // What makes a host speak: ARP for the uplink address, neighbour discovery for the
    // parent's old link-local address, a router advertisement, an MLD query.
    let replies = lab.frames("up", &["arp", "br0", lab::MODEM_IP, &uplink_ip, "2"]);
    lab.frames("up", &["v6", "br0", &parent_ll]);

    // From the uplink, with a route to the inside subnet through the gateway: SYNs to the
    // service ports, to the host's 0.0.0.0 listener and to the inside address get nothing
    // back; neither does a datagram to the DHCP client port that answers nothing.
    lab.exec_ok(
        "up",
        "ip",
        &["route", "add", lab::INSIDE_SUBNET, "via", &uplink_ip],
    );
    assert!(
        lab.exec(
            "gw",
            "curl",
            &["-s", "-o", "/dev/null", "-m", "2", "http://127.0.0.1:8080/"]
        )
        .status
        .success(),
        "the test listener is up"
    );
    let unsolicited = lab.drops(&cfg, "outside_unsolicited");
    let to_inside = lab.drops(&cfg, "outside_to_inside");
    let targets = [
        format!("{uplink_ip}:53"),
        format!("{uplink_ip}:3128"),
        format!("{uplink_ip}:8080"),
        format!("{uplink_ip}:22"),
        format!("{}:53", lab::GATEWAY_INSIDE_IP),
        format!("{}:3128", lab::GATEWAY_INSIDE_IP),
    ];
    for target in &targets {
        let out = lab.exec(
            "up",
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-m",
                "2",
                &format!("http://{target}/"),
            ],
        );
        // 28: timed out. A refusal (7) would be an answer (a RST), and 0 a connection.
        assert_eq!(
            out.status.code(),
            Some(28),
            "{target} answered the uplink (curl exit {:?})",
            out.status.code()
        );
    }
    lab.exec_ok(
        "up",
        PYTHON,
        &[
            "-c",
            &format!(
                "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 s.bind(('{}', 40068))\ns.sendto(b'\\x01' * 300, ('{uplink_ip}', 68))\n",
                lab::MODEM_IP
            ),
        ],
    );
    assert!(
        eventually(Duration::from_secs(5), || lab
            .drops(&cfg, "outside_unsolicited")
            >= unsolicited + 5),
        "SYNs and the datagram to the uplink address were not all counted"
    );
    assert!(
        lab.drops(&cfg, "outside_to_inside") >= to_inside + 2,
        "SYNs to the inside address were not counted"
    );
    // The agent's own traffic still flows: the direct proxy reaches the origin.
    lab.dhcp("c1", DhcpClient::Dhclient, None);
    let via_proxy = lab.exec(
        "c1",
        "curl",
        &[
            "-s",
            "-m",
            "10",
            "-x",
            "http://198.51.100.1:3128",
            lab::ORIGIN_URL,
        ],
    );
    assert!(
        String::from_utf8_lossy(&via_proxy.stdout).contains("gateway lab origin"),
        "the agent's own connections broke: {}",
        agent.log_text()
    );

    let lines = capture.stop_frames("");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(".67 > ") || l.contains(".68 > ")),
        "the capture shows no DHCP exchange: it did not see the uplink ({} frames)",
        lines.len()
    );
    let from_parent: Vec<&String> = lines
        .iter()
        .filter(|l| frame_time(l) >= started && l.contains(&format!("{parent_mac} >")))
        .collect();
    assert!(
        from_parent.is_empty(),
        "frames with the parent NIC's MAC after the agent started: {from_parent:?}"
    );
    let reply_macs: Vec<&str> = replies
        .lines()
        .filter_map(|l| l.rsplit(' ').next())
        .collect();
    assert_eq!(
        reply_macs,
        [macvlan_mac.as_str()],
        "ARP for the uplink address: only the macvlan answers"
    );
    let after = link_json(&lab, lab::OUTSIDE_IF);
    assert!(
        !after.to_string().contains("inet6"),
        "outside0 kept IPv6: {after}"
    );
}

#[test]
fn the_inside_learns_nothing_of_the_outside_by_arp() {
    let lab = TestLab::up();
    let cfg = lab.config_without_tor("arp.toml");
    let _agent = Agent::start(&lab, &cfg);
    let uplink_ip = lab.wait_uplink(&cfg);
    let lease = lab.dhcp("c1", DhcpClient::Dhclient, None);
    let c1_ip = lease["ip"].clone();
    let inside = lab.frames("c1", &["arp", "eth0", &c1_ip, lab::GATEWAY_INSIDE_IP, "2"]);
    assert!(
        inside.contains(&format!("reply {}", lab::GATEWAY_INSIDE_IP)),
        "the inside address is answered: {inside:?}"
    );
    let outside = lab.frames("c1", &["arp", "eth0", &c1_ip, &uplink_ip, "2"]);
    assert!(
        outside.trim().is_empty(),
        "the inside learnt the uplink address's owner: {outside}"
    );
}

#[test]
fn forwarding_turned_on_behind_the_agents_back_is_turned_off_and_counted() {
    let lab = TestLab::up();
    let cfg = lab.config_without_tor("forwarding.toml");
    let _agent = Agent::start(&lab, &cfg);
    for knob in [
        "net.ipv4.ip_forward",
        "net.ipv4.conf.inside0.forwarding",
        "net.ipv6.conf.all.forwarding",
    ] {
        lab.exec_ok("gw", "sysctl", &["-qw", &format!("{knob}=1")]);
        assert!(
            eventually(Duration::from_secs(5), || lab
                .exec_ok("gw", "sysctl", &["-n", knob])
                .trim()
                == "0"),
            "{knob} stayed on"
        );
    }
    let status = lab.cli_json(&cfg, &["status"]);
    let reverted = &status["hardening"]["reverted"];
    for knob in [
        "net/ipv4/ip_forward",
        "net/ipv4/conf/inside0/forwarding",
        "net/ipv6/conf/all/forwarding",
    ] {
        assert!(
            reverted[knob].as_u64() >= Some(1),
            "{knob} not counted: {reverted}"
        );
    }
    let page = lab.metrics();
    assert!(
        metric(
            &page,
            r#"gateway_hardening_reverted_total{knob="net/ipv4/ip_forward"}"#
        ) >= Some(1),
        "the metrics page counts it"
    );
}
