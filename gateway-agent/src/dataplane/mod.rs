//! The eBPF dataplane: load the object, fill its maps from config, attach and pin the programs,
//! and detach them again on shutdown. `inspect` reads the pinned maps for the CLI.
//! `forwarding` keeps the host's own IPv4 routing off, the other half of what may cross.

mod attach;
pub mod config;
pub mod forwarding;
pub mod inspect;
pub mod lease_maps;
mod log_forward;
mod object;
pub mod pins;
pub mod service;
pub mod settings;

use anyhow::{anyhow, Context, Result};
use aya::Ebpf;
use gateway_common::maps::names;
use serde::Serialize;

use crate::config::Config;
pub use attach::Attached;
pub use object::load as load_object;
use pins::PinLayout;
pub use service::SERVICE;

/// The running dataplane. Dropping it without [`Dataplane::shutdown`] leaves the programs
/// attached through their pinned links: the inside stays closed.
pub struct Dataplane {
    // Keeps the maps (and the loaded programs) alive for as long as the agent runs.
    _ebpf: Ebpf,
    attached: Vec<Attached>,
    pins: PinLayout,
    log_task: tokio::task::JoinHandle<()>,
}

/// What `status` reports about the dataplane.
#[derive(Debug, Serialize, serde::Deserialize, Clone)]
pub struct DataplaneStatus {
    /// The bpffs directory holding the pins.
    pub pin_dir: String,
    /// Attached programs.
    pub programs: Vec<ProgramStatus>,
}

/// One attached program.
#[derive(Debug, Serialize, serde::Deserialize, Clone)]
pub struct ProgramStatus {
    /// Program name.
    pub name: String,
    /// Interface.
    pub interface: String,
    /// Hook and mode.
    pub hook: String,
}

impl Dataplane {
    /// Loads and attaches everything for `cfg`, the egress guard on `outside_device` (the
    /// uplink's macvlan). Must run inside a tokio runtime (log forwarding).
    pub fn start(cfg: &Config, outside_device: &str) -> Result<Dataplane> {
        let pins = PinLayout::new(&cfg.dataplane.bpf_pin_dir);
        pins.prepare()?;
        let stale = pins.remove_maps()?;
        if stale > 0 {
            tracing::warn!(stale, "removed map pins left by a previous run");
        }
        let mut ebpf = object::load()?;
        let log_task = log_forward::spawn(&mut ebpf)?;
        settings::write(&mut ebpf, cfg)?;
        for &name in names::ALL {
            let path = pins.map(name);
            ebpf.map(name)
                .ok_or_else(|| anyhow!("the eBPF object has no {name} map"))?
                .pin(&path)
                .with_context(|| format!("pinning map {name} at {}", path.display()))?;
        }
        // Outside first: by the time the inside is open nothing from it can leave.
        let outside = attach::outside_egress(&mut ebpf, &pins, outside_device)?;
        let inside = match attach::inside_ingress(
            &mut ebpf,
            &pins,
            &cfg.interfaces.inside,
            cfg.dataplane.xdp_mode,
        ) {
            Ok(inside) => inside,
            Err(err) => {
                // A half-started dataplane must not stay pinned behind a failed start.
                if let Err(detach) = outside.detach() {
                    tracing::error!("detaching after a failed start: {detach:#}");
                }
                return Err(err);
            }
        };
        let attached = vec![outside, inside];
        Ok(Dataplane {
            _ebpf: ebpf,
            attached,
            pins,
            log_task,
        })
    }

    /// A [`crate::lease_events::LeaseSink`] that keeps the lease maps in step with DHCP.
    pub fn lease_maps(&self) -> Result<lease_maps::LeaseMaps> {
        lease_maps::LeaseMaps::open(&self.pins)
    }

    /// Where its maps are pinned, for readers such as the drop counters' ([`inspect::drops`]).
    pub fn pins(&self) -> PinLayout {
        self.pins.clone()
    }

    /// What is attached where.
    pub fn status(&self) -> DataplaneStatus {
        DataplaneStatus {
            pin_dir: self.pins.dir().display().to_string(),
            programs: self
                .attached
                .iter()
                .map(|a| ProgramStatus {
                    name: a.program.to_string(),
                    interface: a.interface.clone(),
                    hook: a.hook.clone(),
                })
                .collect(),
        }
    }

    /// Detaches every program and removes the pins (a clean stop).
    pub fn shutdown(self) -> Result<()> {
        let mut first_error = None;
        // Inside first, the reverse of start.
        for attached in self.attached.into_iter().rev() {
            let program = attached.program;
            if let Err(err) = attached.detach() {
                tracing::error!(program, "detaching: {err:#}");
                first_error.get_or_insert(err);
            } else {
                tracing::info!(program, "detached");
            }
        }
        if let Err(err) = self.pins.remove_maps() {
            first_error.get_or_insert(err);
        }
        self.log_task.abort();
        match first_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}
