//! `cargo xtask bench dataplane`: the inside XDP program (`inside_ingress`) against an nftables
//! ruleset with the same policy on the same veth (`netdev` family, `ingress` hook), under a
//! flood into the gateway's inside NIC.
//!
//! The generator is `trafgen` (netsniff-ng) in the `lan` namespace on `gw0`, the peer end of the
//! gateway's `inside0`, sending frames with c1's MAC as their source: *spoofed* frames (UDP from
//! an address that is not c1's lease) and *allowed* frames (UDP to the gateway's DNS port from
//! c1's lease, addressed to a MAC that is not the gateway's, so the kernel drops them in
//! `ip_rcv` just after the filter accepted them). `inside0` runs its receive work in a threaded
//! NAPI kthread pinned to core 1, the generator is pinned to core 0: the receive side's CPU is
//! that kthread's (`/proc/<pid>/schedstat`), never the sender's.
//!
//! The agent and nftables take turns on the same `inside0` (the agent first, stopped and its
//! programs detached before nftables' table is loaded), [`ROUNDS`] times; each number is the
//! median of the rounds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::server::{
    bench_config, client_reservation, ensure_client_address, lease_client_address, Server,
};
use super::{results, Measurement};
use crate::{deps, lab, process};

/// The lab's prefix: not `bench`, so this runs beside the other benchmarks.
pub const PREFIX: &str = "benchdp";
/// Debian packages: the generator, the peer and `ethtool` for the veth's offloads.
pub const PACKAGES: &[&str] = &["netsniff-ng", "nftables", "ethtool"];

/// Rounds of (agent, nftables), interleaved; the numbers are the medians.
const ROUNDS: usize = 3;
/// Seconds of each flood.
const FLOOD_SECS: u64 = 5;
/// Seconds of each fixed-load run.
const FIXED_SECS: u64 = 5;
/// Seconds of each run that reads the XDP program's own cost (`kernel.bpf_stats_enabled`).
const STATS_SECS: u64 = 3;
/// The fixed offered load for the CPU-per-frame runs, frames a second.
const FIXED_PPS: u64 = 20_000;
/// The core the generator runs on, and the one the receiving NAPI kthread is pinned to.
const GENERATOR_CPU: &str = "0";
const RECEIVER_CPU: &str = "1";
/// The peer end of the gateway's `inside0`, in `lan`.
const SENDER_IF: &str = "gw0";
/// A source address in the inside subnet that is nobody's lease.
const SPOOFED_SOURCE: &str = "198.51.100.77";
/// c1's reserved address (`server::client_reservation`).
const LEASED_SOURCE: &str = "198.51.100.11";
/// The destination MAC of the allowed frames: not the gateway's, so the stack drops them as
/// `PACKET_OTHERHOST` right after the filter.
const OTHER_MAC: &str = "02:00:00:be:0c:01";
/// The nftables table's name.
const NFT_TABLE: &str = "benchdp";

pub fn ensure_packages() -> Result<()> {
    deps::ensure_packages(PACKAGES, "for the dataplane benchmark")
}

/// Which frames a run sends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Frames {
    Spoofed,
    Allowed,
}

/// Which filter is on `inside0`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Filter {
    Xdp,
    Nft,
}

/// One run's numbers.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    /// Frames trafgen sent.
    offered: u64,
    /// Frames the filter decided on as expected (dropped spoofed, passed allowed).
    decided: u64,
    /// Wall time of the run, seconds.
    secs: f64,
    /// CPU time of the receiving NAPI kthread, ns.
    receiver_ns: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.decided as f64 / self.secs.max(1e-9)
    }
    fn ns_per_frame(&self) -> f64 {
        self.receiver_ns as f64 / (self.decided.max(1)) as f64
    }
    fn busy(&self) -> f64 {
        self.receiver_ns as f64 / (self.secs * 1e9).max(1.0)
    }
}

/// The per-round samples of one filter.
#[derive(Debug, Default)]
struct Samples {
    drop_rate: Vec<f64>,
    drop_busy: Vec<f64>,
    drop_offered: Vec<f64>,
    pass_rate: Vec<f64>,
    pass_busy: Vec<f64>,
    flood_drop_ns: Vec<f64>,
    flood_pass_ns: Vec<f64>,
    fixed_drop_ns: Vec<f64>,
    fixed_pass_ns: Vec<f64>,
    fixed_rate: Vec<f64>,
    /// The XDP program alone (bpf_stats), spoofed and allowed frames.
    prog_drop_ns: Vec<f64>,
    prog_pass_ns: Vec<f64>,
}

