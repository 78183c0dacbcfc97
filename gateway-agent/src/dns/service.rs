//! The DNS server as an entry of the service list: the local zone from the handles (DHCP fills
//! it), the upstream the config chose (`dns.upstream`), on the inside address.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};

use super::steered::SteeredSockets;
use super::{DnsServer, DnsServerSettings, DnsStats};
use crate::config::DnsUpstream;
use crate::egress::Upstream;
use crate::metrics::{Exposition, Kind};
use crate::service::{self, Entry, Handles, Running, SnapshotView};
use crate::tor::TorUpstream;

/// The DNS server's entry in the service list.
pub const SERVICE: Entry = Entry { name: "dns", start };

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        let cfg = handles.cfg.clone();
        if !cfg.services.dns.enabled {
            return Ok(None);
        }
        let upstream = upstream(handles)?;
        let settings = DnsServerSettings {
            listen: cfg.inside.address,
            port: cfg.services.dns.port,
            inside: cfg.inside,
            dns: cfg.dns.clone(),
            gateway_ip: cfg.inside.address,
            log_queries: cfg.log.queries,
            // Only the transparent listener reads it: without it nothing is remembered.
            answered: cfg.transparent.enabled.then(|| handles.answered()),
        };
        let mut server = DnsServer::start(settings, handles.zone()?, upstream)
            .await
            .context("starting the DNS server")?;
        if cfg.steers_dns() {
            let slots = handles
                .dataplane
                .as_ref()
                .map(|dataplane| dataplane.steer.clone())
                .ok_or_else(|| anyhow!("dns.steer needs the dataplane"))?;
            let sockets = SteeredSockets::bind().context("dns.steer: binding the sockets")?;
            slots.set_dns(sockets.udp.socket(), &sockets.tcp)?;
            server.serve_steered(sockets);
            tracing::info!("DNS to other resolvers (port 53, any address) is answered here");
        }
        let reader = server.stats_reader();
        let view = Arc::new(SnapshotView::new(
            "dns",
            move || reader.stats(),
            summary,
            metrics,
        ));
        Ok(Some(Running::stopped_by(view, move || server.stop())))
    })
}

/// The forwarder for non-local names: none unless the config chose one.
fn upstream(handles: &Handles) -> Result<Option<Arc<dyn Upstream>>> {
    Ok(match handles.cfg.dns.upstream {
        DnsUpstream::None => None,
        // The config rejects dns.upstream = "tor" without Tor; None here would only SERVFAIL.
        DnsUpstream::Tor => handles
            .tor
            .as_ref()
            .map(|tor| Arc::new(TorUpstream::new(Arc::new(tor.clone()))) as Arc<dyn Upstream>),
        DnsUpstream::Uplink => Some(handles.uplink_resolver("dns.upstream = \"uplink\"")?),
    })
}

/// Its line in `gateway-agent status`.
fn summary(dns: &DnsStats) -> Vec<String> {
    vec![format!(
        "{} queries, {} local, {} cached, {} forwarded to {}, {} refused",
        dns.queries,
        dns.local_answers,
        dns.cache_hits,
        dns.forwarded,
        dns.upstream.as_deref().unwrap_or("nothing"),
        dns.refused_acl + dns.rate_limited + dns.rebinding_refused,
    )]
}

/// The DNS server's families: queries, answers by source, forwarding, refusals, the cache.
pub(crate) fn metrics(out: &mut Exposition, dns: &DnsStats) {
    out.counter(
        "gateway_dns_queries_total",
        "DNS queries received, refused ones included.",
        dns.queries,
    );
    out.family(
        "gateway_dns_answers_total",
        Kind::Counter,
        "DNS queries answered without the upstream, by source.",
    )
    .sample(&[("source", "local_zone")], dns.local_answers)
    .sample(&[("source", "never_forwarded")], dns.never_forwarded)
    .sample(&[("source", "onion_virtual")], dns.onion_answers)
    .sample(&[("source", "cache")], dns.cache_hits)
    .sample(&[("source", "coalesced")], dns.coalesced);
    out.counter(
        "gateway_dns_forwarded_total",
        "DNS queries sent to the upstream.",
        dns.forwarded,
    );
    out.counter(
        "gateway_dns_upstream_errors_total",
        "DNS upstream failures and timeouts.",
        dns.upstream_errors,
    );
    out.counter(
        "gateway_dns_servfail_total",
        "DNS queries answered SERVFAIL.",
        dns.servfail,
    );
    out.family(
        "gateway_dns_refused_total",
        Kind::Counter,
        "DNS queries answered REFUSED, by reason.",
    )
    .sample(&[("reason", "not_inside")], dns.refused_acl)
    .sample(&[("reason", "rate_limited")], dns.rate_limited);
    out.counter(
        "gateway_dns_bad_requests_total",
        "Malformed or unsupported DNS requests.",
        dns.bad_requests,
    );
    out.counter(
        "gateway_dns_rebinding_dropped_records_total",
        "Upstream address records dropped by the rebinding filter.",
        dns.rebinding_dropped,
    );
    out.counter(
        "gateway_dns_rebinding_refused_total",
        "Upstream answers refused because the rebinding filter left nothing.",
        dns.rebinding_refused,
    );
    out.counter(
        "gateway_dns_truncated_total",
        "UDP replies truncated to the client's buffer size.",
        dns.truncated,
    );
    out.gauge(
        "gateway_dns_cache_entries",
        "Answers in the DNS cache.",
        dns.cache_entries,
    );
    out.counter(
        "gateway_dns_cache_evictions_total",
        "DNS cache entries evicted to stay within dns.cache_size.",
        dns.cache_evictions,
    );
    out.gauge(
        "gateway_dns_zone_names",
        "Names in the local zone.",
        dns.zone_names,
    );
    if let Some(upstream) = &dns.upstream {
        out.family(
            "gateway_dns_upstream_info",
            Kind::Gauge,
            "Always 1; the DNS upstream in use as a label.",
        )
        .sample(&[("upstream", upstream)], 1);
    }
}
