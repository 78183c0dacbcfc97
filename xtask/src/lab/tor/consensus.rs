//! Readiness: the consensus an authority serves, parsed and checked (fresh, valid, every node
//! `Running` and `Valid`, exits `Exit`), and the network's status for `lab status`.

use std::fs::{self};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::process;

use super::keys::{read_keys, NodeKeys};
use super::nodes::{
    arti_config_path, node_log, node_running, started_file, Role, DIR_PORT, NODES, ONION_HOST,
    OR_PORT,
};
use super::onion::{onion_address, onion_published};
use crate::lab::layout::Lab;
use crate::process::log_tail;

/// How long `lab tor start --wait` and the tests wait for a usable consensus by default.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// One node in [`TorStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct TorNodeStatus {
    pub nick: String,
    pub role: Role,
    pub address: String,
    pub or_port: u16,
    pub dir_port: u16,
    /// Its process is alive in the lab's `up` namespace.
    pub running: bool,
    /// None until [`setup`] made its keys.
    pub keys: Option<NodeKeys>,
}

/// The network's state, for `lab status` and the tests.
#[derive(Debug, Clone, Serialize)]
pub struct TorStatus {
    /// Every node has a running process and a fresh consensus lists them all with their flags.
    pub ready: bool,
    /// Why it is not ready, if it is not.
    pub not_ready_because: Option<String>,
    /// `valid-after` of the consensus the authorities serve (UTC), if one answered.
    pub consensus_valid_after: Option<String>,
    /// How many nodes run.
    pub running: usize,
    /// How many nodes a fresh consensus (made since the nodes started) lists at their address
    /// with the flags they need; 0 before one is out.
    pub listed: usize,
    pub nodes: Vec<TorNodeStatus>,
    /// The onion service's address (`<56 chars>.onion`), once its host has started once.
    pub onion_address: Option<String>,
    /// The onion service has stored its current descriptor on its HSDirs since its host last
    /// started: clients can find it. It lags `ready` by seconds to a minute or two (its
    /// host must bootstrap and build introduction circuits first).
    pub onion_published: bool,
    /// The arti settings for this network.
    pub arti_config: PathBuf,
}

impl std::fmt::Display for TorStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.not_ready_because, &self.consensus_valid_after) {
            (None, Some(after)) => writeln!(f, "tor: ready (consensus valid after {after} UTC)")?,
            (None, None) => writeln!(f, "tor: ready")?,
            (Some(why), _) => writeln!(f, "tor: not ready: {why}")?,
        }
        for n in &self.nodes {
            let rsa = n.keys.as_ref().map_or("-", |k| k.rsa_identity.as_str());
            writeln!(
                f,
                "  {:<7} {:<9} {}:{}/{}  {:<7} {rsa}",
                n.nick,
                format!("{:?}", n.role).to_lowercase(),
                n.address,
                n.or_port,
                n.dir_port,
                if n.running { "running" } else { "stopped" },
            )?;
        }
        if let Some(onion) = &self.onion_address {
            let published = if self.onion_published {
                "published"
            } else {
                "not published yet"
            };
            writeln!(
                f,
                "  onion   http://{onion}/ (on {ONION_HOST}, the origin; {published})"
            )?;
        }
        writeln!(f, "  arti    {}", self.arti_config.display())
    }
}

/// The network's state: which nodes run, whether a usable consensus is out, the onion address.
pub fn status(lab: &Lab) -> TorStatus {
    let nodes: Vec<TorNodeStatus> = NODES
        .iter()
        .map(|n| TorNodeStatus {
            nick: n.nick.to_string(),
            role: n.role,
            address: n.address.to_string(),
            or_port: OR_PORT,
            dir_port: DIR_PORT,
            running: node_running(lab, n),
            keys: read_keys(lab, n).ok(),
        })
        .collect();
    let running = nodes.iter().filter(|n| n.running).count();
    let mut consensus_valid_after = None;
    let mut listed = 0;
    let verdict = if running < NODES.len() {
        Err(format!("{running} of {} nodes run", NODES.len()))
    } else {
        match fetch_consensus(lab) {
            Ok(text) => match parse_consensus(&text) {
                Some(consensus) => {
                    consensus_valid_after = Some(consensus.valid_after_text.clone());
                    let started = fs::read_to_string(started_file(lab))
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .unwrap_or(0);
                    if consensus.valid_after > started {
                        listed = listed_nodes(&consensus);
                    }
                    check_consensus(&consensus, started, unix_now())
                }
                None => Err("the authorities serve no parsable consensus".to_string()),
            },
            Err(err) => Err(format!("{err:#}")),
        }
    };
    TorStatus {
        ready: verdict.is_ok(),
        not_ready_because: verdict.err(),
        consensus_valid_after,
        running,
        listed,
        nodes,
        onion_address: onion_address(lab),
        onion_published: onion_published(lab),
        arti_config: arti_config_path(lab),
    }
}

