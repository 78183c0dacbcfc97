//! The Prometheus endpoint (`[metrics]`, `127.0.0.1:9101` by default): `GET /metrics` in the
//! text exposition format 0.0.4.
//!
//! The page is rendered from the same status the control socket answers with, plus the
//! dataplane's drop counters, on every scrape: no second set of counters to keep in step.
//! Privacy by default: aggregates only, never a client's address, MAC or host name.

pub mod config;
mod exposition;
mod render;
mod server;

#[cfg(test)]
mod check;
#[cfg(test)]
mod tests;

use std::{net::SocketAddr, sync::Arc};

use anyhow::{Context, Result};
use serde_json::Value;

pub use exposition::{Exposition, Family, Kind, CONTENT_TYPE};
pub use render::render;
pub use server::MetricsServer;

use crate::service::{self, Entry, Handles, Running, ServiceView, StatusSource};

/// The metrics endpoint's entry in the service list.
pub const SERVICE: Entry = Entry {
    name: "metrics",
    start,
};

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        let cfg = &handles.cfg.metrics;
        if !cfg.enabled {
            return Ok(None);
        }
        let view = Arc::new(MetricsView {
            listen: std::sync::OnceLock::new(),
        });
        // The page lists the endpoint itself as running, like everything else that serves.
        let mut views = handles.views.clone();
        views.push(view.clone());
        let source = handles.status_source().with_views(views);
        let server = MetricsServer::start(cfg.listen, MetricsSource::new(source))
            .await
            .context("starting the metrics endpoint")?;
        let _ = view.listen.set(server.local_addr());
        tracing::info!("metrics on http://{}/metrics", server.local_addr());
        Ok(Some(Running::stopped_by(view, move || server.stop())))
    })
}

struct MetricsView {
    listen: std::sync::OnceLock<SocketAddr>,
}

impl ServiceView for MetricsView {
    fn name(&self) -> &'static str {
        "metrics"
    }
    fn status(&self) -> Value {
        serde_json::json!({ "listen": self.listen.get().map(|a| a.to_string()) })
    }
    fn summary(&self) -> Vec<String> {
        self.listen
            .get()
            .map(|a| vec![format!("http://{a}/metrics")])
            .unwrap_or_default()
    }
    fn metrics(&self, _: &mut Exposition) {}
}

/// What the endpoint serves: the page, rendered from the running services on every scrape.
pub struct MetricsSource {
    source: Arc<StatusSource>,
}

impl MetricsSource {
    /// A source over the agent's status and its services.
    pub fn new(source: Arc<StatusSource>) -> Self {
        MetricsSource { source }
    }

    /// The page now.
    pub fn scrape(&self) -> String {
        render(
            &self.source.status(),
            self.source.known(),
            self.source.views(),
        )
    }
}