/// What a run needs: the namespaces, the agent's CLI, c1's MAC, the receiving kthread.
struct Bench<'a> {
    gw: String,
    lan: String,
    agent: &'a Path,
    config: PathBuf,
    c1_mac: String,
    spoofed_cfg: PathBuf,
    allowed_cfg: PathBuf,
    /// NAPI kthreads for an `inside0` that existed before ours was made (other labs').
    foreign_napi: BTreeSet<i32>,
}

pub(super) fn run(lab: &lab::Lab, agent: &Path) -> Result<(String, String, String)> {
    let state = lab.state_dir();
    let (gw, lan) = (lab.ns("gw"), lab.ns("lan"));
    ensure_client_address(lab)?;
    let c1_mac = process::ns_output(&lab.ns("c1"), "cat", ["/sys/class/net/eth0/address"])?
        .trim()
        .to_lowercase();
    let gw_mac = process::ns_output(
        &gw,
        "cat",
        [format!("/sys/class/net/{}/address", lab::INSIDE_IF)],
    )?
    .trim()
    .to_lowercase();
    let config = bench_config(
        lab,
        &format!(
            "[tor]\nenabled = false\n[dns]\nupstream = \"none\"\n{}",
            client_reservation(lab)?
        ),
    )?;
    let spoofed_cfg = state.join("trafgen-spoofed.cfg");
    let allowed_cfg = state.join("trafgen-allowed.cfg");
    std::fs::write(
        &spoofed_cfg,
        trafgen_config(&gw_mac, &c1_mac, SPOOFED_SOURCE),
    )
    .context("writing the trafgen config")?;
    std::fs::write(
        &allowed_cfg,
        trafgen_config(OTHER_MAC, &c1_mac, LEASED_SOURCE),
    )
    .context("writing the trafgen config")?;

    let foreign_napi = napi_threads();
    let _receiver = ReceiverSetup::apply(&gw, &lan)?;
    let bench = Bench {
        gw,
        lan,
        agent,
        config,
        c1_mac,
        spoofed_cfg,
        allowed_cfg,
        foreign_napi,
    };
    let (mut xdp, mut nft) = (Samples::default(), Samples::default());
    for round in 0..ROUNDS {
        eprintln!("bench dataplane: round {} of {ROUNDS}: XDP", round + 1);
        bench.agent_round(lab, &mut xdp)?;
        eprintln!("bench dataplane: round {} of {ROUNDS}: nftables", round + 1);
        bench.nft_round(&mut nft)?;
    }
    Ok(report(&xdp, &nft))
}

