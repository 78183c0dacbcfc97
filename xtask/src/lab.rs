//! The network-namespace lab: a modem with a stand-in internet (`up`), the gateway host (`gw`),
//! the inside LAN bridge (`lan`) and clients (`c1`, `c2`), all in namespaces so that nothing
//! touches the host's own interfaces. Documentation address ranges only.
//!
//! Everything a lab makes is derived from its prefix (namespace names, the state dir, the bpffs
//! mount), so [`Lab::down`] cleans up after a crash without any in-memory state, and labs with
//! different prefixes (parallel tests) never touch each other.
//!
//! **Gateway slots.** A lab's shared part (its *base*) is the `up` namespace: the uplink bridge,
//! the modem's dnsmasq, the origin and the Tor network. A *gateway slot* is one gateway host
//! with its own inside LAN: namespaces `gw`, `lan`, `c1`, `c2` for slot 0 (what `lab up`
//! makes), `gw.N`, `lan.N`, `c1.N`, `c2.N` for slot N (1..=[`MAX_SLOT`]), each prefixed like
//! the rest of the lab. Every slot's `outside0` is a port (`gw<N>` in `up`) on the same uplink
//! bridge, so the modem's DHCP server gives each gateway its own uplink address; every slot has
//! its own inside bridge (the inside subnet repeats), its own files under
//! [`Lab::gateway_dir`] (agent config, bpffs pin dir, control socket, agent state, the clients'
//! DHCP files). A [`Lab`] value is a view of one slot: [`Lab::ns`] maps the slot roles to that
//! slot's namespaces and `up` to the shared one. The tests run many slots in one lab
//! ([`Lab::up_base`], [`Lab::up_slot`], [`Lab::down_slot`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::deps;
use crate::lab_tor::{self, TorNodeStatus};
use crate::process;

/// Where every lab keeps its state: `<root>/default` or `<root>/<prefix>`.
pub const STATE_ROOT: &str = "/run/gateway-lab";
/// Namespace roles, in creation order.
pub const ROLES: [&str; 5] = ["up", "gw", "lan", "c1", "c2"];
/// The roles of one gateway slot (all of [`ROLES`] but the shared `up`).
pub const SLOT_ROLES: [&str; 4] = ["gw", "lan", "c1", "c2"];
/// The highest gateway slot number (slot N's spare uplink address is 192.0.2.(250 - N)).
pub const MAX_SLOT: u8 = 40;
/// Client roles and the DHCP client each runs (`cargo xtask run` starts them).
pub const CLIENTS: [(&str, DhcpClient); 2] =
    [("c1", DhcpClient::Dhclient), ("c2", DhcpClient::Udhcpc)];

/// A real DHCP client a lab client runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpClient {
    /// ISC dhclient (isc-dhcp-client).
    Dhclient,
    /// busybox udhcpc.
    Udhcpc,
}

/// The uplink LAN between modem and gateway.
pub const UPLINK_SUBNET: &str = "192.0.2.0/24";
/// The modem: uplink router, DHCP server and DNS resolver.
pub const MODEM_IP: &str = "192.0.2.1";
/// The modem's DHCP range: the gateway's uplink address comes from here.
pub const UPLINK_DHCP_RANGE: (&str, &str) = ("192.0.2.100", "192.0.2.199");
/// The stand-in internet behind the modem.
pub const INTERNET_SUBNET: &str = "203.0.113.0/24";
/// The HTTP origin.
pub const ORIGIN_IP: &str = "203.0.113.10";
/// The origin's name, resolvable at the modem.
pub const ORIGIN_NAME: &str = "origin.example.com";
/// The origin's URL.
pub const ORIGIN_URL: &str = "http://origin.example.com/";
/// A name the modem maps to 127.0.0.1: a public name that points somewhere the gateway must
/// never connect to for a client (tests of the `direct` egress policy).
pub const LOOPBACK_NAME: &str = "loopback.example.com";
/// The resolver's address on the stand-in internet (the same dnsmasq as the modem's).
pub const INTERNET_RESOLVER_IP: &str = "203.0.113.53";
/// The inside LAN.
pub const INSIDE_SUBNET: &str = "198.51.100.0/24";
/// The gateway's inside address.
pub const GATEWAY_INSIDE_IP: &str = "198.51.100.1";
/// The gateway's outside device (in `gw`).
pub const OUTSIDE_IF: &str = "outside0";
/// The gateway's inside device (in `gw`).
pub const INSIDE_IF: &str = "inside0";

/// The paths `config/lab.toml` uses; each slot's copy points them into its own gateway dir,
/// except [`LAB_WIDE_FILES`], which point into the lab's state dir.
const TEMPLATE_STATE_DIR: &str = "/run/gateway-lab/default/";
/// Files under [`TEMPLATE_STATE_DIR`] that every gateway slot of a lab shares.
const LAB_WIDE_FILES: [&str; 1] = [lab_tor::ARTI_CONFIG_FILE];
/// How long `up` waits for dnsmasq and the origin to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// One lab, identified by its prefix ("" for the default lab), seen through one of its gateway
/// slots (0 unless [`Lab::with_slot`] says otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lab {
    prefix: String,
    slot: u8,
}

/// What `lab status` reports; `lab status --json` is the lab's contract with scripts.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    /// Whether the lab and this gateway slot are fully up (namespaces, bpffs, dnsmasq and
    /// origin alive).
    pub up: bool,
    /// The lab's prefix ("" for the default lab).
    pub prefix: String,
    /// The gateway slot this status describes (0: `gw`, `lan`, `c1`, `c2`).
    pub slot: u8,
    /// The gateway slots that exist in this lab.
    pub gateway_slots: Vec<u8>,
    /// This slot's port on the uplink bridge, in `up` (`gw<slot>`).
    pub uplink_port: String,
    pub gateway_inside_ip: String,
    /// The gateway's uplink address, once the agent's DHCP client has one.
    pub gateway_outside_ip: Option<String>,
    pub inside_subnet: String,
    pub uplink_subnet: String,
    pub internet_subnet: String,
    pub origin_url: String,
    pub origin_name: String,
    pub origin_ip: String,
    /// The resolver the modem hands out by DHCP.
    pub uplink_resolver_ip: String,
    pub internet_resolver_ip: String,
    pub inside_interface: String,
    pub outside_interface: String,
    pub bpf_pin_dir: String,
    pub control_socket: String,
    pub agent_config: String,
    pub agent_state_dir: String,
    pub state_dir: String,
    /// This slot's files: the state dir for slot 0, `<state dir>/slot<N>` for slot N.
    pub gateway_dir: String,
    pub dnsmasq_log: String,
    pub dnsmasq_leases: String,
    pub origin_log: String,
    /// Role → namespace name (this slot's).
    pub roles: BTreeMap<String, String>,
    /// Client namespace → the DHCP client it runs.
    pub clients: BTreeMap<String, DhcpClient>,
    /// The private Tor network has a fresh consensus listing every node (see `lab_tor`).
    pub tor_ready: bool,
    /// Why it is not ready, if it is not.
    pub tor_not_ready_because: Option<String>,
    /// The Tor network's nodes: role, address, ports, running, identities.
    pub tor_nodes: Vec<TorNodeStatus>,
    /// The onion service in front of the origin (`<56 chars>.onion`).
    pub onion_address: Option<String>,
    /// Its URL (`http://<onion address>/`).
    pub onion_url: Option<String>,
    /// It has stored its descriptor on enough HSDirs since it last started: clients find it.
    pub onion_published: bool,
    /// arti's settings for the lab's Tor network (authorities, fallbacks, path rules).
    pub arti_config: String,
    /// Existing namespace → IPv4 addresses (CIDR) on its interfaces other than `lo`.
    pub namespaces: BTreeMap<String, Vec<String>>,
}

