//! `cargo xtask bench dns|dhcp|tor|registry|proxy|dataplane`: the agent and its established
//! peers, side by side in one run, same lab, same client, same load; results as ratios in
//! `bench/RESULTS.md`.
//!
//! Everything runs inside a lab of its own (prefix `bench`; `benchdp` for `dataplane`, so it
//! can run beside the others): the load generators send only to the gateway's inside address
//! in that lab. One file a benchmark (`dns.rs`, `dhcp.rs`, `tor.rs`, `registry.rs` and
//! `mirror.rs`, both run by `bench registry`, `proxy.rs`, `dataplane.rs`); the server processes
//! and their config in `server.rs`; the results page and the statistics in `results.rs`.

mod dataplane;
mod dhcp;
mod dns;
mod mirror;
mod proxy;
pub(crate) mod registry;
mod results;
mod server;
mod tor;

use anyhow::Result;

use crate::{build, deps, lab};

pub use dhcp::parse_perfdhcp;
pub use dns::parse_dnsperf;

/// Debian packages the benchmarks drive.
pub const BENCH_PACKAGES: &[&str] = &["dnsperf", "unbound", "kea-dhcp4-server", "kea-admin"];

/// The benchmark lab's prefix.
const PREFIX: &str = "bench";
/// How long each measured run lasts.
const RUN_SECS: u64 = 10;

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
    if which == "dataplane" {
        return run_dataplane();
    }
    deps::ensure_packages(BENCH_PACKAGES, "for the benchmarks")?;
    if which == "registry" {
        registry::ensure_package()?;
    }
    if which == "proxy" {
        proxy::ensure_packages()?;
    }
    let agent = build::build_agent(true)?;
    let lab = lab::Lab::new(PREFIX);
    lab.down()?;
    lab.up()?;
    if which == "dns" {
        let result = dns::run(&lab, &agent);
        let down = lab.down();
        let (tables, notes) = result?;
        down?;
        return results::record_table("DNS (dnsperf)", &format!("{tables}{notes}\n"));
    }
    if which == "dhcp" {
        let result = dhcp::run(&lab, &agent);
        let down = lab.down();
        let body = result?;
        down?;
        return results::record_table("DHCP (perfdhcp)", &body);
    }
    let result = match which {
        "tor" => tor::run(&lab, &agent).map(|report| vec![report]),
        // The private registry, then the mirror (each server stopped before the next).
        "registry" => registry::run(&lab, &agent)
            .and_then(|first| Ok(vec![first, mirror::run(&lab, &agent)?])),
        "proxy" => proxy::run(&lab, &agent).map(|report| vec![report]),
        other => Err(anyhow::anyhow!(
            "no benchmark {other:?}; try dns, dhcp, tor, registry, proxy or dataplane"
        )),
    };
    let down = lab.down();
    let reports = result?;
    down?;
    for (title, rows, notes) in reports {
        results::record(&title, &rows, &notes)?;
    }
    Ok(())
}

/// The XDP program against nftables, in a lab of its own (prefix `benchdp`) without Tor. The
/// agent is the debug build of `cargo xtask build` (the whole workspace, so the other debug
/// builds stay fresh): only its eBPF object (always a release build) is on the measured path.
fn run_dataplane() -> Result<()> {
    dataplane::ensure_packages()?;
    let agent = build::build_all(false)?;
    let lab = lab::Lab::new(dataplane::PREFIX);
    lab.down()?;
    lab.up_without_tor()?;
    let result = dataplane::run(&lab, &agent);
    let down = lab.down();
    let (title, table, notes) = result?;
    down?;
    results::record_table(&title, &format!("{table}\n{notes}\n"))
}

/// A benchmark's section: its title, one row a server, and the notes on the setup.
type Report = (String, Vec<Measurement>, String);
