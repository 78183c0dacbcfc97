//! Helpers for the integration tests: a lab per test (unique namespace prefix, torn down on drop,
//! also when the test panics), the real agent running in the lab's `gw` namespace, commands in
//! the lab's namespaces, and packet captures with tcpdump.
//!
//! Everything targets addresses inside namespaces the test created; nothing else.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
pub use xtask::lab;
use xtask::lab::Lab;
pub use xtask::lab_tor;

/// A lab that exists for the lifetime of the value.
pub struct TestLab {
    /// The lab.
    pub lab: Lab,
}

impl TestLab {
    /// Brings up a fresh lab with a prefix no other test in any process uses.
    pub fn up() -> TestLab {
        require_root();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // At most 8 of [a-z0-9]: 't', the pid in base 36 (<= 5 chars) and a counter.
        let prefix = format!("t{}{}", base36(std::process::id() % 60_466_176), n % 36);
        let prefix: String = prefix.chars().take(8).collect();
        let lab = Lab::new(&prefix);
        if let Err(err) = lab.up() {
            let _ = lab.down();
            panic!("lab {prefix} did not come up: {err:#}");
        }
        TestLab { lab }
    }

    /// The namespace name of `role` ("up", "gw", "lan", "c1", "c2").
    pub fn ns(&self, role: &str) -> String {
        self.lab.ns(role)
    }

