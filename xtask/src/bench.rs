//! `cargo xtask bench dns|dhcp|tor|registry`: the agent and its established peer, side by side in one run,
//! same lab, same client, same load; results as ratios in `bench/RESULTS.md`.
//!
//! Everything runs inside a lab of its own (prefix `bench`): the load generators send only to
//! the gateway's inside address in that lab.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::lab::tor as lab_tor;
use crate::{build, deps, lab, process};

mod registry;

/// Debian packages the benchmarks drive.
pub const BENCH_PACKAGES: &[&str] = &["dnsperf", "kea-dhcp4-server", "kea-admin"];

/// The benchmark lab's prefix.
const PREFIX: &str = "bench";
/// How long each measured run lasts.
const RUN_SECS: u64 = 10;
/// Local names in the zone, the same for both servers.
const LOCAL_NAMES: u32 = 40;

/// One server's numbers.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    /// What was measured.
    pub server: String,
    /// Answers or exchanges per second.
    pub rate: f64,
    /// 99th percentile latency, milliseconds (None when the tool does not report one).
    pub p99_ms: Option<f64>,
    /// Average latency, milliseconds.
    pub avg_ms: Option<f64>,
    /// Peak resident memory of the server process, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Requests that got no answer.
    pub lost: u64,
}

/// Runs the DNS or DHCP benchmark and records it in `bench/RESULTS.md`.
pub fn run(which: &str) -> Result<()> {
    deps::require_root("the benchmarks")?;
    deps::ensure_all()?;
    deps::ensure_packages(BENCH_PACKAGES, "for the benchmarks")?;
    if which == "registry" {
        registry::ensure_package()?;
    }
    let agent = build::build_agent(true)?;
    let lab = lab::Lab::new(PREFIX);
    lab.down()?;
    lab.up()?;
    let result = match which {
        "dns" => dns(&lab, &agent),
        "dhcp" => dhcp(&lab, &agent),
        "tor" => tor(&lab, &agent),
        "registry" => registry::registry(&lab, &agent),
        other => Err(anyhow::anyhow!(
            "no benchmark {other:?}; try dns, dhcp, tor or registry"
        )),
    };
    let down = lab.down();
    let (title, rows, notes) = result?;
    down?;
    record(&title, &rows, &notes)
}

type Report = (String, Vec<Measurement>, String);

fn dns(lab: &lab::Lab, agent: &Path) -> Result<Report> {
    let state = lab.state_dir();
    let client = lab.ns("c1");
    let gw = lab.ns("gw");
    ensure_client_address(lab)?;
    let mut reservations = String::new();
    let mut host_records = Vec::new();
    for i in 0..LOCAL_NAMES {
        let ip = format!("198.51.100.{}", 20 + i);
        let _ = write!(
            reservations,
            "[[dhcp.reservations]]\nmac = \"02:00:00:00:01:{i:02x}\"\naddress = \"{ip}\"\nname = \"h{i}\"\n"
        );
        host_records.push(format!("--host-record=h{i}.home.arpa,{ip}"));
    }
    let config = bench_config(
        lab,
        &format!(
            "[dns]\nupstream = \"uplink\"\nupstream_servers = [\"{}\"]\nrate_limit = 1000000\n{reservations}",
            lab::MODEM_IP
        ),
    )?;
    // Local names and one forwarded name (cached after its first query), interleaved.
    let mut queries = String::new();
    for i in 0..LOCAL_NAMES {
        let _ = writeln!(queries, "h{i}.home.arpa A");
        let _ = writeln!(queries, "{} A", lab::ORIGIN_NAME);
    }
    let query_file = state.join("queries.txt");
    std::fs::write(&query_file, queries).context("writing the query file")?;

    let mut rows = Vec::new();
    {
        let server = Server::agent(&gw, agent, &config)?;
        wait_dns(&client)?;
        let mut m = dnsperf(&client, &query_file)?;
        m.server = "gateway-agent".into();
        m.peak_rss_kib = server.rss_kib("VmHWM");
        rows.push(m);
    }
    {
        let pid = state.join("bench-dnsmasq.pid");
        let mut args = vec![
            "dnsmasq".to_string(),
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            format!("--listen-address={}", lab::GATEWAY_INSIDE_IP),
            "--bind-interfaces".into(),
            format!("--server={}", lab::MODEM_IP),
            "--cache-size=10000".into(),
            "--user=root".into(),
            format!("--pid-file={}", pid.display()),
        ];
        args.extend(host_records);
        let server = Server::spawn(&gw, &args)?;
        wait_dns(&client)?;
        let mut m = dnsperf(&client, &query_file)?;
        m.server = "dnsmasq".into();
        m.peak_rss_kib = server.rss_kib("VmHWM");
        rows.push(m);
    }
    let notes = format!(
        "dnsperf -c 4 for {RUN_SECS} s from c1 against 198.51.100.1:53; the query file interleaves \
         {LOCAL_NAMES} local names (`hN.home.arpa`) with one forwarded name (`{}`) that both \
         servers answer from their cache after the first query. Same zone data, same upstream \
         (the modem's dnsmasq), same namespace and address; the agent runs with its XDP program \
         attached, dnsmasq after the agent stopped.",
        lab::ORIGIN_NAME
    );
    Ok(("DNS (dnsperf)".into(), rows, notes))
}

