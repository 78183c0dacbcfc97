//! Helpers for the integration tests: a gateway per test in a lab its test binary shares (or a
//! lab of its own), the real agent running in the gateway's `gw` namespace, commands in the
//! lab's namespaces, and packet captures with tcpdump.
//!
//! **One lab per test binary.** [`TestLab::up`] gives each test a gateway slot of its own
//! (namespaces `<prefix>-gw.N`, `-lan.N`, `-c1.N`, `-c2.N`, its own agent config, bpffs, control
//! socket and DHCP files) in a lab that the test binary builds once, on first use: one modem,
//! origin and, once a test needs it, one private Tor network for every test of the binary. A
//! slot goes down when its `TestLab` is dropped (also when the test panics); the shared lab goes
//! down when the process exits (`atexit`; `cargo xtask test` also runs `lab down --all` after
//! the tests, for a binary that was killed). [`TestLab::up_own`] gives a lab of its own, for
//! tests that stop or break what a lab's gateways share (the Tor network, the modem's dnsmasq)
//! or that take a whole lab down.
//!
//! The modem's and the origin's logs are the lab's: [`TestLab::modem_log`] and
//! [`TestLab::origin_clients`] start where they were when the slot came up, and tests pick
//! their own gateway's lines by its uplink address; captures on the uplink go on the slot's
//! own port ([`Lab::uplink_port`]), never on the shared bridge.
//!
//! Everything targets addresses inside namespaces the test created; nothing else.

use std::{
    collections::BTreeSet,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    sync::{Mutex, MutexGuard, Once, TryLockError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
pub use xtask::lab;
pub use xtask::lab::tor as lab_tor;
use xtask::lab::Lab;

/// A gateway (with its inside LAN and clients) that exists for the lifetime of the value: a
/// slot of the binary's shared lab, or slot 0 of a lab of its own.
pub struct TestLab {
    /// The lab, seen through this gateway's slot: `lab.ns("gw")` is this gateway's namespace,
    /// `lab.ns("up")` the lab's, `lab.gateway_dir()` this gateway's files.
    pub lab: Lab,
    /// The whole lab is this value's (else only the slot).
    own: bool,
    /// Where the modem's log ended when the slot came up.
    modem_log_from: u64,
    /// Where the origin's access log ended when the slot came up.
    origin_log_from: u64,
}

/// The lab every [`TestLab::up`] of this process shares, and its slots in use.
struct Shared {
    lab: Option<Lab>,
    used: BTreeSet<u8>,
    /// The next slot to try: numbers are not reused before they wrap, so a slot's port and
    /// namespaces are never made again while the kernel may still be freeing the last ones.
    next: u8,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    lab: None,
    used: BTreeSet::new(),
    next: 1,
});

/// Serialises starting Tor networks (two starts at once would run every node twice).
static TOR_START: Mutex<()> = Mutex::new(());

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding it leaves nothing half-done that matters here.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn claim(&mut self) -> u8 {
        for _ in 0..lab::MAX_SLOT {
            let slot = self.next;
            self.next = if slot >= lab::MAX_SLOT { 1 } else { slot + 1 };
            if self.used.insert(slot) {
                return slot;
            }
        }
        panic!(
            "all {} gateway slots of the shared lab are in use",
            lab::MAX_SLOT
        );
    }
}

/// A prefix no other lab of this or any other process uses: 't', the pid in base 36 (at most 5
/// characters) and a counter, at most 8 of [a-z0-9].
fn next_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let prefix = format!(
        "t{}{}",
        base36(std::process::id() % 60_466_176),
        base36(n % 36)
    );
    prefix.chars().take(8).collect()
}

/// Takes the shared lab down when the process exits (after the last test, passed or failed).
extern "C" fn tear_down_shared_lab() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let lab = loop {
        match SHARED.try_lock() {
            Ok(mut shared) => break shared.lab.take(),
            Err(TryLockError::Poisoned(poisoned)) => break poisoned.into_inner().lab.take(),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(50));
            }
            Err(TryLockError::WouldBlock) => {
                eprintln!("the shared test lab is still in use at exit: `cargo xtask lab down --all` removes it");
                return;
            }
        }
    };
    if let Some(lab) = lab {
        if let Err(err) = lab.down() {
            eprintln!("shared lab {} down: {err:#}", lab.prefix());
        }
    }
}

impl TestLab {
    /// A gateway of its own in the lab this test binary shares (built on first use, without
    /// Tor: [`TestLab::wait_tor`] or an agent with Tor enabled starts the network, once).
    pub fn up() -> TestLab {
        require_root();
        static AT_EXIT: Once = Once::new();
        AT_EXIT.call_once(|| {
            // SAFETY: registers a plain `extern "C" fn()`; atexit has no other preconditions.
            if unsafe { libc::atexit(tear_down_shared_lab) } != 0 {
                eprintln!("atexit failed: the shared test lab will outlive this process");
            }
        });
        let (base, slot) = {
            let mut shared = lock(&SHARED);
            let base = match &shared.lab {
                Some(lab) => lab.clone(),
                None => {
                    let lab = Lab::new(&next_prefix());
                    if let Err(err) = lab.up_base() {
                        let _ = lab.down();
                        panic!("the shared lab {} did not come up: {err:#}", lab.prefix());
                    }
                    shared.lab = Some(lab.clone());
                    lab
                }
            };
            (base, shared.claim())
        };
        let lab = base.with_slot(slot);
        // Taken before the slot exists, so nothing of this gateway's is before them.
        let modem_log_from = file_len(&lab.dnsmasq_log());
        let origin_log_from = file_len(&lab.origin_log());
        if let Err(err) = lab.up_slot() {
            let _ = lab.down_slot();
            lock(&SHARED).used.remove(&slot);
            panic!("lab {} slot {slot} did not come up: {err:#}", lab.prefix());
        }
        TestLab {
            lab,
            own: false,
            modem_log_from,
            origin_log_from,
        }
    }

