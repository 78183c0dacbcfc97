//! Tor: a 10 MiB fetch through the agent's SOCKS port (arti) against a C-tor client, both on
//! the lab's private Tor network.

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::results::{percentile, spread};
use super::server::{
    bench_config, client_reservation, ensure_client_address, lease_client_address, Server,
};
use super::{Measurement, Report};
use crate::lab;
use crate::lab::tor as lab_tor;

/// Size of the object fetched through Tor.
const TOR_OBJECT_BYTES: usize = 10 << 20;
/// Timed fetches per client, interleaved between the two; the median is reported.
const TOR_RUNS: usize = 7;
/// The C-tor client's SOCKS port, on the gateway's inside address.
const C_TOR_SOCKS_PORT: u16 = 9150;
/// The second C-tor client's, the one with conflux off (`ConfluxEnabled 0`): arti 0.47 has no
/// conflux for exit streams, C tor links two circuits per stream by default.
const C_TOR_NO_CONFLUX_PORT: u16 = 9151;

pub(super) fn run(lab: &lab::Lab, agent: &Path) -> Result<Report> {
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

    // The C-tor clients' ports must pass the agent's XDP program, and c1 its IP source guard:
    // c1 takes its reserved lease once the agent runs.
    let base = std::fs::read_to_string(lab.agent_config()).context("reading the lab config")?;
    let config = state.join("bench.toml");
    std::fs::write(
        &config,
        base.replace(
            "allow = []",
            &format!("allow = [\"tcp/{C_TOR_SOCKS_PORT}\", \"tcp/{C_TOR_NO_CONFLUX_PORT}\"]"),
        ) + &client_reservation(lab)?,
    )
    .context("writing the bench config")?;
    let server = Server::agent(&gw, agent, &config)?;
    lease_client_address(lab)?;
    server.wait_tor_bootstrapped(Duration::from_secs(240))?;

    let ctor = start_c_tor(lab, &gw, "bench-ctor", C_TOR_SOCKS_PORT, "")?;
    let ctor_plain = start_c_tor(
        lab,
        &gw,
        "bench-ctor-noconflux",
        C_TOR_NO_CONFLUX_PORT,
        "ConfluxEnabled 0\n",
    )?;

    // What the C-tor client was told: the consensus parameters and the relays' protocols.
    let consensus =
        std::fs::read_to_string(state.join("bench-ctor").join("cached-microdesc-consensus"))
            .map_or_else(
                |err| format!("the C-tor client's consensus could not be read: {err}"),
                |text| consensus_summary(&text),
            );
    let rss_bootstrapped = [
        server.rss_kib("VmRSS"),
        ctor.rss_kib("VmRSS"),
        ctor_plain.rss_kib("VmRSS"),
    ];
    let proxies = [9050, C_TOR_SOCKS_PORT, C_TOR_NO_CONFLUX_PORT]
        .map(|port| format!("{}:{port}", lab::GATEWAY_INSIDE_IP));
    let Timed {
        samples,
        cpu_per_fetch,
    } = fetch_interleaved(
        &client,
        &proxies,
        [server.pid(), ctor.pid(), ctor_plain.pid()],
        &url,
    )?;
    let mut rows = Vec::new();
    for ((name, process), samples) in [
        ("gateway-agent (arti)", &server),
        ("tor (C) client", &ctor),
        ("tor (C) client, ConfluxEnabled 0", &ctor_plain),
    ]
    .into_iter()
    .zip(&samples)
    {
        let mut m = median_of(samples);
        m.server = name.into();
        m.peak_rss_kib = process.rss_kib("VmHWM");
        rows.push(m);
    }
    drop(ctor_plain);
    drop(ctor);
    drop(server);
    let ratio = |i: usize| {
        let peer = rows[i].rate;
        if peer > 0.0 {
            format!("{:.2}x", rows[0].rate / peer)
        } else {
            "?".into()
        }
    };
    let (vs_default, vs_plain) = (ratio(1), ratio(2));
    let fetches = fetch_lines(&rows, &samples);
    let mib =
        |kib: Option<u64>| kib.map_or("?".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    let ms = |secs: Option<f64>| secs.map_or("?".to_string(), |s| format!("{:.0}", s * 1000.0));
    let notes = format!(
        "A 10 MiB object from the lab's origin, by name through the lab's private Tor network \
         (3 authorities, 3 relays, 3 exits on one host), fetched with curl --socks5-hostname \
         from c1: through the agent's SOCKS port and through a C-tor client's SocksPort on the \
         same gateway address. \"per second\" is MiB/s and \"avg ms\" the time to first byte, each \
         the median of {TOR_RUNS} fetches, the three clients taking turns after one warm-up \
         each; circuits differ from fetch to fetch, so expect noise. Peak RSS is the agent's \
         whole process (Tor, plus its DNS, DHCP and other services) against a C-tor client \
         alone.\n\n\
         Each client's fetches, MiB/s: the median (min–max), then each in the order taken:\n\
         {fetches}\n\n\
         Ratio gateway-agent / tor (C) client: **{vs_default}** the rate; against the C-tor \
         client with conflux off: **{vs_plain}**. C tor (0.4.9) links two circuits to one exit \
         per stream by default (conflux, proposal 329: ConfluxEnabled auto, and cfx_enabled \
         defaults to 1 where the consensus does not set it) and the exit spreads the stream \
         over both, about two congestion windows; arti 0.47 negotiates congestion control \
         (Vegas) with the lab's relays as C tor does (with \
         `RUST_LOG=tor_proto::client::reactor::circuit::extender=trace` the agent logs `alg: \
         Vegas` for every hop it extends to), but builds no conflux sets for exit streams (its \
         conflux is experimental and unused there), and no arti setting changes that. The lab's consensus, as the C-tor \
         client holds it: {consensus}\n\n\
         Memory with Tor bootstrapped, before any fetch (VmRSS, MiB): the agent {} (the same \
         agent with tor.enabled = false: {}), the C-tor clients {} and {}. CPU time per 10 MiB \
         fetch (user + system, averaged over the timed fetches): the agent {} ms, the C-tor \
         clients {} and {} ms. Neither is CPU-bound: the limit is how fast the exit feeds the \
         circuit(s).",
        mib(rss_bootstrapped[0]),
        mib(rss_without_tor),
        mib(rss_bootstrapped[1]),
        mib(rss_bootstrapped[2]),
        ms(cpu_per_fetch[0]),
        ms(cpu_per_fetch[1]),
        ms(cpu_per_fetch[2]),
    );
    Ok(("Tor (10 MiB through SOCKS)".into(), rows, notes))
}

/// One timed fetch: (time to first byte in seconds, bytes per second).
type Fetch = (f64, f64);

/// One line a client: its fetches' MiB/s, the median (min–max) and each in the order taken,
/// so drift and outliers show.
fn fetch_lines(rows: &[Measurement], samples: &[Vec<Fetch>]) -> String {
    let mut out = Vec::new();
    for (row, fetches) in rows.iter().zip(samples) {
        let rates: Vec<f64> = fetches
            .iter()
            .map(|f| f.1 / f64::from(1u32 << 20))
            .collect();
        let each: Vec<String> = rates.iter().map(|r| format!("{r:.1}")).collect();
        out.push(format!(
            "- {}: {}; {}",
            row.server,
            spread(&rates, 2),
            each.join(", ")
        ));
    }
    out.join("\n")
}

/// What a microdescriptor consensus says about congestion control and conflux: its `params`
/// line (the parameters absent from it take C tor's defaults: `cc_alg` 2, Vegas, and
/// `cfx_enabled` 1) and how many relays list `FlowCtrl=2` (congestion control, proposal 324)
/// and `Conflux=1` among their protocols.
fn consensus_summary(text: &str) -> String {
    let params = text
        .lines()
        .find_map(|l| l.strip_prefix("params "))
        .unwrap_or("(none)");
    let relays = text.lines().filter(|l| l.starts_with("r ")).count();
    let supports = |name: &str, version: u32| {
        text.lines()
            .filter_map(|l| l.strip_prefix("pr "))
            .filter(|pr| {
                pr.split_whitespace()
                    .filter_map(|entry| entry.strip_prefix(name)?.strip_prefix('='))
                    .any(|versions| protocol_has(versions, version))
            })
            .count()
    };
    format!(
        "`params {params}`; of its {relays} relays, {} list FlowCtrl=2 and {} Conflux=1.",
        supports("FlowCtrl", 2),
        supports("Conflux", 1)
    )
}

/// Whether a protocol entry's versions (`1-2`, `1,3-4`, `2`) include `version`.
fn protocol_has(versions: &str, version: u32) -> bool {
    versions.split(',').any(|range| {
        let (low, high) = range.split_once('-').unwrap_or((range, range));
        matches!((low.parse::<u32>(), high.parse::<u32>()), (Ok(l), Ok(h)) if (l..=h).contains(&version))
    })
}

/// A C-tor client in `gw` with its data in the lab's `name` folder and its SOCKS port on the
/// gateway's inside address, `extra` appended to its torrc; waits until it bootstrapped.
fn start_c_tor(lab: &lab::Lab, gw: &str, name: &str, port: u16, extra: &str) -> Result<Server> {
    let data = lab.state_dir().join(name);
    // tor refuses a DataDirectory others can read.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&data)
        .context("creating the C-tor client's data dir")?;
    let torrc = lab_tor::client_torrc(lab, &data, port)?.replace(
        &format!("SocksPort 127.0.0.1:{port}"),
        &format!("SocksPort {}:{port}", lab::GATEWAY_INSIDE_IP),
    );
    let torrc_path = data.join("torrc");
    std::fs::write(&torrc_path, format!("{torrc}{extra}"))
        .context("writing the C-tor client's torrc")?;
    let ctor = Server::spawn(
        gw,
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
            bail!("the C-tor client {name} did not bootstrap: {tail:?}");
        }
        thread::sleep(Duration::from_secs(1));
    }
    Ok(ctor)
}