impl Lab {
    /// A lab with namespace names `<prefix>-<role>`; "" is the default lab (names `<role>`).
    /// The prefix is checked (at most 8 of `[a-z0-9]`) when the lab is used. Its slot 0.
    pub fn new(prefix: &str) -> Lab {
        Lab {
            prefix: prefix.to_string(),
            slot: 0,
        }
    }

    /// The default lab, the one `cargo xtask lab up` makes.
    pub fn default_lab() -> Lab {
        Lab::new("")
    }

    /// The same lab seen through gateway slot `slot` (checked, at most [`MAX_SLOT`], when used).
    pub fn with_slot(&self, slot: u8) -> Lab {
        Lab {
            prefix: self.prefix.clone(),
            slot,
        }
    }

    /// The prefix ("" for the default lab).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The gateway slot this value stands for.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The namespace name of `role` ("up", "gw", "lan", "c1", "c2"): `up` is the lab's, the
    /// others this slot's (`<role>` for slot 0, `<role>.<slot>` for the others).
    pub fn ns(&self, role: &str) -> String {
        let name = if self.slot == 0 || !SLOT_ROLES.contains(&role) {
            role.to_string()
        } else {
            format!("{role}.{}", self.slot)
        };
        if self.prefix.is_empty() {
            name
        } else {
            format!("{}-{name}", self.prefix)
        }
    }

    /// This lab's state dir: `/run/gateway-lab/default` or `/run/gateway-lab/<prefix>`. Shared
    /// by every slot: the modem's and the origin's files, the Tor network, `arti.toml`.
    pub fn state_dir(&self) -> PathBuf {
        let name = if self.prefix.is_empty() {
            "default"
        } else {
            &self.prefix
        };
        Path::new(STATE_ROOT).join(name)
    }

    /// This slot's files: the state dir itself for slot 0, `<state dir>/slot<N>` for slot N.
    pub fn gateway_dir(&self) -> PathBuf {
        if self.slot == 0 {
            self.state_dir()
        } else {
            self.state_dir().join(format!("slot{}", self.slot))
        }
    }

    /// The bpffs mounted for this slot; its agent's pin dir.
    pub fn bpf_dir(&self) -> PathBuf {
        self.gateway_dir().join("bpf")
    }

    /// The agent's control socket in this slot.
    pub fn control_socket(&self) -> PathBuf {
        self.gateway_dir().join("control.sock")
    }

    /// The agent's state dir in this slot.
    pub fn agent_state_dir(&self) -> PathBuf {
        self.gateway_dir().join("state")
    }

    /// The agent config for this slot, written by [`Lab::up`] from `config/lab.toml`.
    pub fn agent_config(&self) -> PathBuf {
        self.gateway_dir().join("gateway.toml")
    }

    /// dnsmasq's log (queries and DHCP), shared by every slot.
    pub fn dnsmasq_log(&self) -> PathBuf {
        self.state_dir().join("dnsmasq.log")
    }

    /// The origin's access log (shows client addresses), shared by every slot.
    pub fn origin_log(&self) -> PathBuf {
        self.state_dir().join("origin.log")
    }

    /// This slot's port on the uplink bridge (`br0` in `up`): `gw<slot>`, the peer of the
    /// slot's `outside0`. A capture there sees this gateway's uplink traffic and no other's.
    pub fn uplink_port(&self) -> String {
        format!("gw{}", self.slot)
    }

    /// An uplink address outside the modem's DHCP range that only this slot uses, for tests
    /// that give `outside0` a static address: 192.0.2.(250 - slot).
    pub fn spare_uplink_ip(&self) -> String {
        format!("192.0.2.{}", 250 - u16::from(self.slot.min(MAX_SLOT)))
    }

    fn label(&self) -> String {
        let lab = if self.prefix.is_empty() {
            "lab".to_string()
        } else {
            format!("lab {}", self.prefix)
        };
        if self.slot == 0 {
            lab
        } else {
            format!("{lab} slot {}", self.slot)
        }
    }

    /// `up` and this slot's namespaces.
    fn ns_names(&self) -> Vec<String> {
        ROLES.iter().map(|r| self.ns(r)).collect()
    }

    /// This slot's namespaces.
    fn slot_ns_names(&self) -> Vec<String> {
        SLOT_ROLES.iter().map(|r| self.ns(r)).collect()
    }

