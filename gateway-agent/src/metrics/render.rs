//! The metrics page, as a pure function of what `status` shows and the dataplane's drop
//! counters. Aggregates only: no label ever carries a client's address, MAC or name, nor the
//! uplink's address.

use crate::{
    control::protocol::AgentStatus,
    dataplane::inspect::DropCount,
    dhcp::DhcpStats,
    dns::DnsStats,
    http_proxy::HttpProxyStats,
    socks::SocksStats,
    tor::TorStatus,
    uplink::{self, UplinkStatus},
};

use super::exposition::{Exposition, Kind};

/// The page for `status` and the drop counters (`None`: they could not be read, so the family
/// is left out rather than reported as zero).
pub fn render(status: &AgentStatus, drops: Option<&[DropCount]>) -> String {
    let mut out = Exposition::default();
    agent(&mut out, status);
    dataplane(&mut out, status, drops);
    if let Some(uplink) = &status.uplink {
        self::uplink(&mut out, uplink);
    }
    if let Some(tor) = &status.tor {
        self::tor(&mut out, tor);
    }
    if let Some(dns) = &status.dns {
        self::dns(&mut out, dns);
    }
    if let Some(dhcp) = &status.dhcp {
        self::dhcp(&mut out, dhcp);
    }
    if let Some(socks) = &status.socks {
        self::socks(&mut out, socks);
    }
    if let Some(proxy) = &status.http_proxy {
        http_proxy(&mut out, proxy);
    }
    out.finish()
}

fn agent(out: &mut Exposition, status: &AgentStatus) {
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
    let running = [
        ("dns", status.dns.is_some()),
        ("dhcp", status.dhcp.is_some()),
        ("tor", status.tor.is_some()),
        ("socks", status.socks.is_some()),
        ("http_proxy", status.http_proxy.is_some()),
    ];
    let mut family = out.family(
        "gateway_service_running",
        Kind::Gauge,
        "1 if the service runs (enabled and started), else 0.",
    );
    for (service, on) in running {
        family.sample(&[("service", service)], u64::from(on));
    }
}

fn dataplane(out: &mut Exposition, status: &AgentStatus, drops: Option<&[DropCount]>) {
    out.gauge(
        "gateway_dataplane_programs_attached",
        "eBPF programs the agent attached.",
        status.dataplane.programs.len() as u64,
    );
    if let Some(drops) = drops {
        let mut family = out.family(
            "gateway_dataplane_drops_total",
            Kind::Counter,
            "Packets the eBPF dataplane dropped, by reason.",
        );
        for drop in drops {
            family.sample(&[("reason", drop.reason)], drop.count);
        }
    }
}

fn uplink(out: &mut Exposition, uplink: &UplinkStatus) {
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
    for state in uplink::states() {
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

fn tor(out: &mut Exposition, tor: &TorStatus) {
    out.gauge(
        "gateway_tor_bootstrapped",
        "1 if the Tor client can open streams, else 0.",
        u64::from(tor.bootstrapped),
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
}

fn dns(out: &mut Exposition, dns: &DnsStats) {
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

fn dhcp(out: &mut Exposition, dhcp: &DhcpStats) {
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

fn socks(out: &mut Exposition, socks: &SocksStats) {
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

fn http_proxy(out: &mut Exposition, proxy: &HttpProxyStats) {
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
    .sample(&[("kind", "protocol")], failures.protocol);
    out.gauge(
        "gateway_http_proxy_connections_active",
        "HTTP proxy client connections open now, tunnels included.",
        proxy.active,
    );
}