fn dhcp(lab: &lab::Lab, agent: &Path) -> Result<Report> {
    let state = lab.state_dir();
    let client = lab.ns("c1");
    let gw = lab.ns("gw");
    ensure_client_address(lab)?;
    let config = bench_config(
        lab,
        "[dhcp]\naccept_relayed = true\npool = \"198.51.100.20-198.51.100.250\"\nlease_time = \"1h\"\nrate_limit = 100000\n",
    )?;
    let mut rows = Vec::new();
    {
        let server = Server::agent(&gw, agent, &config)?;
        thread::sleep(Duration::from_secs(1));
        let mut m = perfdhcp(&client)?;
        m.server = "gateway-agent".into();
        m.peak_rss_kib = server.rss_kib("VmHWM");
        rows.push(m);
    }
    {
        let kea_conf = state.join("kea-dhcp4.json");
        let leases = state.join("kea-leases4.csv");
        let lock_dir = state.join("kea-run");
        std::fs::create_dir_all(&lock_dir).context("creating Kea's run dir")?;
        std::fs::write(&kea_conf, kea_config(&leases)).context("writing Kea's config")?;
        let args = [
            "env".to_string(),
            format!("KEA_LOCKFILE_DIR={}", lock_dir.display()),
            format!("KEA_PIDFILE_DIR={}", lock_dir.display()),
            "kea-dhcp4".into(),
            "-c".into(),
            kea_conf.display().to_string(),
        ];
        let server = Server::spawn(&gw, &args)?;
        thread::sleep(Duration::from_secs(2));
        let mut m = perfdhcp(&client)?;
        m.server = "kea-dhcp4 (memfile)".into();
        m.peak_rss_kib = server.rss_kib("VmHWM");
        rows.push(m);
    }
    let notes = format!(
        "perfdhcp -4 -r {PERFDHCP_RATE} -R 200 for {RUN_SECS} s from c1, acting as a relay \
         (giaddr = c1) towards 198.51.100.1:67; both servers accept relayed requests, hand out \
         198.51.100.20-250 with 1 h leases. The agent commits leases to redb with an fsync before \
         it acknowledges them (crash safety is a requirement), one commit for all the requests \
         that queued up meanwhile; Kea's memfile appends to its CSV without an fsync. perfdhcp \
         reports no percentile, only the average. The agent runs with its XDP program attached, \
         Kea after the agent stopped."
    );
    Ok(("DHCP (perfdhcp)".into(), rows, notes))
}

/// Size of the object fetched through Tor.
const TOR_OBJECT_BYTES: usize = 10 << 20;
/// Timed fetches per client, interleaved between the two; the median is reported.
const TOR_RUNS: usize = 7;
/// The C-tor client's SOCKS port, on the gateway's inside address.
const C_TOR_SOCKS_PORT: u16 = 9150;

