//! The eBPF dataplane: load the object, fill its maps from config, attach and pin the programs.
//! They stay attached when the agent stops or fails: only `detach` (the CLI's
//! `dataplane detach`) removes them. `inspect` reads the pinned maps for the CLI.

mod attach;
pub mod config;
pub mod detach;
pub mod events;
pub mod inspect;
pub mod lease_maps;
mod log_forward;
mod object;
pub mod pins;
pub mod policy;
pub mod service;
pub mod settings;
pub mod steering;

use anyhow::{anyhow, Context, Result};
use aya::{programs::tc::TcAttachType, Ebpf};
use gateway_common::maps::{
    names,
    programs::{INSIDE_VLAN, OUTSIDE_EGRESS, OUTSIDE_INGRESS, PARENT_INGRESS},
};
use serde::Serialize;

use crate::config::Config;
use crate::mac::MacAddr;
pub use attach::Attached;
pub use object::load as load_object;
use pins::PinLayout;
pub use service::SERVICE;

/// The running dataplane. Its programs are attached through pinned links, so they outlive it:
/// the inside stays closed whether the agent stops, crashes or fails to start.
pub struct Dataplane {
    // Keeps the maps (and the loaded programs) alive for as long as the agent runs.
    _ebpf: Ebpf,
    attached: Vec<Attached>,
    steer: steering::SteerSlots,
    pins: PinLayout,
    log_task: tokio::task::JoinHandle<()>,
    events_task: tokio::task::JoinHandle<()>,
    events: events::EventFeed,
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
    /// Loads and attaches everything for `cfg`: the egress guard and the ingress filter on
    /// `outside_device` (the uplink's macvlan, `uplink_mac`), the ingress filter on its parent,
    /// and the default-deny filter on the inside. Must run inside a tokio runtime (log
    /// forwarding). A failure leaves whatever was attached (now or by an earlier run) in
    /// place: the inside stays closed.
    pub fn start(cfg: &Config, outside_device: &str, uplink_mac: MacAddr) -> Result<Dataplane> {
        let pins = PinLayout::new(&cfg.dataplane.bpf_pin_dir);
        pins.prepare()?;
        // The old programs keep their own maps while they run; the pins are only names.
        let stale = pins.remove_maps()?;
        if stale > 0 {
            tracing::info!(stale, "replacing the map pins of a previous run");
        }
        let mut ebpf = object::load()?;
        let log_task = log_forward::spawn(&mut ebpf)?;
        let (events_task, events) = events::spawn(&mut ebpf)?;
        settings::write(&mut ebpf, cfg, uplink_mac)?;
        // Before any program attaches: a blocked client stays blocked across the restart.
        let policies = policy::load(&policy::file(&cfg.state.dir))?;
        let mut policy_map: aya::maps::HashMap<_, gateway_common::maps::MacKey, u32> = ebpf
            .map_mut(names::CLIENT_POLICY)
            .ok_or_else(|| anyhow!("the eBPF object has no {} map", names::CLIENT_POLICY))?
            .try_into()
            .context("CLIENT_POLICY is not a hash map of the expected types")?;
        policy::fill(&mut policy_map, &policies, cfg.dataplane.default_policy)?;
        for &name in names::ALL {
            let path = pins.map(name);
            ebpf.map(name)
                .ok_or_else(|| anyhow!("the eBPF object has no {name} map"))?
                .pin(&path)
                .with_context(|| format!("pinning map {name} at {}", path.display()))?;
        }
        attach::load_programs(&mut ebpf)?;
        let parent = cfg.interfaces.outside.as_str();
        // Outside first: by the time the inside is open nothing from it can leave, and
        // nothing from the uplink can come in.
        let mut attached = vec![attach::tc(
            &mut ebpf,
            &pins,
            OUTSIDE_EGRESS,
            outside_device,
            TcAttachType::Egress,
        )?];
        for (program, device) in [(OUTSIDE_INGRESS, outside_device), (PARENT_INGRESS, parent)] {
            attached.push(attach::tc(
                &mut ebpf,
                &pins,
                program,
                device,
                TcAttachType::Ingress,
            )?);
        }
        // Behind XDP on the inside NIC, before it: VLAN tags offload hid from XDP.
        attached.push(attach::tc(
            &mut ebpf,
            &pins,
            INSIDE_VLAN,
            &cfg.interfaces.inside,
            TcAttachType::Ingress,
        )?);
        // The steering program before the inside opens: with the policy route in place, an
        // inside connection must meet it (and its empty slots) rather than a host socket.
        attached.push(attach::inside_steer(&mut ebpf, &pins)?);
        attached.push(attach::inside_ingress(
            &mut ebpf,
            &pins,
            &cfg.interfaces.inside,
            cfg.dataplane.xdp_mode,
        )?);
        let keep: Vec<String> = attached.iter().map(|a| a.pin.clone()).collect();
        attach::remove_stale_links(&pins, &keep)?;
        let steer_map = ebpf
            .take_map(names::STEER_SOCKETS)
            .ok_or_else(|| anyhow!("the eBPF object has no {} map", names::STEER_SOCKETS))?;
        let steer = steering::SteerSlots::new(
            aya::maps::SockMap::try_from(steer_map).context("STEER_SOCKETS is not a SockMap")?,
        );
        Ok(Dataplane {
            _ebpf: ebpf,
            attached,
            steer,
            pins,
            log_task,
            events_task,
            events,
        })
    }

    /// A [`crate::lease_events::LeaseSink`] that keeps the lease maps in step with DHCP.
    pub fn lease_maps(&self) -> Result<lease_maps::LeaseMaps> {
        lease_maps::LeaseMaps::open(&self.pins)
    }

    /// The slots steered inside traffic goes to (the transparent listener fills its own).
    pub fn steer_slots(&self) -> steering::SteerSlots {
        self.steer.clone()
    }

    /// Where its maps are pinned, for readers such as the drop counters' ([`inspect::drops`]).
    pub fn pins(&self) -> PinLayout {
        self.pins.clone()
    }

    /// The programs' events (new clients, spoof attempts, policy refusals).
    pub fn events(&self) -> events::EventFeed {
        self.events.clone()
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

    /// Stops forwarding the programs' log records. The programs stay attached with their pins
    /// and map pins: a stopped agent leaves the inside closed, and the next start swaps its
    /// programs in place. `gateway-agent dataplane detach` is the only way out.
    pub fn stop(self) {
        self.log_task.abort();
        self.events_task.abort();
        tracing::info!(
            pins = %self.pins.dir().display(),
            "the programs stay attached (fail closed); `gateway-agent dataplane detach` removes them"
        );
    }
}
