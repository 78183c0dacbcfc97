//! Bringing a lab (its shared base and its gateway slots) up and down, and taking every lab down.

use std::collections::BTreeSet;
use std::fs::{self};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::tor::{self};
use crate::deps;
use crate::process;

use super::layout::{
    lab_prefix_of_ns, valid_prefix, Lab, INTERNET_RESOLVER_IP, MAX_SLOT, MODEM_IP, MODEM_MAC,
    ORIGIN_IP, STATE_ROOT,
};
use super::topology::{ip, is_mounted_bpf, ns_exists, remove};

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

impl Lab {
    /// Builds the lab with its Tor network (started, not waited for) and this gateway slot;
    /// does nothing if they are up (but re-renders the slot's agent config and starts Tor
    /// nodes that do not run), and rebuilds a partial lab (a partial slot N: only that slot).
    pub fn up(&self) -> Result<()> {
        self.bring_up(true)
    }

    /// [`Lab::up`] without starting the Tor network (`tor::setup` and `tor::start`
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

    pub(crate) fn bring_up(&self, tor: bool) -> Result<()> {
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
            // A base made before nginx joined it gets it now.
            self.start_web_origin()?;
            if tor {
                // Also brings the Tor network back if `lab tor stop` stopped it.
                tor::setup(self)?;
                tor::start(self)?;
                // The mirror's upstreams, for `cargo xtask run` (tests start them themselves).
                self.start_upstream()?;
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
    pub(crate) fn rebuild_base(&self) -> Result<()> {
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
    pub(crate) fn ensure_slot(&self) -> Result<()> {
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
    pub(crate) fn base_is_up(&self) -> bool {
        valid_prefix(&self.prefix)
            && ns_exists(&self.ns("up"))
            && self.state_dir().is_dir()
            && self.daemon_alive("dnsmasq.pid")
            && self.daemon_alive("origin.pid")
    }

    /// This slot's namespaces, bpffs and agent config.
    pub(crate) fn slot_is_up(&self) -> bool {
        self.slot <= MAX_SLOT
            && self.slot_ns_names().iter().all(|ns| ns_exists(ns))
            && is_mounted_bpf(&self.bpf_dir())
            && self.agent_config().is_file()
    }

    /// Whether anything of this lab exists (a namespace of any slot, the state dir).
    pub(crate) fn has_traces(&self) -> bool {
        self.state_dir().exists() || self.all_ns_names().iter().any(|ns| ns_exists(ns))
    }

    /// Whether anything of this slot exists (a namespace, a resolv.conf, its gateway dir).
    pub(crate) fn slot_has_traces(&self) -> bool {
        self.slot_ns_names()
            .iter()
            .any(|ns| ns_exists(ns) || Path::new("/etc/netns").join(ns).exists())
            || (self.slot > 0 && self.gateway_dir().exists())
    }

    /// The state dir, the origin's files and the `up` namespace with the uplink bridge, the
    /// stand-in internet, the modem's dnsmasq and the origin.
    pub(crate) fn build_base(&self) -> Result<()> {
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
        // A fixed MAC: a bridge without one takes its lowest port's, so removing a slot's port
        // would change the modem's MAC under the other gateways, whose ARP entries would then
        // point nowhere for seconds (their DNS and new connections time out meanwhile).
        ip(
            &up,
            &["link", "add", "br0", "address", MODEM_MAC, "type", "bridge"],
        )?;
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
        self.wait_ready()?;
        eprintln!(
            "{}: starting nginx ({} = {}, http and https)",
            self.label(),
            super::WEB_HOST,
            super::WEB_IP
        );
        self.start_web_origin()
    }

    /// This slot's gateway dir, agent config, bpffs and namespaces, wired to the lab's uplink
    /// bridge. The lab's base must be up.
    pub(crate) fn build_slot(&self) -> Result<()> {
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
}