    /// Every namespace of this lab, of any slot, that exists (or left a resolv.conf behind).
    fn all_ns_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.with_slot(0).ns_names().into_iter().collect();
        for dir in ["/run/netns", "/etc/netns"] {
            if let Ok(entries) = fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if lab_prefix_of_ns(&name).as_deref() == Some(self.prefix.as_str()) {
                        names.insert(name);
                    }
                }
            }
        }
        names
    }

    /// The gateway slots of this lab whose `gw` namespace exists, in order.
    pub fn slots(&self) -> Vec<u8> {
        let mut slots: Vec<u8> = self
            .all_ns_names()
            .iter()
            .filter(|ns| ns_exists(ns))
            .filter_map(|ns| parse_ns(ns))
            .filter(|(_, role, _)| role == "gw")
            .map(|(_, _, slot)| slot)
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    fn check_prefix(&self) -> Result<()> {
        if !valid_prefix(&self.prefix) {
            bail!(
                "invalid lab prefix {:?}: use at most 8 characters of [a-z0-9] (\"\" is the default lab)",
                self.prefix
            );
        }
        if self.slot > MAX_SLOT {
            bail!("invalid gateway slot {}: at most {MAX_SLOT}", self.slot);
        }
        Ok(())
    }

    /// Builds the lab with its Tor network (started, not waited for) and this gateway slot;
    /// does nothing if they are up (but re-renders the slot's agent config and starts Tor
    /// nodes that do not run), and rebuilds a partial lab (a partial slot N: only that slot).
    pub fn up(&self) -> Result<()> {
        self.bring_up(true)
    }

    /// [`Lab::up`] without starting the Tor network (`lab_tor::setup` and `lab_tor::start`
    /// bring it up later, e.g. only once a test needs it).
    pub fn up_without_tor(&self) -> Result<()> {
        self.bring_up(false)
    }

    /// Builds only the lab's shared part (the `up` namespace with the uplink bridge, the
    /// modem's dnsmasq and the origin; no Tor network, no gateway slot), for labs whose
    /// gateways come and go as slots ([`Lab::up_slot`]). Rebuilds a partial one.
    pub fn up_base(&self) -> Result<()> {
        self.check_prefix()?;
        deps::require_root("lab up")?;
        deps::ensure_lab_packages()?;
        if self.base_is_up() {
            return Ok(());
        }
        let base = self.with_slot(0);
        base.rebuild_base()
            .map_err(|err| err.context(format!("{} up", base.label())))?;
        eprintln!("{}: up ({})", base.label(), self.state_dir().display());
        Ok(())
    }

    /// Builds this gateway slot (N > 0) in a lab whose base is up; does nothing if the slot is
    /// up (but re-renders its agent config), and rebuilds a partial one. On failure nothing of
    /// the slot is left.
    pub fn up_slot(&self) -> Result<()> {
        self.check_prefix()?;
        deps::require_root("lab up")?;
        if self.slot == 0 {
            bail!("slot 0 is part of the lab itself: `Lab::up` builds it");
        }
        if !self.base_is_up() {
            bail!("{}: the lab is not up (`Lab::up_base` first)", self.label());
        }
        self.ensure_slot()
            .map_err(|err| err.context(format!("{} up", self.label())))?;
        eprintln!("{}: up ({})", self.label(), self.gateway_dir().display());
        Ok(())
    }

    fn bring_up(&self, tor: bool) -> Result<()> {
        self.check_prefix()?;
        deps::require_root("lab up")?;
        deps::ensure_lab_packages()?;
        // A broken template should fail before anything is built.
        self.render_agent_config()?;
        // Slot 0 is part of the lab itself: a partial one means rebuilding the lab.
        let fresh = !self.base_is_up() || (self.slot == 0 && !self.slot_is_up());
        let slot_was_up = !fresh && self.slot_is_up();
        if slot_was_up {
            eprintln!(
                "{}: already up ({})",
                self.label(),
                self.gateway_dir().display()
            );
        }
        let result = (|| -> Result<()> {
            if fresh {
                self.rebuild_base()?;
            }
            if tor {
                // Also brings the Tor network back if `lab tor stop` stopped it.
                lab_tor::setup(self)?;
                lab_tor::start(self)?;
            }
            self.ensure_slot()
        })();
        if let Err(err) = result {
            if fresh {
                eprintln!("{}: setting up failed; cleaning up", self.label());
                if let Err(down_err) = self.down() {
                    eprintln!("{}: cleaning up failed too: {down_err:#}", self.label());
                }
            }
            return Err(err.context(format!("{} up", self.label())));
        }
        if fresh {
            eprintln!("{}: up ({})", self.label(), self.state_dir().display());
        } else if !slot_was_up {
            eprintln!("{}: up ({})", self.label(), self.gateway_dir().display());
        }
        Ok(())
    }

    /// Tears down whatever is left of the lab and builds its base; cleans up on failure.
    fn rebuild_base(&self) -> Result<()> {
        if self.has_traces() {
            eprintln!("{}: partially up; tearing down to rebuild", self.label());
            self.down()?;
        }
        if let Err(err) = self.build_base() {
            eprintln!("{}: setting up failed; cleaning up", self.label());
            if let Err(down_err) = self.down() {
                eprintln!("{}: cleaning up failed too: {down_err:#}", self.label());
            }
            return Err(err);
        }
        Ok(())
    }

    /// Builds this slot unless it is up (then re-renders its config, so that edits to
    /// config/lab.toml reach a lab that is already up); a partial slot N is removed first, and
    /// removed again if building fails.
    fn ensure_slot(&self) -> Result<()> {
        if self.slot_is_up() {
            return self.write_agent_config();
        }
        if self.slot > 0 && self.slot_has_traces() {
            eprintln!("{}: partially up; tearing down to rebuild", self.label());
            self.down_slot()?;
        }
        let built = self.build_slot();
        if built.is_err() && self.slot > 0 {
            if let Err(down_err) = self.down_slot() {
                eprintln!("{}: cleaning up failed too: {down_err:#}", self.label());
            }
        }
        built
    }

    /// Whether the lab's base and this slot are present and the lab's daemons are alive.
    pub fn is_up(&self) -> bool {
        self.base_is_up() && self.slot_is_up()
    }

    /// The lab's shared part: `up`, the state dir, dnsmasq and the origin alive.
    fn base_is_up(&self) -> bool {
        valid_prefix(&self.prefix)
            && ns_exists(&self.ns("up"))
            && self.state_dir().is_dir()
            && self.daemon_alive("dnsmasq.pid")
            && self.daemon_alive("origin.pid")
    }

    /// This slot's namespaces, bpffs and agent config.
    fn slot_is_up(&self) -> bool {
        self.slot <= MAX_SLOT
            && self.slot_ns_names().iter().all(|ns| ns_exists(ns))
            && is_mounted_bpf(&self.bpf_dir())
            && self.agent_config().is_file()
    }

    /// Whether the pid in `pid_file` is alive and in this lab's `up` namespace (not a reused pid).
    pub(crate) fn daemon_alive(&self, pid_file: impl AsRef<Path>) -> bool {
        let Some(pid) = read_pid(&self.state_dir().join(pid_file)) else {
            return false;
        };
        if !pid_alive(pid) {
            return false;
        }
        let proc_ns = fs::metadata(format!("/proc/{pid}/ns/net"));
        let lab_ns = fs::metadata(ns_path(&self.ns("up")));
        match (proc_ns, lab_ns) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        }
    }

    /// Whether anything of this lab exists (a namespace of any slot, the state dir).
    fn has_traces(&self) -> bool {
        self.state_dir().exists() || self.all_ns_names().iter().any(|ns| ns_exists(ns))
    }

    /// Whether anything of this slot exists (a namespace, a resolv.conf, its gateway dir).
    fn slot_has_traces(&self) -> bool {
        self.slot_ns_names()
            .iter()
            .any(|ns| ns_exists(ns) || Path::new("/etc/netns").join(ns).exists())
            || (self.slot > 0 && self.gateway_dir().exists())
    }

    /// The state dir, the origin's files and the `up` namespace with the uplink bridge, the
    /// stand-in internet, the modem's dnsmasq and the origin.
    fn build_base(&self) -> Result<()> {
        let state = self.state_dir();
        fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        self.write_www()?;

        let up = self.ns("up");
        eprintln!("{}: creating namespace {up}", self.label());
        self.write_resolv_conf(&up, "up")?;
        process::run("ip", ["netns", "add", &up])?;
        ip(&up, &["link", "set", "lo", "up"])?;
        // The modem: uplink bridge plus the stand-in internet. inet0 is a port-less bridge
        // because this kernel has no dummy driver; later namespaces (relays) can join it.
        ip(&up, &["link", "add", "br0", "type", "bridge"])?;
        ip(
            &up,
            &["addr", "add", &format!("{MODEM_IP}/24"), "dev", "br0"],
        )?;
        ip(&up, &["link", "set", "br0", "up"])?;
        ip(&up, &["link", "add", "inet0", "type", "bridge"])?;
        for addr in ["203.0.113.1", ORIGIN_IP, INTERNET_RESOLVER_IP] {
            ip(&up, &["addr", "add", &format!("{addr}/24"), "dev", "inet0"])?;
        }
        ip(&up, &["link", "set", "inet0", "up"])?;

        eprintln!(
            "{}: starting dnsmasq (modem {MODEM_IP}, DHCP/DNS) and the origin ({ORIGIN_IP})",
            self.label()
        );
        self.start_dnsmasq()?;
        self.start_origin()?;
        self.wait_ready()
    }

    /// This slot's gateway dir, agent config, bpffs and namespaces, wired to the lab's uplink
    /// bridge. The lab's base must be up.
    fn build_slot(&self) -> Result<()> {
        let dir = self.gateway_dir();
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.write_agent_config()?;

        let bpf = self.bpf_dir();
        fs::create_dir_all(&bpf).with_context(|| format!("creating {}", bpf.display()))?;
        // `ip netns exec` remounts /sys, so pins under /sys/fs/bpf would not survive from one
        // exec to the next; a bpffs under /run is seen by all of them.
        process::run_command(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpf))
            .context("mounting the slot's bpffs")?;

        eprintln!(
            "{}: creating namespaces {}",
            self.label(),
            self.slot_ns_names().join(" ")
        );
        self.build_namespaces()
    }

    /// Renders `config/lab.toml` for this slot: its paths pointed into the slot's gateway dir,
    /// the lab-wide files (`arti.toml`) into the lab's state dir.
    fn render_agent_config(&self) -> Result<String> {
        let template_path = lab_config_template();
        let template = fs::read_to_string(&template_path).with_context(|| {
            format!(
                "reading the lab's agent config template {}",
                template_path.display()
            )
        })?;
        if !template.contains(TEMPLATE_STATE_DIR) {
            // Otherwise every lab's agent would share one pin dir and control socket.
            bail!(
                "{} does not use paths under {TEMPLATE_STATE_DIR}; the lab cannot give each lab its own",
                template_path.display()
            );
        }
        Ok(render_agent_config(
            &template,
            &self.state_dir(),
            &self.gateway_dir(),
        ))
    }

    /// Writes [`Lab::agent_config`] from `config/lab.toml`.
    fn write_agent_config(&self) -> Result<()> {
        let config = self.render_agent_config()?;
        let path = self.agent_config();
        fs::write(&path, config).with_context(|| format!("writing {}", path.display()))
    }

    /// `ip netns exec` bind-mounts `/etc/netns/<ns>/resolv.conf` over `/etc/resolv.conf`. Each
    /// namespace gets the resolver it would have on a real network (the clients the gateway, the
    /// gateway and the modem the modem), so lookups never head for the host's own resolver, and
    /// a DHCP client hook that writes resolv.conf would write this file, not the host's.
    fn write_resolv_conf(&self, ns: &str, role: &str) -> Result<()> {
        let resolver = match role {
            "c1" | "c2" => GATEWAY_INSIDE_IP,
            "up" | "gw" => MODEM_IP,
            _ => "127.0.0.1",
        };
        let dir = Path::new("/etc/netns").join(ns);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join("resolv.conf");
        fs::write(&file, format!("nameserver {resolver}\n"))
            .with_context(|| format!("writing {}", file.display()))
    }

    fn write_www(&self) -> Result<()> {
        let www = self.state_dir().join("www");
        fs::create_dir_all(&www).with_context(|| format!("creating {}", www.display()))?;
        let index = www.join("index.html");
        fs::write(&index, "gateway lab origin\n")
            .with_context(|| format!("writing {}", index.display()))?;
        let bin = www.join("1m.bin");
        let mut random = File::open("/dev/urandom")
            .context("opening /dev/urandom")?
            .take(1 << 20);
        let mut out = File::create(&bin).with_context(|| format!("creating {}", bin.display()))?;
        io::copy(&mut random, &mut out).with_context(|| format!("writing {}", bin.display()))?;
        Ok(())
    }

    /// This slot's namespaces: the gateway host with its outside leg on the lab's uplink
    /// bridge, the inside bridge and the clients.
    fn build_namespaces(&self) -> Result<()> {
        let up = self.ns("up");
        let gw = self.ns("gw");
        let lan = self.ns("lan");
        for role in SLOT_ROLES {
            let ns = self.ns(role);
            self.write_resolv_conf(&ns, role)?;
            process::run("ip", ["netns", "add", &ns])?;
            ip(&ns, &["link", "set", "lo", "up"])?;
        }

        // The gateway's outside leg on the uplink bridge. A port of the same name left by a
        // slot whose namespace the kernel has not freed yet would be in the way.
        let port = self.uplink_port();
        if ip(&up, &["link", "show", "dev", &port]).is_ok() {
            ip(&up, &["link", "del", "dev", &port])?;
        }
        ip(
            &up,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", OUTSIDE_IF, "netns", &gw,
            ],
        )?;
        ip(&up, &["link", "set", &port, "master", "br0", "up"])?;
        // No address here: the agent makes its macvlan on outside0 and takes a DHCP lease from
        // the modem, as on a real uplink.
        ip(&gw, &["link", "set", OUTSIDE_IF, "up"])?;

        // The inside LAN bridge and the gateway's inside leg.
        ip(&lan, &["link", "add", "br0", "type", "bridge"])?;
        ip(&lan, &["link", "set", "br0", "up"])?;
        ip(
            &lan,
            &[
                "link", "add", "gw0", "type", "veth", "peer", "name", INSIDE_IF, "netns", &gw,
            ],
        )?;
        ip(&lan, &["link", "set", "gw0", "master", "br0", "up"])?;
        ip(
            &gw,
            &[
                "addr",
                "add",
                &format!("{GATEWAY_INSIDE_IP}/24"),
                "dev",
                INSIDE_IF,
            ],
        )?;
        ip(&gw, &["link", "set", INSIDE_IF, "up"])?;

        for (role, _) in CLIENTS {
            let client = self.ns(role);
            ip(
                &lan,
                &[
                    "link", "add", role, "type", "veth", "peer", "name", "eth0", "netns", &client,
                ],
            )?;
            ip(&lan, &["link", "set", role, "master", "br0", "up"])?;
            // No address: clients take theirs from the gateway's DHCP server.
            ip(&client, &["link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    fn start_dnsmasq(&self) -> Result<()> {
        let state = self.state_dir();
        let at = |name: &str| state.join(name).display().to_string();
        // Daemon mode: dnsmasq reports startup errors (e.g. a busy port) before its parent
        // exits, so a successful return means its sockets are bound.
        let args = [
            "--conf-file=/dev/null".to_string(),
            format!("--pid-file={}", at("dnsmasq.pid")),
            "--user=root".to_string(),
            "--group=root".to_string(),
            "--bind-interfaces".to_string(),
            "--interface=br0".to_string(),
            "--except-interface=lo".to_string(),
            format!("--listen-address={MODEM_IP}"),
            format!("--listen-address={INTERNET_RESOLVER_IP}"),
            "--dhcp-range=192.0.2.100,192.0.2.199,255.255.255.0,2m".to_string(),
            format!("--dhcp-option=option:router,{MODEM_IP}"),
            format!("--dhcp-option=option:dns-server,{MODEM_IP}"),
            "--dhcp-authoritative".to_string(),
            "--no-resolv".to_string(),
            "--no-hosts".to_string(),
            format!("--host-record={ORIGIN_NAME},{ORIGIN_IP}"),
            format!("--host-record={LOOPBACK_NAME},127.0.0.1"),
            // dnsmasq answers its own records with TTL 0 by default; real zones have TTLs, and
            // the gateway's cache honours them.
            "--local-ttl=300".to_string(),
            // Every other name is answered locally (NXDOMAIN): the lab has no real internet.
            "--local=/#/".to_string(),
            "--log-queries".to_string(),
            "--log-dhcp".to_string(),
            format!("--log-facility={}", at("dnsmasq.log")),
            format!("--dhcp-leasefile={}", at("dnsmasq.leases")),
        ];
        process::ns_run(&self.ns("up"), "dnsmasq", &args).context("starting dnsmasq")
    }

    fn start_origin(&self) -> Result<()> {
        let state = self.state_dir();
        let log_path = self.origin_log();
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .context("duplicating the origin log handle")?;
        let www = state.join("www");
        // Debian's python3 (a lab package) rather than whatever python3 comes first on PATH.
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.ns("up"),
            python,
            "-u",
            "-m",
            "http.server",
            "80",
        ])
        .args(["--bind", ORIGIN_IP, "--directory"])
        .arg(&www)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: a Ctrl-C meant for xtask must not stop the lab's origin.
        .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting `{}`", process::describe(&cmd)))?;
        // `ip netns exec` execs python3, so this is the origin's pid.
        let pid = child.id();
        let pid_file = state.join("origin.pid");
        fs::write(&pid_file, format!("{pid}\n"))
            .with_context(|| format!("writing {}", pid_file.display()))?;
        // Reap it when it dies (in long-lived callers such as tests), instead of leaving a zombie.
        thread::spawn(move || child.wait());
        Ok(())
    }

    /// Polls until dnsmasq resolves the origin's name and the origin accepts connections.
    fn wait_ready(&self) -> Result<()> {
        let up = self.ns("up");
        let deadline = Instant::now() + READY_TIMEOUT;
        let (mut dns_ok, mut origin_ok) = (false, false);
        while Instant::now() < deadline {
            if !dns_ok {
                dns_ok = process::ns_output(
                    &up,
                    "dig",
                    [
                        "+short",
                        "+time=1",
                        "+tries=1",
                        &format!("@{MODEM_IP}"),
                        ORIGIN_NAME,
                    ],
                )
                .is_ok_and(|out| out.trim() == ORIGIN_IP);
            }
            if !origin_ok {
                // A bare connect: http.server logs nothing for it, so the access log keeps
                // only real requests.
                origin_ok = process::ns_run_ok(
                    &up,
                    "bash",
                    ["-c", &format!("exec 3<>/dev/tcp/{ORIGIN_IP}/80")],
                );
            }
            if dns_ok && origin_ok {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        let mut problems = Vec::new();
        if !dns_ok {
            problems.push(format!(
                "dnsmasq does not resolve {ORIGIN_NAME} at {MODEM_IP} (log: {})",
                log_tail(&self.dnsmasq_log())
            ));
        }
        if !origin_ok {
            problems.push(format!(
                "the origin does not accept connections on {ORIGIN_IP}:80 (log: {})",
                log_tail(&self.origin_log())
            ));
        }
        bail!("after {READY_TIMEOUT:?}: {}", problems.join("; "))
    }

    /// Where `role`'s DHCP client records its events (see `xtask/lab/*-script.sh`), in this
    /// slot's gateway dir.
    pub fn dhcp_log(&self, role: &str) -> PathBuf {
        self.gateway_dir().join(format!("{role}.dhcp-events"))
    }

    /// Starts a real DHCP client on `role`'s eth0 in the background; it keeps renewing until the
    /// lab goes down, sending `hostname` (option 12) if given. Returns once the client runs,
    /// not once it has a lease: read [`Lab::dhcp_log`] for that.
    pub fn start_dhcp_client(
        &self,
        role: &str,
        client: DhcpClient,
        hostname: Option<&str>,
    ) -> Result<()> {
        let ns = self.ns(role);
        let state = self.gateway_dir();
        let script = match client {
            DhcpClient::Dhclient => "dhclient-script.sh",
            DhcpClient::Udhcpc => "udhcpc-script.sh",
        };
        // dhclient gives its hook a fresh environment, so the log path travels in a wrapper.
        let hook = state.join(format!("{role}-dhcp-hook.sh"));
        fs::write(
            &hook,
            format!(
                "#!/bin/sh\nLAB_DHCP_LOG='{}' exec /bin/sh '{}' \"$@\"\n",
                self.dhcp_log(role).display(),
                lab_script(script).display()
            ),
        )
        .with_context(|| format!("writing {}", hook.display()))?;
        fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .with_context(|| format!("making {} executable", hook.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]);
        match client {
            DhcpClient::Dhclient => {
                let conf = state.join(format!("{role}.dhclient.conf"));
                let text = hostname
                    .map(|name| format!("send host-name \"{name}\";\n"))
                    .unwrap_or_default();
                fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
                // -nw: do not wait for a lease before going to the background.
                cmd.args(["dhclient", "-4", "-nw", "-cf"])
                    .arg(&conf)
                    .arg("-lf")
                    .arg(state.join(format!("{role}.dhclient.leases")))
                    .arg("-pf")
                    .arg(state.join(format!("{role}.dhclient.pid")))
                    .arg("-sf")
                    .arg(&hook)
                    .arg("eth0");
                process::run_command(&mut cmd).map(|_| ())
            }
            DhcpClient::Udhcpc => {
                // -b: go to the background if the first tries get no lease, and keep trying.
                cmd.args([
                    "udhcpc", "-b", "-i", "eth0", "-t", "5", "-T", "1", "-A", "1", "-s",
                ])
                .arg(&hook)
                .args(["-p"])
                .arg(state.join(format!("{role}.udhcpc.pid")));
                if let Some(name) = hostname {
                    cmd.args(["-x", &format!("hostname:{name}")]);
                }
                process::run_command(&mut cmd).map(|_| ())
            }
        }
    }

    /// Removes everything this lab made, every slot with it: stops every process in its
    /// namespaces (agents, tcpdumps and the lab's own daemons), deletes the namespaces,
    /// unmounts its bpffs mounts and removes its state dir. Works from names alone, so also
    /// after a crash.
    pub fn down(&self) -> Result<()> {
        self.check_prefix()?;
        deps::require_root("lab down")?;
        let lab = self.with_slot(0);
        let names: Vec<String> = self.all_ns_names().into_iter().collect();
        let state = self.state_dir();
        remove(&lab.label(), &names, &state, None)
    }

    /// Removes this gateway slot (N > 0) and nothing else of the lab: stops every process in
    /// its namespaces, removes its port from the uplink bridge, deletes its namespaces,
    /// unmounts its bpffs and removes its gateway dir.
    pub fn down_slot(&self) -> Result<()> {
        self.check_prefix()?;
        deps::require_root("lab down")?;
        if self.slot == 0 {
            bail!("slot 0 is part of the lab itself: `Lab::down` removes it with the lab");
        }
        let port = ns_exists(&self.ns("up")).then(|| (self.ns("up"), self.uplink_port()));
        remove(
            &self.label(),
            &self.slot_ns_names(),
            &self.gateway_dir(),
            port,
        )
    }

    /// This slot's IPv4 addresses on the uplink subnet (its `gw` namespace's), without the
    /// prefix length: the agent's DHCP lease on its macvlan, and any static one a test added.
    pub fn uplink_addresses(&self) -> Vec<String> {
        ns_ipv4_addrs(&self.ns("gw"))
            .unwrap_or_default()
            .iter()
            .filter(|a| a.starts_with("192.0.2."))
            .filter_map(|a| a.split('/').next())
            .map(str::to_owned)
            .collect()
    }

    /// The lab's addresses, paths and namespaces, as seen from this slot.
    pub fn status(&self) -> Result<LabStatus> {
        self.check_prefix()?;
        deps::require_root("lab status")?;
        let mut namespaces = BTreeMap::new();
        for ns in self.ns_names() {
            if ns_exists(&ns) {
                namespaces.insert(ns.clone(), ns_ipv4_addrs(&ns)?);
            }
        }
        let path = |p: PathBuf| p.display().to_string();
        let tor = lab_tor::status(self);
        Ok(LabStatus {
            up: self.is_up(),
            prefix: self.prefix.clone(),
            slot: self.slot,
            gateway_slots: self.slots(),
            uplink_port: self.uplink_port(),
            gateway_inside_ip: GATEWAY_INSIDE_IP.into(),
            gateway_outside_ip: namespaces
                .get(&self.ns("gw"))
                .and_then(|addrs: &Vec<String>| {
                    addrs
                        .iter()
                        .find(|a| a.starts_with("192.0.2."))
                        .and_then(|a| a.split('/').next())
                        .map(str::to_owned)
                }),
            inside_subnet: INSIDE_SUBNET.into(),
            uplink_subnet: UPLINK_SUBNET.into(),
            internet_subnet: INTERNET_SUBNET.into(),
            origin_url: ORIGIN_URL.into(),
            origin_name: ORIGIN_NAME.into(),
            origin_ip: ORIGIN_IP.into(),
            uplink_resolver_ip: MODEM_IP.into(),
            internet_resolver_ip: INTERNET_RESOLVER_IP.into(),
            inside_interface: INSIDE_IF.into(),
            outside_interface: OUTSIDE_IF.into(),
            bpf_pin_dir: path(self.bpf_dir()),
            control_socket: path(self.control_socket()),
            agent_config: path(self.agent_config()),
            agent_state_dir: path(self.agent_state_dir()),
            state_dir: path(self.state_dir()),
            gateway_dir: path(self.gateway_dir()),
            dnsmasq_log: path(self.dnsmasq_log()),
            dnsmasq_leases: path(self.state_dir().join("dnsmasq.leases")),
            origin_log: path(self.origin_log()),
            roles: ROLES.iter().map(|r| (r.to_string(), self.ns(r))).collect(),
            clients: CLIENTS
                .iter()
                .map(|(role, client)| (self.ns(role), *client))
                .collect(),
            tor_ready: tor.ready,
            tor_not_ready_because: tor.not_ready_because,
            tor_nodes: tor.nodes,
            onion_url: tor.onion_address.as_ref().map(|a| format!("http://{a}/")),
            onion_address: tor.onion_address,
            onion_published: tor.onion_published,
            arti_config: path(tor.arti_config),
            namespaces,
        })
    }
}

impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.prefix.is_empty() {
            "default".to_string()
        } else {
            self.prefix.clone()
        };
        let slot = if self.slot == 0 {
            String::new()
        } else {
            format!(" slot {}", self.slot)
        };
        writeln!(
            f,
            "lab {name}{slot}: {}",
            if self.up { "up" } else { "down" }
        )?;
        writeln!(
            f,
            "  inside        {} (gateway {} on {})",
            self.inside_subnet, self.gateway_inside_ip, self.inside_interface
        )?;
        writeln!(
            f,
            "  uplink        {} (modem and resolver {}, gateway on {})",
            self.uplink_subnet, self.uplink_resolver_ip, self.outside_interface
        )?;
        writeln!(
            f,
            "  origin        {} ({} = {})",
            self.origin_url, self.origin_name, self.origin_ip
        )?;
        let running = self.tor_nodes.iter().filter(|n| n.running).count();
        let tor = if self.tor_ready {
            "ready".to_string()
        } else {
            format!(
                "not ready ({})",
                self.tor_not_ready_because.as_deref().unwrap_or("?")
            )
        };
        writeln!(
            f,
            "  tor           {tor}; {running}/{} nodes run",
            self.tor_nodes.len()
        )?;
        if let Some(url) = &self.onion_url {
            let published = if self.onion_published {
                "published"
            } else {
                "not published yet"
            };
            writeln!(f, "  onion         {url} (the origin; {published})")?;
        }
        writeln!(f, "  arti config   {}", self.arti_config)?;
        writeln!(f, "  agent config  {}", self.agent_config)?;
        writeln!(f, "  bpf pin dir   {}", self.bpf_pin_dir)?;
        writeln!(f, "  control sock  {}", self.control_socket)?;
        if self.gateway_slots.iter().any(|&s| s != 0) {
            let slots: Vec<String> = self.gateway_slots.iter().map(u8::to_string).collect();
            writeln!(f, "  slots         {}", slots.join(" "))?;
        }
        writeln!(
            f,
            "  logs          {} {}",
            self.dnsmasq_log, self.origin_log
        )?;
        if self.namespaces.is_empty() {
            writeln!(f, "  namespaces    (none)")?;
        } else {
            writeln!(f, "  namespaces")?;
            for (ns, addrs) in &self.namespaces {
                let addrs = if addrs.is_empty() {
                    "-".to_string()
                } else {
                    addrs.join(" ")
                };
                writeln!(f, "    {ns:<12} {addrs}")?;
            }
        }
        Ok(())
    }
}

