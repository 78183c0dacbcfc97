//! The dataplane as an entry of the service list, right after the uplink (the egress guard
//! attaches to its macvlan): loads and attaches the programs, hands the pins and lease maps
//! to later entries, and shows what is attached and the drop counters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::Value;

use super::events::EventFeed;
use super::policy::{self, Policy};
use super::{inspect, inspect::DropCount, Dataplane, DataplaneStatus};
use crate::mac::MacAddr;
use crate::metrics::{Exposition, Kind};
use crate::service::{self, to_json, DataplaneHandles, Entry, Handles, Running, ServiceView};

/// The dataplane's entry in the service list.
pub const SERVICE: Entry = Entry {
    name: "dataplane",
    start,
};

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        let uplink = handles.uplink("the dataplane")?;
        let device = uplink.device.clone();
        let mac_text = uplink.status.borrow().mac.clone();
        let mac: MacAddr = mac_text
            .parse()
            .map_err(|err| anyhow::anyhow!("the uplink's MAC {mac_text:?}: {err}"))?;
        if handles.cfg.steers() {
            // Before the programs: from here on nothing from the inside is ever forwarded.
            super::steering::install_route(&handles.cfg.interfaces.inside)
                .await
                .context("installing the steering route")?;
        }
        let dataplane =
            Dataplane::start(&handles.cfg, &device, mac).context("starting the dataplane")?;
        let pins = dataplane.pins();
        let lease_maps = dataplane
            .lease_maps()
            .context("opening the dataplane's lease maps")?;
        handles.dataplane = Some(DataplaneHandles {
            pins: pins.clone(),
            lease_maps: Some(lease_maps),
            steer: dataplane.steer_slots(),
        });
        let policies = PolicyOps {
            state_dir: handles.cfg.state.dir.clone(),
            map_pin: pins.map(gateway_common::maps::names::CLIENT_POLICY),
            default: handles.cfg.dataplane.default_policy,
            lock: std::sync::Mutex::new(()),
        };
        let view = Arc::new(
            DataplaneView::new(dataplane.status(), Box::new(move || inspect::drops(&pins)))
                .with_policies(policies)
                .with_events(dataplane.events()),
        );
        let running = Running::new(view, move || async move {
            dataplane.stop();
            Ok(())
        });
        Ok(Some(running.stopped_last()))
    })
}

/// Reads the drop counters.
pub type DropsReader = Box<dyn Fn() -> Result<Vec<DropCount>> + Send + Sync>;

/// The per-client policy operations: the state file and the pinned map they keep in step.
pub struct PolicyOps {
    state_dir: std::path::PathBuf,
    map_pin: std::path::PathBuf,
    default: Policy,
    /// One change at a time (read, modify, write the file).
    lock: std::sync::Mutex<()>,
}

/// What `policies` answers: the default and the clients that differ from it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyTable {
    /// `dataplane.default_policy`.
    pub default: Policy,
    /// Clients with their own policy, by MAC.
    pub clients: policy::Policies,
}

impl PolicyOps {
    fn table(&self) -> Result<Value> {
        let clients = policy::load(&policy::file(&self.state_dir))?;
        let table = PolicyTable {
            default: self.default,
            clients,
        };
        serde_json::to_value(table).context("encoding the policies")
    }

    fn set(&self, args: &Value) -> Result<Value> {
        let mac = args["mac"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("set_policy needs a \"mac\""))?;
        let wanted: Policy = args["policy"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("set_policy needs a \"policy\""))?
            .parse()
            .map_err(|err: String| anyhow::anyhow!(err))?;
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mac = policy::set(&self.state_dir, &self.map_pin, mac, wanted, self.default)?;
        tracing::info!(%mac, policy = %wanted, "client policy set");
        Ok(serde_json::json!({ "mac": mac, "policy": wanted }))
    }
}

/// What the dataplane shows: the attached programs and the drop counters by reason.
pub struct DataplaneView {
    status: DataplaneStatus,
    drops: DropsReader,
    /// The counters could not be read last time (said once, not on every scrape).
    drops_failing: AtomicBool,
    policies: Option<PolicyOps>,
    events: Option<EventFeed>,
}

