//! Per-client policy with the real agent: `clients set` makes a client `proxy-only` (the
//! gateway's own ports, no steering) or `blocked` (a lease and nothing else); the refusals are
//! counted as `policy`, `clients` shows them, and they survive an agent restart.

use std::path::Path;

use gateway_tests::{fail, lab, skip_unless_root, Agent, DhcpClient, TestLab};

/// `dig` from `role` at `server`: the answer's first line, or `None` without one.
fn dig(lab: &TestLab, role: &str, server: &str) -> Option<String> {
    let at = format!("@{server}");
    let out = lab.exec(
        role,
        "dig",
        &[&at, lab::ORIGIN_NAME, "A", "+short", "+time=2", "+tries=1"],
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty() && !text.starts_with(';')).then_some(text)
}

fn set(lab: &TestLab, cfg: &Path, mac: &str, policy: &str) {
    let out = lab.cli(cfg, &["clients", "set", mac, policy]);
    assert!(
        out.status.success(),
        "clients set {mac} {policy}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `clients --json`'s entry for `mac`.
fn client(lab: &TestLab, cfg: &Path, mac: &str) -> serde_json::Value {
    let all = lab.cli_json(cfg, &["clients"]);
    all.as_array()
        .and_then(|clients| clients.iter().find(|c| c["mac"] == mac).cloned())
        .unwrap_or_else(|| fail(format_args!("{mac} is not in `clients`: {all}")))
}

#[test]
fn policies_limit_clients_and_survive_a_restart() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let cfg = lab.config_without_tor("policy.toml");
    let agent = Agent::start(&lab, &cfg);
    lab.wait_uplink(&cfg);
    lab.dhcp("c1", DhcpClient::Dhclient, None);
    let (c1, c2) = (lab.mac("c1"), lab.mac("c2"));
    let resolver = lab::INTERNET_RESOLVER_IP;
    let gateway = lab::GATEWAY_INSIDE_IP;

    // The default, transparent: DNS to another resolver is steered and answered.
    assert_eq!(dig(&lab, "c1", resolver).as_deref(), Some(lab::ORIGIN_IP));
    assert_eq!(client(&lab, &cfg, &c1)["policy"], "transparent");

    // proxy-only: the gateway's own DNS still answers; steered DNS is dropped and counted.
    set(&lab, &cfg, &c1, "proxy-only");
    let before = lab.drops(&cfg, "policy");
    assert_eq!(dig(&lab, "c1", gateway).as_deref(), Some(lab::ORIGIN_IP));
    assert_eq!(dig(&lab, "c1", resolver), None, "proxy-only was steered");
    assert!(lab.drops(&cfg, "policy") > before, "the refusal is counted");
    let entry = client(&lab, &cfg, &c1);
    assert_eq!(entry["policy"], "proxy-only", "{entry}");
    assert_eq!(entry["policy_set"], true, "{entry}");
    assert!(
        entry["address"].is_string(),
        "the lease is joined in: {entry}"
    );

    // blocked, before c2 ever asked: it still gets a lease, and nothing else.
    set(&lab, &cfg, &c2, "blocked");
    lab.dhcp("c2", DhcpClient::Udhcpc, None);
    let before = lab.drops(&cfg, "policy");
    assert_eq!(
        dig(&lab, "c2", gateway),
        None,
        "a blocked client was answered"
    );
    assert!(lab.drops(&cfg, "policy") > before);

    // Events: c1 was new; c2's refusals name c2 (not where it was going); `--follow` shows
    // one as it happens.
    let events = lab.events(&cfg, &[], &[]);
    let has = |events: &[serde_json::Value], kind: &str, mac: &str, after: u64| {
        events
            .iter()
            .any(|e| e["kind"] == kind && e["mac"] == mac && e["seq"].as_u64() > Some(after))
    };
    assert!(has(&events, "new_client", &c1, 0), "{events:?}");
    assert!(has(&events, "policy_drop", &c2, 0), "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e["ipv4"] != gateway && e["ipv4"] != lab::ORIGIN_IP),
        "an event names a destination: {events:?}"
    );
    let last = events.last().and_then(|e| e["seq"].as_u64()).unwrap_or(0);
    let followed = std::thread::scope(|scope| {
        let follower = scope.spawn(|| lab.events(&cfg, &["timeout", "6"], &["--follow"]));
        // Ordering, not timing: the follower has printed what was there and is waiting.
        std::thread::sleep(std::time::Duration::from_secs(2));
        assert_eq!(dig(&lab, "c2", gateway), None);
        follower
            .join()
            .unwrap_or_else(|_| fail("the follower thread"))
    });
    assert!(
        has(&followed, "policy_drop", &c2, last),
        "--follow did not show the new refusal: {followed:?}"
    );
    let counted = gateway_tests::metric(
        &lab.metrics(),
        r#"gateway_dataplane_events_total{kind="policy_drop"}"#,
    );
    assert!(counted > Some(0), "events not in the metrics");

    // The policies are in the state file and back after a restart, before anyone asks.
    assert!(agent.terminate().success());
    let agent = Agent::start(&lab, &cfg);
    lab.wait_uplink(&cfg);
    assert_eq!(dig(&lab, "c2", gateway), None, "blocked after the restart");
    assert_eq!(
        dig(&lab, "c1", resolver),
        None,
        "proxy-only after the restart"
    );
    assert_eq!(dig(&lab, "c1", gateway).as_deref(), Some(lab::ORIGIN_IP));
    assert_eq!(client(&lab, &cfg, &c2)["policy"], "blocked");

    // Back to the default: the entry goes and c1 is steered again.
    set(&lab, &cfg, &c1, "transparent");
    assert_eq!(client(&lab, &cfg, &c1)["policy_set"], false);
    assert_eq!(dig(&lab, "c1", resolver).as_deref(), Some(lab::ORIGIN_IP));
    // A bad MAC or policy is refused with the reason.
    let out = lab.cli(&cfg, &["clients", "set", "not-a-mac", "blocked"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a MAC"));
    let out = lab.cli(&cfg, &["clients", "set", &c1, "open"]);
    assert!(!out.status.success());
    agent.terminate();
}