/// Removes `names` (namespaces, with every process in them, and their resolv.conf dirs), the
/// uplink `port` (namespace, device) if given, and `dir` with every mount below it.
fn remove(label: &str, names: &[String], dir: &Path, port: Option<(String, String)>) -> Result<()> {
    let existing: Vec<&String> = names.iter().filter(|ns| ns_exists(ns)).collect();
    let resolv_left = names
        .iter()
        .any(|ns| Path::new("/etc/netns").join(ns).exists());
    if existing.is_empty() && !dir.exists() && !resolv_left {
        eprintln!("{label}: nothing to remove");
        return Ok(());
    }
    let mut errors: Vec<String> = Vec::new();

    let pids: BTreeSet<i32> = existing.iter().flat_map(|ns| ns_pids(ns)).collect();
    if !pids.is_empty() {
        eprintln!("{label}: stopping {} process(es)", pids.len());
        stop_processes(&pids);
    }
    // Deleting one end of the veth takes the other (the slot's outside0) with it, even while
    // pinned programs keep the slot's namespace alive until its bpffs is unmounted.
    if let Some((up, port)) = port {
        if ip(&up, &["link", "show", "dev", &port]).is_ok() {
            if let Err(err) = ip(&up, &["link", "del", "dev", &port]) {
                errors.push(format!("{err:#}"));
            }
        }
    }
    for ns in &existing {
        if let Err(err) = process::run("ip", ["netns", "del", ns.as_str()]) {
            errors.push(format!("{err:#}"));
        }
    }
    for ns in names {
        let resolv = Path::new("/etc/netns").join(ns);
        if resolv.exists() {
            if let Err(err) = fs::remove_dir_all(&resolv) {
                errors.push(format!("removing {}: {err}", resolv.display()));
            }
        }
    }
    if let Err(err) = unmount_all_under(dir) {
        errors.push(format!("{err:#}"));
    } else if dir.exists() {
        if let Err(err) = fs::remove_dir_all(dir) {
            errors.push(format!("removing {}: {err}", dir.display()));
        }
    }
    if !errors.is_empty() {
        bail!("{label} down: {}", errors.join("; "));
    }
    eprintln!("{label}: down");
    Ok(())
}

