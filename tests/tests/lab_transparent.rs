//! Transparent Tor: an inside client with no proxy settings reaches the origin by address, and
//! the origin sees an exit relay; nothing leaves the uplink for the origin directly. A steered
//! connection never falls through to a host socket in the gateway, whether the agent runs, has
//! stopped or was killed.

use std::time::Duration;

use gateway_tests::{eventually, lab, Agent, Background, Capture, DhcpClient, TestLab};

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
    let direct = capture.stop(&format!(
        "src host {uplink} and dst host {}",
        lab::ORIGIN_IP
    ));
    assert!(
        direct.is_empty(),
        "the gateway went to the origin directly: {direct:?}"
    );
    let status = lab.cli_json(&cfg, &["status"])["transparent"].clone();
    assert!(status["streams"].as_u64() >= Some(1), "{status}");

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
