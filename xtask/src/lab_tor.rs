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

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::lab::{self, Lab, INTERNET_RESOLVER_IP, ORIGIN_IP};
use crate::process;

/// Every node's ORPort, on its own address.
pub const OR_PORT: u16 = 5000;
/// Every node's DirPort, on its own address.
pub const DIR_PORT: u16 = 7000;
/// The node that hosts the onion service (in front of the origin's port 80).
pub const ONION_HOST: &str = "relay1";
/// The arti settings file, in the lab's state dir (`/run/gateway-lab/default/arti.toml` for the
/// default lab, which is the path `config/lab.toml` uses).
pub const ARTI_CONFIG_FILE: &str = "arti.toml";
/// How long `lab tor start --wait` and the tests wait for a usable consensus by default.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Voting interval and vote/distribution delays of the authorities, in seconds.
const VOTING_INTERVAL: u32 = 20;
/// The onion-service time period, in minutes, published as the consensus parameter
/// `hsdir_interval`. C tor on a `TestingTorNetwork` ignores that parameter and makes the period one
/// shared-random run (24 voting intervals: 8 minutes here); arti reads the parameter (default one
/// day). Unless both agree they derive different blinded keys and HSDir rings, and arti's
/// descriptor fetches get 404 from every HSDir.
const HSDIR_INTERVAL_MIN: u32 = 24 * VOTING_INTERVAL / 60;
// arti accepts 5..=14400 minutes, and the run must be whole minutes.
const _: () = assert!((24 * VOTING_INTERVAL).is_multiple_of(60) && HSDIR_INTERVAL_MIN >= 5);
const VOTE_DELAY: u32 = 4;
const DIST_DELAY: u32 = 4;

/// What a node does in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A v3 directory authority (also a relay, never an exit).
    Authority,
    /// A middle relay.
    Relay,
    /// An exit relay, with a policy ending in `accept *:*`.
    Exit,
}

/// One node of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// Its nickname, also the name of its directory.
    pub nick: &'static str,
    pub role: Role,
    /// Its own address on the stand-in internet (on `inet0` in `up`).
    pub address: &'static str,
}

/// The network: authorities .21–.23, relays .31–.33, exits .41–.43.
pub const NODES: [Node; 9] = [
    node("auth1", Role::Authority, "203.0.113.21"),
    node("auth2", Role::Authority, "203.0.113.22"),
    node("auth3", Role::Authority, "203.0.113.23"),
    node("relay1", Role::Relay, "203.0.113.31"),
    node("relay2", Role::Relay, "203.0.113.32"),
    node("relay3", Role::Relay, "203.0.113.33"),
    node("exit1", Role::Exit, "203.0.113.41"),
    node("exit2", Role::Exit, "203.0.113.42"),
    node("exit3", Role::Exit, "203.0.113.43"),
];

const fn node(nick: &'static str, role: Role, address: &'static str) -> Node {
    Node {
        nick,
        role,
        address,
    }
}

impl Node {
    /// `address:ORPort`.
    pub fn or_addr(&self) -> String {
        format!("{}:{OR_PORT}", self.address)
    }

    /// `address:DirPort`.
    pub fn dir_addr(&self) -> String {
        format!("{}:{DIR_PORT}", self.address)
    }
}

/// A node's identities, read from its data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeKeys {
    /// RSA identity fingerprint, 40 hex digits.
    pub rsa_identity: String,
    /// Ed25519 identity, unpadded base64 (the second field of `fingerprint-ed25519`).
    pub ed_identity: String,
    /// Authorities only: the v3 identity (the `fingerprint` of `keys/authority_certificate`).
    pub v3ident: Option<String>,
}

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

/// `<lab state dir>/tor`.
pub fn tor_dir(lab: &Lab) -> PathBuf {
    lab.state_dir().join("tor")
}

/// `<lab state dir>/tor/<nick>`: torrc, pid file, logs.
pub fn node_dir(lab: &Lab, nick: &str) -> PathBuf {
    tor_dir(lab).join(nick)
}

/// The node's DataDirectory (keys, cached consensus).
pub fn data_dir(lab: &Lab, nick: &str) -> PathBuf {
    node_dir(lab, nick).join("data")
}

/// The node's notice log.
pub fn node_log(lab: &Lab, nick: &str) -> PathBuf {
    node_dir(lab, nick).join("notice.log")
}

