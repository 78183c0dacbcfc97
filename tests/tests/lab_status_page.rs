//! The status page with the real agent, looked at by headless Chromium in the `gw` namespace
//! (flags that keep it from contacting anything, a fresh profile per test) driven over the
//! DevTools protocol (`tests/fixtures/cdp.py`): a new lease's host name appears without a
//! reload, the drops chart grows after probe traffic, a screenshot is written; on the inside
//! address only an admin certificate gets an HTTP answer, and an admin's action goes through
//! only with the page's token and origin.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use gateway_tests::{eventually, fail, lab, skip_unless_root, Agent, DhcpClient, OrFail, TestLab};
use serde_json::{json, Value};

const PAGE: &str = "https://127.0.0.1:8443/";

/// Chromium's flags: headless, and nothing it would contact by itself.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Headless Chromium in `gw` and the DevTools client attached to its page.
struct Browser {
    chromium: Child,
    cdp: Child,
    to_cdp: ChildStdin,
    from_cdp: BufReader<ChildStdout>,
}

impl Browser {
    /// Chromium with a new, empty profile in `profile`.
    fn start(lab: &TestLab, profile: &Path) -> Browser {
        let _ = std::fs::remove_dir_all(profile);
        std::fs::create_dir_all(profile).or_fail("creating the Chromium profile");
        let user_dir = format!("--user-data-dir={}", profile.display());
        let chromium = Command::new("ip")
            .args(["netns", "exec", &lab.ns("gw"), "chromium"])
            .args(CHROMIUM_FLAGS)
            .args([
                user_dir.as_str(),
                // The page's certificate is the gateway PKI's, for the inside address.
                "--ignore-certificate-errors",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "--window-size=1000,1000",
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .or_fail("starting chromium (the lab packages install it)");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cdp.py");
        let port_file = profile.join("DevToolsActivePort");
        let mut cdp = Command::new("ip")
            .args(["netns", "exec", &lab.ns("gw"), "python3"])
            .arg(&script)
            .arg(&port_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .or_fail("starting cdp.py");
        let to_cdp = cdp.stdin.take().unwrap_or_else(|| fail("cdp.py's stdin"));
        let from_cdp = BufReader::new(cdp.stdout.take().unwrap_or_else(|| fail("cdp.py's stdout")));
        Browser {
            chromium,
            cdp,
            to_cdp,
            from_cdp,
        }
    }

    fn call(&mut self, command: Value) -> Value {
        writeln!(self.to_cdp, "{command}").or_fail("writing to cdp.py");
        let mut line = String::new();
        self.from_cdp
            .read_line(&mut line)
            .or_fail("reading from cdp.py");
        let reply: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| fail(format_args!("cdp.py said {line:?} to {command}")));
        assert!(reply.get("error").is_none(), "{command}: {reply}");
        reply
    }

    /// The value of `expression` in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let reply = self.call(json!({
            "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": true},
        }));
        reply["result"]["value"].clone()
    }

    fn open(&mut self, url: &str) {
        self.call(json!({"method": "Page.navigate", "params": {"url": url}}));
        let loaded = eventually(Duration::from_secs(20), || {
            self.eval("document.readyState === 'complete' && !!document.getElementById('live')")
                == json!(true)
        });
        assert!(
            loaded,
            "{url} did not load: {}",
            self.eval("document.documentElement.outerHTML")
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        for child in [&mut self.cdp, &mut self.chromium] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The test's folder, empty.
fn work(lab: &TestLab, name: &str) -> PathBuf {
    let dir = lab.lab.gateway_dir().join(format!("status-page-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).or_fail("creating the test's folder");
    dir
}

#[test]
fn the_page_refreshes_itself_and_draws_the_drops() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let cfg = lab.config_without_tor("status-page.toml");
    let agent = Agent::start(&lab, &cfg);
    lab.wait_uplink(&cfg);
    let dir = work(&lab, "refresh");
    let mut browser = Browser::start(&lab, &dir.join("profile"));
    browser.open(PAGE);

    // A mark that a reload would lose.
    browser.eval("window.loadedOnce = 'yes'");
    let clients = "document.getElementById('clients').textContent";
    assert!(
        !browser
            .eval(clients)
            .as_str()
            .unwrap_or("")
            .contains("pagehost"),
        "the host name is there before its lease"
    );
    lab.dhcp("c1", DhcpClient::Dhclient, Some("pagehost"));
    let mut seen = Value::Null;
    let appeared = eventually(Duration::from_secs(30), || {
        seen = browser.eval(&format!(
            "(window.loadedOnce || 'reloaded') + ' ' + {clients}"
        ));
        seen.as_str().unwrap_or("").contains("pagehost")
    });
    assert!(appeared, "the new lease's host name did not appear: {seen}");
    assert!(
        seen.as_str().unwrap_or("").starts_with("yes "),
        "the page was reloaded, not refreshed: {seen}"
    );
    let refreshes = browser.eval("+document.body.dataset.refreshes");
    assert!(refreshes.as_u64() >= Some(1), "{refreshes}");

    // Probe traffic the inside program drops (no Tor: nothing is steered), then the chart.
    let chart = "(() => { const c = document.getElementById('drops-chart'); \
                 return [+c.dataset.total, c.querySelectorAll('rect.bar').length]; })()";
    let before = browser.eval(chart);
    for port in [1, 7, 9] {
        let url = format!("http://{}:{port}/", lab::GATEWAY_INSIDE_IP);
        lab.exec("c1", "curl", &["-s", "--max-time", "1", &url]);
        let url = format!("http://{}/", lab::ORIGIN_IP);
        lab.exec("c1", "curl", &["-s", "--max-time", "1", &url]);
    }
    let mut after = Value::Null;
    let grew = eventually(Duration::from_secs(30), || {
        after = browser.eval(chart);
        after[0].as_u64() > before[0].as_u64() && after[1].as_u64() > Some(0)
    });
    assert!(grew, "the drops chart did not grow: {before} → {after}");
    assert!(
        browser
            .eval("document.getElementById('drops').textContent")
            .as_str()
            .unwrap_or("")
            .contains("foreign_destination"),
        "the drop reasons are listed"
    );
    // Nothing the client visited is on the page.
    let text = browser.eval("document.body.textContent");
    let text = text.as_str().unwrap_or("");
    assert!(!text.contains(lab::ORIGIN_IP), "a destination is shown");

    // The screenshot for the README.
    browser.call(json!({
        "method": "Emulation.setDeviceMetricsOverride",
        "params": {"width": 1000, "height": 1100, "deviceScaleFactor": 1, "mobile": false},
    }));
    let shot = dir.join("status-page.png");
    let saved = browser.call(json!({
        "method": "Page.captureScreenshot",
        "params": {"format": "png"},
        "save": shot.display().to_string(),
    }));
    let png = std::fs::read(&shot).or_fail("reading the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{saved}");
    assert!(png.len() > 10_000, "a blank screenshot? {saved}");
    if let Ok(path) = std::env::var("GATEWAY_STATUS_SCREENSHOT") {
        std::fs::copy(&shot, &path).or_fail(format_args!("copying the screenshot to {path}"));
    }
    drop(browser);
    assert!(agent.terminate().success());
}

/// curl from c1 to the page on the inside address, with the bundle in `cert` if any:
/// (exit status ok, `-i` output).
fn curl(lab: &TestLab, cert: Option<&Path>, args: &[&str]) -> (bool, String) {
    let ca = lab.lab.agent_state_dir().join("pki/ca.crt");
    let mut all: Vec<String> = ["-sS", "-i", "--max-time", "10", "--cacert"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.push(ca.display().to_string());
    if let Some(bundle) = cert {
        for (flag, file) in [("--cert", "client.cert"), ("--key", "client.key")] {
            all.push(flag.into());
            all.push(bundle.join(file).display().to_string());
        }
    }
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = lab.exec("c1", "curl", &refs);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn on_the_inside_only_admins_get_an_answer() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let inside = format!("{}:8443", lab::GATEWAY_INSIDE_IP);
    let cfg = lab.config_without_tor("status-page-inside.toml");
    let mut text = std::fs::read_to_string(&cfg).or_fail("reading the agent config");
    text.push_str(&format!(
        "\n[status_page]\nlisten = \"{inside}\"\nadmins = [\"admin\"]\n"
    ));
    std::fs::write(&cfg, text).or_fail("writing the agent config");
    let agent = Agent::start(&lab, &cfg);
    lab.dhcp("c1", DhcpClient::Dhclient, None);
    let dir = work(&lab, "inside");
    let bundle = |name: &str| lab.issue_client(&cfg, name, &dir.join(name));
    let (admin, laptop) = (bundle("admin"), bundle("laptop"));
    let url = format!("https://{inside}/");

    for (who, cert) in [
        ("no certificate", None),
        ("a non-admin certificate", Some(&laptop)),
    ] {
        let (ok, out) = curl(&lab, cert.map(PathBuf::as_path), &[&url]);
        assert!(!ok && !out.contains("HTTP/"), "{who} got an answer: {out}");
    }
    let (ok, page) = curl(&lab, Some(&admin), &[&url]);
    assert!(ok && page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("admin certificate <b>admin</b>"), "{page}");

    // An action: refused without the page's origin or token, done with both.
    let token = page
        .split("name=\"token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| fail(format_args!("no token on the admin's page: {page}")))
        .to_owned();
    let c1 = lab.mac("c1");
    let action = format!("https://{inside}/action/policy");
    let origin = format!("Origin: https://{inside}");
    let form = |token: &str| format!("token={token}&mac={c1}&policy=proxy-only");
    for (why, headers, body) in [
        ("no Origin", vec![], form(&token)),
        (
            "another origin",
            vec!["Origin: https://evil.example"],
            form(&token),
        ),
        ("no token", vec![origin.as_str()], form("")),
        ("a forged token", vec![origin.as_str()], form("1.00")),
    ] {
        let mut args = vec!["-X", "POST", "--data", body.as_str()];
        for header in &headers {
            args.extend(["-H", *header]);
        }
        args.push(&action);
        let (_, out) = curl(&lab, Some(&admin), &args);
        assert!(out.starts_with("HTTP/1.1 403"), "{why}: {out}");
    }
    let policy = || {
        lab.cli_json(&cfg, &["clients"])
            .as_array()
            .and_then(|all| all.iter().find(|c| c["mac"] == c1.as_str()).cloned())
            .map(|c| c["policy"].clone())
    };
    assert_eq!(policy(), Some(json!("transparent")));
    let body = form(&token);
    let (ok, out) = curl(
        &lab,
        Some(&admin),
        &["-X", "POST", "-H", &origin, "--data", &body, &action],
    );
    assert!(ok && out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("is proxy-only"), "{out}");
    assert_eq!(policy(), Some(json!("proxy-only")));

    // Revoked, the admin is refused at the handshake too (the CRL is reloaded within 1 s).
    let out = lab.cli(&cfg, &["pki", "revoke", "admin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = eventually(Duration::from_secs(10), || {
        let (ok, out) = curl(&lab, Some(&admin), &[&url]);
        !ok && !out.contains("HTTP/")
    });
    assert!(refused, "a revoked admin is still served");
    assert!(agent.terminate().success());
}