    /// A lab of its own (slot 0: `<prefix>-gw`, …), for tests that stop or break what the
    /// gateways of a lab share (the Tor network, the modem's dnsmasq) or take the whole lab
    /// down. Its Tor network starts like the shared lab's, when the test first needs it.
    pub fn up_own() -> TestLab {
        require_root();
        let lab = Lab::new(&next_prefix());
        if let Err(err) = lab.up_without_tor() {
            let _ = lab.down();
            panic!("lab {} did not come up: {err:#}", lab.prefix());
        }
        TestLab {
            lab,
            own: true,
            modem_log_from: 0,
            origin_log_from: 0,
        }
    }

    /// The namespace name of `role` ("up", "gw", "lan", "c1", "c2") for this gateway.
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
        let path = self.lab.gateway_dir().join(name);
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

    /// Client addresses in the origin's access log, one per GET since this gateway came up,
    /// oldest first. Requests from the uplink subnet by addresses this gateway does not hold
    /// (other gateways of a shared lab) are left out. Requests through Tor come from the exits,
    /// whichever gateway sent them: tests in a shared lab that count those tag their URLs
    /// (a query string) and read [`TestLab::origin_requests`].
    pub fn origin_clients(&self) -> Vec<String> {
        let own = self.lab.uplink_addresses();
        self.origin_requests()
            .into_iter()
            .map(|(client, _)| client)
            .filter(|client| !client.starts_with("192.0.2.") || own.contains(client))
            .collect()
    }

    /// Every GET in the origin's access log since this gateway came up, of any gateway of the
    /// lab, as (client address, path with its query), oldest first.
    pub fn origin_requests(&self) -> Vec<(String, String)> {
        read_from(&self.lab.origin_log(), self.origin_log_from)
            .lines()
            .filter_map(|line| {
                let client = line.split_whitespace().next()?;
                let path = line.split("\"GET ").nth(1)?.split_whitespace().next()?;
                Some((client.to_string(), path.to_string()))
            })
            .collect()
    }

    /// The modem's dnsmasq log (DNS queries, DHCP) since this gateway came up. In a shared lab
    /// other gateways' lines are in it too: pick this one's by its uplink address.
    pub fn modem_log(&self) -> String {
        read_from(&self.lab.dnsmasq_log(), self.modem_log_from)
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

    /// Starts the lab's private Tor network unless it was started before (and perhaps stopped
    /// on purpose since: that is the test's to undo, with `lab_tor::start`). Returns at once;
    /// [`TestLab::wait_tor`] waits for a consensus.
    pub fn start_tor(&self) {
        let _one_at_a_time = lock(&TOR_START);
        if lab_tor::ever_started(&self.lab) {
            return;
        }
        lab_tor::setup(&self.lab)
            .and_then(|()| lab_tor::start(&self.lab))
            .unwrap_or_else(|err| panic!("lab {}: starting Tor: {err:#}", self.lab.prefix()));
    }

    /// Waits until the lab's private Tor network (started first if it never was) has a fresh
    /// consensus listing every node (bounded by [`lab_tor::READY_TIMEOUT`]); returns how long
    /// that took.
    pub fn wait_tor(&self) -> Duration {
        self.start_tor();
        lab_tor::wait_ready(&self.lab, lab_tor::READY_TIMEOUT)
            .unwrap_or_else(|err| panic!("lab {}: {err:#}", self.lab.prefix()))
    }

    /// Waits until the lab's onion service has published its descriptor (bounded by
    /// [`lab_tor::ONION_TIMEOUT`]); returns how long that took.
    pub fn wait_onion(&self) -> Duration {
        self.start_tor();
        lab_tor::wait_onion(&self.lab, lab_tor::ONION_TIMEOUT)
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
        if self.own {
            if let Err(err) = self.lab.down() {
                eprintln!("lab {} down: {err:#}", self.lab.prefix());
            }
            return;
        }
        if let Err(err) = self.lab.down_slot() {
            eprintln!(
                "lab {} slot {} down: {err:#}",
                self.lab.prefix(),
                self.lab.slot()
            );
        }
        lock(&SHARED).used.remove(&self.lab.slot());
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
    /// Starts the agent with `config` and waits until its control socket answers. A config
    /// with Tor enabled starts the lab's Tor network first if it never ran.
    pub fn start(lab: &TestLab, config: &Path) -> Agent {
        if tor_enabled(config) {
            lab.start_tor();
        }
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
        let file = lab.lab.gateway_dir().join(format!("{name}.pcap"));
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

/// Whether the agent runs Tor with `config` (`tor.enabled`, true unless set to false).
fn tor_enabled(config: &Path) -> bool {
    let text = std::fs::read_to_string(config)
        .unwrap_or_else(|err| panic!("reading {}: {err}", config.display()));
    let value: toml::Value = toml::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not TOML: {err}", config.display()));
    value
        .get("tor")
        .and_then(|tor| tor.get("enabled"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(true)
}

/// The length of a file, 0 if it does not exist.
fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// A log from byte `from` on, starting at a line: a partial line at `from` belongs to before.
fn read_from(path: &Path, from: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let start = from.saturating_sub(1);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = if from == 0 {
        &bytes[..]
    } else {
        // One byte before `from`: a newline there means `from` starts a line.
        match bytes.iter().position(|&b| b == b'\n') {
            Some(newline) => &bytes[newline + 1..],
            None => &[][..],
        }
    };
    String::from_utf8_lossy(text).into_owned()
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