/// [`ONION_HOST`]'s onion-service log (tor's `rend` domain at info level): descriptor uploads.
pub fn onion_log(lab: &Lab) -> PathBuf {
    node_dir(lab, ONION_HOST).join("onion.log")
}

/// What tor logs (info, `rend`) when an HSDir stored a descriptor.
const UPLOADED: &str = "Uploaded hidden service descriptor (status 200";

/// What tor logs (info, `rend`) for each upload of the descriptor clients look for now. (The
/// `next` descriptor, for the coming time period, is uploaded too, sometimes first.)
const CURRENT_UPLOAD: &str = " current descriptor of revision ";

/// Whether the onion service's host runs and, since it last started, has stored the descriptor
/// clients fetch now on its HSDirs.
pub fn onion_published(lab: &Lab) -> bool {
    let Some(host) = NODES.iter().find(|n| n.nick == ONION_HOST) else {
        return false;
    };
    let log = fs::read_to_string(onion_log(lab)).unwrap_or_default();
    node_running(lab, host) && current_descriptor_stored(&log)
}

/// In the last run of an onion-service log: uploads of the current descriptor were sent, and
/// at least as many uploads succeeded after the first of them. (The responses do not say which
/// descriptor they are for; the `next` descriptor's, when it went first, are answered within
/// milliseconds on this network, before the current one is sent.)
fn current_descriptor_stored(log: &str) -> bool {
    let run = last_run(log);
    let Some(first) = run.find(CURRENT_UPLOAD) else {
        return false;
    };
    let sent = run
        .lines()
        .filter(|l| l.contains(CURRENT_UPLOAD) && l.contains("initiated upload request"))
        .count();
    sent > 0 && run[first..].matches(UPLOADED).count() >= sent
}

/// The part of an onion-service log written since tor last started: each start writes
/// "Tor <version> opening log file." (or "opening new log file." when the file is new) first.
fn last_run(log: &str) -> &str {
    let start = log
        .lines()
        .scan(0, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line))
        })
        .filter(|(_, line)| {
            line.contains("] Tor ")
                && (line.ends_with(" opening log file.")
                    || line.ends_with(" opening new log file."))
        })
        .map(|(at, _)| at)
        .last()
        .unwrap_or(0);
    log.get(start..).unwrap_or_default()
}

