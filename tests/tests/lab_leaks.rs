//! The leak battery: a capture on the gateway's uplink port runs while a leased client, a
//! client with no lease and a rogue with a copied MAC throw everything at the outside (TCP,
//! UDP, ICMP, GRE, fragments, IP options, VLAN tags, IPv6, spoofed sources, an ARP claim for
//! the gateway, real tools to the modem, the origin and the internet resolver). The uplink may
//! carry only ARP, the agent's DHCP and its Tor connections to the lab's relays, and must carry
//! the latter (a transparent fetch during the battery is the positive control). Only frames
//! the gateway's own interfaces send count: the modem's side sends its own (IPv6 router
//! solicitations, say). Then the same
//! with the lab's Tor network stopped: clients get no page and no answer, and nothing but
//! ARP, DHCP and attempts to reach the relays leaves.
//!
//! A lab of its own: stopping the Tor network would break the other tests of a shared lab.

use std::path::Path;
use std::time::Duration;

use gateway_tests::{eventually, lab, skip_unless_root, Agent, Capture, DhcpClient, TestLab};
use xtask::lab::tor as lab_tor;

/// A tcpdump filter for frames sent by any interface of the gateway's namespace (what comes
/// from the modem's side is not the gateway's doing).
fn from_gateway(lab: &TestLab) -> String {
    let links = lab.exec_ok("gw", "ip", &["-o", "link"]);
    let macs: Vec<String> = links
        .lines()
        .filter_map(|line| line.split("link/ether ").nth(1)?.split_whitespace().next())
        .map(|mac| format!("ether src {mac}"))
        .collect();
    assert!(!macs.is_empty(), "no MACs in gw: {links}");
    format!("({})", macs.join(" or "))
}

/// The tcpdump filter for what the uplink may carry.
fn allowed() -> String {
    let relays: Vec<String> = lab_tor::NODES
        .iter()
        .map(|n| format!("host {}", n.address))
        .collect();
    format!(
        "arp or udp port 67 or udp port 68 or {}",
        relays.join(" or ")
    )
}

/// `frames.py battery` from `role`, as `src`, to the gateway's MAC.
fn battery(lab: &TestLab, role: &str, gateway_mac: &str, src: &str, uplink: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/frames.py");
    let script = script.to_string_lossy();
    let targets = [
        lab::ORIGIN_IP,
        lab::MODEM_IP,
        lab::INTERNET_RESOLVER_IP,
        uplink,
    ];
    let mut args = vec![script.as_ref(), "battery", "eth0", gateway_mac, src];
    args.extend_from_slice(&targets);
    let sent = lab.exec_ok(role, "python3", &args);
    assert!(
        sent.trim().parse::<u32>().is_ok_and(|n| n > 40),
        "{role}: the battery did not run: {sent:?}"
    );
    // And real tools, which must all fail or be answered by the gateway itself.
    for url in [
        format!("http://{}:8081/", lab::ORIGIN_IP),
        format!("http://{}/", lab::MODEM_IP),
    ] {
        let out = lab.exec(role, "curl", &["-s", "-m", "3", &url]);
        assert!(!out.status.success(), "{role} reached {url}");
    }
    let out = lab.exec(role, "ping", &["-c", "1", "-W", "1", lab::ORIGIN_IP]);
    assert!(!out.status.success(), "{role} pinged the origin");
}