fn tor(lab: &lab::Lab, agent: &Path) -> Result<Report> {
    let state = lab.state_dir();
    let gw = lab.ns("gw");
    let client = lab.ns("c1");
    ensure_client_address(lab)?;
    lab_tor::wait_ready(lab, lab_tor::READY_TIMEOUT)?;
    // The object: random bytes, so no compression anywhere can flatter either side.
    let object = state.join("www").join("10m.bin");
    let mut bytes = vec![0u8; TOR_OBJECT_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading random bytes")?;
    std::fs::write(&object, &bytes).context("writing the 10 MiB object")?;
    let url = format!("http://{}/10m.bin", lab::ORIGIN_NAME);

    // The agent's footprint without Tor, for the share Tor adds.
    let no_tor = bench_config(
        lab,
        "[tor]\nenabled = false\n[dns]\nupstream = \"uplink\"\n",
    )?;
    let baseline = Server::agent(&gw, agent, &no_tor)?;
    thread::sleep(Duration::from_secs(2));
    let rss_without_tor = baseline.rss_kib("VmRSS");
    drop(baseline);

    // The C-tor client's port must pass the agent's XDP program.
    let base = std::fs::read_to_string(lab.agent_config()).context("reading the lab config")?;
    let config = state.join("bench.toml");
    std::fs::write(
        &config,
        base.replace(
            "allow = []",
            &format!("allow = [\"tcp/{C_TOR_SOCKS_PORT}\"]"),
        ),
    )
    .context("writing the bench config")?;
    let server = Server::agent(&gw, agent, &config)?;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let status = process::ns_output(
            &gw,
            &agent.display().to_string(),
            [
                "--config",
                &config.display().to_string(),
                "status",
                "--json",
            ],
        )
        .unwrap_or_default();
        if status.contains("\"bootstrapped\": true") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the agent's Tor did not bootstrap");
        }
        thread::sleep(Duration::from_secs(1));
    }

    let data = state.join("bench-ctor");
    // tor refuses a DataDirectory others can read.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&data)
        .context("creating the C-tor client's data dir")?;
    let torrc = lab_tor::client_torrc(lab, &data, C_TOR_SOCKS_PORT)?.replace(
        &format!("SocksPort 127.0.0.1:{C_TOR_SOCKS_PORT}"),
        &format!("SocksPort {}:{C_TOR_SOCKS_PORT}", lab::GATEWAY_INSIDE_IP),
    );
    let torrc_path = data.join("torrc");
    std::fs::write(&torrc_path, torrc).context("writing the C-tor client's torrc")?;
    let ctor = Server::spawn(
        &gw,
        &[
            "tor".into(),
            "-f".into(),
            torrc_path.display().to_string(),
            "--RunAsDaemon".into(),
            "0".into(),
        ],
    )?;
    let log = data.join("notice.log");
    let deadline = Instant::now() + Duration::from_secs(180);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Bootstrapped 100%")
    {
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            bail!("the C-tor client did not bootstrap: {tail:?}");
        }
        thread::sleep(Duration::from_secs(1));
    }

    let rss_bootstrapped = [server.rss_kib("VmRSS"), ctor.rss_kib("VmRSS")];
    let proxies = [9050, C_TOR_SOCKS_PORT].map(|port| format!("{}:{port}", lab::GATEWAY_INSIDE_IP));
    let Timed {
        samples,
        cpu_per_fetch,
    } = fetch_interleaved(&client, &proxies, [server.pid(), ctor.pid()], &url)?;
    let mut rows = Vec::new();
    for ((name, process), samples) in [("gateway-agent (arti)", &server), ("tor (C) client", &ctor)]
        .into_iter()
        .zip(samples)
    {
        let mut m = median_of(&samples);
        m.server = name.into();
        m.peak_rss_kib = process.rss_kib("VmHWM");
        rows.push(m);
    }
    drop(ctor);
    drop(server);
    let mib =
        |kib: Option<u64>| kib.map_or("?".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    let ms = |secs: Option<f64>| secs.map_or("?".to_string(), |s| format!("{:.0}", s * 1000.0));
    let notes = format!(
        "A 10 MiB object from the lab's origin, by name through the lab's private Tor network \
         (3 authorities, 3 relays, 3 exits on one host), fetched with curl --socks5-hostname \
         from c1: through the agent's SOCKS port and through a C-tor client's SocksPort on the \
         same gateway address. \"per second\" is MiB/s and \"avg ms\" the time to first byte, each \
         the median of {TOR_RUNS} fetches, the two clients taking turns after one warm-up each; \
         circuits differ from fetch to fetch, so expect noise. Peak RSS is the agent's whole \
         process (Tor, plus its DNS, DHCP and other services) against the C-tor client alone.\n\n\
         Memory with Tor bootstrapped, before any fetch (VmRSS, MiB): the agent {} (the same \
         agent with tor.enabled = false: {}), the C-tor client {}. CPU time per 10 MiB fetch \
         (user + system, averaged over the timed fetches): the agent {} ms, the C-tor client {} \
         ms. A fetch takes about a second, so neither is CPU-bound: the throughput gap is not the \
         agent's copying (perf shows arti's reactor and memcpy, a fifth of a core) but how fast \
         the stream is fed through the circuit.",
        mib(rss_bootstrapped[0]),
        mib(rss_without_tor),
        mib(rss_bootstrapped[1]),
        ms(cpu_per_fetch[0]),
        ms(cpu_per_fetch[1]),
    );
    Ok(("Tor (10 MiB through SOCKS)".into(), rows, notes))
}

