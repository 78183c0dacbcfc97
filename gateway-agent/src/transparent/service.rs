//! The transparent listener as an entry of the service list, after the dataplane (whose
//! steering slot it fills) and Tor (whose connector it uses).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};

use super::conn::{self, Counters, TransparentStats};
use crate::metrics::{Exposition, Kind};
use crate::net::listener::{Clients, Listener, ListenerSettings};
use crate::service::{self, Entry, Handles, Running, SnapshotView};

/// The transparent listener's entry in the service list.
pub const SERVICE: Entry = Entry {
    name: "transparent",
    start,
};

/// Steered connections served at once.
const MAX_CONNECTIONS: usize = 4096;

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        let cfg = handles.cfg.clone();
        if !cfg.transparent.enabled {
            return Ok(None);
        }
        let connector = handles
            .tor_connector()
            .ok_or_else(|| anyhow!("transparent.enabled needs the Tor client"))?;
        let slots = handles
            .dataplane
            .as_ref()
            .map(|dataplane| dataplane.steer.clone())
            .ok_or_else(|| anyhow!("the transparent listener needs the dataplane"))?;
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.transparent.port));
        let socket = crate::net::transparent::tcp_listener(listen)
            .with_context(|| format!("transparent.port: binding {listen}"))?;
        slots.set_tcp(&socket)?;
        let counters = Arc::new(Counters::default());
        let answered = handles.answered();
        let inside = cfg.inside;
        let log_queries = cfg.log.queries;
        let serving = counters.clone();
        let listener = Listener::spawn(
            socket,
            ListenerSettings {
                name: "transparent listener",
                // Steered connections keep the client's own address as their source.
                clients: Clients::Inside(inside),
                max_connections: MAX_CONNECTIONS,
            },
            move |conn| {
                let connector = connector.clone();
                let counters = serving.clone();
                let answered = answered.clone();
                async move {
                    let Some(client) = conn.peer else { return };
                    let _slot = conn.slot;
                    conn::serve(
                        conn.stream,
                        client,
                        inside,
                        connector,
                        counters,
                        answered,
                        log_queries,
                    )
                    .await;
                }
            },
        );
        tracing::info!(%listen, "transparent listener: inside TCP to other hosts goes through Tor");
        let view = Arc::new(SnapshotView::new(
            "transparent",
            move || counters.snapshot(),
            summary,
            metrics,
        ));
        Ok(Some(Running::stopped_by(view, move || listener.stop())))
    })
}

fn summary(stats: &TransparentStats) -> Vec<String> {
    vec![format!(
        "{} steered connections, {} through Tor ({} by name), {} reset (Tor could not connect), {} refused",
        stats.connections, stats.streams, stats.by_name, stats.failed, stats.refused
    )]
}

fn metrics(out: &mut Exposition, stats: &TransparentStats) {
    out.counter(
        "gateway_transparent_connections_total",
        "Inside TCP connections steered to the transparent listener.",
        stats.connections,
    );
    out.family(
        "gateway_transparent_outcomes_total",
        Kind::Counter,
        "What became of steered connections.",
    )
    .sample(&[("outcome", "stream")], stats.streams)
    .sample(&[("outcome", "failed")], stats.failed)
    .sample(&[("outcome", "refused")], stats.refused);
    out.counter(
        "gateway_transparent_streams_by_name_total",
        "Streams opened by the name the gateway's DNS gave the client (onion names included).",
        stats.by_name,
    );
    out.family(
        "gateway_transparent_bytes_total",
        Kind::Counter,
        "Bytes relayed for steered connections, by direction (up: client to target).",
    )
    .sample(&[("direction", "up")], stats.bytes_up)
    .sample(&[("direction", "down")], stats.bytes_down);
}
