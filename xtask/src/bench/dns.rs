//! DNS: the agent against dnsmasq and unbound, with dnsperf from c1, for local-zone answers
//! and for cached forwarded answers, each server started afresh for each of its runs and the
//! three taking turns.

use std::{fmt::Write as _, path::Path, thread, time::Duration, time::Instant};

use anyhow::{bail, Context, Result};

use super::results::percentile;
use super::server::{
    bench_config, client_reservation, ensure_client_address, lease_client_address, Server,
};
use super::{Measurement, RUN_SECS};
use crate::{lab, process};

/// Local names in the zone, the same for every server.
const LOCAL_NAMES: u32 = 40;
/// Runs of each server for each query mix, taking turns.
const ROUNDS: usize = 2;
/// dnsperf's clients (sockets) and threads.
const CLIENTS: u32 = 4;
const THREADS: u32 = 2;
/// The latency run: a fixed rate every server keeps up with, with `-v` for per-query times.
const LATENCY_QPS: u32 = 20_000;
const LATENCY_SECS: u64 = 3;

const SERVERS: [Peer; 3] = [Peer::Agent, Peer::Dnsmasq, Peer::Unbound];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Agent,
    Dnsmasq,
    Unbound,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Agent => "gateway-agent",
            Peer::Dnsmasq => "dnsmasq",
            Peer::Unbound => "unbound",
        }
    }
}

/// One run's numbers: the load run's rate and average, the latency run's p99, memory.
struct Run {
    peer: Peer,
    load: Measurement,
    p99_ms: Option<f64>,
    idle_rss_kib: Option<u64>,
}

/// The setup both runs share: where the files are and how each server starts.
struct Setup<'a> {
    lab: &'a lab::Lab,
    agent: &'a Path,
    agent_config: std::path::PathBuf,
    dnsmasq_args: Vec<String>,
    unbound_conf: std::path::PathBuf,
}

