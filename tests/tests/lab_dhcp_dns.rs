//! DHCP and DNS in the lab with real clients: dhclient in c1, udhcpc in c2, dig, the modem's
//! dnsmasq as the uplink's DHCP server and resolver, and the real agent in gw.

use std::{path::PathBuf, time::Duration};

use gateway_tests::{eventually, fail, lab, metric, skip_unless_root, Agent, DhcpClient, TestLab};
use serde_json::Value;

/// The lab's config with `dhcp` appended as a `[dhcp]` table.
fn config(lab: &TestLab, name: &str, dhcp: &str) -> PathBuf {
    let base = lab.config_without_tor(&format!("base-{name}"));
    let text = std::fs::read_to_string(&base).unwrap_or_default();
    lab.agent_config(name, |_| format!("{text}\n[dhcp]\n{dhcp}\n"))
}

fn dig(lab: &TestLab, role: &str, args: &[&str]) -> String {
    let mut all = vec!["+short", "+time=2", "+tries=1", "@198.51.100.1"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&lab.exec(role, "dig", &all).stdout)
        .trim()
        .to_string()
}

fn leases(lab: &TestLab, cfg: &std::path::Path) -> Vec<Value> {
    lab.cli_json(cfg, &["leases"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn lease_of<'a>(leases: &'a [Value], ip: &str) -> &'a Value {
    leases
        .iter()
        .find(|l| l["address"] == ip)
        .unwrap_or_else(|| fail(format_args!("no lease for {ip} in {leases:?}")))
}

/// The modem's log since the gateway came up (other gateways of the shared lab write to it too:
/// pick this one's lines by its uplink address).
fn dnsmasq_log(lab: &TestLab) -> String {
    lab.modem_log()
}

fn in_pool(ip: &str) -> bool {
    ip.strip_prefix("198.51.100.")
        .and_then(|last| last.parse::<u8>().ok())
        .is_some_and(|n| (100..=199).contains(&n))
}

#[test]
fn clients_get_leases_and_their_names_resolve_at_once() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let cfg = lab.config_without_tor("agent.toml");
    let agent = Agent::start(&lab, &cfg);
    lab.wait_uplink(&cfg);

    // Not on a terminal: the start-up status is plain log lines, each service once bound, then
    // the addresses of what runs (no SOCKS or proxy without Tor), with no escape codes.
    let lines = [
        "dns          started on 198.51.100.1:53 (udp, tcp)",
        "dhcp         started on udp/67 on inside0",
        "Clients use:",
        "DNS          198.51.100.1: names in home.arpa, other names in clear text to the \
         uplink's resolvers",
    ];
    // The addresses come after the last service, a moment after the control socket answers.
    let all_logged = || {
        let log = agent.log_text();
        lines.iter().all(|line| log.contains(line))
    };
    assert!(
        eventually(Duration::from_secs(5), all_logged),
        "{lines:?} not all in the log:\n{}",
        agent.log_text()
    );
    let log = agent.log_text();
    assert!(!log.contains("SOCKS5") && !log.contains('\x1b'), "{log}");

    let c1 = lab.dhcp("c1", DhcpClient::Dhclient, Some("laptop"));
    assert!(in_pool(&c1["ip"]), "{c1:?}");
    assert_eq!(c1["router"], "198.51.100.1");
    assert_eq!(c1["dns"], "198.51.100.1");
    assert_eq!(c1["domain"], "home.arpa");
    assert_eq!(c1["mask"], "255.255.255.0");

    let c2 = lab.dhcp("c2", DhcpClient::Udhcpc, Some("phone"));
    assert!(in_pool(&c2["ip"]), "{c2:?}");
    assert_ne!(c1["ip"], c2["ip"]);
    assert_eq!(c2["router"], "198.51.100.1");
    assert_eq!(c2["dns"], "198.51.100.1");
    assert_eq!(c2["domain"], "home.arpa");
    assert!(c2["search"].contains("home.arpa"), "{c2:?}");

    // Each client's name is in DNS as soon as it has its lease: A and PTR.
    assert_eq!(dig(&lab, "c2", &["laptop.home.arpa"]), c1["ip"]);
    assert_eq!(dig(&lab, "c1", &["phone.home.arpa"]), c2["ip"]);
    assert_eq!(dig(&lab, "c2", &["-x", &c1["ip"]]), "laptop.home.arpa.");
    assert_eq!(dig(&lab, "c1", &["gateway.home.arpa"]), "198.51.100.1");

    // The metrics endpoint counts the same traffic, and names no client.
    let page = lab.metrics();
    let acks = metric(&page, r#"gateway_dhcp_replies_total{type="ack"}"#);
    assert!(
        acks >= Some(2),
        "two clients acknowledged: {acks:?}\n{page}"
    );
    assert_eq!(
        metric(&page, "gateway_dhcp_leases_bound"),
        Some(2),
        "{page}"
    );
    assert_eq!(
        metric(&page, "gateway_uplink_has_address"),
        Some(1),
        "{page}"
    );
    assert_eq!(
        metric(&page, r#"gateway_service_running{service="tor"}"#),
        Some(0),
        "{page}"
    );
    for client in [&c1["ip"], &c2["ip"], &lab.mac("c1"), &lab.mac("c2")] {
        assert!(
            !page.contains(client.as_str()),
            "{client} on the page:\n{page}"
        );
    }
    let local_answers = r#"gateway_dns_answers_total{source="local_zone"}"#;
    let queries_before = metric(&page, "gateway_dns_queries_total").unwrap_or_default();
    let local_before = metric(&page, local_answers).unwrap_or_default();
    assert!(local_before >= 4, "the four local answers above: {page}");
    assert_eq!(dig(&lab, "c1", &["phone.home.arpa"]), c2["ip"]);
    let page = lab.metrics();
    let queries = metric(&page, "gateway_dns_queries_total");
    assert!(queries > Some(queries_before), "{queries:?}\n{page}");
    let local = metric(&page, local_answers);
    assert!(local > Some(local_before), "{local:?}\n{page}");

    // `leases` (from the running agent) and the dataplane's lease map agree.
    let all = leases(&lab, &cfg);
    assert_eq!(lease_of(&all, &c1["ip"])["hostname"], "laptop");
    assert_eq!(lease_of(&all, &c2["ip"])["hostname"], "phone");
    let c1_mac = lab.mac("c1");
    let lease_map = lab.cli_json(&cfg, &["maps", "dump", "LEASES"]);
    assert_eq!(lease_map[&c1_mac]["ip"], c1["ip"].as_str(), "{lease_map}");

    // `status` is the status page's first screen as text: the uplink with its address, Tor
    // off in this config, the two bound leases, DHCP running; counts, never a client.
    let uplink = lab.cli_json(&cfg, &["status"])["uplink"]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let out = lab.cli(&cfg, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    let row = |label: &str| {
        text.lines()
            .find(|line| line.starts_with(label))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        row("uplink ").contains(&format!("{uplink}/24")) && row("uplink ").contains("(bound)"),
        "{text}"
    );
    assert_eq!(row("tor "), "tor          off", "{text}");
    assert!(row("clients ").contains("2 leases bound"), "{text}");
    assert!(row("  dhcp ").contains("running"), "{text}");
    for client in [&c1["ip"], &c2["ip"], &c1_mac, &lab.mac("c2")] {
        assert!(
            !text.contains(client.as_str()),
            "{client} in status:\n{text}"
        );
    }

    // A name only the modem knows is forwarded once, then answered from the cache. The modem
    // serves every gateway of the shared lab: this one's queries come from its uplink address.
    let uplink_ip = lab.cli_json(&cfg, &["status"])["uplink"]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let from_uplink = format!("from {uplink_ip}");
    let origin_queries = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains(&format!("query[A] {}", lab::ORIGIN_NAME)))
            .map(str::to_owned)
            .collect()
    };
    let before = origin_queries(&dnsmasq_log(&lab))
        .iter()
        .filter(|q| q.ends_with(&from_uplink))
        .count();
    assert_eq!(dig(&lab, "c1", &[lab::ORIGIN_NAME]), lab::ORIGIN_IP);
    assert_eq!(dig(&lab, "c2", &[lab::ORIGIN_NAME]), lab::ORIGIN_IP);
    let queries = origin_queries(&dnsmasq_log(&lab));
    let ours = queries.iter().filter(|q| q.ends_with(&from_uplink)).count();
    assert_eq!(
        ours - before,
        1,
        "one upstream query, from the gateway's uplink address {uplink_ip}: {queries:?}"
    );

    // A release takes the name and the dataplane's lease entry away at once.
    let state = lab.lab.gateway_dir();
    let leases_file = state.join("c1.dhclient.leases");
    let pid_file = state.join("c1.dhclient.pid");
    let hook = state.join("c1-dhcp-hook.sh");
    lab.exec_ok(
        "c1",
        "dhclient",
        &[
            "-4",
            "-r",
            "-lf",
            leases_file.to_str().unwrap_or_default(),
            "-pf",
            pid_file.to_str().unwrap_or_default(),
            "-sf",
            hook.to_str().unwrap_or_default(),
            "eth0",
        ],
    );
    assert!(
        eventually(Duration::from_secs(5), || dig(
            &lab,
            "c2",
            &["laptop.home.arpa"]
        )
        .is_empty()),
        "the released name still resolves"
    );
    let lease_map = lab.cli_json(&cfg, &["maps", "dump", "LEASES"]);
    assert!(lease_map.get(&c1_mac).is_none(), "{lease_map}");
    assert_eq!(dig(&lab, "c2", &["phone.home.arpa"]), c2["ip"]);

    // Names that must never leave: answered locally, nothing reaches the modem.
    let before = dnsmasq_log(&lab);
    for name in ["printer.local", "nothing.home.arpa", "x.invalid"] {
        dig(&lab, "c2", &[name]);
    }
    dig(&lab, "c2", &["-x", "192.168.1.1"]);
    let after = dnsmasq_log(&lab);
    let new = &after[before.len().min(after.len())..];
    let forwarded: Vec<&str> = new
        .lines()
        .filter(|l| l.contains("query[") && l.ends_with(&from_uplink))
        .collect();
    assert!(
        forwarded.is_empty(),
        "forwarded what must stay local: {forwarded:?}"
    );
}

#[test]
fn acknowledged_leases_survive_kill_9() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let cfg = lab.config_without_tor("agent.toml");
    let agent = Agent::start(&lab, &cfg);
    let first = lab.dhcp("c1", DhcpClient::Dhclient, Some("survivor"));
    let ip = first["ip"].clone();
    assert_eq!(dig(&lab, "c1", &["survivor.home.arpa"]), ip);
    agent.kill9();

    let agent = Agent::start(&lab, &cfg);
    // The name is back from the store, before the client even renews.
    assert_eq!(dig(&lab, "c1", &["survivor.home.arpa"]), ip);
    assert_eq!(lease_of(&leases(&lab, &cfg), &ip)["hostname"], "survivor");

    // A new dhclient run (INIT-REBOOT from its lease file) keeps the address.
    let pid_file = lab.lab.gateway_dir().join("c1.dhclient.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
    lab.exec("c1", "kill", &[pid.trim()]);
    let again = lab.dhcp("c1", DhcpClient::Dhclient, Some("survivor"));
    assert_eq!(again["ip"], ip, "{again:?}");
    assert!(agent.terminate().success());
}

#[test]
fn hostile_dhcp_input_is_dropped_counted_and_survived() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let cfg = lab.config_without_tor("agent.toml");
    let agent = Agent::start(&lab, &cfg);
    let c1 = lab.dhcp("c1", DhcpClient::Dhclient, Some("laptop"));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/send_dhcp.py");
    let script = script.to_str().unwrap_or_default();
    let stats = |lab: &TestLab| lab.cli_json(&cfg, &["status"])["dhcp"].clone();

    // Malformed requests reach the server and are counted as malformed, one by one.
    for kind in [
        "truncated",
        "bad_cookie",
        "overlong_option",
        "option_overload",
        "no_message_type",
        "giant",
    ] {
        let before = stats(&lab)["malformed"].as_u64().unwrap_or(0);
        lab.exec_ok("c1", "python3", &[script, kind]);
        assert!(
            eventually(Duration::from_secs(5), || stats(&lab)["malformed"]
                .as_u64()
                .unwrap_or(0)
                > before),
            "{kind} was not counted as malformed: {}",
            stats(&lab)
        );
    }
    // Fragments and a rogue server's reply never reach the agent: the XDP program drops them.
    let fragments = lab.drops(&cfg, "fragment");
    lab.exec_ok("c1", "python3", &[script, "jumbo"]);
    assert!(eventually(Duration::from_secs(5), || lab
        .drops(&cfg, "fragment")
        > fragments));
    // A discover whose chaddr is not the sender's MAC never reaches the pool.
    let foreign = lab.drops(&cfg, "chaddr_mismatch");
    lab.exec_ok("c1", "python3", &[script, "foreign_chaddr"]);
    assert!(eventually(Duration::from_secs(5), || lab
        .drops(&cfg, "chaddr_mismatch")
        > foreign));
    let replies = lab.drops(&cfg, "dhcp_server_reply");
    lab.exec_ok("c1", "python3", &[script, "server_reply"]);
    assert!(eventually(Duration::from_secs(5), || lab
        .drops(&cfg, "dhcp_server_reply")
        > replies));

    // Hostile host names never reach the zone as given; a taken name gets a suffix.
    let hostile = [
        "../etc/passwd",
        "a b c",
        "evil.example.com",
        "UPPER_case",
        "laptop",
        "gateway",
        "-dash-",
        &"x".repeat(200),
        "caf\u{e9}",
    ];
    let pid_file = lab.lab.gateway_dir().join("c2.udhcpc.pid");
    for name in hostile {
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            lab.exec("c2", "kill", &[pid.trim()]);
        }
        let c2 = lab.dhcp("c2", DhcpClient::Udhcpc, Some(name));
        let lease = lease_of(&leases(&lab, &cfg), &c2["ip"]).clone();
        if let Some(given) = lease["hostname"].as_str() {
            let valid = !given.is_empty()
                && given.len() <= 63
                && given
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !given.starts_with('-')
                && !given.ends_with('-');
            assert!(valid, "{name:?} became {given:?}");
            assert_ne!(given, "laptop", "c1 holds laptop");
            assert_ne!(given, "gateway", "a service name");
            assert_eq!(
                dig(&lab, "c1", &[&format!("{given}.home.arpa")]),
                c2["ip"],
                "{name:?} as {given:?}"
            );
        }
    }
    // laptop still points at c1, gateway at the gateway.
    assert_eq!(dig(&lab, "c2", &["laptop.home.arpa"]), c1["ip"]);
    assert_eq!(dig(&lab, "c2", &["gateway.home.arpa"]), "198.51.100.1");
    assert!(agent.terminate().success(), "the agent survived all of it");
}

