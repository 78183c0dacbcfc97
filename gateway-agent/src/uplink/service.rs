//! The uplink as the first entry of the service list: the macvlan and its DHCP client. Later
//! entries get its device and status through the handles.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::{states, Uplink, UplinkSettings, UplinkStatus};
use crate::metrics::{Exposition, Kind};
use crate::service::{self, Entry, Handles, Running, SnapshotView, UplinkHandles};

/// The uplink's entry in the service list.
pub const SERVICE: Entry = Entry {
    name: "uplink",
    start,
};

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        let cfg = handles.cfg.clone();
        let uplink = Uplink::start(UplinkSettings {
            parent: cfg.interfaces.outside.clone(),
            address: cfg.outside.address,
            uplink: cfg.uplink.clone(),
            state_dir: cfg.state.dir.clone(),
        })
        .await
        .context("starting the uplink")?;
        let status = uplink.status_watch();
        handles.uplink = Some(UplinkHandles {
            device: uplink.device().to_owned(),
            dns_servers: uplink.dns_servers(),
            status: status.clone(),
        });
        let view = Arc::new(SnapshotView::new(
            "uplink",
            move || status.borrow().clone(),
            summary,
            metrics,
        ));
        Ok(Some(Running::stopped_by(view, move || uplink.stop())))
    })
}

/// Its line in `gateway-agent status`.
fn summary(uplink: &UplinkStatus) -> Vec<String> {
    let address = match (uplink.address, uplink.prefix_len) {
        (Some(a), Some(p)) => format!("{a}/{p}"),
        _ => "no address".into(),
    };
    vec![format!(
        "{} on {} ({}): {address}, router {}",
        uplink.device,
        uplink.parent,
        uplink.state,
        uplink
            .router
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".into()),
    )]
}

/// The uplink's families: whether it has an address, its state, the lease's expiry, renewals.
pub(crate) fn metrics(out: &mut Exposition, uplink: &UplinkStatus) {
    out.gauge(
        "gateway_uplink_has_address",
        "1 if the uplink has an address (a DHCP lease or a static one), else 0.",
        u64::from(uplink.address.is_some()),
    );
    let mut family = out.family(
        "gateway_uplink_state",
        Kind::Gauge,
        "1 for the uplink's current state (static or the DHCP client's), 0 for the others.",
    );
    let mut known = false;
    for state in states() {
        known |= state == uplink.state;
        family.sample(&[("state", state)], u64::from(state == uplink.state));
    }
    if !known {
        family.sample(&[("state", &uplink.state)], 1);
    }
    if let Some(expires) = uplink.lease_expires_unix {
        out.gauge(
            "gateway_uplink_lease_expiry_timestamp_seconds",
            "When the uplink's DHCP lease runs out, in seconds since the Unix epoch.",
            expires,
        );
    }
    out.counter(
        "gateway_uplink_renewals_total",
        "Renewals (or rebinds) of the uplink's lease.",
        uplink.renewals,
    );
}