/// One timed fetch: (time to first byte in seconds, bytes per second).
type Fetch = (f64, f64);

/// The timed fetches through each of two proxies, and each serving process's CPU time per fetch.
struct Timed {
    samples: [Vec<Fetch>; 2],
    cpu_per_fetch: [Option<f64>; 2],
}

/// One fetch of `url` through the SOCKS `proxy` from `client`: (time to first byte in
/// seconds, bytes per second), or `None` if it failed.
fn fetch_once(client: &str, proxy: &str, url: &str) -> Option<(f64, f64)> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            client,
            "curl",
            "-s",
            "-f",
            "-o",
            "/dev/null",
        ])
        .args(["-m", "120", "-w", "%{time_starttransfer} %{speed_download}"])
        .args(["--socks5-hostname", proxy, url])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = text.split_whitespace();
    let ttfb = parts.next()?.parse::<f64>().ok()?;
    let speed = parts.next()?.parse::<f64>().ok()?;
    Some((ttfb, speed))
}

/// One warm-up fetch through each proxy (retried while the first circuits are built), then
/// [`TOR_RUNS`] timed rounds in which the proxies take turns, so that a slow moment of the
/// shared host hits both. The samples, per proxy.
fn fetch_interleaved(
    client: &str,
    proxies: &[String; 2],
    pids: [u32; 2],
    url: &str,
) -> Result<Timed> {
    for proxy in proxies {
        let deadline = Instant::now() + Duration::from_secs(120);
        while fetch_once(client, proxy, url).is_none() {
            if Instant::now() > deadline {
                bail!("no fetch through {proxy} succeeded");
            }
            thread::sleep(Duration::from_secs(2));
        }
    }
    let mut samples = [Vec::new(), Vec::new()];
    let mut cpu = [Some(0.0), Some(0.0)];
    for _ in 0..TOR_RUNS {
        for i in 0..2 {
            let before = cpu_seconds(pids[i]);
            samples[i].push(
                fetch_once(client, &proxies[i], url)
                    .with_context(|| format!("a timed fetch through {} failed", proxies[i]))?,
            );
            let spent = cpu_seconds(pids[i]).zip(before).map(|(a, b)| a - b);
            cpu[i] = cpu[i].zip(spent).map(|(sum, s)| sum + s);
        }
    }
    Ok(Timed {
        samples,
        cpu_per_fetch: cpu.map(|total| total.map(|t| t / TOR_RUNS as f64)),
    })
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_seconds_of(&stat)
}

/// utime + stime of a /proc/<pid>/stat line, in seconds. The fields are counted after the
/// command name, which is in parentheses and may itself hold spaces.
fn cpu_seconds_of(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}

/// The medians of (time to first byte, speed) samples, as MiB/s and milliseconds.
fn median_of(samples: &[(f64, f64)]) -> Measurement {
    let mut ttfb: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let mut speed: Vec<f64> = samples.iter().map(|s| s.1).collect();
    ttfb.sort_by(f64::total_cmp);
    speed.sort_by(f64::total_cmp);
    Measurement {
        rate: percentile(&speed, 0.5).unwrap_or(0.0) / f64::from(1u32 << 20),
        avg_ms: percentile(&ttfb, 0.5).map(|t| t * 1000.0),
        ..Default::default()
    }
}

fn kea_config(leases: &Path) -> String {
    format!(
        r#"{{ "Dhcp4": {{
  "interfaces-config": {{ "interfaces": [ "{inside}/{gw}" ], "dhcp-socket-type": "udp" }},
  "lease-database": {{ "type": "memfile", "persist": true, "name": "{leases}", "lfc-interval": 0 }},
  "valid-lifetime": 3600,
  "subnet4": [ {{ "id": 1, "subnet": "198.51.100.0/24",
     "pools": [ {{ "pool": "198.51.100.20 - 198.51.100.250" }} ],
     "option-data": [ {{ "name": "routers", "data": "{gw}" }},
                      {{ "name": "domain-name-servers", "data": "{gw}" }} ] }} ],
  "loggers": [ {{ "name": "kea-dhcp4", "severity": "WARN",
     "output_options": [ {{ "output": "stderr" }} ] }} ]
}} }}"#,
        inside = lab::INSIDE_IF,
        gw = lab::GATEWAY_INSIDE_IP,
        leases = leases.display(),
    )
}