impl Bench<'_> {
    /// The agent up, c1's lease in its maps, every run, the agent stopped and detached.
    fn agent_round(&self, lab: &lab::Lab, samples: &mut Samples) -> Result<()> {
        let _server = Server::agent(&self.gw, self.agent, &self.config)?;
        lease_client_address(lab)?;
        std::thread::sleep(Duration::from_millis(500));
        let prog = xdp_prog_id(&self.gw)?;
        self.runs(Filter::Xdp, samples)?;
        // The program's own cost, with the kernel's BPF run-time statistics on for these runs
        // only (they add two clock reads to every run of every program).
        let stats = BpfStats::enable()?;
        for (frames, out) in [
            (Frames::Spoofed, &mut samples.prog_drop_ns),
            (Frames::Allowed, &mut samples.prog_pass_ns),
        ] {
            let before = prog_stats(prog)?;
            self.send(frames, Some(FIXED_PPS), STATS_SECS)?;
            let after = prog_stats(prog)?;
            let runs = after.1.saturating_sub(before.1);
            if runs > 0 {
                out.push(after.0.saturating_sub(before.0) as f64 / runs as f64);
            }
        }
        drop(stats);
        Ok(())
    }

    /// The nftables table loaded (the agent's programs detached), every run, the table gone.
    fn nft_round(&self, samples: &mut Samples) -> Result<()> {
        if xdp_prog_id(&self.gw).is_ok() {
            bail!(
                "an XDP program is still on {}: not measuring nftables through it",
                lab::INSIDE_IF
            );
        }
        let ruleset = nft_ruleset(&self.c1_mac);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.gw, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("starting nft")?;
        if let Some(stdin) = child.stdin.as_mut() {
            use std::io::Write as _;
            stdin
                .write_all(ruleset.as_bytes())
                .context("writing the ruleset to nft")?;
        }
        drop(child.stdin.take());
        let status = child.wait().context("waiting for nft")?;
        if !status.success() {
            bail!("nft -f failed ({status}) for:\n{ruleset}");
        }
        let result = self.runs(Filter::Nft, samples);
        process::ns_run(&self.gw, "nft", ["delete", "table", "netdev", NFT_TABLE])?;
        result
    }

    /// Floods and fixed-load runs of both kinds of frames.
    fn runs(&self, filter: Filter, samples: &mut Samples) -> Result<()> {
        let drop = self.measure(filter, Frames::Spoofed, None, FLOOD_SECS)?;
        samples.drop_rate.push(drop.rate());
        samples.drop_busy.push(drop.busy());
        samples.drop_offered.push(drop.offered as f64 / drop.secs);
        samples.flood_drop_ns.push(drop.ns_per_frame());
        let pass = self.measure(filter, Frames::Allowed, None, FLOOD_SECS)?;
        samples.pass_rate.push(pass.rate());
        samples.pass_busy.push(pass.busy());
        samples.flood_pass_ns.push(pass.ns_per_frame());
        let fixed = self.measure(filter, Frames::Spoofed, Some(FIXED_PPS), FIXED_SECS)?;
        samples.fixed_drop_ns.push(fixed.ns_per_frame());
        samples.fixed_rate.push(fixed.rate());
        let fixed = self.measure(filter, Frames::Allowed, Some(FIXED_PPS), FIXED_SECS)?;
        samples.fixed_pass_ns.push(fixed.ns_per_frame());
        Ok(())
    }

    /// One run: the filter's counters and the receiving kthread's CPU time around trafgen.
    fn measure(&self, filter: Filter, frames: Frames, pps: Option<u64>, secs: u64) -> Result<Run> {
        let napi = self.napi_thread()?;
        process::run("taskset", ["-pc", RECEIVER_CPU, &napi.to_string()])
            .context("pinning the NAPI kthread")?;
        let counted = |f: &Self| -> Result<u64> {
            match (filter, frames) {
                (Filter::Xdp, Frames::Spoofed) => Ok(f.xdp_client()?.1),
                (Filter::Xdp, Frames::Allowed) => {
                    let (packets, dropped) = f.xdp_client()?;
                    Ok(packets.saturating_sub(dropped))
                }
                (Filter::Nft, Frames::Spoofed) => nft_counter(&f.gw, "spoofed"),
                (Filter::Nft, Frames::Allowed) => nft_counter(&f.gw, "allowed"),
            }
        };
        let (count0, cpu0) = (counted(self)?, thread_cpu_ns(napi)?);
        let start = Instant::now();
        let offered = self.send(frames, pps, secs)?;
        let elapsed = start.elapsed().as_secs_f64();
        // The ring drains within a few ms after the generator stops.
        std::thread::sleep(Duration::from_millis(100));
        let (count1, cpu1) = (counted(self)?, thread_cpu_ns(napi)?);
        Ok(Run {
            offered,
            decided: count1.saturating_sub(count0),
            secs: elapsed,
            receiver_ns: cpu1.saturating_sub(cpu0),
        })
    }

    /// Runs trafgen on core 0 for `secs` (as fast as it can, or at `pps`); the frames it sent.
    fn send(&self, frames: Frames, pps: Option<u64>, secs: u64) -> Result<u64> {
        let cfg = match frames {
            Frames::Spoofed => &self.spoofed_cfg,
            Frames::Allowed => &self.allowed_cfg,
        };
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "INT", &secs.to_string(), "ip", "netns", "exec", &self.lan])
            .args(["taskset", "-c", GENERATOR_CPU, "trafgen", "-i"])
            .arg(cfg)
            // One process; leave the host's socket-memory sysctls and IRQ affinities alone.
            .args(["-o", SENDER_IF, "-P", "1", "--no-sock-mem", "-Q"]);
        match pps {
            Some(pps) => cmd.args(["-b", &format!("{pps}pps")]),
            // sendto() a frame at a time: trafgen's TX_RING aborts on the veth's back-pressure
            // (EAGAIN), see the notes.
            None => cmd.args(["-t", "0"]),
        };
        let out = cmd.output().context("running trafgen")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        parse_trafgen(&text).with_context(|| format!("trafgen printed {text:?}"))
    }

    /// c1's (frames, dropped) in the XDP program's per-client counters.
    fn xdp_client(&self) -> Result<(u64, u64)> {
        let out = process::ns_output(
            &self.gw,
            &self.agent.display().to_string(),
            [
                "--config",
                &self.config.display().to_string(),
                "maps",
                "clients",
                "--json",
            ],
        )?;
        parse_client_counts(&out, &self.c1_mac)
    }

    /// The NAPI kthread of our `inside0`.
    fn napi_thread(&self) -> Result<i32> {
        let ours: Vec<i32> = napi_threads()
            .difference(&self.foreign_napi)
            .copied()
            .collect();
        match ours.as_slice() {
            [pid] => Ok(*pid),
            [] => bail!("no threaded NAPI kthread for {}", lab::INSIDE_IF),
            more => bail!(
                "more than one new NAPI kthread for {}: {more:?}",
                lab::INSIDE_IF
            ),
        }
    }
}

