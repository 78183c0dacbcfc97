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

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use anyhow::Result;

pub use exposition::CONTENT_TYPE;
pub use render::render;
pub use server::MetricsServer;

use crate::{control::protocol::AgentStatus, dataplane::inspect::DropCount};

/// Where a scrape reads from: closures over the running agent's live state.
pub struct MetricsSource {
    /// The agent's status now (the closure the control socket answers `status` with).
    status: Arc<dyn Fn() -> AgentStatus + Send + Sync>,
    /// The dataplane's drop counters now, every reason.
    drops: Box<dyn Fn() -> Result<Vec<DropCount>> + Send + Sync>,
    /// Whether the last read of the drop counters failed, so a lasting failure is logged once.
    drops_failing: AtomicBool,
}

impl MetricsSource {
    /// A source over `status` (the agent's status now) and `drops` (the dataplane's drop
    /// counters now, every reason).
    pub fn new(
        status: Arc<dyn Fn() -> AgentStatus + Send + Sync>,
        drops: Box<dyn Fn() -> Result<Vec<DropCount>> + Send + Sync>,
    ) -> Self {
        MetricsSource {
            status,
            drops,
            drops_failing: AtomicBool::new(false),
        }
    }

    /// The page now.
    pub fn scrape(&self) -> String {
        let drops = match (self.drops)() {
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
        };
        render(&(self.status)(), drops.as_deref())
    }
}
