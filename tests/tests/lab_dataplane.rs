//! The real agent in the lab: the inside reaches the gateway's open ports and nothing else, every
//! drop is counted under its reason, nothing from the inside appears on the uplink, and the
//! programs stay attached (fail closed) after SIGTERM and after `kill -9`, until
//! `dataplane detach`.

use std::time::Duration;

use gateway_tests::{
    eventually, fail, lab, metric, skip_unless_root, Agent, Capture, DhcpClient, TestLab,
};

/// The lab's config with an extra admin port open for a test listener.
fn config_with_port(lab: &TestLab, port: u16) -> std::path::PathBuf {
    let base = lab.config_without_tor("base.toml");
    let text = std::fs::read_to_string(&base).unwrap_or_default();
    lab.agent_config("agent.toml", |_| {
        assert!(text.contains("allow = []"), "lab.toml changed shape");
        text.replace("allow = []", &format!("allow = [\"tcp/{port}\"]"))
    })
}

/// Starts a small HTTP server on the gateway's inside address.
fn listener(lab: &TestLab, port: u16) -> gateway_tests::Background {
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let dir = lab.lab.state_dir();
    let bg = lab.spawn(
        "gw",
        python,
        &[
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            lab::GATEWAY_INSIDE_IP,
            "--directory",
            dir.to_str()
                .unwrap_or_else(|| fail("the state dir is not UTF-8")),
        ],
    );
    let url = format!("http://{}:{port}/", lab::GATEWAY_INSIDE_IP);
    assert!(
        eventually(Duration::from_secs(10), || {
            lab.exec("gw", "curl", &["-s", "-o", "/dev/null", "-m", "1", &url])
                .status
                .success()
        }),
        "test listener on {port} did not come up"
    );
    bg
}

fn curl(lab: &TestLab, role: &str, url: &str) -> bool {
    lab.exec(role, "curl", &["-s", "-o", "/dev/null", "-m", "2", url])
        .status
        .success()
}

