//! The SOCKS server as an entry of the service list: on with Tor (the config refuses it
//! without), streams and lookups through the Tor client from the handles.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::{SocksServer, SocksSettings, SocksStats};
use crate::metrics::{Exposition, Kind};
use crate::service::{self, inside_listen, Entry, Handles, Running, SnapshotView};

/// The SOCKS server's entry in the service list.
pub const SERVICE: Entry = Entry {
    name: "socks",
    start,
};

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        let cfg = handles.cfg.clone();
        if !cfg.services.socks.enabled {
            return Ok(None);
        }
        let (Some(tor), Some(connector)) = (handles.tor.clone(), handles.tor_connector()) else {
            return Ok(None);
        };
        let mut settings =
            SocksSettings::new(inside_listen(&cfg, cfg.services.socks.port), cfg.inside);
        settings.log_queries = cfg.log.queries;
        let server = SocksServer::start(settings, connector, Arc::new(tor))
            .await
            .context("starting the SOCKS server")?;
        let reader = server.stats_reader();
        let view = Arc::new(SnapshotView::new(
            "socks",
            move || reader.stats(),
            summary,
            metrics,
        ));
        Ok(Some(Running::stopped_by(view, move || server.stop())))
    })
}

/// Its line in `gateway-agent status`.
fn summary(socks: &SocksStats) -> Vec<String> {
    vec![format!(
        "{} connections ({} active), {} streams, {} resolves",
        socks.connections, socks.active, socks.streams, socks.resolves,
    )]
}

/// The SOCKS server's families: connections, streams, lookups, bytes, failures by reason.
pub(crate) fn metrics(out: &mut Exposition, socks: &SocksStats) {
    out.counter(
        "gateway_socks_connections_total",
        "SOCKS connections accepted.",
        socks.connections,
    );
    out.gauge(
        "gateway_socks_connections_active",
        "SOCKS connections open now.",
        socks.active,
    );
    out.counter(
        "gateway_socks_streams_total",
        "SOCKS CONNECTs that opened a stream.",
        socks.streams,
    );
    out.family(
        "gateway_socks_resolves_total",
        Kind::Counter,
        "SOCKS RESOLVE and RESOLVE_PTR requests answered.",
    )
    .sample(&[("command", "resolve")], socks.resolves)
    .sample(&[("command", "resolve_ptr")], socks.resolve_ptrs);
    out.family(
        "gateway_socks_bytes_total",
        Kind::Counter,
        "Bytes relayed by SOCKS, by direction (up: client to target).",
    )
    .sample(&[("direction", "up")], socks.bytes_up)
    .sample(&[("direction", "down")], socks.bytes_down);
    let mut family = out.family(
        "gateway_socks_failures_total",
        Kind::Counter,
        "Failed SOCKS requests and handshakes, by reason.",
    );
    for (reason, count) in &socks.failures {
        family.sample(&[("reason", reason)], *count);
    }
}
