//! The Tor client as an entry of the service list: bootstraps in the background once the
//! uplink has an address; later entries (SOCKS, DNS over Tor, the HTTP proxy) get it through
//! the handles and refuse until it is ready (fail closed).

use std::sync::Arc;

use anyhow::{Context, Result};

use super::{Tor, TorSettings, TorStatus};
use crate::metrics::Exposition;
use crate::service::{self, Entry, Handles, Running, SnapshotView};
use crate::uplink::follow;

/// Tor's entry in the service list.
pub const SERVICE: Entry = Entry { name: "tor", start };

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        if !handles.cfg.tor.enabled {
            return Ok(None);
        }
        let network_up = follow::up(handles.uplink("Tor")?.status.clone());
        let tor = Tor::start(TorSettings {
            state_dir: handles.state_dir()?.join("tor"),
            arti_config: handles.cfg.tor.arti_config.clone(),
            network_up: Some(network_up),
        })
        .context("starting the Tor client")?;
        handles.tor = Some(tor.clone());
        let reader = tor.clone();
        let view = Arc::new(SnapshotView::new(
            "tor",
            move || reader.status(),
            summary,
            metrics,
        ));
        Ok(Some(Running::new(view, move || async move {
            tor.stop();
            Ok(())
        })))
    })
}

/// Its line in `gateway-agent status`.
fn summary(tor: &TorStatus) -> Vec<String> {
    vec![format!(
        "{} ({}%: {}), {} isolation groups{}",
        match (tor.bootstrapped, tor.unreachable_secs) {
            (false, _) => "not ready".to_string(),
            (true, Some(secs)) => format!("network unreachable for {secs} s, refusing at once"),
            (true, None) => "ready".to_string(),
        },
        tor.percent,
        tor.progress,
        tor.isolation_groups,
        tor.last_error
            .as_deref()
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default(),
    )]
}

/// Tor's families: bootstrap state and progress, attempts, isolation groups.
pub(crate) fn metrics(out: &mut Exposition, tor: &TorStatus) {
    out.gauge(
        "gateway_tor_bootstrapped",
        "1 if the Tor client can open streams, else 0.",
        u64::from(tor.bootstrapped),
    );
    out.gauge(
        "gateway_tor_reachable",
        "1 if the last Tor attempts reached the network, else 0 (streams are refused at once).",
        u64::from(tor.reachable),
    );
    out.gauge(
        "gateway_tor_bootstrap_percent",
        "Tor bootstrap progress, 0 to 100.",
        u64::from(tor.percent),
    );
    out.counter(
        "gateway_tor_bootstrap_attempts_total",
        "Tor bootstrap attempts.",
        tor.attempts,
    );
    out.gauge(
        "gateway_tor_isolation_groups",
        "Tor isolation groups (circuits that may not be shared) tracked now.",
        tor.isolation_groups,
    );
    out.counter(
        "gateway_tor_isolation_groups_created_total",
        "Tor isolation groups created.",
        tor.isolation_groups_created,
    );
    out.gauge(
        "gateway_tor_streams_open",
        "Streams open through Tor now.",
        tor.streams_open,
    );
    out.gauge(
        "gateway_tor_circuits_in_use",
        "Isolation groups with an open stream (each holds at least one circuit).",
        tor.circuits_in_use,
    );
}
