//! The metrics page: the agent's own families, then each running service's, in the service
//! list's order. Aggregates only: no label ever carries a client's address, MAC or name, nor
//! the uplink's address (each service's renderer keeps to that; the tests check the page).

use std::sync::Arc;

use crate::{control::protocol::AgentStatus, service::ServiceView};

use super::exposition::{Exposition, Kind};

/// The page for the agent's `status`, the names in the service list (`known`) and the running
/// services' `views`.
pub fn render(status: &AgentStatus, known: &[&str], views: &[Arc<dyn ServiceView>]) -> String {
    let mut out = Exposition::default();
    agent(&mut out, status, known, views);
    for view in views {
        view.metrics(&mut out);
    }
    out.finish()
}

fn agent(
    out: &mut Exposition,
    status: &AgentStatus,
    known: &[&str],
    views: &[Arc<dyn ServiceView>],
) {
    out.family(
        "gateway_build_info",
        Kind::Gauge,
        "Always 1; the agent's version as a label.",
    )
    .sample(&[("version", &status.version)], 1);
    out.gauge(
        "gateway_uptime_seconds",
        "Seconds since the agent started.",
        status.uptime_secs,
    );
    // Which families to expect: a service that does not run has none.
    let mut family = out.family(
        "gateway_service_running",
        Kind::Gauge,
        "1 if the service runs (enabled and started), else 0.",
    );
    for service in known {
        let on = views.iter().any(|view| view.name() == *service);
        family.sample(&[("service", service)], u64::from(on));
    }
}