/// `template` (config/lab.toml) with every path under [`TEMPLATE_STATE_DIR`] moved into
/// `gateway_dir`, except the [`LAB_WIDE_FILES`], which move into `lab_dir`.
fn render_agent_config(template: &str, lab_dir: &Path, gateway_dir: &Path) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find(TEMPLATE_STATE_DIR) {
        out.push_str(&rest[..at]);
        rest = &rest[at + TEMPLATE_STATE_DIR.len()..];
        let lab_wide = LAB_WIDE_FILES.iter().any(|file| {
            rest.strip_prefix(file)
                .is_some_and(|after| !after.starts_with(|c: char| c.is_alphanumeric() || c == '.'))
        });
        let dir = if lab_wide { lab_dir } else { gateway_dir };
        out.push_str(&format!("{}/", dir.display()));
    }
    out.push_str(rest);
    out
}

/// Prints `status` for people (stdout).
pub fn print_human(status: &LabStatus) {
    print!("{status}");
}

/// Takes down every lab: each state dir under /run/gateway-lab and every namespace named like a
/// lab's (`<role>` or `<prefix>-<role>`).
pub fn down_all() -> Result<()> {
    deps::require_root("lab down --all")?;
    let mut prefixes = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(STATE_ROOT) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "default" {
                prefixes.insert(String::new());
            } else if valid_prefix(&name) {
                prefixes.insert(name);
            }
        }
    }
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(prefix) = lab_prefix_of_ns(&name) {
                prefixes.insert(prefix);
            }
        }
    }
    if prefixes.is_empty() {
        eprintln!("lab: no labs to remove");
        return Ok(());
    }
    let errors: Vec<String> = prefixes
        .iter()
        .filter_map(|p| Lab::new(p).down().err().map(|e| format!("{e:#}")))
        .collect();
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// A script the lab's DHCP clients run, from `xtask/lab/`.
pub fn lab_script(name: &str) -> PathBuf {
    crate::build::workspace_root()
        .join("xtask")
        .join("lab")
        .join(name)
}

