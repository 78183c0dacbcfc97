//! Attaching and pinning the programs.
//!
//! Links are pinned, and nothing in the agent ever unpins one: a crash, a clean stop and a
//! failed start all leave the inside closed. Only `gateway-agent dataplane detach` removes them
//! (`dataplane::detach`). A link's pin is named `<program>@<interface>#<ifindex>`: the next run
//! swaps its new program into the old link on the same interface atomically (no moment without
//! a filter), and removes links on interfaces the config no longer names. The ifindex tells a
//! link on a deleted and re-created interface of the same name (a defunct link, which would
//! take the new program and guard nothing) from a live one: such a pin is not reused.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachType},
        xdp::XdpLink,
        SchedClassifier, SkLookup, Xdp, XdpMode,
    },
    Ebpf,
};
use gateway_common::maps::programs::{
    INSIDE_INGRESS, INSIDE_STEER, INSIDE_VLAN, OUTSIDE_EGRESS, OUTSIDE_INGRESS, PARENT_INGRESS,
};

use super::config;
use super::pins::PinLayout;

/// A program attached to an interface through a pinned link.
#[derive(Debug)]
pub struct Attached {
    /// Program name.
    pub program: &'static str,
    /// Interface it is attached to.
    pub interface: String,
    /// Hook and mode, for status output (`xdp/driver`, `tcx/egress`).
    pub hook: String,
    /// The pin's name (`<program>@<interface>#<ifindex>`).
    pub pin: String,
}

/// Loads every program into the kernel (the verifier runs here), before anything is attached.
pub fn load_programs(ebpf: &mut Ebpf) -> Result<()> {
    let xdp: &mut Xdp = program(ebpf, INSIDE_INGRESS)?.try_into()?;
    xdp.load()
        .with_context(|| format!("loading {INSIDE_INGRESS} (verifier)"))?;
    for name in [OUTSIDE_EGRESS, OUTSIDE_INGRESS, PARENT_INGRESS, INSIDE_VLAN] {
        let tc: &mut SchedClassifier = program(ebpf, name)?.try_into()?;
        tc.load()
            .with_context(|| format!("loading {name} (verifier)"))?;
    }
    let steer: &mut SkLookup = program(ebpf, INSIDE_STEER)?.try_into()?;
    steer
        .load()
        .with_context(|| format!("loading {INSIDE_STEER} (verifier)"))?;
    Ok(())
}

/// Attaches `inside_steer` to the agent's network namespace. sk_lookup links cannot be
/// updated in place, so each start attaches a new one, pinned under a name with its link id;
/// the previous run's is removed afterwards with the other stale pins. Until then both run,
/// the old one first: its slots are empty (its sockets closed with the old agent), so it drops,
/// which is the safe side.
pub fn inside_steer(ebpf: &mut Ebpf, pins: &PinLayout) -> Result<Attached> {
    let prog: &mut SkLookup = program(ebpf, INSIDE_STEER)?.try_into()?;
    let netns = std::fs::File::open("/proc/self/ns/net")
        .context("opening the agent's network namespace")?;
    let id = prog
        .attach(netns)
        .with_context(|| format!("attaching {INSIDE_STEER} to the network namespace"))?;
    let link: FdLink = prog.take_link(id)?.into();
    let link_id = link.info().context("reading the steering link's id")?.id();
    let name = format!("{INSIDE_STEER}@netns#{link_id}");
    let path = pins.link(&name);
    pin(
        link,
        name,
        &path,
        INSIDE_STEER,
        "netns",
        "sk_lookup".to_owned(),
    )
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))
}

/// Attaches the XDP program to the inside interface.
pub fn inside_ingress(
    ebpf: &mut Ebpf,
    pins: &PinLayout,
    interface: &str,
    mode: config::XdpMode,
) -> Result<Attached> {
    let prog: &mut Xdp = program(ebpf, INSIDE_INGRESS)?.try_into()?;
    let aya_mode = match mode {
        config::XdpMode::Auto => XdpMode::Default,
        config::XdpMode::Native => XdpMode::Driver,
        config::XdpMode::Skb => XdpMode::Skb,
    };
    let name = link_name(INSIDE_INGRESS, interface)?;
    let path = pins.link(&name);
    let hook = format!("xdp/{}", format!("{mode:?}").to_lowercase());
    match pinned_link(pins, &name, INSIDE_INGRESS, interface)? {
        Some(old) => {
            let old = XdpLink::try_from(old).with_context(|| {
                format!("the link pinned at {} is not an XDP link", path.display())
            })?;
            let id = prog
                .attach_to_link(old)
                .with_context(|| swap_failed(INSIDE_INGRESS, interface, &path))?;
            // The kernel link is the old one, still pinned: our descriptor can go.
            drop(prog.take_link(id)?);
            taken_over(pins, INSIDE_INGRESS, interface, hook, name, &path)
        }
        None => {
            let id = prog.attach(interface, aya_mode).with_context(|| {
                format!("attaching {INSIDE_INGRESS} to {interface} in XDP mode {mode:?}")
            })?;
            let link: FdLink = prog
                .take_link(id)?
                .try_into()
                .with_context(|| format!("{INSIDE_INGRESS} was attached without a bpf_link"))?;
            pin(link, name, &path, INSIDE_INGRESS, interface, hook)
        }
    }
}

