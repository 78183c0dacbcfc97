//! The real agent in the gateway's `gw` namespace ([`Agent`]), its CLI and its metrics page.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::process::signal;
use crate::testlab::path_str;
use crate::{eventually, fail, wait_timeout, OrFail, TestLab};

/// The real agent, running in the lab's `gw` namespace.
pub struct Agent {
    child: Option<Child>,
    /// The config it runs with.
    pub config: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent with `config` and waits until its control socket answers. A config
    /// with Tor enabled starts the lab's Tor network first if it never ran.
    pub fn start(lab: &TestLab, config: &Path) -> Agent {
        if tor_enabled(config) {
            lab.start_tor();
        }
        let log = config.with_extension("log");
        let log_file = std::fs::File::create(&log).or_fail("the agent's log file");
        let err_file = log_file.try_clone().or_fail("the agent's log file");
        // `ip netns exec` execs the agent, so the child's pid is the agent's.
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns("gw")])
            .arg(agent_bin())
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .or_fail("starting the agent");
        let mut agent = Agent {
            child: Some(child),
            config: config.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if lab.cli(config, &["status"]).status.success() {
                return agent;
            }
            if let Some(status) = agent
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                fail(format_args!(
                    "the agent exited with {status}: {}",
                    agent.log_text()
                ));
            }
            if Instant::now() > deadline {
                fail(format_args!(
                    "the agent did not answer in 20 s: {}",
                    agent.log_text()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything the agent logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let Some(child) = self.child.as_mut() else {
            fail("the agent is not running");
        };
        signal(child.id(), libc::SIGTERM);
        let status = wait_timeout(child, Duration::from_secs(20)).unwrap_or_else(|| {
            fail(format_args!(
                "the agent ignored SIGTERM: {}",
                self.log_text()
            ))
        });
        self.child = None;
        status
    }

    /// `kill -9`: the agent gets no chance to clean up.
    pub fn kill9(mut self) {
        let Some(mut child) = self.child.take() else {
            fail("the agent is not running");
        };
        signal(child.id(), libc::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The metrics endpoint of the lab's config (`metrics.listen` in `config/lab.toml`).
pub const METRICS_URL: &str = "http://127.0.0.1:9101/metrics";

/// The value of one series on a metrics page, `series` written as the agent writes it: the name
/// and, if it has labels, `{label="value",…}`. `None` if the page has no such series.
pub fn metric(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| {
            value
                .parse()
                .unwrap_or_else(|_| fail(format_args!("{series}: {value:?} is not a count")))
        })
}

impl TestLab {
    /// Runs the agent's CLI in `gw` with `config`.
    pub fn cli(&self, config: &Path, args: &[&str]) -> Output {
        let bin = agent_bin();
        let mut all = vec!["--config", path_str(config)];
        all.extend_from_slice(args);
        self.exec("gw", path_str(&bin), &all)
    }

    /// [`TestLab::cli`] with `--json`, asserting success, parsed.
    pub fn cli_json(&self, config: &Path, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(config, &all);
        assert!(
            out.status.success(),
            "gateway-agent {all:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
            fail(format_args!(
                "gateway-agent {all:?} printed no JSON ({err}): {}",
                String::from_utf8_lossy(&out.stdout)
            ))
        })
    }

    /// `maps events --json [extra…]`: one JSON object per line, parsed. `extra` may be
    /// `--follow`: wrap it in `timeout` (`prefix`) so it ends.
    pub fn events(&self, config: &Path, prefix: &[&str], extra: &[&str]) -> Vec<serde_json::Value> {
        let bin = agent_bin();
        let mut all: Vec<&str> = prefix.to_vec();
        all.extend_from_slice(&[path_str(&bin), "--config", path_str(config)]);
        all.extend_from_slice(&["maps", "events", "--json"]);
        all.extend_from_slice(extra);
        let out = self.exec("gw", all[0], &all[1..]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|err| {
                    fail(format_args!("`maps events` printed {line:?}: {err}"))
                })
            })
            .collect()
    }

    /// `pki issue-client NAME --out OUT` through the agent's CLI, asserting success: the
    /// bundle's directory (client.cert, client.key, ca.crt).
    pub fn issue_client(&self, config: &Path, name: &str, out: &Path) -> PathBuf {
        let done = self.cli(
            config,
            &["pki", "issue-client", name, "--out", path_str(out)],
        );
        assert!(
            done.status.success(),
            "pki issue-client {name}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        out.to_path_buf()
    }

    /// The drop counter for `reason` (its name as `maps drops` prints it).
    pub fn drops(&self, config: &Path, reason: &str) -> u64 {
        let drops = self.cli_json(config, &["maps", "drops"]);
        drops[reason]
            .as_u64()
            .unwrap_or_else(|| fail(format_args!("no drop reason {reason} in {drops}")))
    }
    /// The agent's metrics page, fetched in `gw` from the lab config's `metrics.listen` (the
    /// namespace's own loopback).
    pub fn metrics(&self) -> String {
        self.exec_ok("gw", "curl", &["-sf", "-m", "5", METRICS_URL])
    }

    /// Waits until the agent's uplink holds a DHCP lease; returns its address.
    pub fn wait_uplink(&self, config: &Path) -> String {
        let mut last = serde_json::Value::Null;
        let bound = eventually(Duration::from_secs(30), || {
            last = self.cli_json(config, &["status"]);
            last["uplink"]["state"] == "bound"
        });
        assert!(bound, "the uplink got no lease: {}", last["uplink"]);
        last["uplink"]["address"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// The agent binary: `GATEWAY_AGENT_BIN` (set by `cargo xtask test`), else the debug build.
pub fn agent_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("GATEWAY_AGENT_BIN") {
        return PathBuf::from(bin);
    }
    let bin = xtask::build::agent_binary(false);
    assert!(
        bin.is_file(),
        "no agent binary at {}: run the tests with `cargo xtask test`",
        bin.display()
    );
    bin
}

/// Whether the agent runs Tor with `config` (`tor.enabled`, true unless set to false).
pub(crate) fn tor_enabled(config: &Path) -> bool {
    let text =
        std::fs::read_to_string(config).or_fail(format_args!("reading {}", config.display()));
    let value: toml::Value =
        toml::from_str(&text).or_fail(format_args!("{} is not TOML", config.display()));
    value
        .get("tor")
        .and_then(|tor| tor.get("enabled"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(true)
}