/// The committed agent config for the lab, in the workspace root.
fn lab_config_template() -> PathBuf {
    crate::build::workspace_root()
        .join("config")
        .join("lab.toml")
}

/// "" (the default lab) or 1–8 characters of `[a-z0-9]`; never "default" (the default state dir).
fn valid_prefix(prefix: &str) -> bool {
    prefix.is_empty()
        || (prefix.len() <= 8
            && prefix != "default"
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// The lab prefix a namespace name belongs to, if it is named like a lab's.
fn lab_prefix_of_ns(name: &str) -> Option<String> {
    parse_ns(name).map(|(prefix, _, _)| prefix)
}

/// A lab namespace name as (prefix, role, slot): `[<prefix>-]<role>` for `up` and slot 0,
/// `[<prefix>-]<role>.<slot>` for slot 1..=[`MAX_SLOT`].
fn parse_ns(name: &str) -> Option<(String, String, u8)> {
    let (prefix, rest) = match name.split_once('-') {
        Some((prefix, rest)) if !prefix.is_empty() && valid_prefix(prefix) => (prefix, rest),
        Some(_) => return None,
        None => ("", name),
    };
    if ROLES.contains(&rest) {
        return Some((prefix.to_string(), rest.to_string(), 0));
    }
    let (role, slot) = rest.split_once('.')?;
    let n: u8 = slot.parse().ok()?;
    (SLOT_ROLES.contains(&role) && (1..=MAX_SLOT).contains(&n) && n.to_string() == slot)
        .then(|| (prefix.to_string(), role.to_string(), n))
}

fn ns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

fn ns_exists(ns: &str) -> bool {
    ns_path(ns).exists()
}

/// `ip -n <ns> <args…>`.
pub(crate) fn ip(ns: &str, args: &[&str]) -> Result<()> {
    process::run("ip", ["-n", ns].iter().chain(args))
}

/// Processes whose network namespace is `ns` (never ourselves).
fn ns_pids(ns: &str) -> Vec<i32> {
    let own = i32::try_from(std::process::id()).unwrap_or(-1);
    process::output("ip", ["netns", "pids", ns])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .filter(|&p| p > 1 && p != own)
                .collect()
        })
        .unwrap_or_default()
}