/// Attaches the TC program `program` to `interface` at `direction` through TCX (kernel >= 6.6),
/// whose bpf_link is what makes pinning possible.
pub fn tc(
    ebpf: &mut Ebpf,
    pins: &PinLayout,
    program_name: &'static str,
    interface: &str,
    direction: TcAttachType,
) -> Result<Attached> {
    let prog: &mut SchedClassifier = program(ebpf, program_name)?.try_into()?;
    let name = link_name(program_name, interface)?;
    let path = pins.link(&name);
    let hook = match direction {
        TcAttachType::Ingress => "tcx/ingress",
        _ => "tcx/egress",
    }
    .to_owned();
    match pinned_link(pins, &name, program_name, interface)? {
        Some(old) => {
            let old = SchedClassifierLink::try_from(old).with_context(|| {
                format!("the link pinned at {} is not a TC link", path.display())
            })?;
            let id = prog
                .attach_to_link(old)
                .with_context(|| swap_failed(program_name, interface, &path))?;
            drop(prog.take_link(id)?);
            taken_over(pins, program_name, interface, hook, name, &path)
        }
        None => {
            let id = prog
                .attach(interface, direction)
                .with_context(|| format!("attaching {program_name} to {interface} ({hook})"))?;
            let link: FdLink = prog
                .take_link(id)?
                .try_into()
                .with_context(|| format!("{program_name} was attached without a bpf_link (TCX)"))?;
            pin(link, name, &path, program_name, interface, hook)
        }
    }
}

fn swap_failed(program: &str, interface: &str, path: &Path) -> String {
    format!(
        "swapping the new {program} into the link a previous run pinned on {interface} \
         ({}); the old program stays attached",
        path.display()
    )
}

fn taken_over(
    pins: &PinLayout,
    program: &'static str,
    interface: &str,
    hook: String,
    name: String,
    path: &Path,
) -> Result<Attached> {
    tracing::warn!(
        program,
        interface,
        "took over the link a previous run left pinned, in place"
    );
    // A pin of the older `<program>@<interface>` form moves to the current name (a second
    // pin of the same link, then the old one goes): the link stays pinned throughout.
    let legacy = pins.link(&legacy_name(program, interface));
    if !path.exists() && legacy.exists() {
        let link = PinnedLink::from_pin(&legacy)
            .with_context(|| format!("opening the pinned link {}", legacy.display()))?;
        FdLink::from(link)
            .pin(path)
            .with_context(|| format!("pinning the link of {program} at {}", path.display()))?;
        std::fs::remove_file(&legacy).with_context(|| format!("removing {}", legacy.display()))?;
    }
    Ok(Attached {
        program,
        interface: interface.to_owned(),
        hook,
        pin: name,
    })
}

/// The live link a previous run pinned for `program` on `interface` (under `name`, or the
/// older name without the ifindex), opened with its pin left in place: if the swap fails, the
/// old program stays attached.
fn pinned_link(
    pins: &PinLayout,
    name: &str,
    program: &str,
    interface: &str,
) -> Result<Option<FdLink>> {
    for candidate in [name.to_owned(), legacy_name(program, interface)] {
        let path = pins.link(&candidate);
        match path.try_exists() {
            Ok(false) => continue,
            Ok(true) => {
                let link = PinnedLink::from_pin(&path)
                    .with_context(|| format!("opening the pinned link {}", path.display()))?;
                return Ok(Some(FdLink::from(link)));
            }
            Err(err) => return Err(err).with_context(|| format!("looking for {}", path.display())),
        }
    }
    Ok(None)
}

fn pin(
    link: FdLink,
    name: String,
    path: &Path,
    program: &'static str,
    interface: &str,
    hook: String,
) -> Result<Attached> {
    // The pinned object keeps the link (and so the program) attached once our descriptor
    // closes.
    link.pin(path)
        .with_context(|| format!("pinning the link of {program} at {}", path.display()))?;
    tracing::info!(program, interface, hook = %hook, "attached");
    Ok(Attached {
        program,
        interface: interface.to_string(),
        hook,
        pin: name,
    })
}

/// The pin name of `program`'s link on `interface` as it is now (its ifindex included).
fn link_name(program: &str, interface: &str) -> Result<String> {
    let index = crate::net::interface::index(interface)
        .ok_or_else(|| anyhow!("there is no interface {interface:?}"))?;
    Ok(format!("{program}@{interface}#{index}"))
}

/// The pin name runs before the ifindex was part of it used.
fn legacy_name(program: &str, interface: &str) -> String {
    format!("{program}@{interface}")
}

/// Removes the link pins not in `keep` (links on interfaces the config no longer names):
/// removing the pin detaches the program.
pub fn remove_stale_links(pins: &PinLayout, keep: &[String]) -> Result<()> {
    for (name, path) in link_pins(pins)? {
        if !keep.contains(&name) {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing stale link {}", path.display()))?;
            tracing::warn!(link = %name, "removed a stale link on an interface no longer in the config");
        }
    }
    Ok(())
}

/// Every link pin: its name and path.
pub fn link_pins(pins: &PinLayout) -> Result<Vec<(String, PathBuf)>> {
    let dir = pins.link("");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    let mut links = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        links.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    links.sort();
    Ok(links)
}