/// The trafgen frame: 60 bytes, UDP from `src_ip` (c1's MAC) to the gateway's DNS port.
fn trafgen_config(dst_mac: &str, src_mac: &str, src_ip: &str) -> String {
    format!(
        "{{\n  eth(da={dst_mac}, sa={src_mac}, type=0x0800),\n  ipv4(saddr={src_ip}, \
         daddr={gw}, ttl=64),\n  udp(sp=40000, dp=53),\n  fill(0x00, 18)\n}}\n",
        gw = lab::GATEWAY_INSIDE_IP
    )
}

/// The nftables version of the inside program's policy for IPv4 and ARP: a frame's source
/// must be its MAC's lease (a set of MAC . address), DHCP from clients passes, the rest only to
/// the gateway's open ports, ping, or (TCP) steered to non-inside hosts.
fn nft_ruleset(c1_mac: &str) -> String {
    format!(
        r#"table netdev {NFT_TABLE} {{
	counter spoofed {{}}
	counter allowed {{}}
	set leases {{
		type ether_addr . ipv4_addr
		elements = {{ {c1_mac} . {LEASED_SOURCE} }}
	}}
	set open_udp {{
		type inet_service
		elements = {{ 53, 67 }}
	}}
	set open_tcp {{
		type inet_service
		elements = {{ 53, 1080, 3128 }}
	}}
	chain ingress {{
		type filter hook ingress device "{inside}" priority filter; policy drop;
		ether type arp ether saddr . arp saddr ip @leases accept
		ether type arp arp saddr ip 0.0.0.0 accept
		ether type != ip drop
		ip frag-off & 0x3fff != 0 drop
		udp sport 68 udp dport 67 accept
		ether saddr . ip saddr != @leases counter name spoofed drop
		ip daddr {gw} udp dport @open_udp counter name allowed accept
		ip daddr {gw} tcp dport @open_tcp accept
		ip daddr != {subnet} meta l4proto tcp accept
		ip daddr {gw} icmp type echo-request accept
	}}
}}
"#,
        inside = lab::INSIDE_IF,
        gw = lab::GATEWAY_INSIDE_IP,
        subnet = lab::INSIDE_SUBNET,
    )
}

/// `inside0`'s offloads and NAPI mode for the runs, put back when dropped: GRO on (a veth
/// without an XDP program has NAPI only with GRO), TSO off on the sender (as an XDP program
/// on the peer makes it; with TSO, the veth hands frames from trafgen's socket to the
/// sender's CPU instead of NAPI), threaded NAPI.
struct ReceiverSetup {
    gw: String,
    lan: String,
    gro_was_on: bool,
    tso_was_on: bool,
    threaded_was: String,
}