/// Polls [`status`] until the network is ready; returns how long that took.
pub fn wait_ready(lab: &Lab, timeout: Duration) -> Result<Duration> {
    wait_ready_showing(lab, timeout, &mut |_| {})
}

/// [`wait_ready`], calling `show` with [`progress_line`] whenever it changes.
pub fn wait_ready_showing(
    lab: &Lab,
    timeout: Duration,
    show: &mut dyn FnMut(&str),
) -> Result<Duration> {
    let begin = Instant::now();
    let mut shown = String::new();
    loop {
        let status = status(lab);
        let line = progress_line(&status);
        if line != shown {
            show(&line);
            shown = line;
        }
        if status.ready {
            return Ok(begin.elapsed());
        }
        if begin.elapsed() >= timeout {
            bail!(
                "the lab's Tor network is not ready after {timeout:?}: {} (auth1: {})",
                status.not_ready_because.unwrap_or_default(),
                log_tail(&node_log(lab, "auth1"))
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// `Tor network: 9/9 nodes run, 4/9 relays in consensus`.
pub fn progress_line(status: &TorStatus) -> String {
    let total = NODES.len();
    if status.ready {
        return format!("Tor network: ready, {total}/{total} relays in consensus");
    }
    if status.running < total {
        return format!("Tor network: {}/{total} nodes run", status.running);
    }
    format!(
        "Tor network: {total}/{total} nodes run, {}/{total} relays in consensus",
        status.listed
    )
}

/// How many of the lab's nodes `consensus` lists at their address with the flags they need
/// (`Running`, `Valid`, and `Exit` for exits).
fn listed_nodes(consensus: &Consensus) -> usize {
    NODES
        .iter()
        .filter(|node| {
            consensus.relays.iter().any(|(nick, address, flags)| {
                let has = |flag: &str| flags.iter().any(|f| f == flag);
                nick == node.nick
                    && address == node.address
                    && has("Running")
                    && has("Valid")
                    && (node.role != Role::Exit || has("Exit"))
            })
        })
        .count()
}

/// The microdescriptor consensus (the flavour clients use) from the first authority that
/// answers, fetched inside `up`.
pub(crate) fn fetch_consensus(lab: &Lab) -> Result<String> {
    let mut errors = Vec::new();
    for auth in NODES.iter().filter(|n| n.role == Role::Authority) {
        let url = format!(
            "http://{}/tor/status-vote/current/consensus-microdesc",
            auth.dir_addr()
        );
        // The status code on a line of its own after the body.
        let out = process::ns_output(
            &lab.ns("up"),
            "curl",
            ["-sS", "-m", "3", "-w", "\n%{http_code}", &url],
        );
        match out {
            Ok(text) => match text.rsplit_once('\n') {
                Some((body, "200")) => return Ok(body.to_string()),
                Some((_, code)) => errors.push(format!("{} HTTP {code}", auth.nick)),
                None => errors.push(format!("{} sent nothing", auth.nick)),
            },
            Err(err) => {
                let err = format!("{err:#}");
                errors.push(format!("{}: {}", auth.nick, last_line(&err)));
            }
        }
    }
    bail!(
        "no consensus from the authorities yet ({})",
        errors.join(", ")
    )
}

pub(crate) fn last_line(text: &str) -> &str {
    text.trim().lines().last().unwrap_or("")
}

/// What readiness needs from a consensus document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consensus {
    pub valid_after: u64,
    pub valid_after_text: String,
    pub valid_until: u64,
    /// (nickname, address, flags) per `r` line.
    pub relays: Vec<(String, String, Vec<String>)>,
}

/// Parses the header times and the `r`/`s` lines of a consensus (either flavour).
pub fn parse_consensus(text: &str) -> Option<Consensus> {
    let mut valid_after = None;
    let mut valid_until = None;
    let mut relays: Vec<(String, String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["valid-after", date, time] => {
                valid_after = Some((parse_utc(date, time)?, format!("{date} {time}")));
            }
            ["valid-until", date, time] => valid_until = Some(parse_utc(date, time)?),
            // `r nick id [digest] date time address orport dirport`.
            ["r", nick, .., address, _, _] if fields.len() >= 8 => {
                relays.push((nick.to_string(), address.to_string(), Vec::new()));
            }
            ["s", flags @ ..] => {
                if let Some(last) = relays.last_mut() {
                    last.2 = flags.iter().map(|f| f.to_string()).collect();
                }
            }
            _ => {}
        }
    }
    let (valid_after, valid_after_text) = valid_after?;
    Some(Consensus {
        valid_after,
        valid_after_text,
        valid_until: valid_until?,
        relays,
    })
}

/// Ok if `consensus` was made after `started`, is valid at `now`, and lists every node at its
/// address with `Running` and `Valid`, and the exits with `Exit`; else why not.
pub fn check_consensus(
    consensus: &Consensus,
    started: u64,
    now: u64,
) -> std::result::Result<(), String> {
    if consensus.valid_after <= started {
        return Err(format!(
            "no consensus since the nodes started (latest valid after {})",
            consensus.valid_after_text
        ));
    }
    if now >= consensus.valid_until {
        return Err(format!(
            "the consensus (valid after {}) has expired",
            consensus.valid_after_text
        ));
    }
    let mut missing = Vec::new();
    for node in &NODES {
        let Some((_, address, flags)) = consensus.relays.iter().find(|(n, _, _)| n == node.nick)
        else {
            missing.push(format!("{} absent", node.nick));
            continue;
        };
        if address != node.address {
            missing.push(format!("{} at {address}", node.nick));
        }
        let mut needed = vec!["Running", "Valid"];
        if node.role == Role::Exit {
            needed.push("Exit");
        }
        for flag in needed {
            if !flags.iter().any(|f| f == flag) {
                missing.push(format!("{} not {flag}", node.nick));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "consensus valid after {}: {}",
            consensus.valid_after_text,
            missing.join(", ")
        ))
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) as unix seconds.
pub(crate) fn parse_utc(date: &str, time: &str) -> Option<u64> {
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let ([y, m, day], [h, min, s]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    if !(1..=12).contains(m) || !(1..=31).contains(day) || *h > 23 || *min > 59 || *s > 60 {
        return None;
    }
    let secs = days_from_civil(*y, *m, *day) * 86_400 + h * 3600 + min * 60 + s;
    u64::try_from(secs).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    #[test]
    fn utc_times() {
        assert_eq!(parse_utc("1970-01-01", "00:00:00"), Some(0));
        assert_eq!(parse_utc("2000-03-01", "00:00:01"), Some(951_868_801));
        assert_eq!(parse_utc("2024-02-29", "23:59:59"), Some(1_709_251_199));
        assert_eq!(parse_utc("2024-13-01", "00:00:00"), None);
        assert_eq!(parse_utc("2024-01-01", "00:00"), None);
    }

    fn consensus_text(exit3_flags: &str) -> String {
        let mut t = String::from(
            "network-status-version 3 microdesc\nvote-status consensus\n\
             valid-after 2024-01-01 00:00:20\nfresh-until 2024-01-01 00:00:40\n\
             valid-until 2024-01-01 00:01:00\n",
        );
        for n in &NODES {
            let _ = writeln!(
                t,
                "r {} AAAA 2024-01-01 00:00:00 {} 5000 7000\nm xyz",
                n.nick, n.address
            );
            let flags = match (n.nick, n.role) {
                ("exit3", _) => exit3_flags,
                (_, Role::Exit) => "Exit Fast Guard HSDir Running Stable V2Dir Valid",
                _ => "Fast Guard HSDir Running Stable V2Dir Valid",
            };
            let _ = writeln!(t, "s {flags}\nw Bandwidth=0");
        }
        t.push_str("directory-footer\n");
        t
    }

    #[test]
    fn consensus_readiness() {
        let start = parse_utc("2024-01-01", "00:00:05").unwrap();
        let good = parse_consensus(&consensus_text("Exit Running Valid")).unwrap();
        assert_eq!(good.relays.len(), 9);
        assert_eq!(good.valid_after_text, "2024-01-01 00:00:20");
        assert_eq!(check_consensus(&good, start, start + 20), Ok(()));
        // Older than the start: made before a restart.
        assert!(check_consensus(&good, start + 15, start + 20).is_err());
        // Expired.
        assert!(check_consensus(&good, start, start + 60).is_err());
        let no_exit = parse_consensus(&consensus_text("Running Valid")).unwrap();
        let why = check_consensus(&no_exit, start, start + 20).unwrap_err();
        assert!(why.contains("exit3 not Exit"), "{why}");
        let text = consensus_text("Exit Running Valid").replace("r relay2 ", "r other ");
        let why = check_consensus(&parse_consensus(&text).unwrap(), start, start + 20).unwrap_err();
        assert!(why.contains("relay2 absent"), "{why}");
        assert_eq!(parse_consensus("nothing\n"), None);
    }

    #[test]
    fn progress_counts_the_nodes_listed_with_their_flags() {
        let good = parse_consensus(&consensus_text("Exit Running Valid")).unwrap();
        assert_eq!(listed_nodes(&good), 9);
        let text = consensus_text("Running Valid").replace("r relay2 ", "r other ");
        assert_eq!(listed_nodes(&parse_consensus(&text).unwrap()), 7);
        let mut status = TorStatus {
            ready: false,
            not_ready_because: None,
            consensus_valid_after: None,
            running: 4,
            listed: 0,
            nodes: Vec::new(),
            onion_address: None,
            onion_published: false,
            arti_config: PathBuf::new(),
        };
        assert_eq!(progress_line(&status), "Tor network: 4/9 nodes run");
        status.running = 9;
        status.listed = 7;
        assert_eq!(
            progress_line(&status),
            "Tor network: 9/9 nodes run, 7/9 relays in consensus"
        );
        status.ready = true;
        assert_eq!(
            progress_line(&status),
            "Tor network: ready, 9/9 relays in consensus"
        );
    }
}