fn curl(lab: &TestLab, role: &str, url: &str, seconds: u32) -> Option<String> {
    let out = lab.exec(role, "curl", &["-s", "-f", "-m", &seconds.to_string(), url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn nothing_leaves_the_uplink_but_tor() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up_own();
    let cfg = lab.agent_config("leaks.toml", |text| text);
    let agent = Agent::start(&lab, &cfg);
    lab.wait_tor();
    let uplink = lab.wait_uplink(&cfg);
    lab.dhcp("c1", DhcpClient::Dhclient, None);
    let c1_ip = lab
        .exec_ok("c1", "ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
        .split_whitespace()
        .find(|w| w.contains('/'))
        .and_then(|w| w.split('/').next().map(str::to_owned))
        .expect("c1 has an address");
    let gateway_mac = lab
        .exec_ok(
            "gw",
            "cat",
            &[&format!("/sys/class/net/{}/address", lab::INSIDE_IF)],
        )
        .trim()
        .to_owned();
    // c2 takes an address without asking (no lease).
    lab.exec_ok(
        "c2",
        "ip",
        &["addr", "add", "198.51.100.150/24", "dev", "eth0"],
    );
    lab.exec_ok(
        "c2",
        "ip",
        &["route", "add", "default", "via", lab::GATEWAY_INSIDE_IP],
    );

    let port = lab.lab.uplink_port();
    let capture = Capture::start(&lab, "up", &port, "battery");
    // The positive control: a transparent fetch, through Tor.
    let origin = format!("http://{}/", lab::ORIGIN_IP);
    let mut page = None;
    eventually(Duration::from_secs(120), || {
        page = curl(&lab, "c1", &origin, 20);
        page.is_some()
    });
    assert!(
        page.is_some_and(|p| p.contains("gateway lab origin")),
        "no page through Tor during the battery"
    );
    battery(&lab, "c1", &gateway_mac, &c1_ip, &uplink);
    battery(&lab, "c2", &gateway_mac, "198.51.100.150", &uplink);
    // The rogue: c2 with c1's MAC and address claims to be c1.
    let (c1_mac, c2_mac) = (lab.mac("c1"), lab.mac("c2"));
    lab.exec_ok("c2", "ip", &["link", "set", "eth0", "address", &c1_mac]);
    battery(&lab, "c2", &gateway_mac, &c1_ip, &uplink);
    lab.exec_ok("c2", "ip", &["link", "set", "eth0", "address", &c2_mac]);
    let [others, tor] = &capture.stop_each(&[
        &format!("{} and not ({})", from_gateway(&lab), allowed()),
        &format!("src host {uplink} and tcp and ({})", allowed()),
    ])[..] else {
        unreachable!("two filters, two results")
    };
    assert!(
        others.is_empty(),
        "the uplink carried more than Tor: {others:?}"
    );
    assert!(
        !tor.is_empty(),
        "the positive control: no Tor traffic was captured"
    );
    let drops = lab.cli_json(&cfg, &["maps", "drops"]);
    for reason in [
        "spoofed_source",
        "fragment",
        "vlan_tagged",
        "ipv6",
        "spoofed_arp",
    ] {
        assert!(
            drops[reason].as_u64() > Some(0),
            "{reason} not counted: {drops}"
        );
    }

    // The lab's Tor network stopped: still nothing but the relays, and no answers.
    lab_tor::stop(&lab.lab).expect("stopping the lab's Tor network");
    let capture = Capture::start(&lab, "up", &port, "tor-stopped");
    // No page, and no hanging either: the connection is reset (curl 56 or 52), not left to
    // time out (28). The first attempt meets arti's retries until the agent's own bound
    // (30 s); from then on the agent knows Tor is unreachable and refuses at once.
    let out = lab.exec("c1", "curl", &["-s", "-S", "-m", "45", &origin]);
    assert!(!out.status.success(), "a page without Tor");
    assert!(
        matches!(out.status.code(), Some(52 | 56)),
        "without Tor curl got {:?} ({}), not a reset",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    // Now the agent knows: the next stream is reset at once (well inside the probe interval,
    // after which one attempt is let through to find out whether Tor is back). The reset can
    // beat curl's connect check (7) or come after it (56, 52).
    let out = lab.exec("c1", "curl", &["-s", "-S", "-m", "4", &origin]);
    assert!(
        matches!(out.status.code(), Some(7 | 52 | 56)),
        "with Tor known to be down curl got {:?} ({}), not an immediate reset",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let status = lab.cli_json(&cfg, &["status"]);
    assert_eq!(status["tor"]["reachable"], false, "{}", status["tor"]);
    // Nobody asked for the origin's name before: no cached answer to hide behind. The
    // answer is SERVFAIL, not silence.
    let dig = lab.exec(
        "c1",
        "dig",
        &["+time=45", "+tries=1", "@203.0.113.53", lab::ORIGIN_NAME],
    );
    let dig_out = String::from_utf8_lossy(&dig.stdout);
    assert!(
        !dig_out.contains(lab::ORIGIN_IP),
        "an answer without Tor: {dig_out}"
    );
    assert!(
        dig_out.contains("status: SERVFAIL"),
        "without Tor DNS got no SERVFAIL: {dig_out}"
    );
    // Spoof attempts of the batteries are events naming the sender's MAC.
    let events = lab.events(&cfg, &[], &[]);
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "spoof" && e["mac"] == c2_mac.as_str()),
        "no spoof event from c2: {events:?}"
    );
    battery(&lab, "c1", &gateway_mac, &c1_ip, &uplink);
    let others = capture.stop(&format!("{} and not ({})", from_gateway(&lab), allowed()));
    assert!(
        others.is_empty(),
        "without Tor the uplink carried: {others:?}"
    );
    agent.terminate();
}
