//! The processes under test: a server in the gateway's namespace, stopped when dropped, and
//! the agent config each benchmark runs it with.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{lab, process};

/// The lab's agent config with `extra` appended (as new tables).
pub(super) fn bench_config(lab: &lab::Lab, extra: &str) -> Result<PathBuf> {
    let base = std::fs::read_to_string(lab.agent_config()).context("reading the lab config")?;
    // Tables the benchmark sets itself are dropped from the base (TOML allows a table once).
    let own: Vec<&str> = extra
        .lines()
        .filter(|l| l.starts_with('[') && !l.starts_with("[["))
        .collect();
    let mut text = String::new();
    let mut skipping = false;
    for line in base.lines() {
        if line.starts_with('[') {
            skipping = own.contains(&line.trim());
        }
        if !skipping {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(extra);
    let path = lab.state_dir().join("bench.toml");
    std::fs::write(&path, text).context("writing the bench config")?;
    Ok(path)
}

/// c1 needs an address on the inside subnet for the load generators.
pub(super) fn ensure_client_address(lab: &lab::Lab) -> Result<()> {
    let c1 = lab.ns("c1");
    process::ns_run(
        &c1,
        "ip",
        [
            "addr",
            "replace",
            &format!("{CLIENT_ADDRESS}/24"),
            "dev",
            "eth0",
        ],
    )
}

/// The address [`ensure_client_address`] gives c1.
const CLIENT_ADDRESS: &str = "198.51.100.11";

/// A reservation of c1's address for c1's MAC: the agent's IP source guard passes only leased
/// sources, so c1 takes this lease ([`lease_client_address`]) before it sends load.
pub(super) fn client_reservation(lab: &lab::Lab) -> Result<String> {
    let mac = process::ns_output(&lab.ns("c1"), "cat", ["/sys/class/net/eth0/address"])?;
    Ok(format!(
        "[[dhcp.reservations]]\nmac = \"{}\"\naddress = \"{CLIENT_ADDRESS}\"\nname = \"bench-client\"\n",
        mac.trim()
    ))
}

/// Takes c1's reserved lease from the agent with a real dhclient, which only asks: the address
/// is already on eth0 (`-sf /bin/true` leaves the interface alone).
pub(super) fn lease_client_address(lab: &lab::Lab) -> Result<()> {
    let dir = lab.state_dir();
    let leases = dir.join("bench-c1.leases").display().to_string();
    let pid = dir.join("bench-c1.pid").display().to_string();
    process::ns_run(
        &lab.ns("c1"),
        "dhclient",
        [
            "-1",
            "-sf",
            "/bin/true",
            "-lf",
            &leases,
            "-pf",
            &pid,
            "eth0",
        ],
    )
    .context("c1 taking its lease from the agent")
}

/// A server process in a namespace, stopped when dropped.
pub(super) struct Server {
    child: Child,
    /// For an agent: `dataplane detach` after it stopped (namespace, binary, config).
    detach: Option<(String, PathBuf, PathBuf)>,
}

impl Server {
    pub(super) fn agent(ns: &str, agent: &Path, config: &Path) -> Result<Server> {
        let args = [
            agent.display().to_string(),
            "--config".into(),
            config.display().to_string(),
            "run".into(),
        ];
        let mut server = Server::spawn(ns, &args)?;
        server.detach = Some((ns.to_owned(), agent.to_path_buf(), config.to_path_buf()));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = Command::new("ip")
                .args(["netns", "exec", ns])
                .arg(agent)
                .arg("--config")
                .arg(config)
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if status.is_ok_and(|s| s.success()) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("the agent did not come up");
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    pub(super) fn spawn(ns: &str, args: &[String]) -> Result<Server> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {args:?}"))?;
        Ok(Server {
            child,
            detach: None,
        })
    }

    /// For an agent: waits until its Tor is bootstrapped, and returns its `status --json`.
    pub(super) fn wait_tor_bootstrapped(&self, timeout: Duration) -> Result<serde_json::Value> {
        let Some((ns, agent, config)) = &self.detach else {
            bail!("not an agent");
        };
        let deadline = Instant::now() + timeout;
        loop {
            let status = process::ns_output(
                ns,
                &agent.display().to_string(),
                [
                    "--config",
                    &config.display().to_string(),
                    "status",
                    "--json",
                ],
            )
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
            if let Some(status) = status.filter(|s| s["tor"]["bootstrapped"] == true) {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("the agent's Tor did not bootstrap in {timeout:?}");
            }
            thread::sleep(Duration::from_secs(1));
        }
    }

    /// The process id (`ip netns exec` execs, so it is the server's).
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A memory field of the process's /proc status, KiB: `VmRSS` now, `VmHWM` at peak
    /// (`ip netns exec` execs, so the child's pid is the server's).
    pub(super) fn rss_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let prefix = format!("{field}:");
        status
            .lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse().ok())
    }
}

impl Server {
    /// SIGTERM, then SIGKILL after 10 s.
    fn stop(&mut self) {
        // SAFETY: kill has no memory preconditions.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stopped first, so the next server gets the address; an agent's programs stay
        // attached when it stops (fail closed), so the peer that runs next would be filtered.
        self.stop();
        if let Some((ns, agent, config)) = &self.detach {
            let detached = Command::new("ip")
                .args(["netns", "exec", ns])
                .arg(agent)
                .arg("--config")
                .arg(config)
                .args(["dataplane", "detach"])
                .stdout(Stdio::null())
                .status();
            if !detached.is_ok_and(|s| s.success()) {
                eprintln!("bench: `gateway-agent dataplane detach` failed in {ns}");
            }
        }
    }
}