/// The lab's agent config with `extra` appended (as new tables).
fn bench_config(lab: &lab::Lab, extra: &str) -> Result<PathBuf> {
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
fn ensure_client_address(lab: &lab::Lab) -> Result<()> {
    let c1 = lab.ns("c1");
    process::ns_run(
        &c1,
        "ip",
        ["addr", "replace", "198.51.100.11/24", "dev", "eth0"],
    )
}

/// A server process in a namespace, stopped when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn agent(ns: &str, agent: &Path, config: &Path) -> Result<Server> {
        let args = [
            agent.display().to_string(),
            "--config".into(),
            config.display().to_string(),
            "run".into(),
        ];
        let server = Server::spawn(ns, &args)?;
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

    fn spawn(ns: &str, args: &[String]) -> Result<Server> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {args:?}"))?;
        Ok(Server { child })
    }

    /// The process id (`ip netns exec` execs, so it is the server's).
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A memory field of the process's /proc status, KiB: `VmRSS` now, `VmHWM` at peak
    /// (`ip netns exec` execs, so the child's pid is the server's).
    fn rss_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let prefix = format!("{field}:");
        status
            .lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first: the agent detaches its programs and the next server gets the address.
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

fn wait_dns(client: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if process::ns_run_ok(
            client,
            "dig",
            [
                "+time=1",
                "+tries=1",
                "+short",
                "@198.51.100.1",
                "h1.home.arpa",
            ],
        ) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(200));
    }
    bail!("the DNS server under test does not answer")
}

fn dnsperf(client: &str, queries: &Path) -> Result<Measurement> {
    let secs = RUN_SECS.to_string();
    let out = process::ns_output(
        client,
        "dnsperf",
        [
            "-s",
            lab::GATEWAY_INSIDE_IP,
            "-d",
            &queries.display().to_string(),
            "-c",
            "4",
            "-l",
            &secs,
            "-v",
        ],
    )?;
    parse_dnsperf(&out)
}