impl DataplaneView {
    /// A view of `status`, reading drop counters with `drops`.
    pub fn new(status: DataplaneStatus, drops: DropsReader) -> Self {
        DataplaneView {
            status,
            drops,
            drops_failing: AtomicBool::new(false),
            policies: None,
            events: None,
        }
    }

    /// Also serves `events` (`gateway-agent maps events`) and counts them in the metrics.
    pub fn with_events(mut self, events: EventFeed) -> Self {
        self.events = Some(events);
        self
    }

    /// Also serves `policies` and `set_policy` (`gateway-agent clients`).
    pub fn with_policies(mut self, policies: PolicyOps) -> Self {
        self.policies = Some(policies);
        self
    }

    /// The drop counters, or `None` (logged once) while they cannot be read.
    fn read_drops(&self) -> Option<Vec<DropCount>> {
        match (self.drops)() {
            Ok(drops) => {
                if self.drops_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("metrics: the dataplane's drop counters are readable again");
                }
                Some(drops)
            }
            Err(error) => {
                if !self.drops_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "metrics: reading the dataplane's drop counters: {error:#}; \
                         gateway_dataplane_drops_total is left out until they can be read"
                    );
                }
                None
            }
        }
    }
}

impl ServiceView for DataplaneView {
    fn name(&self) -> &'static str {
        "dataplane"
    }

    fn status(&self) -> Value {
        to_json(&self.status)
    }

    fn summary(&self) -> Vec<String> {
        let mut lines = vec![format!("pins {}", self.status.pin_dir)];
        lines.extend(self.status.programs.iter().map(|prog| {
            format!(
                "program {} on {} ({})",
                prog.name, prog.interface, prog.hook
            )
        }));
        lines
    }

    fn metrics(&self, out: &mut Exposition) {
        metrics(out, &self.status, self.read_drops().as_deref());
        if let Some(events) = &self.events {
            event_metrics(out, events);
        }
    }

    fn operations(&self) -> &'static [&'static str] {
        match (&self.policies, &self.events) {
            (Some(_), Some(_)) => &["policies", "set_policy", "events"],
            (Some(_), None) => &["policies", "set_policy"],
            (None, Some(_)) => &["events"],
            (None, None) => &[],
        }
    }

    fn operate(&self, operation: &str, args: Value) -> service::BoxFuture<'_, Result<Value>> {
        let result = match (operation, &self.policies, &self.events) {
            ("policies", Some(ops), _) => ops.table(),
            ("set_policy", Some(ops), _) => ops.set(&args),
            ("events", _, Some(events)) => {
                let after = args["after"].as_u64().unwrap_or(0);
                serde_json::to_value(events.page(after)).context("encoding the events")
            }
            _ => Err(anyhow::anyhow!(
                "the dataplane service has no operation {operation:?}"
            )),
        };
        Box::pin(async move { result })
    }
}

/// Events by kind, and what the programs did not send.
fn event_metrics(out: &mut Exposition, events: &EventFeed) {
    let (counts, thinned, lost) = events.counts();
    let mut family = out.family(
        "gateway_dataplane_events_total",
        Kind::Counter,
        "Events the inside program reported (new clients, spoof attempts, policy refusals).",
    );
    for (kind, count) in counts {
        family.sample(&[("kind", kind)], count);
    }
    out.counter(
        "gateway_dataplane_events_thinned_total",
        "Events the inside program did not send, over its per-CPU budget.",
        thinned,
    );
    out.counter(
        "gateway_dataplane_events_lost_total",
        "Events lost because the ring buffer was full.",
        lost,
    );
}

/// The dataplane's families: programs attached, and drops by reason (left out, rather than
/// reported as zero, when the counters could not be read).
pub(crate) fn metrics(out: &mut Exposition, status: &DataplaneStatus, drops: Option<&[DropCount]>) {
    out.gauge(
        "gateway_dataplane_programs_attached",
        "eBPF programs the agent attached.",
        status.programs.len() as u64,
    );
    if let Some(drops) = drops {
        let mut family = out.family(
            "gateway_dataplane_drops_total",
            Kind::Counter,
            "Packets the eBPF dataplane dropped, by reason.",
        );
        for drop in drops {
            family.sample(&[("reason", drop.reason)], drop.count);
        }
    }
}
