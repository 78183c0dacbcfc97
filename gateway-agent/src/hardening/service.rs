//! Hardening as the first entry of the service list: the knobs are set before the uplink's
//! macvlan exists, then checked every second for as long as the agent runs. The knobs are not
//! put back on stop: a stopped gateway stays as closed as a running one.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::knobs::{self, Knob, Outcome};
use crate::config::Config;
use crate::metrics::{Exposition, Kind};
use crate::service::{self, Entry, Handles, Running, SnapshotView};

/// Hardening's entry in the service list.
pub const SERVICE: Entry = Entry {
    name: "hardening",
    start,
};

/// How often the knobs are checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What `status` shows: the knobs held and how often something turned one back.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HardeningStatus {
    /// Knobs held at the last check.
    pub knobs: usize,
    /// Reverts by knob since start (something changed it while the agent ran).
    pub reverted: BTreeMap<String, u64>,
}

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        let cfg = handles.cfg.clone();
        let root = PathBuf::from("/proc/sys");
        let status = Arc::new(Mutex::new(HardeningStatus::default()));
        // The first pass says what it changed; one it cannot make fails the start.
        let mut seen = HashSet::new();
        let held =
            check(&root, &cfg, &mut seen, None).context("hardening the host's network settings")?;
        lock(&status).knobs = held;
        let task = {
            let status = status.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(CHECK_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(err) = check(&root, &cfg, &mut seen, Some(&status)) {
                        tracing::error!("hardening: {err:#}");
                    }
                }
            })
        };
        let view = Arc::new(SnapshotView::new(
            "hardening",
            move || lock(&status).clone(),
            summary,
            metrics,
        ));
        Ok(Some(Running::stopped_by(view, move || async move {
            task.abort();
        })))
    })
}

fn lock(status: &Mutex<HardeningStatus>) -> std::sync::MutexGuard<'_, HardeningStatus> {
    status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sets every knob. With `watching`, changing a knob that held before (in `seen`) is a
/// revert: warned about and counted; a knob seen for the first time (an interface that just
/// appeared, like the uplink macvlan) is only set. Returns how many knobs exist now.
fn check(
    root: &Path,
    cfg: &Config,
    seen: &mut HashSet<String>,
    watching: Option<&Mutex<HardeningStatus>>,
) -> Result<usize> {
    let interfaces = knobs::interfaces(root)?;
    let mut held = 0;
    for knob in knobs::wanted(cfg, &interfaces) {
        match knobs::apply(root, &knob)? {
            Outcome::Kept => {
                held += 1;
                seen.insert(knob.name);
            }
            Outcome::Absent => {
                // Gone (an interface removed): if it comes back, it is new again.
                seen.remove(&knob.name);
            }
            Outcome::Changed { was } => {
                held += 1;
                let revert = seen.contains(&knob.name);
                report(&knob, &was, watching.filter(|_| revert));
                seen.insert(knob.name);
            }
        }
    }
    if let Some(status) = watching {
        lock(status).knobs = held;
    }
    Ok(held)
}

fn report(knob: &Knob, was: &str, watching: Option<&Mutex<HardeningStatus>>) {
    match watching {
        None => tracing::info!(knob = %knob.name, was, now = knob.wanted, "set"),
        Some(status) => {
            tracing::warn!(
                knob = %knob.name,
                was,
                now = knob.wanted,
                "something changed a setting the gateway relies on; set it back"
            );
            *lock(status).reverted.entry(knob.name.clone()).or_default() += 1;
        }
    }
}

fn summary(status: &HardeningStatus) -> Vec<String> {
    let reverted: u64 = status.reverted.values().sum();
    vec![format!(
        "{} network settings held, {reverted} set back since start",
        status.knobs
    )]
}

fn metrics(out: &mut Exposition, status: &HardeningStatus) {
    out.gauge(
        "gateway_hardening_knobs",
        "Host network settings (sysctls) the agent holds.",
        status.knobs as u64,
    );
    let mut family = out.family(
        "gateway_hardening_reverted_total",
        Kind::Counter,
        "Times something changed a held setting while the agent ran and the agent set it back.",
    );
    for (knob, count) in &status.reverted {
        family.sample(&[("knob", knob)], *count);
    }
}