/// Reads dnsperf's summary and, from `-v`'s per-query lines, the latency percentile.
pub fn parse_dnsperf(out: &str) -> Result<Measurement> {
    let field = |name: &str| -> Option<f64> {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let rate = field("Queries per second").context("dnsperf printed no QPS")?;
    let lost = field("Queries lost").unwrap_or(0.0) as u64;
    let avg_ms = field("Average Latency (s)").map(|s| s * 1000.0);
    // `-v` lines end in the latency in seconds, e.g. "> NOERROR h1.home.arpa A 0.000123".
    let mut latencies: Vec<f64> = out
        .lines()
        .filter(|l| l.starts_with('>'))
        .filter_map(|l| l.split_whitespace().last())
        .filter_map(|v| v.parse::<f64>().ok())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let p99_ms = percentile(&latencies, 0.99).map(|s| s * 1000.0);
    Ok(Measurement {
        rate,
        p99_ms,
        avg_ms,
        lost,
        ..Default::default()
    })
}

/// Exchanges a second perfdhcp offers: more than either server keeps up with here, so the
/// ratio compares capacities rather than hitting the cap.
const PERFDHCP_RATE: u32 = 20000;

fn perfdhcp(client: &str) -> Result<Measurement> {
    let secs = RUN_SECS.to_string();
    let rate = PERFDHCP_RATE.to_string();
    let out = Command::new("ip")
        .args([
            "netns", "exec", client, "perfdhcp", "-4", "-r", &rate, "-R", "200",
        ])
        .args(["-p", &secs, "-l", "eth0", lab::GATEWAY_INSIDE_IP])
        .output()
        .context("running perfdhcp")?;
    // perfdhcp exits non-zero when it saw drops; the numbers are still what we want.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_perfdhcp(&text)
}

/// Reads perfdhcp's rate and the request (DO-RA second half) latency.
pub fn parse_perfdhcp(out: &str) -> Result<Measurement> {
    let rate = out
        .lines()
        .find(|l| l.trim_start().starts_with("Rate:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .context("perfdhcp printed no rate")?;
    // The "Statistics for: REQUEST-ACK" block has avg and std deviations; no percentile.
    let block = out.split("Statistics for:").nth(2).unwrap_or("");
    let avg_ms = block
        .lines()
        .find(|l| l.trim_start().starts_with("avg delay:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok());
    let lost = block
        .lines()
        .find(|l| l.trim_start().starts_with("drops:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Measurement {
        rate,
        avg_ms,
        lost,
        ..Default::default()
    })
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

/// Replaces this benchmark's section of `bench/RESULTS.md`.
fn record(title: &str, rows: &[Measurement], notes: &str) -> Result<()> {
    let path = build::workspace_root().join("bench").join("RESULTS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmarks\n\nProduced by `cargo xtask bench …`; each section is replaced by its last run.\n"
            .to_string()
    });
    let mut section = format!("\n## {title}\n\n");
    let _ = writeln!(
        section,
        "Run on {} ({} cores).\n",
        date(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    section.push_str("| server | per second | p99 ms | avg ms | peak RSS MiB | unanswered |\n");
    section.push_str("|---|---|---|---|---|---|\n");
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    for m in rows {
        let rate = if m.rate < 100.0 {
            format!("{:.2}", m.rate)
        } else {
            format!("{:.0}", m.rate)
        };
        let _ = writeln!(
            section,
            "| {} | {rate} | {} | {} | {} | {} |",
            m.server,
            fmt(m.p99_ms),
            fmt(m.avg_ms),
            m.peak_rss_kib
                .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            m.lost
        );
    }
    if let [ours, peer] = rows {
        if peer.rate > 0.0 {
            let _ = writeln!(
                section,
                "\nRatio gateway-agent / {}: **{:.2}x** the rate.",
                peer.server,
                ours.rate / peer.rate
            );
        }
    }
    let _ = writeln!(section, "\n{notes}");
    // Replace the old section of the same title, keep the others.
    let marker = format!("\n## {title}\n");
    let updated = match existing.find(&marker) {
        Some(start) => {
            let rest = &existing[start + marker.len()..];
            let end = rest
                .find("\n## ")
                .map_or(existing.len(), |i| start + marker.len() + i);
            format!("{}{}{}", &existing[..start], section, &existing[end..])
        }
        None => format!(
            "{}{}",
            existing.trim_end_matches('\n').to_string() + "\n",
            section
        ),
    };
    std::fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
    println!("{section}");
    eprintln!("xtask: results in {}", path.display());
    Ok(())
}

fn date() -> String {
    process::output("date", ["-u", "+%Y-%m-%d %H:%M UTC"])
        .map(|d| d.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&[], 0.99), None);
    }

    #[test]
    fn cpu_time_from_proc_stat() {
        // SAFETY: sysconf has no memory preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let line = "42 (tor (main) x) S 1 42 42 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 1 0 99 \
                    1000 10 18446744073709551615";
        assert_eq!(cpu_seconds_of(line), Some(200.0 / hz));
        assert_eq!(cpu_seconds_of("garbage"), None);
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn medians_of_fetches() {
        let samples = [(0.5, 3.0), (0.1, 1.0), (0.3, 2.0)].map(|(t, mib)| (t, mib * 1048576.0));
        let m = median_of(&samples);
        assert_eq!(m.rate, 2.0);
        assert_eq!(m.avg_ms, Some(300.0));
        assert_eq!(median_of(&[]).rate, 0.0);
    }

    #[test]
    fn dnsperf_summary() {
        let out = "> NOERROR h1.home.arpa A 0.000100\n> NOERROR h2.home.arpa A 0.000300\n\
                   Statistics:\n\n  Queries sent:         2\n  Queries completed:    2 (100.00%)\n\
                   \x20 Queries lost:         0 (0.00%)\n\n  Queries per second:   51234.5\n\n\
                   \x20 Average Latency (s):  0.000200 (min 0.000100, max 0.000300)\n";
        let m = parse_dnsperf(out).unwrap_or_default();
        assert_eq!(m.rate, 51234.5);
        assert_eq!(m.lost, 0);
        assert!(m.avg_ms.is_some_and(|v| (v - 0.2).abs() < 1e-9));
        assert!(m.p99_ms.is_some_and(|v| (v - 0.3).abs() < 1e-9));
    }
}