/// Waits until [`onion_published`], or fails after `timeout` with the log's tail.
pub fn wait_onion(lab: &Lab, timeout: Duration) -> Result<Duration> {
    let begin = Instant::now();
    while !onion_published(lab) {
        if begin.elapsed() >= timeout {
            bail!(
                "the lab's onion service has not published its descriptor after {timeout:?}: {}",
                lab::log_tail(&onion_log(lab))
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
    Ok(begin.elapsed())
}

/// The onion service's directory (keys and `hostname`) on [`ONION_HOST`].
pub fn onion_dir(lab: &Lab) -> PathBuf {
    node_dir(lab, ONION_HOST).join("onion")
}

/// `<lab state dir>/arti.toml`.
pub fn arti_config_path(lab: &Lab) -> PathBuf {
    lab.state_dir().join(ARTI_CONFIG_FILE)
}

/// The resolv.conf the exits resolve names with: the modem's dnsmasq on the stand-in internet.
fn resolv_conf(lab: &Lab) -> PathBuf {
    tor_dir(lab).join("resolv.conf")
}

/// When [`start`] last started a node (unix seconds): a consensus is fresh if it is newer.
fn started_file(lab: &Lab) -> PathBuf {
    tor_dir(lab).join("started")
}

/// Whether [`start`] has ever started this lab's network (it may have been stopped since):
/// labs that start Tor only when a test first needs it ask this.
pub fn ever_started(lab: &Lab) -> bool {
    started_file(lab).is_file()
}

fn pid_file_rel(nick: &str) -> PathBuf {
    Path::new("tor").join(nick).join("tor.pid")
}

/// Addresses, keys, torrc files and the arti settings; idempotent (keys are made only once).
/// The lab's `up` namespace must exist.
pub fn setup(lab: &Lab) -> Result<()> {
    let up = lab.ns("up");
    for node in &NODES {
        // `replace` rather than `add`: idempotent.
        lab::ip(
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

/// Makes the keys of every node that has none yet, in parallel: the authority keys with
/// `tor-gencert`, then each node's relay identity with `tor --list-fingerprint`.
fn make_keys(lab: &Lab) -> Result<()> {
    let todo: Vec<&Node> = NODES
        .iter()
        .filter(|n| read_keys(lab, n).is_err())
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    eprintln!("lab: making keys for {} Tor node(s)", todo.len());
    thread::scope(|scope| {
        let handles: Vec<_> = todo
            .iter()
            .map(|node| scope.spawn(move || make_node_keys(lab, node)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("key generation panicked")))
            })
            .collect::<Result<Vec<()>>>()
    })?;
    Ok(())
}

fn make_node_keys(lab: &Lab, node: &Node) -> Result<()> {
    let data = data_dir(lab, node.nick);
    let keys = data.join("keys");
    create_private_dir(&node_dir(lab, node.nick))?;
    create_private_dir(&data)?;
    create_private_dir(&keys)?;
    if node.role == Role::Authority && !keys.join("authority_certificate").is_file() {
        // An empty passphrase on stdin; 12 months is plenty for a lab.
        let mut cmd = Command::new("tor-gencert");
        cmd.args(["--create-identity-key", "--passphrase-fd", "0", "-i"])
            .arg(keys.join("authority_identity_key"))
            .arg("-s")
            .arg(keys.join("authority_signing_key"))
            .arg("-c")
            .arg(keys.join("authority_certificate"))
            .args(["-m", "12", "-a", &node.dir_addr()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let line = process::describe(&cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{line}`"))?;
        // Dropping stdin closes it: tor-gencert reads the empty passphrase up to EOF.
        drop(child.stdin.take());
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for `{line}`"))?;
        if !out.status.success() {
            bail!(
                "`{line}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    // Writes keys/secret_id_key, the ed25519 keys, `fingerprint` and `fingerprint-ed25519`.
    let mut cmd = Command::new("tor");
    cmd.args(["--defaults-torrc", "/dev/null", "--ignore-missing-torrc"])
        .args(["-f", "/dev/null", "--orport", "1", "--nickname", node.nick])
        .arg("--datadirectory")
        .arg(&data)
        .arg("--list-fingerprint");
    process::run_command(&mut cmd).with_context(|| format!("making {}'s keys", node.nick))?;
    read_keys(lab, node).map(|_| ())
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // Tor refuses a DataDirectory others can read.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

/// A node's identities from its data dir.
pub fn read_keys(lab: &Lab, node: &Node) -> Result<NodeKeys> {
    let data = data_dir(lab, node.nick);
    let field = |file: &str| -> Result<String> {
        let path = data.join(file);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        second_field(&text)
            .map(str::to_owned)
            .with_context(|| format!("{} has no `<nick> <id>` line", path.display()))
    };
    let rsa_identity = field("fingerprint")?;
    let ed_identity = field("fingerprint-ed25519")?;
    let v3ident = if node.role == Role::Authority {
        let path = data.join("keys").join("authority_certificate");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Some(
            cert_fingerprint(&text)
                .with_context(|| format!("{} has no fingerprint line", path.display()))?,
        )
    } else {
        None
    };
    Ok(NodeKeys {
        rsa_identity,
        ed_identity,
        v3ident,
    })
}

fn read_all_keys(lab: &Lab) -> Result<Vec<(Node, NodeKeys)>> {
    NODES
        .iter()
        .map(|n| read_keys(lab, n).map(|k| (*n, k)))
        .collect()
}

/// The second whitespace-separated field of the first line (`<nick> <id>`).
fn second_field(text: &str) -> Option<&str> {
    text.lines().next()?.split_whitespace().nth(1)
}

/// The `fingerprint <hex>` line of an authority certificate.
fn cert_fingerprint(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .map(|f| f.trim().to_string())
        .filter(|f| f.len() == 40 && f.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One `DirAuthority` line per authority, for every torrc of this network (C-tor clients too).
pub fn dir_authority_lines(keys: &[(Node, NodeKeys)]) -> Vec<String> {
    keys.iter()
        .filter_map(|(node, k)| {
            let v3 = k.v3ident.as_deref()?;
            Some(format!(
                "DirAuthority {} orport={OR_PORT} no-v2 v3ident={v3} {} {}",
                node.nick,
                node.dir_addr(),
                k.rsa_identity
            ))
        })
        .collect()
}

/// The files a node's torrc names.
#[derive(Debug, Clone)]
pub struct NodePaths {
    pub data: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
    pub onion: PathBuf,
    pub onion_log: PathBuf,
}

impl NodePaths {
    fn of(lab: &Lab, nick: &str) -> NodePaths {
        NodePaths {
            data: data_dir(lab, nick),
            pid: lab.state_dir().join(pid_file_rel(nick)),
            log: node_log(lab, nick),
            onion: onion_dir(lab),
            onion_log: onion_log(lab),
        }
    }
}

/// Settings every node and client of the network shares.
fn common_lines(out: &mut String, authorities: &[String]) {
    out.push_str("TestingTorNetwork 1\n");
    for line in authorities {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(
        "PathsNeededToBuildCircuits 0.67\n\
         Sandbox 0\n\
         NumCPUs 1\n\
         SafeLogging 0\n",
    );
}

/// A node's torrc.
pub fn render_torrc(
    node: &Node,
    paths: &NodePaths,
    authorities: &[String],
    resolv: &Path,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# {} ({:?}) of the lab's private Tor network; written by xtask.",
        node.nick, node.role
    );
    common_lines(&mut t, authorities);
    let _ = writeln!(t, "Nickname {}", node.nick);
    let _ = writeln!(t, "DataDirectory {}", paths.data.display());
    let _ = writeln!(t, "PidFile {}", paths.pid.display());
    let _ = writeln!(t, "Log notice file {}", paths.log.display());
    t.push_str(
        "RunAsDaemon 1\n\
         ShutdownWaitLength 0\n\
         SocksPort 0\n\
         TestingDirAuthVoteExit *\n\
         TestingDirAuthVoteGuard *\n\
         TestingDirAuthVoteHSDir *\n\
         TestingMinExitFlagThreshold 0\n\
         V3AuthNIntervalsValid 2\n\
         AssumeReachable 1\n",
    );
    let _ = writeln!(t, "Address {}", node.address);
    let _ = writeln!(t, "ORPort {}", node.or_addr());
    let _ = writeln!(t, "DirPort {}", node.dir_addr());
    let _ = writeln!(t, "OutboundBindAddress {}", node.address);
    match node.role {
        Role::Authority => {
            t.push_str("AuthoritativeDirectory 1\nV3AuthoritativeDirectory 1\n");
            for prefix in ["TestingV3AuthInitial", "V3Auth"] {
                let _ = writeln!(t, "{prefix}VotingInterval {VOTING_INTERVAL}");
                let _ = writeln!(t, "{prefix}VoteDelay {VOTE_DELAY}");
                let _ = writeln!(t, "{prefix}DistDelay {DIST_DELAY}");
            }
            let _ = writeln!(t, "ConsensusParams hsdir_interval={HSDIR_INTERVAL_MIN}");
            t.push_str("ExitRelay 0\nExitPolicy reject *:*\n");
        }
        Role::Relay => t.push_str("ExitRelay 0\nExitPolicy reject *:*\n"),
        Role::Exit => {
            // A policy of private addresses only would publish a reject-all microdescriptor.
            t.push_str(
                "ExitRelay 1\n\
                 RefuseUnknownExits 0\n\
                 ExitPolicyRejectPrivate 0\n\
                 ExitPolicy accept *:*\n",
            );
            let _ = writeln!(t, "ServerDNSResolvConfFile {}", resolv.display());
            t.push_str(
                "ServerDNSDetectHijacking 0\n\
                 ServerDNSTestAddresses\n\
                 ServerDNSAllowBrokenConfig 1\n",
            );
        }
    }
    if node.nick == ONION_HOST {
        // Descriptor uploads are logged at info level only: a log of its own says when the
        // service can be found.
        let _ = writeln!(t, "Log [rend]info file {}", paths.onion_log.display());
        let _ = writeln!(t, "HiddenServiceDir {}", paths.onion.display());
        let _ = writeln!(t, "HiddenServicePort 80 {ORIGIN_IP}:80");
    }
    t
}

/// A torrc for a C-tor client of this lab's network, with its SOCKS port on
/// `127.0.0.1:<socks_port>` and its data and log in `data_dir`; run it in `up` (in the
/// foreground: `tor -f <file>`). The network's keys must exist ([`setup`]).
pub fn client_torrc(lab: &Lab, data_dir: &Path, socks_port: u16) -> Result<String> {
    let keys = read_all_keys(lab)?;
    let mut t = String::from("# A C-tor client of the lab's private Tor network.\n");
    common_lines(&mut t, &dir_authority_lines(&keys));
    let _ = writeln!(t, "DataDirectory {}", data_dir.display());
    let _ = writeln!(
        t,
        "Log notice file {}",
        data_dir.join("notice.log").display()
    );
    let _ = writeln!(t, "SocksPort 127.0.0.1:{socks_port}");
    Ok(t)
}

/// The arti `TorClientConfig` keys for this network (see docs/TORLAB.md): its authorities, each as
/// a fallback cache, one subnet family per address, and local addresses allowed.
pub fn render_arti_config(keys: &[(Node, NodeKeys)]) -> String {
    let quoted = |s: &str| format!("\"{s}\"");
    let v3idents: Vec<String> = keys
        .iter()
        .filter_map(|(_, k)| k.v3ident.as_deref().map(quoted))
        .collect();
    let mut t = String::from(
        "# The lab's private Tor network, for arti's TorClientConfig; written by xtask.\n\
         [tor_network]\n",
    );
    let _ = writeln!(
        t,
        "authorities = {{ v3idents = [{}] }}",
        v3idents.join(", ")
    );
    t.push_str("fallback_caches = [\n");
    for (node, k) in keys.iter().filter(|(n, _)| n.role == Role::Authority) {
        let _ = writeln!(
            t,
            "    {{ rsa_identity = {}, ed_identity = {}, orports = [{}] }},",
            quoted(&k.rsa_identity),
            quoted(&k.ed_identity),
            quoted(&node.or_addr())
        );
    }
    t.push_str(
        "]\n\n\
         # Every relay is on 203.0.113.0/24: without this they would all be one family.\n\
         [path_rules]\n\
         ipv4_subnet_family_prefix = 33\n\
         ipv6_subnet_family_prefix = 129\n\n\
         [address_filter]\n\
         allow_local_addrs = true\n\
         allow_resolving_local_addrs = true\n\n\
         # Onion-service time periods last 8 minutes here, not a day: a descriptor fetch that\n\
         # came before the service published (or before it rotated) must not lock the HSDirs\n\
         # out for the default 15 minutes.\n\
         [circuit_timing]\n\
         hs_dir_requery_interval = \"5 sec\"\n",
    );
    t
}

/// Writes `<lab state dir>/arti.toml` (atomically) and returns its path.
pub fn write_arti_config(lab: &Lab) -> Result<PathBuf> {
    let keys = read_all_keys(lab)?;
    let path = arti_config_path(lab);
    let tmp = path.with_extension("toml.tmp");
    fs::write(&tmp, render_arti_config(&keys))
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(path)
}

/// Whether `node` runs in this lab's `up` namespace.
fn node_running(lab: &Lab, node: &Node) -> bool {
    lab.daemon_alive(pid_file_rel(node.nick))
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
        bail!("`{line}` failed ({status}): {}", lab::log_tail(&out_path));
    }
    // The daemon writes its pid file a moment later (authorities load GeoIP first); until then
    // another `start` would launch a second copy.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !node_running(lab, node) {
        if Instant::now() >= deadline {
            bail!(
                "{} did not come up within 15 s: {}",
                node.nick,
                lab::log_tail(&node_log(lab, node.nick))
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
        .filter_map(|n| lab::read_pid(&lab.state_dir().join(pid_file_rel(n.nick))))
        .collect();
    if pids.is_empty() {
        eprintln!("lab: no Tor node runs");
        return Ok(());
    }
    eprintln!("lab: stopping {} Tor node(s)", pids.len());
    lab::stop_processes(&pids);
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
        nodes,
        onion_address: onion_address(lab),
        onion_published: onion_published(lab),
        arti_config: arti_config_path(lab),
    }
}

/// Polls [`status`] until the network is ready; returns how long that took.
pub fn wait_ready(lab: &Lab, timeout: Duration) -> Result<Duration> {
    let begin = Instant::now();
    loop {
        let status = status(lab);
        if status.ready {
            return Ok(begin.elapsed());
        }
        if begin.elapsed() >= timeout {
            bail!(
                "the lab's Tor network is not ready after {timeout:?}: {} (auth1: {})",
                status.not_ready_because.unwrap_or_default(),
                lab::log_tail(&node_log(lab, "auth1"))
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// The onion service's address, from its `hostname` file.
pub fn onion_address(lab: &Lab) -> Option<String> {
    let text = fs::read_to_string(onion_dir(lab).join("hostname")).ok()?;
    let name = text.trim();
    name.ends_with(".onion").then(|| name.to_string())
}

/// The microdescriptor consensus (the flavour clients use) from the first authority that
/// answers, fetched inside `up`.
fn fetch_consensus(lab: &Lab) -> Result<String> {
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

fn last_line(text: &str) -> &str {
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) as unix seconds.
fn parse_utc(date: &str, time: &str) -> Option<u64> {
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
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
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
    use super::*;

    fn fake_keys() -> Vec<(Node, NodeKeys)> {
        NODES
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    *n,
                    NodeKeys {
                        rsa_identity: format!("{i:040X}"),
                        ed_identity: format!("ed{i}"),
                        v3ident: (n.role == Role::Authority).then(|| format!("{:040X}", 100 + i)),
                    },
                )
            })
            .collect()
    }

    fn paths(nick: &str) -> NodePaths {
        let lab = Lab::new("t1");
        NodePaths::of(&lab, nick)
    }

    #[test]
    fn torrc_per_role() {
        let auths = dir_authority_lines(&fake_keys());
        assert_eq!(auths.len(), 3);
        assert_eq!(
            auths[0],
            format!(
                "DirAuthority auth1 orport=5000 no-v2 v3ident={:040X} 203.0.113.21:7000 {:040X}",
                100, 0
            )
        );
        let resolv = Path::new("/r/resolv.conf");
        let lines = |nick: &str| {
            let node = NODES.iter().find(|n| n.nick == nick).unwrap();
            render_torrc(node, &paths(nick), &auths, resolv)
        };
        let auth = lines("auth2");
        for want in [
            "TestingTorNetwork 1",
            "Nickname auth2",
            "Address 203.0.113.22",
            "ORPort 203.0.113.22:5000",
            "DirPort 203.0.113.22:7000",
            "OutboundBindAddress 203.0.113.22",
            "V3AuthoritativeDirectory 1",
            "V3AuthVotingInterval 20",
            "ConsensusParams hsdir_interval=8",
            "TestingV3AuthInitialDistDelay 4",
            "ExitPolicy reject *:*",
            "PidFile /run/gateway-lab/t1/tor/auth2/tor.pid",
            "DataDirectory /run/gateway-lab/t1/tor/auth2/data",
        ] {
            assert!(auth.lines().any(|l| l == want), "{want} missing:\n{auth}");
        }
        assert_eq!(auth.matches("DirAuthority ").count(), 3);

        let exit = lines("exit3");
        let policies: Vec<&str> = exit
            .lines()
            .filter(|l| l.starts_with("ExitPolicy "))
            .collect();
        assert_eq!(policies.last(), Some(&"ExitPolicy accept *:*"));
        for want in [
            "ExitRelay 1",
            "RefuseUnknownExits 0",
            "ExitPolicyRejectPrivate 0",
            "ServerDNSResolvConfFile /r/resolv.conf",
            "ServerDNSDetectHijacking 0",
            "ServerDNSTestAddresses",
            "ServerDNSAllowBrokenConfig 1",
        ] {
            assert!(exit.lines().any(|l| l == want), "{want} missing:\n{exit}");
        }
        assert!(!exit.contains("AuthoritativeDirectory"));
        assert!(!exit.contains("HiddenService"));

        let onion = lines(ONION_HOST);
        assert!(onion.contains("HiddenServiceDir /run/gateway-lab/t1/tor/relay1/onion\n"));
        assert!(onion.contains("HiddenServicePort 80 203.0.113.10:80\n"));
        assert!(onion.contains("Log [rend]info file /run/gateway-lab/t1/tor/relay1/onion.log\n"));
        assert!(onion.contains("ExitRelay 0\n"));
        assert!(!exit.contains("onion.log"));
    }

    #[test]
    fn the_current_descriptor_counts_from_the_last_start() {
        let up =
            "Nov 28 [info] handle_response_upload_hsdesc(): Uploaded hidden service descriptor \
                  (status 200 (\"HS descriptor stored successfully.\"))\n";
        let failed = "Nov 28 [info] handle_response_upload_hsdesc(): Uploaded hidden service \
                      descriptor (status 400 (\"Invalid\"))\n";
        let current = "Nov 28 [info] upload_descriptor_to_hsdir(): Service x current descriptor \
                       of revision 7 initiated upload request to $AB~relay2\n";
        let next = "Nov 28 [info] upload_descriptor_to_hsdir(): Service x next descriptor of \
                    revision 9 initiated upload request to $AB~relay2\n";
        let start = "Nov 28 [notice] Tor 0.4.9.11 opening new log file.\n";
        let reopen = "Nov 28 [notice] Tor 0.4.9.11 opening log file.\n";
        assert!(!current_descriptor_stored(""));
        let both = format!("{start}{current}{current}{next}{next}{up}{up}{up}");
        assert!(current_descriptor_stored(&both));
        let short = format!("{start}{current}{current}{up}{failed}");
        assert!(!current_descriptor_stored(&short), "one of two stored");
        let next_only = format!("{start}{next}{next}{up}{up}");
        assert!(
            !current_descriptor_stored(&next_only),
            "the next descriptor is not enough"
        );
        let next_first = format!("{start}{next}{next}{up}{up}{current}{current}{up}");
        assert!(
            !current_descriptor_stored(&next_first),
            "its uploads came before"
        );
        assert!(current_descriptor_stored(&format!("{next_first}{up}")));
        let restarted = format!("{both}{reopen}{next}{up}");
        assert!(
            !current_descriptor_stored(&restarted),
            "a restart starts over"
        );
    }

    #[test]
    fn addresses_are_distinct_and_on_the_internet() {
        let mut seen = std::collections::BTreeSet::new();
        for n in &NODES {
            assert!(n.address.starts_with("203.0.113."), "{n:?}");
            assert!(seen.insert(n.address), "{n:?}");
            assert!(seen.insert(n.nick), "{n:?}");
        }
        assert!(!seen.contains(ORIGIN_IP) && !seen.contains(INTERNET_RESOLVER_IP));
    }

    #[test]
    fn arti_config_has_the_torlab_form() {
        let text = render_arti_config(&fake_keys());
        let value: toml::Value = toml::from_str(&text).expect("arti.toml is TOML");
        let net = &value["tor_network"];
        let v3: Vec<&str> = net["authorities"]["v3idents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(v3, [100, 101, 102].map(|i| format!("{i:040X}")));
        let fallbacks = net["fallback_caches"].as_array().unwrap();
        assert_eq!(fallbacks.len(), 3);
        assert_eq!(
            fallbacks[1]["rsa_identity"].as_str(),
            Some(&*format!("{:040X}", 1))
        );
        assert_eq!(fallbacks[1]["ed_identity"].as_str(), Some("ed1"));
        assert_eq!(
            fallbacks[1]["orports"].as_array().unwrap()[0].as_str(),
            Some("203.0.113.22:5000")
        );
        assert_eq!(
            value["path_rules"]["ipv4_subnet_family_prefix"].as_integer(),
            Some(33)
        );
        assert_eq!(
            value["path_rules"]["ipv6_subnet_family_prefix"].as_integer(),
            Some(129)
        );
        assert_eq!(
            value["address_filter"]["allow_local_addrs"].as_bool(),
            Some(true)
        );
        assert_eq!(
            value["address_filter"]["allow_resolving_local_addrs"].as_bool(),
            Some(true)
        );
        assert_eq!(
            value["circuit_timing"]["hs_dir_requery_interval"].as_str(),
            Some("5 sec")
        );
    }

    #[test]
    fn arti_config_sits_where_the_lab_config_template_points() {
        // config/lab.toml names this path; each lab's copy is rewritten into its state dir.
        assert_eq!(
            arti_config_path(&Lab::default_lab()),
            PathBuf::from("/run/gateway-lab/default/arti.toml")
        );
        assert_eq!(
            arti_config_path(&Lab::new("t1")),
            PathBuf::from("/run/gateway-lab/t1/arti.toml")
        );
    }

    #[test]
    fn key_files() {
        assert_eq!(
            second_field("auth1 09B9C34BB4C1AD3057BF03210CB0E610CA44D57D\n"),
            Some("09B9C34BB4C1AD3057BF03210CB0E610CA44D57D")
        );
        assert_eq!(second_field(""), None);
        let cert = "dir-key-certificate-version 3\ndir-address 203.0.113.21:7000\n\
                    fingerprint 506A935B90F3295A7123E3C19F59B80B5E9D0CFF\ndir-key-published x\n";
        assert_eq!(
            cert_fingerprint(cert).as_deref(),
            Some("506A935B90F3295A7123E3C19F59B80B5E9D0CFF")
        );
        assert_eq!(cert_fingerprint("fingerprint nothex\n"), None);
    }

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
}
