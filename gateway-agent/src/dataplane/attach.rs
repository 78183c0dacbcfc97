//! Loading, attaching and pinning the programs.
//!
//! Links are pinned, so a crashed agent leaves the inside closed rather than open. A link's pin
//! is named `<program>@<interface>`: the next run swaps its new program into the old link on the
//! same interface atomically (no moment without a filter), and removes links on interfaces the
//! config no longer names.

use anyhow::{anyhow, Context, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachType},
        xdp::XdpLink,
        SchedClassifier, Xdp, XdpMode,
    },
    Ebpf,
};
use gateway_common::maps::programs::{INSIDE_INGRESS, OUTSIDE_EGRESS};

use super::config;
use super::pins::PinLayout;

/// A program attached to an interface, its link pinned.
#[derive(Debug)]
pub struct Attached {
    /// Program name.
    pub program: &'static str,
    /// Interface it is attached to.
    pub interface: String,
    /// Hook and mode, for status output (`xdp/driver`, `tcx/egress`).
    pub hook: String,
    link: PinnedLink,
}

impl Attached {
    /// Unpins and closes the link, which detaches the program.
    pub fn detach(self) -> Result<()> {
        let fd_link = self
            .link
            .unpin()
            .with_context(|| format!("unpinning the link of {}", self.program))?;
        drop(fd_link);
        Ok(())
    }
}

/// Attaches the XDP program to the inside interface.
pub fn inside_ingress(
    ebpf: &mut Ebpf,
    pins: &PinLayout,
    interface: &str,
    mode: config::XdpMode,
) -> Result<Attached> {
    let prog: &mut Xdp = ebpf
        .program_mut(INSIDE_INGRESS)
        .ok_or_else(|| anyhow!("the eBPF object has no program {INSIDE_INGRESS}"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("loading {INSIDE_INGRESS} (verifier)"))?;
    let aya_mode = match mode {
        config::XdpMode::Auto => XdpMode::Default,
        config::XdpMode::Native => XdpMode::Driver,
        config::XdpMode::Skb => XdpMode::Skb,
    };
    let replaced =
        take_stale_links(pins, INSIDE_INGRESS, interface)?.and_then(|old| match XdpLink::try_from(
            old,
        ) {
            Ok(old) => prog.attach_to_link(old).ok(),
            Err(_) => None,
        });
    let id = match replaced {
        Some(id) => {
            tracing::warn!(
                program = INSIDE_INGRESS,
                "took over the link a previous run left pinned (crash or kill), in place"
            );
            id
        }
        None => prog.attach(interface, aya_mode).with_context(|| {
            format!("attaching {INSIDE_INGRESS} to {interface} in XDP mode {mode:?}")
        })?,
    };
    let link: FdLink = prog
        .take_link(id)?
        .try_into()
        .with_context(|| format!("{INSIDE_INGRESS} was attached without a bpf_link"))?;
    let hook = format!("xdp/{}", format!("{mode:?}").to_lowercase());
    pin(link, pins, INSIDE_INGRESS, interface, hook)
}

/// Attaches the TC program to the outside interface's egress.
pub fn outside_egress(ebpf: &mut Ebpf, pins: &PinLayout, interface: &str) -> Result<Attached> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(OUTSIDE_EGRESS)
        .ok_or_else(|| anyhow!("the eBPF object has no program {OUTSIDE_EGRESS}"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("loading {OUTSIDE_EGRESS} (verifier)"))?;
    let replaced = take_stale_links(pins, OUTSIDE_EGRESS, interface)?.and_then(|old| {
        match SchedClassifierLink::try_from(old) {
            Ok(old) => prog.attach_to_link(old).ok(),
            Err(_) => None,
        }
    });
    let id = match replaced {
        Some(id) => {
            tracing::warn!(
                program = OUTSIDE_EGRESS,
                "took over the link a previous run left pinned (crash or kill), in place"
            );
            id
        }
        // TCX (kernel >= 6.6) gives a bpf_link, which is what makes pinning possible.
        None => prog
            .attach(interface, TcAttachType::Egress)
            .with_context(|| format!("attaching {OUTSIDE_EGRESS} to {interface} egress"))?,
    };
    let link: FdLink = prog
        .take_link(id)?
        .try_into()
        .with_context(|| format!("{OUTSIDE_EGRESS} was attached without a bpf_link (TCX)"))?;
    pin(link, pins, OUTSIDE_EGRESS, interface, "tcx/egress".into())
}

fn pin(
    link: FdLink,
    pins: &PinLayout,
    program: &'static str,
    interface: &str,
    hook: String,
) -> Result<Attached> {
    let path = pins.link(&link_name(program, interface));
    let link = link
        .pin(&path)
        .with_context(|| format!("pinning the link of {program} at {}", path.display()))?;
    tracing::info!(program, interface, hook = %hook, "attached");
    Ok(Attached {
        program,
        interface: interface.to_string(),
        hook,
        link,
    })
}

fn link_name(program: &str, interface: &str) -> String {
    format!("{program}@{interface}")
}

/// Unpins every link of `program` a previous run left behind. The one on `interface` comes back
/// (still attached, for an in-place swap); links on other interfaces are detached.
fn take_stale_links(pins: &PinLayout, program: &str, interface: &str) -> Result<Option<FdLink>> {
    let wanted = link_name(program, interface);
    let prefix = format!("{program}@");
    let dir = pins.link("");
    let mut same = None;
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == wanted {
            let link = PinnedLink::from_pin(entry.path())
                .with_context(|| format!("opening stale link {}", entry.path().display()))?;
            same = Some(link.unpin().context("unpinning the stale link")?);
        } else if name.starts_with(&prefix) {
            // On an interface the config no longer names: removing the pin detaches it.
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing stale link {}", entry.path().display()))?;
            tracing::warn!(program, link = %name, "removed a stale link on another interface");
        }
    }
    Ok(same)
}