impl ReceiverSetup {
    fn apply(gw: &str, lan: &str) -> Result<ReceiverSetup> {
        let inside = lab::INSIDE_IF;
        let gro = process::ns_output(gw, "ethtool", ["-k", inside])?;
        let tso = process::ns_output(lan, "ethtool", ["-k", SENDER_IF])?;
        let threaded_path = format!("/sys/class/net/{inside}/threaded");
        let threaded_was = process::ns_output(gw, "cat", [&threaded_path])?
            .trim()
            .to_string();
        let setup = ReceiverSetup {
            gw: gw.into(),
            lan: lan.into(),
            gro_was_on: ethtool_feature(&gro, "generic-receive-offload")?,
            tso_was_on: ethtool_feature(&tso, "tcp-segmentation-offload")?,
            threaded_was,
        };
        process::ns_run(gw, "ethtool", ["-K", inside, "gro", "on"])?;
        process::ns_run(lan, "ethtool", ["-K", SENDER_IF, "tso", "off"])?;
        process::ns_run(gw, "sh", ["-c", &format!("echo 1 > {threaded_path}")])?;
        Ok(setup)
    }
}

impl Drop for ReceiverSetup {
    fn drop(&mut self) {
        let inside = lab::INSIDE_IF;
        let onoff = |on: bool| if on { "on" } else { "off" };
        let _ = process::ns_run(
            &self.gw,
            "sh",
            [
                "-c",
                &format!(
                    "echo {} > /sys/class/net/{inside}/threaded",
                    self.threaded_was
                ),
            ],
        );
        let _ = process::ns_run(
            &self.gw,
            "ethtool",
            ["-K", inside, "gro", onoff(self.gro_was_on)],
        );
        let _ = process::ns_run(
            &self.lan,
            "ethtool",
            ["-K", SENDER_IF, "tso", onoff(self.tso_was_on)],
        );
    }
}

/// `kernel.bpf_stats_enabled` on, put back as it was when dropped.
struct BpfStats {
    was: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<BpfStats> {
        let was = std::fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS}"))?
            .trim()
            .to_string();
        std::fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
        Ok(BpfStats { was })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(err) = std::fs::write(BPF_STATS, &self.was) {
            eprintln!(
                "bench dataplane: could not put {BPF_STATS} back to {}: {err}",
                self.was
            );
        }
    }
}

/// The id of the XDP program on `inside0` in `gw`.
fn xdp_prog_id(gw: &str) -> Result<u64> {
    let out = process::ns_output(
        gw,
        "ip",
        ["-j", "-d", "link", "show", "dev", lab::INSIDE_IF],
    )?;
    parse_xdp_prog_id(&out)
}

/// (run_time_ns, run_cnt) of program `id`.
fn prog_stats(id: u64) -> Result<(u64, u64)> {
    let out = process::output("bpftool", ["-j", "prog", "show", "id", &id.to_string()])?;
    parse_prog_stats(&out)
}

/// A named counter's packets in our nftables table.
fn nft_counter(gw: &str, name: &str) -> Result<u64> {
    let out = process::ns_output(
        gw,
        "nft",
        ["-j", "list", "counter", "netdev", NFT_TABLE, name],
    )?;
    parse_nft_counter(&out, name)
}

/// Kernel threads named `napi/inside0-…` (comm is cut at 15 characters).
fn napi_threads() -> BTreeSet<i32> {
    let prefix = format!("napi/{}-", lab::INSIDE_IF);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim().starts_with(&prefix))
        })
        .collect()
}

/// A thread's CPU time so far, ns (the first field of `/proc/<pid>/schedstat`).
fn thread_cpu_ns(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{path}: {text:?}"))
}

/// The frames trafgen says it sent: the sum of its `packets outgoing` lines.
pub fn parse_trafgen(out: &str) -> Result<u64> {
    let counts: Vec<u64> = out
        .lines()
        .filter(|l| l.trim_end().ends_with("packets outgoing"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    if counts.is_empty() {
        bail!("no \"packets outgoing\" line");
    }
    Ok(counts.iter().sum())
}

/// Whether `ethtool -k` shows `feature` on.
fn ethtool_feature(out: &str, feature: &str) -> Result<bool> {
    let prefix = format!("{feature}:");
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&prefix))
        .with_context(|| format!("ethtool -k shows no {feature}"))?;
    Ok(line[prefix.len()..].trim_start().starts_with("on"))
}

