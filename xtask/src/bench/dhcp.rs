//! DHCP: the agent against Kea (memfile), with perfdhcp from c1 acting as a relay, at two
//! offered rates; and the agent's memory with every service on, idle and under that load.

use std::fmt::Write as _;
use std::{path::Path, process::Command, thread, time::Duration};

use anyhow::{Context, Result};
use serde_json::Value;

use super::results::{median, spread};
use super::server::{
    bench_config, client_reservation, ensure_client_address, lease_client_address, Server,
};
use super::{Measurement, RUN_SECS};
use crate::{lab, process};

/// Exchanges a second perfdhcp offers: one both servers keep up with, and one past either's
/// capacity here, so that ratio compares capacities.
const RATES: [u32; 2] = [2000, 20000];
/// Runs of each server at each rate; the two take turns.
const ROUNDS: usize = 3;
/// How long the agent may take to bootstrap Tor before its idle memory is read.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(240);
/// The issue's memory goals for the agent with every service on, MiB.
const IDLE_GOAL_MIB: f64 = 150.0;
const LOAD_GOAL_MIB: f64 = 400.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Agent,
    Kea,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Agent => "gateway-agent",
            Side::Kea => "kea-dhcp4 (memfile)",
        }
    }
}

/// One server's run at one rate.
#[derive(Debug, Clone)]
struct Run {
    side: Side,
    offered: u32,
    load: Measurement,
    /// VmRSS before the load, KiB.
    idle_rss_kib: Option<u64>,
}

/// What the runs share.
struct Setup<'a> {
    lab: &'a lab::Lab,
    agent: &'a Path,
    agent_config: std::path::PathBuf,
    kea_args: Vec<String>,
}

/// The section's body: the table, the ratios, the memory lines and the setup.
pub(super) fn run(lab: &lab::Lab, agent: &Path) -> Result<String> {
    let state = lab.state_dir();
    ensure_client_address(lab)?;
    let agent_config = bench_config(
        lab,
        &format!(
            "[dhcp]\naccept_relayed = true\npool = \"198.51.100.20-198.51.100.250\"\nlease_time = \"1h\"\nrate_limit = 100000\n{}",
            client_reservation(lab)?
        ),
    )?;
    let kea_conf = state.join("kea-dhcp4.json");
    let leases = state.join("kea-leases4.csv");
    let lock_dir = state.join("kea-run");
    std::fs::create_dir_all(&lock_dir).context("creating Kea's run dir")?;
    std::fs::write(&kea_conf, kea_config(&leases)).context("writing Kea's config")?;
    let kea_args = vec![
        "env".to_string(),
        format!("KEA_LOCKFILE_DIR={}", lock_dir.display()),
        format!("KEA_PIDFILE_DIR={}", lock_dir.display()),
        "kea-dhcp4".into(),
        "-c".into(),
        kea_conf.display().to_string(),
    ];
    let setup = Setup {
        lab,
        agent,
        agent_config,
        kea_args,
    };
    let mut runs = Vec::new();
    let mut services = Vec::new();
    for offered in RATES {
        for round in 0..ROUNDS {
            for side in [Side::Agent, Side::Kea] {
                eprintln!("bench dhcp: {offered}/s, {} run {}", side.name(), round + 1);
                let (run, running) = measure(&setup, side, offered)?;
                if !running.is_empty() {
                    services = running;
                }
                runs.push(run);
            }
        }
    }
    let notes = format!(
        "perfdhcp -4 -r <offered> -R 200 -p {RUN_SECS} from c1, acting as a relay (giaddr = c1) \
         towards 198.51.100.1:67, at {rates} exchanges/s offered; each server is started afresh \
         for each run and the two take turns, {ROUNDS} runs each per rate (the table: medians, \
         min–max in brackets). \"per second\" is perfdhcp's completed 4-way exchanges a second, \
         \"avg ms\" its REQUEST-ACK average (it reports no percentile), \"unanswered\" the \
         DISCOVERs and REQUESTs without an answer. Both servers accept relayed requests and hand \
         out 198.51.100.20-250 with 1 h leases to the same 200 simulated clients; the leases of \
         earlier runs stay (the agent's redb, Kea's CSV). The agent commits leases to redb with \
         an fsync before it acknowledges them (crash safety is a requirement), one commit for \
         all the requests that queued up meanwhile; Kea's memfile appends to its CSV without an \
         fsync. The agent is the release build with the lab's config (every service on, XDP \
         program attached) and `[dhcp] accept_relayed = true`, `rate_limit = 100000`; each of \
         its runs waits for Tor to bootstrap first. Kea runs after the agent stopped. The agent's \
         peak under the other services' loads is in their sections (RSS columns).\n\n\
         Versions: {versions}.",
        rates = RATES.map(|r| r.to_string()).join(" and "),
        versions = versions(),
    );
    Ok(format!(
        "{}\n{}\n{notes}\n",
        table(&runs),
        memory_lines(&runs, &services)
    ))
}

