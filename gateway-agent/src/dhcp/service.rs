//! The DHCP server as an entry of the service list: leases reach the local zone (names) and
//! the dataplane's lease maps before each ACK leaves; `leases` is its control operation.

use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{DhcpReader, DhcpServer, DhcpServerSettings, DhcpStats};
use crate::lease_events::LeaseSink;
use crate::metrics::{Exposition, Kind};
use crate::service::{self, Entry, Handles, Running, SnapshotView};

/// The port DHCP clients listen on; replies go there.
const DHCP_CLIENT_PORT: u16 = 68;

/// The DHCP server's entry in the service list.
pub const SERVICE: Entry = Entry {
    name: "dhcp",
    start,
};

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        let cfg = handles.cfg.clone();
        if !cfg.services.dhcp.enabled {
            return Ok(None);
        }
        let lease_maps = handles
            .dataplane("the DHCP server")?
            .lease_maps
            .take()
            .context("the dataplane's lease maps are already taken")?;
        let sinks: Vec<Arc<dyn LeaseSink>> = vec![handles.zone()?, Arc::new(lease_maps)];
        let settings = DhcpServerSettings {
            interface: cfg.interfaces.inside.clone(),
            server_ip: cfg.inside.address,
            inside: cfg.inside,
            port: cfg.services.dhcp.port,
            client_port: DHCP_CLIENT_PORT,
            dhcp: cfg.dhcp.clone(),
            zone: cfg.dns.zone.clone(),
            reserved_names: crate::dns::SERVICE_NAMES
                .iter()
                .map(|n| n.to_string())
                .collect(),
            store_path: handles.state_dir()?.join("dhcp-leases.redb"),
            log_queries: cfg.log.queries,
        };
        let server = DhcpServer::start(settings, sinks)
            .await
            .context("starting the DHCP server")?;
        let reader = server.reader();
        let stats = reader.clone();
        let view = SnapshotView::new("dhcp", move || stats.stats(), summary, metrics)
            .with_operations(&["leases"], move |_operation, _args| {
                let leases = leases(&reader);
                Box::pin(async move { leases })
            });
        Ok(Some(Running::stopped_by(Arc::new(view), move || {
            server.stop()
        })))
    })
}

/// The `leases` operation: every lease, as `gateway-agent leases` prints them.
fn leases(reader: &DhcpReader) -> Result<Value> {
    serde_json::to_value(reader.leases()).context("encoding the leases")
}

/// Its line in `gateway-agent status`.
fn summary(dhcp: &DhcpStats) -> Vec<String> {
    vec![format!(
        "{} bound of {}, {} acks, {} naks, {} malformed, {} rate-limited",
        dhcp.bound, dhcp.pool_size, dhcp.acks, dhcp.naks, dhcp.malformed, dhcp.rate_limited,
    )]
}

/// The DHCP server's families: datagrams, requests and replies by type, drops, the pool.
pub(crate) fn metrics(out: &mut Exposition, dhcp: &DhcpStats) {
    out.counter(
        "gateway_dhcp_received_total",
        "DHCP datagrams received.",
        dhcp.received,
    );
    out.family(
        "gateway_dhcp_requests_total",
        Kind::Counter,
        "DHCP client messages acted on, by type.",
    )
    .sample(&[("type", "discover")], dhcp.discovers)
    .sample(&[("type", "request")], dhcp.requests)
    .sample(&[("type", "release")], dhcp.releases)
    .sample(&[("type", "decline")], dhcp.declines)
    .sample(&[("type", "inform")], dhcp.informs);
    out.family(
        "gateway_dhcp_replies_total",
        Kind::Counter,
        "DHCP replies, by type.",
    )
    .sample(&[("type", "offer")], dhcp.offers)
    .sample(&[("type", "ack")], dhcp.acks)
    .sample(&[("type", "nak")], dhcp.naks);
    out.family(
        "gateway_dhcp_malformed_total",
        Kind::Counter,
        "DHCP datagrams dropped as malformed, by reason.",
    )
    .sample(&[("reason", "too_short")], dhcp.too_short)
    .sample(&[("reason", "too_long")], dhcp.too_long)
    .sample(&[("reason", "bad_op")], dhcp.bad_op)
    .sample(&[("reason", "bad_hardware")], dhcp.bad_hardware)
    .sample(&[("reason", "bad_cookie")], dhcp.bad_cookie)
    .sample(&[("reason", "bad_options")], dhcp.bad_options)
    .sample(&[("reason", "no_message_type")], dhcp.no_message_type)
    .sample(&[("reason", "unsupported")], dhcp.unsupported);
    out.family(
        "gateway_dhcp_dropped_total",
        Kind::Counter,
        "Well-formed DHCP datagrams dropped, by reason.",
    )
    .sample(&[("reason", "server_reply")], dhcp.server_reply_dropped)
    .sample(&[("reason", "rate_limited")], dhcp.rate_limited)
    .sample(&[("reason", "relayed")], dhcp.relayed_refused)
    .sample(&[("reason", "ignored")], dhcp.ignored);
    out.counter(
        "gateway_dhcp_pool_exhausted_total",
        "DHCPDISCOVERs that found no free address.",
        dhcp.pool_exhausted,
    );
    out.counter(
        "gateway_dhcp_leases_expired_total",
        "DHCP leases that ran out.",
        dhcp.expired,
    );
    out.family(
        "gateway_dhcp_errors_total",
        Kind::Counter,
        "DHCP server errors, by kind.",
    )
    .sample(&[("kind", "store")], dhcp.store_errors)
    .sample(&[("kind", "send")], dhcp.send_errors)
    .sample(&[("kind", "internal")], dhcp.internal_errors);
    out.gauge(
        "gateway_dhcp_leases_bound",
        "DHCP leases bound now.",
        dhcp.bound,
    );
    out.gauge(
        "gateway_dhcp_pool_size",
        "Addresses in the DHCP dynamic pool.",
        dhcp.pool_size,
    );
}
