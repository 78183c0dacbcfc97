//! The HTTP proxy as an entry of the service list: streams through the connector
//! `http_proxy.egress` names (Tor by default; `direct` only by explicit choice). Without Tor
//! and without that choice it does not start: the port stays closed rather than open to the
//! clearnet.

use std::sync::Arc;

use anyhow::{Context, Result};

use serde_json::Value;

use super::{CacheControl, CacheSettings, HttpProxy, HttpProxySettings, HttpProxyStats};
use crate::config::Egress;
use crate::egress::{Connector, DirectConnector, DirectSettings};
use crate::metrics::{Exposition, Kind};
use crate::service::{self, inside_listen, Entry, Handles, Running, SnapshotView};

/// How long a `direct` stream may take to connect.
const DIRECT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The HTTP proxy's entry in the service list.
pub const SERVICE: Entry = Entry {
    name: "http_proxy",
    start,
};

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        let cfg = handles.cfg.clone();
        if !cfg.services.http_proxy.enabled {
            return Ok(None);
        }
        let connector = match cfg.http_proxy.egress {
            Egress::Tor => handles.tor_connector(),
            Egress::Direct => {
                tracing::warn!(
                    "http_proxy.egress = \"direct\": proxied requests leave in clear text from \
                     the uplink address, not through Tor"
                );
                let resolver = handles.uplink_resolver("http_proxy.egress = \"direct\"")?;
                let uplink = handles.uplink("the direct HTTP proxy")?;
                Some(Arc::new(DirectConnector::new(DirectSettings {
                    device: uplink.device.clone(),
                    uplink: uplink.status.clone(),
                    inside: cfg.inside,
                    allow_private: false,
                    resolver: Some(resolver),
                    connect_timeout: DIRECT_CONNECT_TIMEOUT,
                })) as Arc<dyn Connector>)
            }
        };
        let Some(connector) = connector else {
            tracing::warn!(
                "the HTTP proxy's egress is Tor and tor.enabled = false: not started \
                 (http_proxy.egress = \"direct\" is the explicit clearnet choice)"
            );
            return Ok(None);
        };
        let mut settings = HttpProxySettings::new(
            inside_listen(&cfg, cfg.services.http_proxy.port),
            cfg.inside,
        );
        settings.connect_ports = cfg.http_proxy.connect_ports.clone();
        settings.ports = cfg.http_proxy.ports.clone();
        settings.log_queries = cfg.log.queries;
        settings.upstream_ca = cfg.http_proxy.upstream_ca.clone();
        if cfg.http_proxy.cache {
            settings.cache = Some(CacheSettings {
                dir: handles.state_dir()?.join("http-cache"),
                max_bytes: cfg.http_proxy.cache_size,
                max_object: cfg.http_proxy.max_object_size,
            });
        }
        let proxy = HttpProxy::start(settings, connector)
            .await
            .context("starting the HTTP proxy")?;
        let reader = proxy.stats_reader();
        let cache = proxy.cache_control();
        let view = SnapshotView::new("http_proxy", move || reader.stats(), summary, metrics)
            .with_operations(
                &["cache_stats", "cache_purge", "cache_ls"],
                move |operation, args| {
                    Box::pin(cache_operation(cache.clone(), operation.to_owned(), args))
                },
            );
        Ok(Some(Running::stopped_by(Arc::new(view), move || {
            proxy.stop()
        })))
    })
}

/// The cache's control operations (`cache_stats`, `cache_purge`, `cache_ls`).
async fn cache_operation(
    cache: Option<CacheControl>,
    operation: String,
    args: Value,
) -> Result<Value> {
    let Some(cache) = cache else {
        anyhow::bail!("the HTTP proxy's cache is off (http_proxy.cache = false)");
    };
    match operation.as_str() {
        "cache_stats" => serde_json::to_value(cache.stats()).context("encoding the cache stats"),
        "cache_ls" => serde_json::to_value(cache.list()).context("encoding the cache list"),
        "cache_purge" => {
            let url = args["url"]
                .as_str()
                .context("cache_purge needs {\"url\": \"http://host/path\"}")?;
            let (url, purged) = cache.purge(url).await?;
            Ok(serde_json::json!({ "url": url, "purged": purged }))
        }
        other => anyhow::bail!("the http_proxy service has no operation {other:?}"),
    }
}