pub(super) fn run(lab: &lab::Lab, agent: &Path) -> Result<(String, String)> {
    let state = lab.state_dir();
    ensure_client_address(lab)?;
    let mut reservations = client_reservation(lab)?;
    let mut host_records = Vec::new();
    let mut local_data = String::new();
    for i in 0..LOCAL_NAMES {
        let ip = format!("198.51.100.{}", 20 + i);
        let _ = write!(
            reservations,
            "[[dhcp.reservations]]\nmac = \"02:00:00:00:01:{i:02x}\"\naddress = \"{ip}\"\nname = \"h{i}\"\n"
        );
        host_records.push(format!("--host-record=h{i}.home.arpa,{ip}"));
        let _ = writeln!(local_data, "  local-data: \"h{i}.home.arpa. 60 IN A {ip}\"");
    }
    let agent_config = bench_config(
        lab,
        &format!(
            "[dns]\nupstream = \"uplink\"\nupstream_servers = [\"{}\"]\nrate_limit = 1000000\n{reservations}",
            lab::MODEM_IP
        ),
    )?;
    let pid = state.join("bench-dnsmasq.pid");
    let mut dnsmasq_args = vec![
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
    dnsmasq_args.extend(host_records);
    let unbound_text = unbound_config(&state, &local_data);
    let unbound_conf = state.join("bench-unbound.conf");
    std::fs::write(&unbound_conf, &unbound_text).context("writing the unbound config")?;
    process::run(
        "unbound-checkconf",
        [unbound_conf.display().to_string().as_str()],
    )
    .context("unbound-checkconf rejects the bench config")?;

    // The query mixes: local names only, and one forwarded name every server answers from
    // its cache after the first query.
    let mut local = String::new();
    for i in 0..LOCAL_NAMES {
        let _ = writeln!(local, "h{i}.home.arpa A");
    }
    let local_file = state.join("queries-local.txt");
    std::fs::write(&local_file, local).context("writing the query file")?;
    let forwarded_file = state.join("queries-forwarded.txt");
    std::fs::write(&forwarded_file, format!("{} A\n", lab::ORIGIN_NAME))
        .context("writing the query file")?;

    let setup = Setup {
        lab,
        agent,
        agent_config,
        dnsmasq_args,
        unbound_conf,
    };
    let mut body = String::new();
    let mut leased = false;
    for (mix, file) in [
        ("local-zone names", &local_file),
        ("a cached forwarded name", &forwarded_file),
    ] {
        let mut runs = Vec::new();
        for round in 0..ROUNDS {
            for peer in SERVERS {
                eprintln!("bench dns: {mix}, {} run {}", peer.name(), round + 1);
                runs.push(measure(&setup, peer, file, &mut leased)?);
            }
        }
        body.push_str(&table(mix, &runs));
        if let Some(dir) = std::env::var_os(PROFILE_ENV) {
            profile(&setup, file, Path::new(&dir), mix, &mut leased)?;
        }
    }
    let versions = versions();
    let notes = format!(
        "Load: `dnsperf -c {CLIENTS} -T {THREADS} -l {RUN_SECS} -s {gw}` from c1, no per-query \
         output; rate and average latency from its summary. p99: a second run of each server \
         right after, `-Q {LATENCY_QPS} -l {LATENCY_SECS} -v` (a rate every server keeps up \
         with; the percentile of the per-query times). Each server is started afresh for each \
         run and the three take turns ({ROUNDS} rounds), so drift shows; each mix row is one \
         run. Idle RSS: VmRSS after start-up and one query; under load: VmHWM after the runs.\n\n\
         Query mixes: the {LOCAL_NAMES} local names `h0..h{last}.home.arpa` A, in a loop; and \
         `{origin} A` alone, forwarded once to the modem's dnsmasq ({modem}) and cached (TTL \
         300). Same zone data for all three (agent: `[[dhcp.reservations]]` names; dnsmasq: \
         `--host-record`; unbound: `local-data` in a static `home.arpa` zone), same upstream, \
         same namespace and address 198.51.100.1:53.\n\n\
         - gateway-agent: the release build, `[dns] upstream = \"uplink\"`, \
         `upstream_servers = [\"{modem}\"]`, `rate_limit = 1000000`, the lab's other settings \
         (XDP program attached, Tor running for the other services).\n\
         - dnsmasq: `{dnsmasq}` with one `--host-record` a name.\n\
         - unbound: `unbound -d -c bench-unbound.conf`:\n\n```\n{unbound}```\n\n\
         Versions: {versions}.",
        gw = lab::GATEWAY_INSIDE_IP,
        last = LOCAL_NAMES - 1,
        origin = lab::ORIGIN_NAME,
        modem = lab::MODEM_IP,
        dnsmasq = setup
            .dnsmasq_args
            .iter()
            .filter(|a| !a.starts_with("--host-record"))
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        unbound = unbound_text.replace(&state.display().to_string(), "<state>"),
    );
    Ok((body, notes))
}

/// Set to a directory, the bench also profiles the agent: one more agent run per mix, not in
/// the table, under `perf record -g`, its report in that directory.
const PROFILE_ENV: &str = "GATEWAY_BENCH_PERF";

/// The agent under load with `perf record` attached: where its CPU goes.
fn profile(
    setup: &Setup<'_>,
    queries: &Path,
    dir: &Path,
    mix: &str,
    leased: &mut bool,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let gw = setup.lab.ns("gw");
    let client = setup.lab.ns("c1");
    let server = Server::agent(&gw, setup.agent, &setup.agent_config)?;
    if !*leased || wait_dns(&client).is_err() {
        lease_client_address(setup.lab)?;
        *leased = true;
    }
    wait_dns(&client)?;
    let slug: String = mix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let data = dir.join(format!("{slug}.perf.data"));
    let mut perf = std::process::Command::new("perf")
        .args(["record", "-g", "-o"])
        .arg(&data)
        .args(["-p", &server.pid().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting perf record")?;
    let load = dnsperf(&client, queries);
    // SAFETY: kill has no memory preconditions; SIGINT makes perf write its data and exit.
    unsafe {
        libc::kill(perf.id() as libc::pid_t, libc::SIGINT);
    }
    let _ = perf.wait();
    drop(server);
    let load = load?;
    let report = process::output(
        "perf",
        [
            "report",
            "--stdio",
            "--no-children",
            "--percent-limit",
            "1",
            "-i",
            &data.display().to_string(),
        ],
    )?;
    let text = format!("{mix}: {:.0} q/s under perf\n\n{report}", load.rate);
    std::fs::write(dir.join(format!("{slug}.txt")), text).context("writing the perf report")?;
    Ok(())
}

/// unbound as a caching forwarder with the same local data: 2 threads, one `SO_REUSEPORT`
/// socket each.
fn unbound_config(state: &Path, local_data: &str) -> String {
    format!(
        "server:\n  interface: {gw}\n  port: 53\n  num-threads: 2\n  so-reuseport: yes\n  \
         do-ip6: no\n  access-control: 198.51.100.0/24 allow\n  username: \"\"\n  chroot: \"\"\n  \
         directory: \"{dir}\"\n  pidfile: \"{dir}/bench-unbound.pid\"\n  use-syslog: no\n  \
         logfile: \"\"\n  verbosity: 0\n  module-config: \"iterator\"\n  \
         do-not-query-localhost: no\n  msg-cache-size: 16m\n  rrset-cache-size: 32m\n  \
         local-zone: \"home.arpa.\" static\n{local_data}forward-zone:\n  name: \".\"\n  \
         forward-addr: {modem}\n",
        gw = lab::GATEWAY_INSIDE_IP,
        dir = state.display(),
        modem = lab::MODEM_IP,
    )
}

/// Starts `peer`, measures it with `queries`, stops it.
fn measure(setup: &Setup<'_>, peer: Peer, queries: &Path, leased: &mut bool) -> Result<Run> {
    let gw = setup.lab.ns("gw");
    let client = setup.lab.ns("c1");
    let server = match peer {
        Peer::Agent => {
            let server = Server::agent(&gw, setup.agent, &setup.agent_config)?;
            // The source guard passes c1 once it holds its lease; the lease outlives restarts.
            if !*leased || wait_dns(&client).is_err() {
                lease_client_address(setup.lab)?;
                *leased = true;
            }
            server
        }
        Peer::Dnsmasq => Server::spawn(&gw, &setup.dnsmasq_args)?,
        Peer::Unbound => Server::spawn(
            &gw,
            &[
                "unbound".into(),
                "-d".into(),
                "-c".into(),
                setup.unbound_conf.display().to_string(),
            ],
        )?,
    };
    wait_dns(&client)?;
    let idle_rss_kib = server.rss_kib("VmRSS");
    let mut load = dnsperf(&client, queries)?;
    let p99_ms = latency_p99(&client, queries)?;
    load.peak_rss_kib = server.rss_kib("VmHWM");
    load.server = peer.name().into();
    Ok(Run {
        peer,
        load,
        p99_ms,
        idle_rss_kib,
    })
}

/// The mix's table: every run, then the means and the agent's ratios to each peer.
fn table(mix: &str, runs: &[Run]) -> String {
    let mut out = format!(
        "### {mix}\n\n| server | run | per second | p99 ms | avg ms | RSS idle MiB | RSS load MiB | unanswered |\n|---|---|---|---|---|---|---|---|\n"
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mib = |k: Option<u64>| k.map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    let mut seen = [0usize; 3];
    for run in runs {
        let i = SERVERS.iter().position(|p| *p == run.peer).unwrap_or(0);
        seen[i] += 1;
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            run.peer.name(),
            seen[i],
            run.load.rate,
            fmt(run.p99_ms),
            fmt(run.load.avg_ms),
            mib(run.idle_rss_kib),
            mib(run.load.peak_rss_kib),
            run.load.lost
        );
    }
    let mean = |peer: Peer, f: &dyn Fn(&Run) -> Option<f64>| {
        let values: Vec<f64> = runs
            .iter()
            .filter(|r| r.peer == peer)
            .filter_map(f)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let rate = |peer| mean(peer, &|r: &Run| Some(r.load.rate));
    let p99 = |peer| mean(peer, &|r: &Run| r.p99_ms);
    out.push('\n');
    if let Some(ours) = rate(Peer::Agent) {
        for peer in [Peer::Dnsmasq, Peer::Unbound] {
            if let Some(theirs) = rate(peer).filter(|r| *r > 0.0) {
                let _ = writeln!(
                    out,
                    "- gateway-agent / {}: **{:.2}x** the rate (means of the runs), p99 {} ms against {} ms.",
                    peer.name(),
                    ours / theirs,
                    fmt(p99(Peer::Agent)),
                    fmt(p99(peer)),
                );
            }
        }
    }
    out.push('\n');
    out
}

fn versions() -> String {
    let first_line = |program: &str, args: &[&str]| {
        process::output(program, args)
            .ok()
            .and_then(|out| {
                out.lines()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| format!("{program}: ?"))
    };
    let unbound = process::output("unbound", ["-V"])
        .ok()
        .and_then(|out| {
            out.lines()
                .find(|l| l.starts_with("Version"))
                .map(str::to_owned)
        })
        .map_or("unbound ?".to_string(), |v| {
            format!("unbound {}", v.trim_start_matches("Version "))
        });
    format!(
        "{}; {unbound}; {}",
        first_line("dnsmasq", &["--version"]),
        first_line("dpkg-query", &["-W", "-f", "dnsperf ${Version}", "dnsperf"]),
    )
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

/// The load run: as fast as the server answers, no per-query output.
fn dnsperf(client: &str, queries: &Path) -> Result<Measurement> {
    let out = process::ns_output(
        client,
        "dnsperf",
        [
            "-s",
            lab::GATEWAY_INSIDE_IP,
            "-d",
            &queries.display().to_string(),
            "-c",
            &CLIENTS.to_string(),
            "-T",
            &THREADS.to_string(),
            "-l",
            &RUN_SECS.to_string(),
        ],
    )?;
    parse_dnsperf(&out)
}

/// The latency run: a fixed rate, every query's time printed.
fn latency_p99(client: &str, queries: &Path) -> Result<Option<f64>> {
    let out = process::ns_output(
        client,
        "dnsperf",
        [
            "-s",
            lab::GATEWAY_INSIDE_IP,
            "-d",
            &queries.display().to_string(),
            "-c",
            &CLIENTS.to_string(),
            "-Q",
            &LATENCY_QPS.to_string(),
            "-l",
            &LATENCY_SECS.to_string(),
            "-v",
        ],
    )?;
    Ok(parse_dnsperf(&out)?.p99_ms)
}

/// Reads dnsperf's summary and, from `-v`'s per-query lines if any, the latency percentile.
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let quiet = parse_dnsperf("  Queries per second:   10.0\n").unwrap_or_default();
        assert_eq!(
            (quiet.rate, quiet.p99_ms),
            (10.0, None),
            "no -v: no percentile"
        );
    }

    #[test]
    fn the_table_has_every_run_and_the_ratios() {
        let run = |peer, rate| Run {
            peer,
            load: Measurement {
                rate,
                ..Measurement::default()
            },
            p99_ms: Some(1.0),
            idle_rss_kib: Some(2048),
        };
        let runs = [
            run(Peer::Agent, 90.0),
            run(Peer::Dnsmasq, 60.0),
            run(Peer::Unbound, 100.0),
            run(Peer::Agent, 110.0),
            run(Peer::Dnsmasq, 40.0),
            run(Peer::Unbound, 100.0),
        ];
        let text = table("mix", &runs);
        assert_eq!(text.matches("| gateway-agent | ").count(), 2);
        assert!(text.contains("| gateway-agent | 2 | 110 |"), "{text}");
        assert!(text.contains("dnsmasq: **2.00x**"), "{text}");
        assert!(text.contains("unbound: **1.00x**"), "{text}");
    }
}