/// SIGTERM, a short bounded wait, then SIGKILL for what is left.
pub(crate) fn stop_processes(pids: &BTreeSet<i32>) {
    signal_all(pids, libc::SIGTERM);
    if wait_dead(pids, Duration::from_secs(3)) {
        return;
    }
    signal_all(pids, libc::SIGKILL);
    wait_dead(pids, Duration::from_secs(2));
}

fn signal_all(pids: &BTreeSet<i32>, signal: libc::c_int) {
    for &pid in pids {
        // SAFETY: kill has no memory-safety preconditions; a vanished pid just yields ESRCH.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Waits until none of `pids` is alive; false if some still are at the deadline.
fn wait_dead(pids: &BTreeSet<i32>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pids.iter().any(|&p| pid_alive(p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Alive and not a zombie (a zombie holds no sockets; its parent just has not reaped it).
fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ") ".
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

pub(crate) fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// IPv4 addresses (CIDR) on the interfaces of `ns`, except `lo`.
fn ns_ipv4_addrs(ns: &str) -> Result<Vec<String>> {
    let out = process::output("ip", ["-n", ns, "-j", "addr"])?;
    parse_ipv4_addrs(&out).with_context(|| format!("parsing `ip -n {ns} -j addr`"))
}

fn parse_ipv4_addrs(json: &str) -> Result<Vec<String>> {
    let links: Vec<serde_json::Value> = serde_json::from_str(json)?;
    let mut addrs = Vec::new();
    for link in &links {
        if link.get("ifname").and_then(|n| n.as_str()) == Some("lo") {
            continue;
        }
        let infos = link.get("addr_info").and_then(|a| a.as_array());
        for info in infos.into_iter().flatten() {
            if info.get("family").and_then(|f| f.as_str()) != Some("inet") {
                continue;
            }
            let local = info.get("local").and_then(|l| l.as_str());
            let len = info.get("prefixlen").and_then(|p| p.as_u64());
            if let (Some(local), Some(len)) = (local, len) {
                addrs.push(format!("{local}/{len}"));
            }
        }
    }
    Ok(addrs)
}

/// Mount points from /proc/self/mountinfo as (mount point, fs type), in mount order.
fn mounts() -> Vec<(PathBuf, String)> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?;
            Some((PathBuf::from(unescape_mountinfo(point)), fstype.to_string()))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(&[b'\\', a, b, c]) = bytes.get(i..i + 4) {
            // Escapes encode bytes, so the first digit is at most 3.
            if (b'0'..=b'3').contains(&a) && [b, c].iter().all(|d| (b'0'..=b'7').contains(d)) {
                out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_mounted_bpf(dir: &Path) -> bool {
    mounts().iter().any(|(p, t)| p == dir && t == "bpf")
}

/// Unmounts everything mounted at or below `dir`, newest first, including stacked mounts.
fn unmount_all_under(dir: &Path) -> Result<()> {
    for _ in 0..10 {
        let under: Vec<PathBuf> = mounts()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p.starts_with(dir))
            .collect();
        let Some(last) = under.last() else {
            return Ok(());
        };
        if process::run("umount", [last]).is_err() {
            // Busy (an fd still open in a dying process): detach it now, it goes when freed.
            process::run("umount", ["-l".as_ref(), last.as_os_str()])
                .with_context(|| format!("unmounting {}", last.display()))?;
        }
    }
    bail!("{} still has mounts after 10 unmounts", dir.display())
}

/// The last lines of a log, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
            if tail.is_empty() {
                format!("{} is empty", path.display())
            } else {
                tail
            }
        }
        Err(err) => format!("{}: {err}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_prefix() {
        let lab = Lab::default_lab();
        assert_eq!(lab.ns("gw"), "gw");
        assert_eq!(lab.state_dir(), PathBuf::from("/run/gateway-lab/default"));
        let lab = Lab::new("t1234a");
        assert_eq!(lab.ns("c1"), "t1234a-c1");
        assert_eq!(lab.state_dir(), PathBuf::from("/run/gateway-lab/t1234a"));
        assert_eq!(
            lab.agent_config(),
            PathBuf::from("/run/gateway-lab/t1234a/gateway.toml")
        );
    }

    #[test]
    fn slots_have_their_own_names_and_files() {
        let lab = Lab::new("t1234a").with_slot(3);
        assert_eq!(lab.ns("up"), "t1234a-up", "the uplink is the lab's");
        assert_eq!(lab.ns("gw"), "t1234a-gw.3");
        assert_eq!(lab.ns("lan"), "t1234a-lan.3");
        assert_eq!(lab.ns("c2"), "t1234a-c2.3");
        assert_eq!(Lab::default_lab().with_slot(12).ns("c1"), "c1.12");
        assert_eq!(lab.state_dir(), PathBuf::from("/run/gateway-lab/t1234a"));
        assert_eq!(
            lab.gateway_dir(),
            PathBuf::from("/run/gateway-lab/t1234a/slot3")
        );
        assert_eq!(
            lab.bpf_dir(),
            PathBuf::from("/run/gateway-lab/t1234a/slot3/bpf")
        );
        assert_eq!(
            lab.control_socket(),
            PathBuf::from("/run/gateway-lab/t1234a/slot3/control.sock")
        );
        assert_eq!(
            lab.dnsmasq_log(),
            PathBuf::from("/run/gateway-lab/t1234a/dnsmasq.log")
        );
        assert_eq!(lab.uplink_port(), "gw3");
        assert_eq!(lab.spare_uplink_ip(), "192.0.2.247");
        assert_eq!(lab.with_slot(0).uplink_port(), "gw0");
        assert_eq!(lab.with_slot(0).spare_uplink_ip(), "192.0.2.250");
        assert_eq!(lab.with_slot(0).gateway_dir(), lab.state_dir());
        assert!(lab.with_slot(MAX_SLOT + 1).check_prefix().is_err());
        // Interface names stay within IFNAMSIZ.
        assert!(lab.with_slot(MAX_SLOT).uplink_port().len() <= 15);
    }

    #[test]
    fn slot_namespaces_map_back_to_labs() {
        let of = |name: &str| parse_ns(name);
        assert_eq!(of("gw.2"), Some((String::new(), "gw".into(), 2)));
        assert_eq!(of("t12-lan.40"), Some(("t12".into(), "lan".into(), 40)));
        assert_eq!(of("t12-c1"), Some(("t12".into(), "c1".into(), 0)));
        assert_eq!(of("t12-up.2"), None, "up is never a slot's");
        assert_eq!(of("t12-gw.0"), None);
        assert_eq!(of("t12-gw.02"), None);
        assert_eq!(of("t12-gw.41"), None);
        assert_eq!(of("t12-gw."), None);
        assert_eq!(lab_prefix_of_ns("t12-c2.7"), Some("t12".to_string()));
    }

    #[test]
    fn each_slot_renders_its_own_agent_config() {
        let template = "arti_config = \"/run/gateway-lab/default/arti.toml\"\n\
                        bpf_pin_dir = \"/run/gateway-lab/default/bpf\"\n\
                        socket = \"/run/gateway-lab/default/control.sock\"\n\
                        other = \"/run/gateway-lab/default/arti.toml.d\"\n";
        let default = Lab::default_lab().with_slot(2);
        let text = render_agent_config(template, &default.state_dir(), &default.gateway_dir());
        assert_eq!(
            text,
            "arti_config = \"/run/gateway-lab/default/arti.toml\"\n\
             bpf_pin_dir = \"/run/gateway-lab/default/slot2/bpf\"\n\
             socket = \"/run/gateway-lab/default/slot2/control.sock\"\n\
             other = \"/run/gateway-lab/default/slot2/arti.toml.d\"\n"
        );
        let lab = Lab::new("t9");
        let text = render_agent_config(template, &lab.state_dir(), &lab.gateway_dir());
        assert!(text.contains("\"/run/gateway-lab/t9/arti.toml\""), "{text}");
        assert!(text.contains("\"/run/gateway-lab/t9/bpf\""), "{text}");
        // The committed template renders with per-slot paths only.
        let template = fs::read_to_string(lab_config_template()).expect("config/lab.toml");
        let slot = lab.with_slot(1);
        let text = render_agent_config(&template, &slot.state_dir(), &slot.gateway_dir());
        assert!(!text.contains(TEMPLATE_STATE_DIR), "{text}");
        for path in [
            slot.bpf_dir(),
            slot.control_socket(),
            slot.agent_state_dir(),
        ] {
            assert!(text.contains(&format!("\"{}\"", path.display())), "{text}");
        }
        assert!(text.contains("\"/run/gateway-lab/t9/arti.toml\""), "{text}");
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix(""));
        assert!(valid_prefix("t1234a"));
        assert!(valid_prefix("abcdefgh"));
        assert!(!valid_prefix("abcdefghi"));
        assert!(!valid_prefix("a-b"));
        assert!(!valid_prefix("A"));
        assert!(!valid_prefix("default"));
        assert!(!valid_prefix("../x"));
        assert!(Lab::new("../x").check_prefix().is_err());
    }

    #[test]
    fn namespace_names_map_back_to_labs() {
        assert_eq!(lab_prefix_of_ns("gw"), Some(String::new()));
        assert_eq!(lab_prefix_of_ns("t12-c2"), Some("t12".to_string()));
        assert_eq!(lab_prefix_of_ns("t12-c9"), None);
        assert_eq!(lab_prefix_of_ns("other"), None);
        assert_eq!(lab_prefix_of_ns("-gw"), None);
        assert_eq!(lab_prefix_of_ns("a-b-gw"), None);
    }

    #[test]
    fn parses_ip_json() {
        let json = r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
            {"ifname":"br0","addr_info":[{"family":"inet","local":"192.0.2.1","prefixlen":24},
             {"family":"inet6","local":"fe80::1","prefixlen":64}]}]"#;
        assert_eq!(parse_ipv4_addrs(json).unwrap(), vec!["192.0.2.1/24"]);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }
}