    /// Runs `program args…` in `role`'s namespace and returns its output, whatever its status.
    pub fn exec(&self, role: &str, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(role), program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("running {program} in {role}: {err}"))
    }

    /// Like [`TestLab::exec`], asserting success and returning stdout.
    pub fn exec_ok(&self, role: &str, program: &str, args: &[&str]) -> String {
        let out = self.exec(role, program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} in {role} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `program args…` in the background in `role`'s namespace; killed when dropped.
    pub fn spawn(&self, role: &str, program: &str, args: &[&str]) -> Background {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(role), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {program} in {role}: {err}"));
        Background { child }
    }

    /// Writes an agent config for this lab: the lab's own, with `edit` applied to its text.
    pub fn agent_config(&self, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
        let base = self.lab.agent_config();
        let text = std::fs::read_to_string(&base)
            .unwrap_or_else(|err| panic!("reading {}: {err}", base.display()));
        let path = self.lab.state_dir().join(name);
        std::fs::write(&path, edit(text))
            .unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
        path
    }

    /// The lab's config without Tor: DNS forwarded to the uplink's resolver in clear text, for
    /// tests about the dataplane, DHCP and DNS that should not wait for (or load) Tor.
    pub fn config_without_tor(&self, name: &str) -> PathBuf {
        self.agent_config(name, |text| {
            assert!(text.contains("[tor]\n") && text.contains("upstream = \"tor\""));
            text.replace("[tor]\n", "[tor]\nenabled = false\n")
                .replace("upstream = \"tor\"", "upstream = \"uplink\"")
        })
    }

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
            panic!(
                "gateway-agent {all:?} printed no JSON ({err}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The drop counter for `reason` (its name as `maps drops` prints it).
    pub fn drops(&self, config: &Path, reason: &str) -> u64 {
        let drops = self.cli_json(config, &["maps", "drops"]);
        drops[reason]
            .as_u64()
            .unwrap_or_else(|| panic!("no drop reason {reason} in {drops}"))
    }

    /// Client addresses in the origin's access log, one per GET, oldest first.
    pub fn origin_clients(&self) -> Vec<String> {
        std::fs::read_to_string(self.lab.origin_log())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
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

    /// Waits until the lab's private Tor network has a fresh consensus listing every node
    /// (bounded by [`lab_tor::READY_TIMEOUT`]); returns how long that took.
    pub fn wait_tor(&self) -> Duration {
        lab_tor::wait_ready(&self.lab, lab_tor::READY_TIMEOUT)
            .unwrap_or_else(|err| panic!("lab {}: {err:#}", self.lab.prefix()))
    }

    /// Waits until the lab's onion service has published its descriptor (bounded by
    /// [`lab_tor::READY_TIMEOUT`]); returns how long that took.
    pub fn wait_onion(&self) -> Duration {
        lab_tor::wait_onion(&self.lab, lab_tor::READY_TIMEOUT)
            .unwrap_or_else(|err| panic!("lab {}: {err:#}", self.lab.prefix()))
    }

    /// The MAC address of `role`'s `eth0`.
    pub fn mac(&self, role: &str) -> String {
        let out = self.exec_ok(role, "cat", &["/sys/class/net/eth0/address"]);
        out.trim().to_string()
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if let Err(err) = self.lab.down() {
            eprintln!("lab {} down: {err:#}", self.lab.prefix());
        }
    }
}

pub use xtask::lab::DhcpClient;

/// One event a DHCP client reported through its hook script (`reason`, `ip`, `router`, `dns`,
/// `domain`, `search`, `lease`, `mask`).
pub type DhcpEvent = std::collections::BTreeMap<String, String>;

/// Events that mean "bound" for dhclient and udhcpc.
const BOUND: [&str; 4] = ["BOUND", "REBOOT", "RENEW", "bound"];

impl TestLab {
    /// Runs a real DHCP client on `role`'s eth0 (sending `hostname` if given) until it is
    /// bound; it keeps running and renewing until the lab goes down. Returns the bound event.
    pub fn dhcp(&self, role: &str, client: DhcpClient, hostname: Option<&str>) -> DhcpEvent {
        let before = self.dhcp_events(role).len();
        self.lab
            .start_dhcp_client(role, client, hostname)
            .unwrap_or_else(|err| panic!("starting {client:?} in {role}: {err:#}"));
        let mut bound = None;
        let ok = eventually(Duration::from_secs(30), || {
            bound = self
                .dhcp_events(role)
                .into_iter()
                .skip(before)
                .find(|e| BOUND.contains(&e.get("reason").map(String::as_str).unwrap_or("")));
            bound.is_some()
        });
        assert!(
            ok,
            "{client:?} in {role} reported no lease: {:?}",
            self.dhcp_events(role)
        );
        bound.unwrap_or_default()
    }

    /// Every event `role`'s DHCP client reported so far, oldest first.
    pub fn dhcp_events(&self, role: &str) -> Vec<DhcpEvent> {
        let text = std::fs::read_to_string(self.lab.dhcp_log(role)).unwrap_or_default();
        text.split("--\n")
            .filter(|chunk| !chunk.trim().is_empty())
            .map(|chunk| {
                chunk
                    .lines()
                    .filter_map(|line| line.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                    .collect()
            })
            .collect()
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
                .unwrap_or_else(|_| panic!("{series}: {value:?} is not a count"))
        })
}

/// A background process, killed (and reaped) when dropped.
pub struct Background {
    child: Child,
}

impl Background {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real agent, running in the lab's `gw` namespace.
pub struct Agent {
    child: Option<Child>,
    /// The config it runs with.
    pub config: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent with `config` and waits until its control socket answers.
    pub fn start(lab: &TestLab, config: &Path) -> Agent {
        let log = config.with_extension("log");
        let log_file = std::fs::File::create(&log).expect("agent log file");
        let err_file = log_file.try_clone().expect("agent log file");
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
            .expect("starting the agent");
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
                panic!("the agent exited with {status}: {}", agent.log_text());
            }
            if Instant::now() > deadline {
                panic!("the agent did not answer in 20 s: {}", agent.log_text());
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
        let child = self.child.as_mut().expect("agent running");
        signal(child.id(), libc::SIGTERM);
        let status = wait_timeout(child, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("the agent ignored SIGTERM: {}", self.log_text()));
        self.child = None;
        status
    }

    /// `kill -9`: the agent gets no chance to clean up.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("agent running");
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

/// A tcpdump capture in one of the lab's namespaces.
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Captures on `iface` in `role`'s namespace, all packets, into the lab's state dir.
    pub fn start(lab: &TestLab, role: &str, iface: &str, name: &str) -> Capture {
        let file = lab.lab.state_dir().join(format!("{name}.pcap"));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns(role),
                "tcpdump",
                "-i",
                iface,
                "-n",
                "-U",
                "-w",
            ])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tcpdump");
        // tcpdump creates the file once it listens.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !file.exists() {
            assert!(Instant::now() < deadline, "tcpdump did not start");
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(200));
        Capture { child, file }
    }

    /// Stops the capture and returns one line per packet matching `filter` (tcpdump syntax).
    pub fn stop(mut self, filter: &str) -> Vec<String> {
        thread::sleep(Duration::from_millis(300));
        signal(self.child.id(), libc::SIGINT);
        let _ = wait_timeout(&mut self.child, Duration::from_secs(5)).or_else(|| {
            let _ = self.child.kill();
            self.child.wait().ok()
        });
        let mut args = vec!["-n", "-r", path_str(&self.file)];
        args.extend(filter.split_whitespace());
        let out = Command::new("tcpdump")
            .args(&args)
            .output()
            .expect("reading the capture");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// The tests build namespaces and load eBPF programs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the lab tests need root (run them with `cargo xtask test`)"
    );
}

/// Polls `check` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Whether network namespace `name` exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Runs a command on the host (never for traffic: only inspection like `ip netns list`).
pub fn host(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions; a stale pid at worst gets ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("lab paths are UTF-8")
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}