/// The timed fetches through each proxy, and each serving process's CPU time per fetch.
struct Timed<const N: usize> {
    samples: [Vec<Fetch>; N],
    cpu_per_fetch: [Option<f64>; N],
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
/// shared host hits all. The samples, per proxy.
fn fetch_interleaved<const N: usize>(
    client: &str,
    proxies: &[String; N],
    pids: [u32; N],
    url: &str,
) -> Result<Timed<N>> {
    for proxy in proxies {
        let deadline = Instant::now() + Duration::from_secs(120);
        while fetch_once(client, proxy, url).is_none() {
            if Instant::now() > deadline {
                bail!("no fetch through {proxy} succeeded");
            }
            thread::sleep(Duration::from_secs(2));
        }
    }
    let mut samples = std::array::from_fn(|_| Vec::new());
    let mut cpu = [Some(0.0); N];
    for _ in 0..TOR_RUNS {
        for i in 0..N {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn consensus_protocols() {
        let text = "network-status-version 3 microdesc\n\
                    params cc_alg=2 hsdir_interval=8\n\
                    r exit1 AAAA 2026-12-02 01:00:00 203.0.113.31 5000 7000\n\
                    pr Conflux=1 FlowCtrl=1-2 Relay=1-4\n\
                    r relay1 BBBB 2026-12-02 01:00:00 203.0.113.41 5000 7000\n\
                    pr FlowCtrl=1 Relay=1-4\n";
        assert_eq!(
            consensus_summary(text),
            "`params cc_alg=2 hsdir_interval=8`; of its 2 relays, 1 list FlowCtrl=2 and 1 Conflux=1."
        );
        assert!(consensus_summary("").starts_with("`params (none)`; of its 0 relays"));
        assert!(protocol_has("1,3-4", 3));
        assert!(!protocol_has("1,3-4", 2));
        assert!(!protocol_has("x-2", 2));
    }

    #[test]
    fn fetches_per_client() {
        let rows = [Measurement {
            server: "arti".into(),
            ..Measurement::default()
        }];
        let samples = [vec![(0.1, 2.0 * 1048576.0), (0.1, 1.0 * 1048576.0)]];
        assert_eq!(
            fetch_lines(&rows, &samples),
            "- arti: 1.00 (1.00–2.00); 2.0, 1.0"
        );
    }

    #[test]
    fn medians_of_fetches() {
        let samples = [(0.5, 3.0), (0.1, 1.0), (0.3, 2.0)].map(|(t, mib)| (t, mib * 1048576.0));
        let m = median_of(&samples);
        assert_eq!(m.rate, 2.0);
        assert_eq!(m.avg_ms, Some(300.0));
        assert_eq!(median_of(&[]).rate, 0.0);
    }
}
