//! Per-service egress: the HTTP proxy goes out through Tor unless the config says
//! `http_proxy.egress = "direct"`. Without Tor and without that choice the proxy stays closed;
//! with it, requests leave in clear text from the uplink address, and inside or private
//! destinations are still refused.

use gateway_tests::{lab, skip_unless_root, Agent, DhcpClient, TestLab};

const PROXY: &str = "http://198.51.100.1:3128";

/// curl from c1 through the gateway's proxy: (HTTP status or 000, body).
fn via_proxy(lab: &TestLab, url: &str) -> (String, String) {
    let out = lab.exec(
        "c1",
        "curl",
        &["-s", "-m", "15", "-x", PROXY, "-w", "\n%{http_code}", url],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.to_string(), body.to_string())
}

#[test]
fn http_proxy_goes_direct_only_when_configured() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let url = format!("http://{}/", lab::ORIGIN_NAME);

    // Tor off, egress left at "tor": no proxy at all, never a silent fall back to clearnet.
    let closed_cfg = lab.config_without_tor("no-tor.toml");
    let origin_before = lab.origin_clients().len();
    let agent = Agent::start(&lab, &closed_cfg);
    lab.wait_uplink(&closed_cfg);
    lab.dhcp("c1", DhcpClient::Dhclient, None);
    let status = lab.cli_json(&closed_cfg, &["status"]);
    assert!(status["http_proxy"].is_null(), "{}", status["http_proxy"]);
    let (code, _) = via_proxy(&lab, &url);
    assert_eq!(
        code, "000",
        "the proxy answered without Tor and without `direct`"
    );
    assert_eq!(
        lab.origin_clients().len(),
        origin_before,
        "the origin was reached"
    );
    assert!(
        agent.log_text().contains("http_proxy.egress"),
        "the log says why the proxy is off: {}",
        agent.log_text()
    );
    agent.terminate();

    // egress = "direct": the origin sees the uplink address.
    let direct_cfg = lab.config_without_tor("direct.toml");
    let mut text = std::fs::read_to_string(&direct_cfg).expect("reading direct.toml");
    text.push_str("\n[http_proxy]\negress = \"direct\"\n");
    std::fs::write(&direct_cfg, text).expect("writing direct.toml");
    let agent = Agent::start(&lab, &direct_cfg);
    let uplink_ip = lab.wait_uplink(&direct_cfg);
    let (code, body) = via_proxy(&lab, &url);
    assert_eq!(code, "200", "{body}\n{}", agent.log_text());
    assert!(body.contains("gateway lab origin"), "{body}");
    assert_eq!(lab.origin_clients().last(), Some(&uplink_ip));

    // Still never to the inside, nor to loopback, by address or by a name that points there,
    // nor to the gateway's own uplink address or the modem (its admin page):
    // the policy refuses (403); it is not a connection that happened to fail (502).
    let loopback = format!("http://{}/", lab::LOOPBACK_NAME);
    let own = format!("http://{uplink_ip}/");
    let modem = format!("http://{}/", lab::MODEM_IP);
    let targets = [
        "http://198.51.100.1/",
        "http://127.0.0.1/",
        loopback.as_str(),
        own.as_str(),
        modem.as_str(),
    ];
    for target in targets {
        let (code, body) = via_proxy(&lab, target);
        assert_eq!(code, "403", "{target} through a direct proxy: {body}");
    }
    // Absolute-form requests only to http_proxy.ports (80 and 443 by default).
    let (code, body) = via_proxy(&lab, &format!("http://{}:8080/", lab::ORIGIN_NAME));
    assert_eq!(code, "403", "a port outside http_proxy.ports: {body}");
    let proxy = lab.cli_json(&direct_cfg, &["status"])["http_proxy"].clone();
    assert_eq!(
        proxy["upstream_failures"]["refused"].as_u64(),
        Some(targets.len() as u64),
        "{proxy}"
    );
    assert_eq!(proxy["denied_ports"].as_u64(), Some(1), "{proxy}");
    agent.terminate();
}