/// Its line in `gateway-agent status`.
fn summary(proxy: &HttpProxyStats) -> Vec<String> {
    let mut lines = vec![format!(
        "{} requests, {} CONNECTs, {} active",
        proxy.requests, proxy.connects, proxy.active,
    )];
    if let Some(cache) = &proxy.cache {
        lines.push(format!(
            "cache: {} hits, {} misses, {} revalidated, {} MiB saved, {} objects in {} of {} MiB",
            cache.hits,
            cache.misses,
            cache.revalidated,
            cache.bytes_saved >> 20,
            cache.entries,
            cache.size_bytes >> 20,
            cache.max_bytes >> 20,
        ));
    }
    lines
}

/// The HTTP proxy's families: requests by form, rejections, upstream failures, connections.
pub(crate) fn metrics(out: &mut Exposition, proxy: &HttpProxyStats) {
    out.family(
        "gateway_http_proxy_requests_total",
        Kind::Counter,
        "HTTP proxy requests received, by form (absolute-form or CONNECT).",
    )
    .sample(&[("form", "absolute")], proxy.requests)
    .sample(&[("form", "connect")], proxy.connects);
    out.family(
        "gateway_http_proxy_rejected_total",
        Kind::Counter,
        "HTTP proxy requests and connections turned away, by reason.",
    )
    .sample(&[("reason", "bad_request")], proxy.bad_requests)
    .sample(&[("reason", "denied_port")], proxy.denied_ports)
    .sample(&[("reason", "not_inside")], proxy.refused_clients)
    .sample(&[("reason", "busy")], proxy.busy)
    .sample(&[("reason", "header_timeout")], proxy.header_timeouts);
    let failures = &proxy.upstream_failures;
    out.family(
        "gateway_http_proxy_upstream_failures_total",
        Kind::Counter,
        "HTTP proxy streams to the origin that failed, by kind.",
    )
    .sample(&[("kind", "not_ready")], failures.not_ready)
    .sample(&[("kind", "refused")], failures.refused)
    .sample(&[("kind", "not_found")], failures.not_found)
    .sample(&[("kind", "unreachable")], failures.unreachable)
    .sample(&[("kind", "failed")], failures.failed)
    .sample(&[("kind", "timeout")], failures.timeout)
    .sample(&[("kind", "protocol")], failures.protocol)
    .sample(&[("kind", "tls")], failures.tls);
    out.gauge(
        "gateway_http_proxy_connections_active",
        "HTTP proxy client connections open now, tunnels included.",
        proxy.active,
    );
    if let Some(cache) = &proxy.cache {
        out.family(
            "gateway_http_proxy_cache_requests_total",
            Kind::Counter,
            "Cacheable HTTP proxy requests, by outcome.",
        )
        .sample(&[("outcome", "hit")], cache.hits)
        .sample(&[("outcome", "miss")], cache.misses)
        .sample(&[("outcome", "revalidated")], cache.revalidated)
        .sample(&[("outcome", "stale")], cache.stale_served)
        .sample(&[("outcome", "collapsed")], cache.collapsed);
        out.counter(
            "gateway_http_proxy_cache_saved_bytes_total",
            "Body bytes the HTTP proxy served from its cache instead of the origin.",
            cache.bytes_saved,
        );
        out.gauge(
            "gateway_http_proxy_cache_objects",
            "Objects in the HTTP proxy's cache.",
            cache.entries,
        );
        out.gauge(
            "gateway_http_proxy_cache_bytes",
            "Body bytes in the HTTP proxy's cache.",
            cache.size_bytes,
        );
    }
}