#[test]
fn an_exhausted_pool_answers_nothing() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let cfg = config(&lab, "one.toml", "pool = \"198.51.100.100-198.51.100.100\"");
    let agent = Agent::start(&lab, &cfg);
    let c1 = lab.dhcp("c1", DhcpClient::Dhclient, None);
    assert_eq!(c1["ip"], "198.51.100.100");
    lab.lab
        .start_dhcp_client("c2", DhcpClient::Udhcpc, None)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let exhausted = eventually(Duration::from_secs(10), || {
        lab.cli_json(&cfg, &["status"])["dhcp"]["pool_exhausted"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    assert!(exhausted, "{}", lab.cli_json(&cfg, &["status"])["dhcp"]);
    let bound = lab
        .dhcp_events("c2")
        .iter()
        .any(|e| e.get("reason").is_some_and(|r| r == "bound"));
    assert!(!bound, "c2 got a lease from an empty pool");
    let said = agent
        .log_text()
        .lines()
        .filter(|l| l.contains("exhausted"))
        .count();
    assert_eq!(said, 1, "logged once per interval:\n{}", agent.log_text());
}

#[test]
fn the_uplink_takes_and_renews_its_lease_through_the_macvlan() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let cfg = lab.config_without_tor("agent.toml");
    let _agent = Agent::start(&lab, &cfg);
    let address = lab.wait_uplink(&cfg);
    let range = address
        .strip_prefix("192.0.2.")
        .and_then(|n| n.parse::<u8>().ok());
    assert!(range.is_some_and(|n| (100..=199).contains(&n)), "{address}");
    let routes = lab.exec_ok("gw", "ip", &["route", "show", "default"]);
    assert!(
        routes.contains("via 192.0.2.1 dev gw-uplink"),
        "default route: {routes}"
    );
    // dnsmasq's shortest lease is 2 minutes: the renewal comes at T1, one minute in.
    let acks = |lab: &TestLab| {
        dnsmasq_log(lab)
            .lines()
            .filter(|l| l.contains("DHCPACK") && l.contains(&address))
            .count()
    };
    assert!(
        eventually(Duration::from_secs(100), || acks(&lab) >= 2),
        "no renewal in the modem's log:\n{}",
        dnsmasq_log(&lab)
    );
    let status = lab.cli_json(&cfg, &["status"]);
    assert!(status["uplink"]["renewals"].as_u64().unwrap_or(0) >= 1);
    assert_eq!(status["uplink"]["address"], address.as_str());
}

#[test]
fn no_forwarding_before_the_uplink_has_an_address() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    // A lab of its own: the modem's dnsmasq, which every gateway of the shared lab needs, dies.
    let lab = TestLab::up_own();
    // No modem DHCP: the uplink never gets an address in this test.
    let pid = std::fs::read_to_string(lab.lab.state_dir().join("dnsmasq.pid")).unwrap_or_default();
    lab.exec_ok("up", "kill", &[pid.trim()]);
    let cfg = lab.config_without_tor("agent.toml");
    let _agent = Agent::start(&lab, &cfg);
    let capture = gateway_tests::Capture::start(&lab, "up", "br0", "early");
    let out = lab.exec(
        "gw",
        "dig",
        &["+time=2", "+tries=1", "@198.51.100.1", lab::ORIGIN_NAME],
    );
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.contains("SERVFAIL"), "{answer}");
    let leaked = capture.stop("src net 198.51.100.0/24");
    assert!(leaked.is_empty(), "{leaked:?}");
    assert_eq!(lab.drops(&cfg, "inside_source_egress"), 0);
    assert_ne!(lab.cli_json(&cfg, &["status"])["uplink"]["state"], "bound");
}
