//! DNS: the agent against dnsmasq, with dnsperf from c1.

use std::{fmt::Write as _, path::Path, thread, time::Duration, time::Instant};

use anyhow::{bail, Context, Result};

use super::results::percentile;
use super::server::{
    bench_config, client_reservation, ensure_client_address, lease_client_address, Server,
};
use super::{Measurement, Report, RUN_SECS};
use crate::{lab, process};

/// Local names in the zone, the same for both servers.
const LOCAL_NAMES: u32 = 40;

pub(super) fn run(lab: &lab::Lab, agent: &Path) -> Result<Report> {
    let state = lab.state_dir();
    let client = lab.ns("c1");
    let gw = lab.ns("gw");
    ensure_client_address(lab)?;
    let mut reservations = client_reservation(lab)?;
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
        lease_client_address(lab)?;
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
    }
}
