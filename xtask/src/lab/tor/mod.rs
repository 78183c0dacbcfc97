//! The lab's private Tor network, from Debian's `tor`, all in the `up` namespace on the stand-in
//! internet: 3 directory authorities, 3 relays and 3 exits, each on its own address with fixed
//! ports, `TestingTorNetwork 1` with a 20 s voting interval. `relay1` also hosts an onion service
//! in front of the origin. Exits resolve names with the modem's dnsmasq (203.0.113.53).
//!
//! Everything lives under `<lab state dir>/tor/<nick>/` (torrc, data dir with the keys, pid
//! file, logs), so [`stop`] and [`start`] keep the keys and the network comes back with the same
//! fingerprints and onion address. [`write_arti_config`] writes `<lab state dir>/arti.toml`: the
//! arti `TorClientConfig` keys (authorities, fallback caches, path and address rules) that the
//! agent's lab config points at.
//!
//! Readiness: the microdescriptor consensus an authority serves on its DirPort must be fresh
//! (made after the nodes last started), still valid, and list every node `Running` and `Valid`,
//! the exits with `Exit`. The first such consensus appears 10–50 s after [`start`].

mod consensus;
mod keys;
mod nodes;
mod onion;
mod torrc;

use std::fs::{self, File};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::lab::topology::ip;
use crate::process;

use self::consensus::unix_now;
use self::keys::{make_keys, read_all_keys};
use self::nodes::{node_running, pid_file_rel, resolv_conf, started_file};
use crate::lab::layout::{Lab, INTERNET_RESOLVER_IP};
use crate::process::{log_tail, read_pid, stop_processes};

pub use crate::lab::layout::ARTI_CONFIG_FILE;
pub use consensus::{
    check_consensus, parse_consensus, progress_line, status, wait_ready, wait_ready_showing,
    Consensus, TorNodeStatus, TorStatus, READY_TIMEOUT,
};
pub use keys::{read_keys, NodeKeys};
pub use nodes::{
    arti_config_path, data_dir, ever_started, node_dir, node_log, tor_dir, Node, Role, DIR_PORT,
    NODES, ONION_HOST, OR_PORT,
};
pub use onion::{onion_address, onion_dir, onion_log, onion_published, wait_onion, ONION_TIMEOUT};
pub use torrc::{
    client_torrc, dir_authority_lines, render_arti_config, render_torrc, write_arti_config,
    NodePaths,
};

/// Addresses, keys, torrc files and the arti settings; idempotent (keys are made only once).
/// The lab's `up` namespace must exist.
pub fn setup(lab: &Lab) -> Result<()> {
    let up = lab.ns("up");
    for node in &NODES {
        // `replace` rather than `add`: idempotent.
        ip(
            &up,
            &[
                "addr",
                "replace",
                &format!("{}/24", node.address),
                "dev",
                "inet0",
            ],
        )
        .with_context(|| format!("adding {}'s address", node.nick))?;
    }
    let dir = tor_dir(lab);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let resolv = resolv_conf(lab);
    fs::write(&resolv, format!("nameserver {INTERNET_RESOLVER_IP}\n"))
        .with_context(|| format!("writing {}", resolv.display()))?;

    make_keys(lab)?;
    let keys = read_all_keys(lab)?;
    let authorities = dir_authority_lines(&keys);
    for node in &NODES {
        let paths = NodePaths::of(lab, node.nick);
        let torrc = render_torrc(node, &paths, &authorities, &resolv);
        let file = node_dir(lab, node.nick).join("torrc");
        fs::write(&file, torrc).with_context(|| format!("writing {}", file.display()))?;
    }
    write_arti_config(lab)?;
    Ok(())
}

/// Starts every node that does not run (with the keys it has: [`setup`] first); returns
/// without waiting for a consensus (see [`wait_ready`]).
pub fn start(lab: &Lab) -> Result<()> {
    let todo: Vec<&Node> = NODES.iter().filter(|n| !node_running(lab, n)).collect();
    if todo.is_empty() {
        return Ok(());
    }
    let torrc_missing: Vec<&str> = todo
        .iter()
        .filter(|n| !node_dir(lab, n.nick).join("torrc").is_file())
        .map(|n| n.nick)
        .collect();
    if !torrc_missing.is_empty() {
        bail!(
            "no torrc for {}: the lab's Tor network is not set up (`cargo xtask lab up`)",
            torrc_missing.join(" ")
        );
    }
    let started = started_file(lab);
    fs::write(&started, format!("{}\n", unix_now()))
        .with_context(|| format!("writing {}", started.display()))?;
    eprintln!(
        "lab: starting {} Tor node(s): {}",
        todo.len(),
        todo.iter().map(|n| n.nick).collect::<Vec<_>>().join(" ")
    );
    thread::scope(|scope| {
        let handles: Vec<_> = todo
            .iter()
            .map(|node| scope.spawn(move || start_node(lab, node)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("starting a node panicked")))
            })
            .collect::<Result<Vec<()>>>()
    })?;
    Ok(())
}

fn start_node(lab: &Lab, node: &Node) -> Result<()> {
    let dir = node_dir(lab, node.nick);
    let out_path = dir.join("start.log");
    let out =
        File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?;
    let err = out.try_clone().context("duplicating a log handle")?;
    // RunAsDaemon: the parent exits once the daemon runs (or reports why it could not).
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.ns("up"), "tor"])
        .args(["--defaults-torrc", "/dev/null", "-f"])
        .arg(dir.join("torrc"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let line = process::describe(&cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status}): {}", log_tail(&out_path));
    }
    // The daemon writes its pid file a moment later (authorities load GeoIP first); until then
    // another `start` would launch a second copy.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !node_running(lab, node) {
        if Instant::now() >= deadline {
            bail!(
                "{} did not come up within 15 s: {}",
                node.nick,
                log_tail(&node_log(lab, node.nick))
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Stops every node (SIGTERM, then SIGKILL after a bounded wait); keys and state stay.
pub fn stop(lab: &Lab) -> Result<()> {
    let pids: std::collections::BTreeSet<i32> = NODES
        .iter()
        .filter(|n| node_running(lab, n))
        .filter_map(|n| read_pid(&lab.state_dir().join(pid_file_rel(n.nick))))
        .collect();
    if pids.is_empty() {
        eprintln!("lab: no Tor node runs");
        return Ok(());
    }
    eprintln!("lab: stopping {} Tor node(s)", pids.len());
    stop_processes(&pids);
    let left: Vec<&str> = NODES
        .iter()
        .filter(|n| node_running(lab, n))
        .map(|n| n.nick)
        .collect();
    if !left.is_empty() {
        bail!("Tor nodes still running after SIGKILL: {}", left.join(" "));
    }
    Ok(())
}