/// Starts `side`, takes its idle memory, loads it at `offered`/s, stops it. For the agent
/// also the services its status lists as running.
fn measure(setup: &Setup<'_>, side: Side, offered: u32) -> Result<(Run, Vec<String>)> {
    let gw = setup.lab.ns("gw");
    let client = setup.lab.ns("c1");
    let (server, running) = match side {
        Side::Agent => {
            let server = Server::agent(&gw, setup.agent, &setup.agent_config)?;
            let status = server.wait_tor_bootstrapped(BOOTSTRAP_TIMEOUT)?;
            // The IP source guard passes relayed requests only from a leased relay.
            lease_client_address(setup.lab)?;
            (server, running_services(&status))
        }
        Side::Kea => (Server::spawn(&gw, &setup.kea_args)?, Vec::new()),
    };
    // Settled: Kea opens its sockets, the agent's start-up work is done.
    thread::sleep(Duration::from_secs(2));
    let idle_rss_kib = server.rss_kib("VmRSS");
    let mut load = perfdhcp(&client, offered)?;
    load.server = side.name().into();
    load.peak_rss_kib = server.rss_kib("VmHWM");
    let run = Run {
        side,
        offered,
        load,
        idle_rss_kib,
    };
    Ok((run, running))
}

/// The services in an agent's `status --json` (every top-level key but the agent's own).
fn running_services(status: &Value) -> Vec<String> {
    const OWN: [&str; 8] = [
        "version",
        "pid",
        "uptime_secs",
        "config",
        "outside_interface",
        "inside_interface",
        "inside_address",
        "summary",
    ];
    status
        .as_object()
        .map(|o| {
            o.keys()
                .filter(|k| !OWN.contains(&k.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The runs of one server at one rate.
fn of(runs: &[Run], side: Side, offered: u32) -> Vec<&Run> {
    runs.iter()
        .filter(|r| r.side == side && r.offered == offered)
        .collect()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One row a server and rate (medians, min–max), the ratios, and every run's rate in the
/// order taken, so drift shows.
fn table(runs: &[Run]) -> String {
    let mut out = String::from(
        "| server | offered/s | per second | avg ms | unanswered | RSS idle MiB | peak RSS MiB |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for offered in RATES {
        for side in [Side::Agent, Side::Kea] {
            let these = of(runs, side, offered);
            let values = |f: &dyn Fn(&Run) -> Option<f64>| -> Vec<f64> {
                these.iter().filter_map(|r| f(r)).collect()
            };
            let _ = writeln!(
                out,
                "| {} | {offered} | {} | {} | {} | {} | {} |",
                side.name(),
                spread(&values(&|r| Some(r.load.rate)), 0),
                spread(&values(&|r| r.load.avg_ms), 3),
                spread(&values(&|r| Some(r.load.lost as f64)), 0),
                spread(&values(&|r| r.idle_rss_kib.map(mib)), 1),
                spread(&values(&|r| r.load.peak_rss_kib.map(mib)), 1),
            );
        }
    }
    out.push('\n');
    for offered in RATES {
        let rates = |side| -> Vec<f64> {
            of(runs, side, offered)
                .iter()
                .map(|r| r.load.rate)
                .collect()
        };
        let (ours, theirs) = (rates(Side::Agent), rates(Side::Kea));
        if let (Some(a), Some(k)) = (median(&ours), median(&theirs).filter(|k| *k > 0.0)) {
            let _ = writeln!(
                out,
                "- {offered}/s offered: gateway-agent / kea-dhcp4 **{:.2}x** the rate (medians).",
                a / k
            );
        }
        let order: Vec<String> = runs
            .iter()
            .filter(|r| r.offered == offered)
            .map(|r| {
                let who = if r.side == Side::Agent {
                    "agent"
                } else {
                    "kea"
                };
                format!("{who} {:.0}", r.load.rate)
            })
            .collect();
        let _ = writeln!(out, "  Runs in order: {}.", order.join(", "));
    }
    out
}

/// The agent's memory against the goals, and Kea's beside it.
fn memory_lines(runs: &[Run], services: &[String]) -> String {
    let idle = |side: Side| -> Vec<f64> {
        runs.iter()
            .filter(|r| r.side == side)
            .filter_map(|r| r.idle_rss_kib.map(mib))
            .collect()
    };
    let peak = |side: Side, offered: u32| -> Vec<f64> {
        of(runs, side, offered)
            .iter()
            .filter_map(|r| r.load.peak_rss_kib.map(mib))
            .collect()
    };
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let agent_idle = idle(Side::Agent);
    let agent_peak: Vec<f64> = RATES.iter().flat_map(|&r| peak(Side::Agent, r)).collect();
    let verdict = |values: &[f64], goal: f64| {
        if values.is_empty() {
            "not measured".to_string()
        } else if max(values) < goal {
            format!("**met** (at most {:.1} MiB)", max(values))
        } else {
            format!("**not met** (up to {:.1} MiB)", max(values))
        }
    };
    let mut out = format!(
        "Memory (MiB; idle: VmRSS 2 s after start-up, the agent's after its Tor bootstrapped, \
         before the load; peak: VmHWM after the load, the process's peak since it started). The agent idle with every \
         service on ({services}): {idle}; Kea idle: {kea_idle}.\n",
        services = if services.is_empty() {
            "-".to_string()
        } else {
            services.join(", ")
        },
        idle = spread(&agent_idle, 1),
        kea_idle = spread(&idle(Side::Kea), 1),
    );
    for offered in RATES {
        let _ = writeln!(
            out,
            "- peak under {offered}/s: the agent {}, Kea {}.",
            spread(&peak(Side::Agent, offered), 1),
            spread(&peak(Side::Kea, offered), 1)
        );
    }
    let _ = writeln!(
        out,
        "- Goal: under {IDLE_GOAL_MIB:.0} MiB idle with every service on: {}; under \
         {LOAD_GOAL_MIB:.0} MiB under load: {}.",
        verdict(&agent_idle, IDLE_GOAL_MIB),
        verdict(&agent_peak, LOAD_GOAL_MIB)
    );
    out
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

fn versions() -> String {
    let first_line = |program: &str, arg: &str| {
        process::output(program, [arg])
            .ok()
            // perfdhcp prints "VERSION: 2.2.0".
            .and_then(|out| {
                let line = out.lines().next()?.trim();
                Some(line.trim_start_matches("VERSION:").trim().to_owned())
            })
            .filter(|line| !line.is_empty())
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "kea-dhcp4 {}; perfdhcp {}",
        first_line("kea-dhcp4", "-v"),
        first_line("perfdhcp", "-v")
    )
}

fn perfdhcp(client: &str, offered: u32) -> Result<Measurement> {
    let secs = RUN_SECS.to_string();
    let rate = offered.to_string();
    let out = Command::new("ip")
        .args([
            "netns", "exec", client, "perfdhcp", "-4", "-r", &rate, "-R", "200",
        ])
        .args(["-p", &secs, "-l", "eth0", lab::GATEWAY_INSIDE_IP])
        .output()
        .context("running perfdhcp")?;
    // perfdhcp exits non-zero when it saw drops; the numbers are still what we want.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_perfdhcp(&text).with_context(|| {
        format!(
            "perfdhcp at {offered}/s: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Reads perfdhcp's rate, the REQUEST-ACK average latency and the drops of both exchanges.
pub fn parse_perfdhcp(out: &str) -> Result<Measurement> {
    let rate = out
        .lines()
        .find(|l| l.trim_start().starts_with("Rate:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .context("perfdhcp printed no rate")?;
    // One block an exchange: DISCOVER-OFFER, then REQUEST-ACK (avg and std deviation only).
    let blocks: Vec<&str> = out.split("Statistics for:").skip(1).collect();
    let field = |block: &str, name: &str, nth: usize| {
        block
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.split_whitespace().nth(nth))
            .map(str::to_owned)
    };
    let avg_ms = blocks
        .get(1)
        .and_then(|b| field(b, "avg delay:", 2))
        .and_then(|v| v.parse::<f64>().ok());
    let lost = blocks
        .iter()
        .filter_map(|b| field(b, "drops:", 1))
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Ok(Measurement {
        rate,
        avg_ms,
        lost,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERFDHCP: &str = "\
Running: perfdhcp -4 -r 2000 -R 200 -p 10 -l eth0 198.51.100.1
***Rate statistics***
Rate: 1999.51 4-way exchanges/second, expected rate: 2000

***Statistics for: DISCOVER-OFFER***
sent packets: 20000
received packets: 19990
drops: 10
drops ratio: 0.05 %
orphans: 0

min delay: 0.090 ms
avg delay: 0.394 ms
max delay: 12.232 ms
std deviation: 0.501 ms
collected packets: 0

***Statistics for: REQUEST-ACK***
sent packets: 19990
received packets: 19987
drops: 3
drops ratio: 0.015 %
orphans: 0

min delay: 0.120 ms
avg delay: 0.612 ms
max delay: 20.001 ms
std deviation: 0.700 ms
collected packets: 0
";

    #[test]
    fn perfdhcp_summary() {
        let m = parse_perfdhcp(PERFDHCP).expect("parses");
        assert_eq!(m.rate, 1999.51);
        assert_eq!(m.avg_ms, Some(0.612));
        assert_eq!(m.lost, 13);
        // Only a rate: no latency, nothing lost.
        let m = parse_perfdhcp("Rate: 5 4-way exchanges/second").expect("parses");
        assert_eq!((m.avg_ms, m.lost), (None, 0));
        assert!(parse_perfdhcp("perfdhcp: error").is_err());
    }

    #[test]
    fn services_from_status() {
        let status = serde_json::json!({
            "version": "0.1", "pid": 1, "uptime_secs": 3, "config": "c",
            "outside_interface": "o", "inside_interface": "i", "inside_address": "a",
            "summary": [], "dhcp": {}, "tor": {"bootstrapped": true}
        });
        assert_eq!(running_services(&status), ["dhcp", "tor"]);
        assert!(running_services(&Value::Null).is_empty());
    }

    fn run(side: Side, offered: u32, rate: f64, idle: u64, peak: u64) -> Run {
        Run {
            side,
            offered,
            load: Measurement {
                rate,
                avg_ms: Some(1.0),
                peak_rss_kib: Some(peak),
                ..Measurement::default()
            },
            idle_rss_kib: Some(idle),
        }
    }

    #[test]
    fn table_and_memory_from_runs() {
        let mib = 1024;
        let mut runs = Vec::new();
        for (a, k) in [(2000.0, 1990.0), (1998.0, 1995.0), (1999.0, 1980.0)] {
            runs.push(run(Side::Agent, 2000, a, 30 * mib, 35 * mib));
            runs.push(run(Side::Kea, 2000, k, 20 * mib, 21 * mib));
        }
        for (a, k) in [(9000.0, 6000.0), (8000.0, 7000.0), (10000.0, 5000.0)] {
            runs.push(run(Side::Agent, 20000, a, 30 * mib, 40 * mib));
            runs.push(run(Side::Kea, 20000, k, 20 * mib, 22 * mib));
        }
        let text = table(&runs);
        assert!(
            text.contains("| gateway-agent | 20000 | 9000 (8000–10000) | 1.000 (1.000–1.000) |"),
            "{text}"
        );
        assert!(text.contains("20000/s offered: gateway-agent / kea-dhcp4 **1.50x**"));
        assert!(text.contains("Runs in order: agent 9000, kea 6000, agent 8000,"));
        let memory = memory_lines(&runs, &["dhcp".into(), "tor".into()]);
        assert!(memory.contains("every service on (dhcp, tor): 30.0 (30.0–30.0)"));
        assert!(memory.contains("peak under 20000/s: the agent 40.0 (40.0–40.0), Kea 22.0"));
        assert!(memory.contains("idle with every service on: **met** (at most 30.0 MiB)"));
        assert!(memory.contains("under load: **met** (at most 40.0 MiB)"));
    }
}