#[test]
fn inside_reaches_only_the_gateways_open_ports() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let cfg = config_with_port(&lab, 8080);
    let _open = listener(&lab, 8080);
    let _closed = listener(&lab, 8081);
    let origin = format!("http://{}/", lab::ORIGIN_IP);
    let open_url = format!("http://{}:8080/", lab::GATEWAY_INSIDE_IP);
    let closed_url = format!("http://{}:8081/", lab::GATEWAY_INSIDE_IP);

    // Forwarding on, so that only the dataplane stands between c1 and the uplink. Without the
    // agent c1's packets do leave by the uplink: proof that the capture below can see them.
    // (Before the agent there is no uplink lease, so the baseline borrows a static address,
    // one no other gateway on the shared uplink uses.)
    lab.exec_ok("gw", "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    let spare = format!("{}/24", lab.lab.spare_uplink_ip());
    lab.exec_ok("gw", "ip", &["addr", "add", &spare, "dev", lab::OUTSIDE_IF]);
    lab.exec_ok(
        "gw",
        "ip",
        &["route", "add", "default", "via", lab::MODEM_IP],
    );
    lab.exec_ok(
        "c1",
        "ip",
        &["addr", "add", "198.51.100.250/24", "dev", "eth0"],
    );
    lab.exec_ok(
        "c1",
        "ip",
        &["route", "add", "default", "via", lab::GATEWAY_INSIDE_IP],
    );
    let capture = Capture::start(&lab, "up", &lab.lab.uplink_port(), "baseline");
    assert!(
        curl(&lab, "c1", &closed_url),
        "without the agent 8081 is open"
    );
    curl(&lab, "c1", &origin);
    let leaked = capture.stop("src net 198.51.100.0/24");
    assert!(
        !leaked.is_empty(),
        "the baseline capture saw nothing from c1: the leak check below would prove nothing"
    );
    lab.exec_ok("gw", "ip", &["route", "del", "default"]);
    lab.exec_ok("gw", "ip", &["addr", "flush", "dev", lab::OUTSIDE_IF]);
    lab.exec_ok("c1", "ip", &["addr", "flush", "dev", "eth0"]);

    let agent = Agent::start(&lab, &cfg);
    let forward = lab.exec_ok("gw", "sysctl", &["-n", "net.ipv4.ip_forward"]);
    assert_eq!(forward.trim(), "0", "the agent turns forwarding off");
    // Someone turns it back on: the dataplane alone must still hold.
    lab.exec_ok("gw", "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    let lease = lab.dhcp("c1", DhcpClient::Dhclient, None);
    let c1_ip = lease["ip"].clone();

    // The allowed service port answers; the other listener is cut off and counted.
    assert!(curl(&lab, "c1", &open_url), "tcp/8080 is allowed");
    // The metrics endpoint reads the same counter.
    let port_closed = r#"gateway_dataplane_drops_total{reason="port_closed"}"#;
    let closed_before = lab.drops(&cfg, "port_closed");
    let metric_before = metric(&lab.metrics(), port_closed).expect("a port_closed series");
    assert!(metric_before >= closed_before);
    assert!(!curl(&lab, "c1", &closed_url), "tcp/8081 is not allowed");
    let closed_after = lab.drops(&cfg, "port_closed");
    assert!(closed_after > closed_before);
    let page = lab.metrics();
    let metric_after = metric(&page, port_closed).expect("a port_closed series");
    assert!(
        metric_after > metric_before && metric_after >= closed_after,
        "port_closed: {metric_before} -> {metric_after} on the page, {closed_after} in the map"
    );
    assert!(
        !page.contains(&c1_ip) && !page.contains(&lab.mac("c1")),
        "the page names a client:\n{page}"
    );
    let ping = lab.exec("c1", "ping", &["-c1", "-W2", lab::GATEWAY_INSIDE_IP]);
    assert!(ping.status.success(), "ping to the gateway is allowed");

    // The outside is unreachable; the drop is counted and the uplink sees nothing from c1.
    let foreign_before = lab.drops(&cfg, "foreign_destination");
    let capture = Capture::start(&lab, "up", &lab.lab.uplink_port(), "agent");
    assert!(!curl(&lab, "c1", &origin), "c1 reached the origin");
    // DNS to the outside resolver is steered to the gateway's own server (`dns.steer`), which
    // answers it (here through its clear-text uplink upstream, as configured).
    let dns = lab.exec_ok(
        "c1",
        "dig",
        &[
            "+time=3",
            "+tries=2",
            "+short",
            "@203.0.113.53",
            lab::ORIGIN_NAME,
        ],
    );
    assert_eq!(
        dns.trim(),
        lab::ORIGIN_IP,
        "the steered query was not answered"
    );
    let leaked = capture.stop("src net 198.51.100.0/24");
    assert!(
        leaked.is_empty(),
        "packets from the inside on the uplink: {leaked:?}"
    );
    assert!(
        lab.drops(&cfg, "foreign_destination") > foreign_before,
        "the origin SYN is counted"
    );

    // c1 shows in `maps clients`, with its address, and its counters grow.
    let mac = lab.mac("c1");
    let client = |lab: &TestLab| {
        let clients = lab.cli_json(&cfg, &["maps", "clients"]);
        clients
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["mac"] == mac.as_str()).cloned())
            .unwrap_or_else(|| panic!("{mac} not in maps clients: {clients}"))
    };
    let first = client(&lab);
    assert_eq!(first["ip"], c1_ip.as_str());
    assert_eq!(first["ip_source"], "lease");
    assert!(curl(&lab, "c1", &open_url));
    let second = client(&lab);
    assert!(second["packets"].as_u64() > first["packets"].as_u64());
    assert!(second["bytes"].as_u64() > first["bytes"].as_u64());

    // `maps list` and `maps dump` read the same pins.
    let maps = lab.cli_json(&cfg, &["maps", "list"]);
    let names: Vec<&str> = maps
        .as_array()
        .map(|m| m.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        [
            "CONFIG",
            "OPEN_PORTS",
            "DROPS",
            "CLIENT_STATS",
            "LEASES",
            "LEASES_BY_IP",
            "CLIENT_POLICY"
        ]
    );
    let ports = lab.cli_json(&cfg, &["maps", "dump", "OPEN_PORTS"]);
    assert!(ports
        .as_array()
        .is_some_and(|p| p.contains(&"tcp/8080".into())));
    assert!(!ports
        .as_array()
        .is_some_and(|p| p.contains(&"tcp/8081".into())));

    // The gateway host itself cannot send with an inside source address out of the uplink.
    let uplink = lab.wait_uplink(&cfg);
    assert!(uplink.starts_with("192.0.2."), "uplink address {uplink}");
    lab.exec_ok("gw", "ping", &["-c1", "-W2", lab::MODEM_IP]); // resolves the modem's MAC
    let egress_before = lab.drops(&cfg, "inside_source_egress");
    let capture = Capture::start(&lab, "up", &lab.lab.uplink_port(), "egress");
    let spoofed = lab.exec(
        "gw",
        "ping",
        &["-c1", "-W1", "-I", lab::GATEWAY_INSIDE_IP, lab::MODEM_IP],
    );
    assert!(
        !spoofed.status.success(),
        "an inside-sourced ping left the uplink"
    );
    let leaked = capture.stop("src net 198.51.100.0/24");
    assert!(
        leaked.is_empty(),
        "inside-sourced packets on the uplink: {leaked:?}"
    );
    assert!(lab.drops(&cfg, "inside_source_egress") > egress_before);
    // The TC program's aya-log record reaches the agent's log through tracing.
    assert!(
        eventually(Duration::from_secs(5), || agent
            .log_text()
            .contains("inside source 198.51.100.1")),
        "the eBPF log record did not reach the agent's log: {}",
        agent.log_text()
    );

    // SIGTERM: a clean exit that leaves the programs attached and the pins in place.
    let status = agent.terminate();
    assert!(status.success(), "agent exit status {status}");
    assert_programs_attached(&lab);
    assert!(
        !map_pins(&lab).is_empty(),
        "a clean stop removed the map pins"
    );
    let drops = lab.cli(&cfg, &["maps", "drops"]);
    assert!(drops.status.success(), "the counters stay readable");
    assert!(String::from_utf8_lossy(&drops.stderr).contains("no agent is answering"));
    // `dataplane detach` is the only way to an unfiltered inside.
    let detach = lab.cli(&cfg, &["dataplane", "detach"]);
    assert!(
        detach.status.success(),
        "{}",
        String::from_utf8_lossy(&detach.stderr)
    );
    assert_no_programs(&lab);
    let left = map_pins(&lab);
    assert!(left.is_empty(), "map pins left after detach: {left:?}");
}

