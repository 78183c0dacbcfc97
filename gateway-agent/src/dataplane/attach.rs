//! Loading, attaching and pinning the programs.
//!
//! Links are pinned, so a crashed agent leaves the inside closed rather than open; the next run
//! removes those stale links before attaching its own.

use anyhow::{anyhow, Context, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::TcAttachType,
        SchedClassifier, Xdp, XdpMode,
    },
    Ebpf,
};
use gateway_common::maps::programs::{INSIDE_INGRESS, OUTSIDE_EGRESS};

use super::pins::PinLayout;
use crate::config;

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
    remove_stale_link(pins, INSIDE_INGRESS)?;
    let aya_mode = match mode {
        config::XdpMode::Auto => XdpMode::Default,
        config::XdpMode::Native => XdpMode::Driver,
        config::XdpMode::Skb => XdpMode::Skb,
    };
    let id = prog.attach(interface, aya_mode).with_context(|| {
        format!("attaching {INSIDE_INGRESS} to {interface} in XDP mode {mode:?}")
    })?;
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
    remove_stale_link(pins, OUTSIDE_EGRESS)?;
    // TCX (kernel >= 6.6) gives a bpf_link, which is what makes pinning possible.
    let id = prog
        .attach(interface, TcAttachType::Egress)
        .with_context(|| format!("attaching {OUTSIDE_EGRESS} to {interface} egress"))?;
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
    let path = pins.link(program);
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

/// Removes a link pinned by a previous run that did not stop cleanly, detaching its program.
fn remove_stale_link(pins: &PinLayout, program: &str) -> Result<()> {
    let path = pins.link(program);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::warn!(
                program,
                "replaced a link left pinned by a previous run (crash or kill)"
            );
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing stale link {}", path.display())),
    }
}