/// The attached XDP program's id from `ip -j -d link show dev X`.
pub fn parse_xdp_prog_id(json: &str) -> Result<u64> {
    let links: Vec<Value> = serde_json::from_str(json).context("parsing `ip -j link`")?;
    let xdp = links
        .first()
        .and_then(|l| l.get("xdp"))
        .context("no XDP program on the link")?;
    // One program: {"mode":1,"prog":{"id":…}}; several modes: {"attached":[{"prog":…}]}.
    let prog = xdp.get("prog").or_else(|| {
        xdp.get("attached")?
            .as_array()?
            .iter()
            .find_map(|a| a.get("prog"))
    });
    prog.and_then(|p| p.get("id"))
        .and_then(Value::as_u64)
        .context("no XDP program id on the link")
}

/// (run_time_ns, run_cnt) from `bpftool -j prog show id N` (absent while never counted: 0).
pub fn parse_prog_stats(json: &str) -> Result<(u64, u64)> {
    let prog: Value = serde_json::from_str(json).context("parsing bpftool's JSON")?;
    if prog.get("id").is_none() {
        bail!("bpftool printed no program");
    }
    let field = |name: &str| prog.get(name).and_then(Value::as_u64).unwrap_or(0);
    Ok((field("run_time_ns"), field("run_cnt")))
}

/// A named counter's packets from `nft -j list counter …`.
pub fn parse_nft_counter(json: &str, name: &str) -> Result<u64> {
    let doc: Value = serde_json::from_str(json).context("parsing nft's JSON")?;
    doc.get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("counter"))
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|c| c.get("packets"))
        .and_then(Value::as_u64)
        .with_context(|| format!("no counter {name:?}"))
}

/// (packets, dropped) of `mac` from `gateway-agent maps clients --json`; zeros for a MAC the
/// program has not seen yet.
pub fn parse_client_counts(json: &str, mac: &str) -> Result<(u64, u64)> {
    let rows: Vec<Value> = serde_json::from_str(json).context("parsing `maps clients --json`")?;
    let Some(row) = rows.iter().find(|r| {
        r.get("mac")
            .and_then(Value::as_str)
            .is_some_and(|m| m.eq_ignore_ascii_case(mac))
    }) else {
        return Ok((0, 0));
    };
    let field = |name: &str| {
        row.get(name)
            .and_then(Value::as_u64)
            .with_context(|| format!("client row without {name}: {row}"))
    };
    Ok((field("packets")?, field("dropped")?))
}

/// A table line: label, XDP samples, nftables samples, decimals, whether it gets a ratio.
type Line<'a> = (&'a str, &'a [f64], &'a [f64], usize, bool);