fn map_pins(lab: &TestLab) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(lab.lab.bpf_dir().join("maps"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

#[test]
fn a_crashed_agent_leaves_the_inside_closed_and_a_restart_takes_over() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let cfg = config_with_port(&lab, 8080);
    let origin = format!("http://{}/", lab::ORIGIN_IP);
    lab.exec_ok("gw", "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);

    let agent = Agent::start(&lab, &cfg);
    lab.dhcp("c1", DhcpClient::Dhclient, None);
    agent.kill9();

    // The pinned links keep both programs attached: still closed, still counting.
    let link = lab.exec_ok("gw", "ip", &["link", "show", lab::INSIDE_IF]);
    assert!(link.contains("prog/xdp"), "XDP detached by a crash: {link}");
    let before = lab.drops(&cfg, "foreign_destination");
    let capture = Capture::start(&lab, "up", &lab.lab.uplink_port(), "crashed");
    assert!(
        !curl(&lab, "c1", &origin),
        "the inside got out while the agent was down"
    );
    let leaked = capture.stop("src net 198.51.100.0/24");
    assert!(
        leaked.is_empty(),
        "leak while the agent was down: {leaked:?}"
    );
    let out = lab.cli(&cfg, &["maps", "drops", "--json"]);
    assert!(out.status.success(), "maps are readable after a crash");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no agent is answering"),
        "the CLI says plainly that no agent is behind the maps"
    );
    assert!(lab.drops(&cfg, "foreign_destination") > before);

    // A new run replaces the stale pins and links and serves the control socket again.
    let agent = Agent::start(&lab, &cfg);
    assert!(
        agent.log_text().contains("previous run") && agent.log_text().contains("in place"),
        "the restart said it replaced stale pins: {}",
        agent.log_text()
    );
    let status = lab.cli_json(&cfg, &["status"]);
    assert_eq!(
        status["dataplane"]["programs"].as_array().map(Vec::len),
        Some(6),
        "egress guard and ingress filter on the macvlan, ingress filter on its parent, steering, XDP and the VLAN check inside"
    );
    let xdp_programs = lab
        .exec_ok("gw", "ip", &["-d", "link", "show", lab::INSIDE_IF])
        .matches("prog/xdp")
        .count();
    assert_eq!(xdp_programs, 1, "exactly one XDP program after the restart");
    assert!(!curl(&lab, "c1", &origin));
    assert!(agent.terminate().success());
    assert_programs_attached(&lab);
}

#[test]
fn lab_status_keeps_its_contract_and_down_removes_everything() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    // A lab of its own: this test takes the whole lab down.
    let test_lab = TestLab::up_own();
    let status = test_lab.lab.status().expect("lab status");
    let json = serde_json::to_value(&status).expect("status serializes");
    for key in [
        "gateway_inside_ip",
        "inside_subnet",
        "uplink_subnet",
        "origin_url",
        "origin_name",
        "origin_ip",
        "uplink_resolver_ip",
        "bpf_pin_dir",
        "control_socket",
        "agent_config",
        "namespaces",
    ] {
        assert!(json.get(key).is_some(), "lab status --json lacks {key}");
    }
    let c1 = test_lab.ns("c1");
    assert_eq!(
        json["namespaces"][&c1],
        serde_json::json!([]),
        "clients have no address until the gateway's DHCP server gives them one"
    );
    // The origin and the modem's resolver answer from inside the lab's own namespaces.
    let page = test_lab.exec_ok(
        "up",
        "curl",
        &[
            "-s",
            "-m",
            "3",
            &status.origin_url.replace(lab::ORIGIN_NAME, lab::ORIGIN_IP),
        ],
    );
    assert!(page.contains("gateway lab origin"));
    let answer = test_lab.exec_ok("up", "dig", &["+short", "@192.0.2.1", lab::ORIGIN_NAME]);
    assert_eq!(answer.trim(), lab::ORIGIN_IP);

    let names: Vec<String> = ["up", "gw", "lan", "c1", "c2"]
        .iter()
        .map(|r| test_lab.ns(r))
        .collect();
    let state = test_lab.lab.state_dir();
    drop(test_lab);
    for name in &names {
        assert!(
            !gateway_tests::netns_exists(name),
            "namespace {name} left by lab down"
        );
    }
    assert!(
        !state.exists(),
        "state dir {} left by lab down",
        state.display()
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    assert!(
        !mounts.contains(state.to_str().unwrap_or("?")),
        "bpffs left mounted"
    );
}

#[test]
fn gateways_share_the_uplink_and_a_slot_goes_down_alone() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let first = TestLab::up();
    let second = TestLab::up();
    assert_eq!(first.ns("up"), second.ns("up"), "one modem for both");
    assert_ne!(first.ns("gw"), second.ns("gw"));
    assert_ne!(first.lab.bpf_dir(), second.lab.bpf_dir());
    assert_ne!(first.lab.control_socket(), second.lab.control_socket());
    assert_ne!(first.lab.uplink_port(), second.lab.uplink_port());

    // One modem leases each gateway its own uplink address; each inside LAN (the same subnet,
    // two bridges) gets its leases from its own gateway.
    let cfg1 = first.config_without_tor("agent.toml");
    let cfg2 = second.config_without_tor("agent.toml");
    let agent1 = Agent::start(&first, &cfg1);
    let agent2 = Agent::start(&second, &cfg2);
    let uplink1 = first.wait_uplink(&cfg1);
    let uplink2 = second.wait_uplink(&cfg2);
    assert_ne!(uplink1, uplink2, "two gateways, one address");
    first.dhcp("c1", DhcpClient::Dhclient, None);
    second.dhcp("c1", DhcpClient::Dhclient, None);
    let macs = |lab: &TestLab, cfg: &std::path::Path| -> Vec<String> {
        lab.cli_json(cfg, &["leases"])
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|l| l["mac"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(macs(&first, &cfg1), [first.mac("c1")]);
    assert_eq!(macs(&second, &cfg2), [second.mac("c1")]);

    // `lab status` seen from a slot: its namespaces and addresses, every slot listed.
    let status = second.lab.status().expect("lab status");
    assert_eq!(status.slot, second.lab.slot());
    assert!(status.up);
    for slot in [first.lab.slot(), second.lab.slot()] {
        assert!(
            status.gateway_slots.contains(&slot),
            "{:?}",
            status.gateway_slots
        );
    }
    assert_eq!(status.gateway_outside_ip.as_deref(), Some(uplink2.as_str()));
    assert!(status.namespaces.contains_key(&second.ns("gw")));
    assert!(!status.namespaces.contains_key(&first.ns("gw")));
    assert_eq!(
        status.agent_config,
        second.lab.agent_config().display().to_string()
    );

    // Dropping a slot removes its namespaces, port, files and bpffs, and nothing else.
    let names: Vec<String> = lab::SLOT_ROLES.iter().map(|r| second.ns(r)).collect();
    let dir = second.lab.gateway_dir();
    let port = second.lab.uplink_port();
    drop(agent2);
    drop(second);
    for name in &names {
        assert!(!gateway_tests::netns_exists(name), "{name} left behind");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    assert!(
        !mounts.contains(dir.to_str().unwrap_or("?")),
        "bpffs left mounted"
    );
    let ports = first.exec_ok("up", "ip", &["-br", "link", "show", "master", "br0"]);
    assert!(
        !ports
            .split_whitespace()
            .any(|p| p.split('@').next() == Some(port.as_str())),
        "{port} is still on the uplink bridge: {ports}"
    );
    assert!(gateway_tests::netns_exists(&first.ns("up")));
    assert!(gateway_tests::netns_exists(&first.ns("gw")));
    assert_eq!(first.wait_uplink(&cfg1), uplink1);
    let answer = first.exec_ok("up", "dig", &["+short", "@192.0.2.1", lab::ORIGIN_NAME]);
    assert_eq!(answer.trim(), lab::ORIGIN_IP, "the modem still answers");
    assert!(agent1.terminate().success());
}

/// The link pins in the slot's bpffs (a pin exists only for an attached program).
fn link_pins(lab: &TestLab) -> Vec<String> {
    std::fs::read_dir(lab.lab.bpf_dir().join("links"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn assert_programs_attached(lab: &TestLab) {
    let inside = lab.exec_ok("gw", "ip", &["-d", "link", "show", lab::INSIDE_IF]);
    assert!(inside.contains("prog/xdp"), "no XDP on inside0: {inside}");
    let pins = link_pins(lab);
    for program in [
        "outside_egress@",
        "outside_ingress@",
        "parent_ingress@",
        "inside_steer@",
        "inside_ingress@",
    ] {
        assert!(
            pins.iter().any(|p| p.starts_with(program)),
            "{program} not pinned: {pins:?}"
        );
    }
}

fn assert_no_programs(lab: &TestLab) {
    let inside = lab.exec_ok("gw", "ip", &["-d", "link", "show", lab::INSIDE_IF]);
    assert!(
        !inside.contains("prog/xdp"),
        "XDP left on inside0: {inside}"
    );
    let pins = link_pins(lab);
    assert!(pins.is_empty(), "links left pinned: {pins:?}");
}