/// The section: the table, the ratios, the notes.
fn report(xdp: &Samples, nft: &Samples) -> (String, String, String) {
    let pct = |v: &[f64]| v.iter().map(|b| b * 100.0).collect::<Vec<_>>();
    let lines: [Line; 11] = [
        (
            "spoofed flood: drops/s",
            &xdp.drop_rate,
            &nft.drop_rate,
            0,
            true,
        ),
        (
            "spoofed flood: trafgen sent/s",
            &xdp.drop_offered,
            &nft.drop_offered,
            0,
            false,
        ),
        (
            "spoofed flood: receiver core busy %",
            &pct(&xdp.drop_busy),
            &pct(&nft.drop_busy),
            1,
            false,
        ),
        (
            "spoofed flood: receiver ns/frame",
            &xdp.flood_drop_ns,
            &nft.flood_drop_ns,
            0,
            true,
        ),
        (
            "allowed flood: passes/s",
            &xdp.pass_rate,
            &nft.pass_rate,
            0,
            true,
        ),
        (
            "allowed flood: receiver core busy %",
            &pct(&xdp.pass_busy),
            &pct(&nft.pass_busy),
            1,
            false,
        ),
        (
            "allowed flood: receiver ns/frame",
            &xdp.flood_pass_ns,
            &nft.flood_pass_ns,
            0,
            true,
        ),
        (
            "fixed load: frames/s achieved (spoofed)",
            &xdp.fixed_rate,
            &nft.fixed_rate,
            0,
            false,
        ),
        (
            "fixed load, spoofed: receiver ns/frame",
            &xdp.fixed_drop_ns,
            &nft.fixed_drop_ns,
            0,
            true,
        ),
        (
            "fixed load, allowed: receiver ns/frame",
            &xdp.fixed_pass_ns,
            &nft.fixed_pass_ns,
            0,
            true,
        ),
        (
            "XDP program alone ns/frame (spoofed / allowed)",
            &xdp.prog_drop_ns,
            &xdp.prog_pass_ns,
            0,
            false,
        ),
    ];
    let mut table = String::from(
        "| measurement | inside_ingress (XDP) | nftables netdev ingress |\n|---|---|---|\n",
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for (label, a, b, digits, ratio) in lines {
        let (a_text, b_text) = if label.starts_with("XDP program alone") {
            (
                format!(
                    "{} / {}",
                    results::spread(a, digits),
                    results::spread(b, digits)
                ),
                "-".to_string(),
            )
        } else {
            (results::spread(a, digits), results::spread(b, digits))
        };
        table.push_str(&format!("| {label} | {a_text} | {b_text} |\n"));
        if ratio {
            ours.push(Measurement {
                server: format!("XDP {label}"),
                rate: results::median(a).unwrap_or(0.0),
                ..Measurement::default()
            });
            theirs.push(Measurement {
                server: format!("nft {label}"),
                rate: results::median(b).unwrap_or(0.0),
                ..Measurement::default()
            });
        }
    }
    ours.extend(theirs);
    let mut notes = format!(
        "Ratios XDP / nftables (rates: higher is better for XDP; ns/frame: lower is):{}\n\n",
        results::ratio_lines(&ours, "XDP ", "nftables")
    );
    notes.push_str(&format!(
        "Each cell: the median of {ROUNDS} rounds (min–max); a round is the agent with its XDP \
         program, then the same veth with the agent stopped, `gateway-agent dataplane detach` \
         run and an nftables `netdev` table on `inside0`'s `ingress` hook. The generator is \
         trafgen 0.6.8 in `lan` on `gw0` (the peer of the gateway's `inside0`) pinned to core \
         {GENERATOR_CPU}, 60-byte UDP frames to 198.51.100.1:53 with c1's MAC as source: \
         *spoofed* from {SPOOFED_SOURCE} (not c1's lease; both filters drop it on the lease \
         lookup), *allowed* from c1's lease {LEASED_SOURCE} to a MAC that is not the gateway's \
         (both filters accept it, then the kernel drops it in `ip_rcv` as not for this host, \
         so \"passes/s\" is the filter's accept plus the skb the kernel builds for it and \
         throws away, not a socket's receive). `inside0` has GRO on and threaded NAPI, its \
         NAPI kthread pinned to core {RECEIVER_CPU}; \"receiver\" is that kthread's CPU time \
         (`/proc/<pid>/schedstat`) over the frames the filter decided on (XDP: the agent's \
         per-client counters via `gateway-agent maps clients --json`; nft: named counters). \
         Floods last {FLOOD_SECS} s with trafgen's `-t 0` (one `sendto` a frame: its TX_RING \
         mode aborts with EAGAIN on this kernel's veth back-pressure); the fixed load is \
         `-b {FIXED_PPS}pps` for {FIXED_SECS} s. \"XDP program alone\" is `run_time_ns / \
         run_cnt` from `bpftool prog show` with `kernel.bpf_stats_enabled=1` during {STATS_SECS} \
         s at the fixed load (put back afterwards; off for every other run). The XDP receiver \
         ns/frame includes veth's copy of each frame into a page with XDP headroom before the \
         program runs, which nftables does not pay. The agent is the debug build (`cargo \
         xtask build`; the eBPF object is always built in release). The nftables ruleset is \
         the IPv4/ARP part of the inside policy: lease set of MAC . address, client DHCP, the \
         gateway's open UDP/TCP ports, ping, steered TCP; both filters take the same path for \
         the flooded frames (ethertype, fragment check, lease lookup, destination and port). \
         When \"receiver core busy\" is well below 100 % the flood is bounded by the generator \
         (one core, a syscall a frame), not by the filter: then the ns/frame rows carry the \
         comparison. The machine is shared (2 cores, other builds running): expect noise."
    ));
    (
        "Dataplane (inside XDP vs nftables netdev ingress)".into(),
        table,
        notes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trafgen_summary() {
        let out = "Running! Hang up with ^C!\n\n\n      264073 packets outgoing\n    \
                   15844380 bytes outgoing\n           2 sec, 986214 usec on CPU0 (264073 \
                   packets)\n";
        assert_eq!(parse_trafgen(out).unwrap_or(0), 264073);
        // One line a process when trafgen forks several.
        let two = "  10 packets outgoing\n  600 bytes outgoing\n  5 packets outgoing\n";
        assert_eq!(parse_trafgen(two).unwrap_or(0), 15);
        assert!(
            parse_trafgen("Flushing TX_RING failed: Resource temporarily unavailable!").is_err()
        );
    }

    #[test]
    fn nft_counters() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"counter": {"family": "netdev", "name": "spoofed", "table": "benchdp", "handle": 2,
             "packets": 192377, "bytes": 11542620}},
            {"counter": {"family": "netdev", "name": "allowed", "table": "benchdp", "handle": 3,
             "packets": 7, "bytes": 420}}]}"#;
        assert_eq!(parse_nft_counter(json, "spoofed").unwrap_or(0), 192377);
        assert_eq!(parse_nft_counter(json, "allowed").unwrap_or(0), 7);
        assert!(parse_nft_counter(json, "other").is_err());
        assert!(parse_nft_counter("not json", "spoofed").is_err());
    }

    #[test]
    fn bpftool_run_stats() {
        let json = r#"{"id":42,"type":"xdp","name":"inside_ingress","tag":"ab","run_time_ns":
            123456,"run_cnt":1000,"loaded_at":1}"#;
        assert_eq!(parse_prog_stats(json).unwrap_or((0, 0)), (123456, 1000));
        // Statistics off and never counted: bpftool leaves the fields out.
        let json = r#"{"id":42,"type":"xdp","name":"inside_ingress"}"#;
        assert_eq!(parse_prog_stats(json).unwrap_or((1, 1)), (0, 0));
        assert!(parse_prog_stats(r#"{"error":"can't get prog by id (7)"}"#).is_err());
    }

    #[test]
    fn xdp_program_on_a_link() {
        let one = r#"[{"ifindex":3,"ifname":"inside0","xdp":{"mode":1,"prog":{"id":57,
            "name":"inside_ingress","tag":"x","jited":1}}}]"#;
        assert_eq!(parse_xdp_prog_id(one).unwrap_or(0), 57);
        let multi = r#"[{"ifname":"inside0","xdp":{"mode":4,"attached":[{"mode":1,
            "prog":{"id":58}}]}}]"#;
        assert_eq!(parse_xdp_prog_id(multi).unwrap_or(0), 58);
        assert!(parse_xdp_prog_id(r#"[{"ifname":"inside0","flags":["UP"]}]"#).is_err());
    }

    #[test]
    fn client_counters() {
        let json = r#"[{"mac":"02:aa:bb:cc:dd:ee","ip":"198.51.100.11","ip_source":"lease",
            "packets":100,"bytes":6000,"dropped":40,"idle_secs":0},
            {"mac":"02:00:00:00:00:01","ip":null,"ip_source":null,"packets":1,"bytes":60,
            "dropped":1,"idle_secs":3}]"#;
        assert_eq!(
            parse_client_counts(json, "02:AA:BB:CC:DD:EE").unwrap_or((0, 0)),
            (100, 40)
        );
        // Not seen yet: nothing counted.
        assert_eq!(
            parse_client_counts(json, "02:11:11:11:11:11").unwrap_or((9, 9)),
            (0, 0)
        );
        assert!(parse_client_counts("{}", "02:aa:bb:cc:dd:ee").is_err());
    }

    #[test]
    fn ethtool_features() {
        let out = "Features for inside0:\nrx-checksumming: on\ntcp-segmentation-offload: on\n\
                   \ttx-tcp-segmentation: on\ngeneric-receive-offload: off\n\
                   rx-gro-hw: off [fixed]\n";
        assert!(ethtool_feature(out, "tcp-segmentation-offload").unwrap_or(false));
        assert!(!ethtool_feature(out, "generic-receive-offload").unwrap_or(true));
        assert!(ethtool_feature(out, "large-receive-offload").is_err());
    }
}
