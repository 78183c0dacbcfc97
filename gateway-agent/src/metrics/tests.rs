use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::check::{self, Sample};
use super::*;
use crate::{
    control::protocol::AgentStatus,
    dataplane::{inspect::DropCount, service::DataplaneView, DataplaneStatus, ProgramStatus},
    dhcp::DhcpStats,
    dns::DnsStats,
    http_proxy::{CacheStats, HttpProxyStats, UpstreamFailures},
    service::{ServiceView, SnapshotView, StatusSource},
    socks::SocksStats,
    tor::TorStatus,
    uplink::UplinkStatus,
};

/// What the services show, as the old all-in-one status held it: `None` is a service that
/// does not run.
#[derive(Clone)]
struct Services {
    version: String,
    uptime_secs: u64,
    dataplane: DataplaneStatus,
    dns: Option<DnsStats>,
    dhcp: Option<DhcpStats>,
    uplink: Option<UplinkStatus>,
    tor: Option<TorStatus>,
    socks: Option<SocksStats>,
    http_proxy: Option<HttpProxyStats>,
}

/// A view that shows a fixed snapshot through the service's own renderer.
fn fixed<T: Clone + serde::Serialize + Send + Sync + 'static>(
    name: &'static str,
    value: Option<T>,
    render: fn(&mut Exposition, &T),
) -> Option<Arc<dyn ServiceView>> {
    value.map(|value| {
        Arc::new(SnapshotView::new(
            name,
            move || value.clone(),
            |_| Vec::new(),
            render,
        )) as Arc<dyn ServiceView>
    })
}

/// Every name in the agent's list.
fn known() -> Vec<&'static str> {
    crate::agent::SERVICES.iter().map(|e| e.name).collect()
}

impl Services {
    fn base(&self) -> AgentStatus {
        AgentStatus {
            version: self.version.clone(),
            pid: 4242,
            uptime_secs: self.uptime_secs,
            config: "/etc/gateway/gateway.toml".into(),
            outside_interface: "enp1s0".into(),
            inside_interface: "enp2s0".into(),
            inside_address: "198.51.100.1/24".into(),
            summary: Vec::new(),
            services: Default::default(),
        }
    }

    /// The views in the list's order, the dataplane's drop counters from `drops`.
    fn views(&self, drops: Option<Vec<DropCount>>) -> Vec<Arc<dyn ServiceView>> {
        let dataplane: Arc<dyn ServiceView> = Arc::new(DataplaneView::new(
            self.dataplane.clone(),
            Box::new(move || {
                drops
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("no pinned map DROPS"))
            }),
        ));
        [
            fixed(
                "uplink",
                self.uplink.clone(),
                crate::uplink::service::metrics,
            ),
            Some(dataplane),
            fixed("tor", self.tor.clone(), crate::tor::service::metrics),
            fixed("dns", self.dns.clone(), crate::dns::service::metrics),
            fixed("dhcp", self.dhcp.clone(), crate::dhcp::service::metrics),
            fixed("socks", self.socks.clone(), crate::socks::service::metrics),
            fixed(
                "http_proxy",
                self.http_proxy.clone(),
                crate::http_proxy::service::metrics,
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn source(&self, drops: Option<Vec<DropCount>>) -> Arc<StatusSource> {
        Arc::new(StatusSource::new(self.base(), known(), self.views(drops)))
    }
}

/// The page for `sample`.
fn render(sample: &Services, drops: Option<&[DropCount]>) -> String {
    let views = sample.views(drops.map(<[DropCount]>::to_vec));
    super::render(&sample.base(), &known(), &views)
}

/// Every service running, every counter distinct, identifiers that must never show up.
fn sample_status() -> Services {
    Services {
        version: "1.2.3".into(),
        uptime_secs: 3601,
        dataplane: DataplaneStatus {
            pin_dir: "/sys/fs/bpf/gateway".into(),
            programs: vec![
                ProgramStatus {
                    name: "gateway_egress".into(),
                    interface: "gw-uplink".into(),
                    hook: "tcx egress".into(),
                },
                ProgramStatus {
                    name: "gateway_xdp".into(),
                    interface: "enp2s0".into(),
                    hook: "xdp native".into(),
                },
            ],
        },
        dns: Some(DnsStats {
            queries: 101,
            local_answers: 102,
            never_forwarded: 103,
            onion_answers: 118,
            cache_hits: 104,
            forwarded: 105,
            coalesced: 117,
            upstream_errors: 106,
            servfail: 107,
            refused_acl: 108,
            rate_limited: 109,
            bad_requests: 110,
            rebinding_dropped: 111,
            rebinding_refused: 112,
            truncated: 113,
            cache_entries: 114,
            cache_evictions: 115,
            zone_names: 116,
            upstream: Some("tor".into()),
        }),
        dhcp: Some(DhcpStats {
            received: 201,
            malformed: 3,
            too_short: 1,
            bad_cookie: 2,
            server_reply_dropped: 4,
            rate_limited: 5,
            discovers: 11,
            requests: 12,
            offers: 13,
            acks: 7,
            naks: 1,
            releases: 2,
            expired: 6,
            bound: 9,
            pool_size: 100,
            ..DhcpStats::default()
        }),
        uplink: Some(UplinkStatus {
            device: "gw-uplink".into(),
            parent: "enp1s0".into(),
            mac: "02:aa:bb:cc:dd:ee".into(),
            state: "bound".into(),
            address: Some(Ipv4Addr::new(192, 0, 2, 123)),
            prefix_len: Some(24),
            router: Some(Ipv4Addr::new(192, 0, 2, 254)),
            server: Some(Ipv4Addr::new(192, 0, 2, 253)),
            dns_servers: vec![Ipv4Addr::new(192, 0, 2, 252)],
            lease_expires_unix: Some(1_700_000_000),
            renewals: 3,
        }),
        tor: Some(TorStatus {
            bootstrapped: true,
            percent: 100,
            progress: "done".into(),
            last_error: Some("an old error".into()),
            attempts: 2,
            isolation_groups: 5,
            isolation_groups_created: 8,
            streams_open: 4,
            circuits_in_use: 3,
            reachable: true,
            unreachable_secs: None,
        }),
        socks: Some(SocksStats {
            connections: 301,
            active: 2,
            streams: 302,
            resolves: 303,
            resolve_ptrs: 304,
            bytes_up: 305,
            bytes_down: 306,
            failures: BTreeMap::from([
                ("host_unreachable".to_owned(), 7),
                ("not_ready".to_owned(), 8),
            ]),
        }),
        http_proxy: Some(HttpProxyStats {
            requests: 401,
            connects: 402,
            bad_requests: 403,
            denied_ports: 404,
            refused_clients: 405,
            busy: 406,
            header_timeouts: 407,
            upstream_failures: UpstreamFailures {
                not_ready: 408,
                timeout: 409,
                ..UpstreamFailures::default()
            },
            active: 3,
            cache: Some(CacheStats {
                hits: 410,
                misses: 411,
                bytes_saved: 412,
                entries: 413,
                size_bytes: 414,
                ..CacheStats::default()
            }),
        }),
    }
}

fn sample_drops() -> Vec<DropCount> {
    gateway_common::DropReason::ALL
        .iter()
        .enumerate()
        .map(|(i, reason)| DropCount {
            reason: reason.name(),
            count: 1000 + i as u64,
        })
        .collect()
}

fn parse_ok(text: &str) -> Vec<Sample> {
    check::parse(text).unwrap_or_else(|problem| panic!("{problem}\n{text}"))
}

/// Asserts every line of `expected` is a whole line of `text`.
fn assert_lines(text: &str, expected: &[&str]) {
    let lines: Vec<&str> = text.lines().collect();
    let missing: Vec<&&str> = expected.iter().filter(|l| !lines.contains(l)).collect();
    assert!(missing.is_empty(), "missing lines {missing:#?} in:\n{text}");
}

#[test]
fn sample_status_renders_these_lines() {
    let text = render(&sample_status(), Some(&sample_drops()));
    assert_lines(
        &text,
        &[
            "# HELP gateway_build_info Always 1; the agent's version as a label.",
            "# TYPE gateway_build_info gauge",
            "gateway_build_info{version=\"1.2.3\"} 1",
            "gateway_uptime_seconds 3601",
            "gateway_service_running{service=\"tor\"} 1",
            "gateway_dataplane_programs_attached 2",
            "# TYPE gateway_dataplane_drops_total counter",
            "gateway_dataplane_drops_total{reason=\"truncated\"} 1000",
            "gateway_dataplane_drops_total{reason=\"port_closed\"} 1007",
            "gateway_dataplane_drops_total{reason=\"not_configured\"} 1011",
            "gateway_uplink_has_address 1",
            "gateway_uplink_state{state=\"bound\"} 1",
            "gateway_uplink_state{state=\"renewing\"} 0",
            "gateway_uplink_state{state=\"static\"} 0",
            "gateway_uplink_lease_expiry_timestamp_seconds 1700000000",
            "gateway_uplink_renewals_total 3",
            "# TYPE gateway_tor_bootstrapped gauge",
            "gateway_tor_bootstrapped 1",
            "gateway_tor_bootstrap_percent 100",
            "# TYPE gateway_tor_bootstrap_attempts_total counter",
            "gateway_tor_bootstrap_attempts_total 2",
            "gateway_tor_isolation_groups 5",
            "gateway_tor_streams_open 4",
            "gateway_tor_circuits_in_use 3",
            "gateway_tor_isolation_groups_created_total 8",
            "gateway_dns_queries_total 101",
            "gateway_dns_answers_total{source=\"local_zone\"} 102",
            "gateway_dns_answers_total{source=\"cache\"} 104",
            "gateway_dns_answers_total{source=\"coalesced\"} 117",
            "gateway_dns_forwarded_total 105",
            "gateway_dns_refused_total{reason=\"not_inside\"} 108",
            "gateway_dns_refused_total{reason=\"rate_limited\"} 109",
            "gateway_dns_cache_entries 114",
            "gateway_dns_upstream_info{upstream=\"tor\"} 1",
            "gateway_dhcp_received_total 201",
            "gateway_dhcp_requests_total{type=\"discover\"} 11",
            "gateway_dhcp_replies_total{type=\"ack\"} 7",
            "gateway_dhcp_replies_total{type=\"nak\"} 1",
            "gateway_dhcp_malformed_total{reason=\"bad_cookie\"} 2",
            "gateway_dhcp_dropped_total{reason=\"server_reply\"} 4",
            "gateway_dhcp_leases_expired_total 6",
            "gateway_dhcp_leases_bound 9",
            "gateway_dhcp_pool_size 100",
            "gateway_socks_connections_total 301",
            "gateway_socks_connections_active 2",
            "gateway_socks_streams_total 302",
            "gateway_socks_resolves_total{command=\"resolve_ptr\"} 304",
            "gateway_socks_bytes_total{direction=\"up\"} 305",
            "gateway_socks_bytes_total{direction=\"down\"} 306",
            "gateway_socks_failures_total{reason=\"not_ready\"} 8",
            "gateway_http_proxy_requests_total{form=\"connect\"} 402",
            "gateway_http_proxy_rejected_total{reason=\"not_inside\"} 405",
            "gateway_http_proxy_upstream_failures_total{kind=\"timeout\"} 409",
            "gateway_http_proxy_cache_requests_total{outcome=\"hit\"} 410",
            "gateway_http_proxy_cache_requests_total{outcome=\"miss\"} 411",
            "gateway_http_proxy_cache_saved_bytes_total 412",
            "gateway_http_proxy_cache_objects 413",
            "gateway_http_proxy_cache_bytes 414",
            "gateway_http_proxy_upstream_failures_total{kind=\"refused\"} 0",
            "gateway_http_proxy_connections_active 3",
        ],
    );
}

#[test]
fn sample_status_is_valid_exposition() {
    let text = render(&sample_status(), Some(&sample_drops()));
    let samples = parse_ok(&text);
    assert!(samples.iter().all(|s| s.name.starts_with("gateway_")));
    // One drop series per reason, each with its own count.
    let drops: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "gateway_dataplane_drops_total")
        .collect();
    assert_eq!(drops.len(), gateway_common::DropReason::ALL.len());
    // The labelled malformed counters add up to the total the DHCP server keeps.
    let malformed: f64 = samples
        .iter()
        .filter(|s| s.name == "gateway_dhcp_malformed_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(malformed, 3.0);
    // Exactly one uplink state is current.
    let current: Vec<Option<&str>> = samples
        .iter()
        .filter(|s| s.name == "gateway_uplink_state" && s.value == 1.0)
        .map(|s| s.label("state"))
        .collect();
    assert_eq!(current, [Some("bound")]);
}

#[test]
fn nothing_identifies_a_client_or_the_uplink() {
    let text = render(&sample_status(), Some(&sample_drops()));
    for secret in [
        "192.0.2.",
        "198.51.100.",
        "02:aa:bb",
        "4242",
        "/etc/gateway",
        "an old error",
        "enp",
        "gw-uplink",
    ] {
        assert!(!text.contains(secret), "{secret:?} in:\n{text}");
    }
    let labels: std::collections::BTreeSet<String> = parse_ok(&text)
        .into_iter()
        .flat_map(|s| s.labels.into_iter().map(|(label, _)| label))
        .collect();
    assert_eq!(
        labels.into_iter().collect::<Vec<_>>(),
        [
            "command",
            "direction",
            "form",
            "kind",
            "outcome",
            "reason",
            "service",
            "source",
            "state",
            "type",
            "upstream",
            "version"
        ],
        "a new label: make sure it cannot carry a client's identity"
    );
}

#[test]
fn services_that_do_not_run_have_no_families() {
    let status = Services {
        tor: None,
        socks: None,
        http_proxy: None,
        dns: None,
        dhcp: None,
        uplink: None,
        ..sample_status()
    };
    let text = render(&status, None);
    parse_ok(&text);
    assert_lines(
        &text,
        &[
            "gateway_service_running{service=\"dns\"} 0",
            "gateway_service_running{service=\"tor\"} 0",
            "gateway_service_running{service=\"http_proxy\"} 0",
            "gateway_uptime_seconds 3601",
        ],
    );
    for prefix in [
        "gateway_tor_",
        "gateway_socks_",
        "gateway_http_proxy_",
        "gateway_dns_",
        "gateway_dhcp_",
        "gateway_uplink_",
        "gateway_dataplane_drops_total",
    ] {
        assert!(
            !text.lines().any(|l| l.contains(prefix)),
            "{prefix} in:\n{text}"
        );
    }
}

#[test]
fn uplink_without_lease_and_unknown_state() {
    let mut status = sample_status();
    if let Some(uplink) = status.uplink.as_mut() {
        uplink.state = "some \"new\" state".into();
        uplink.address = None;
        uplink.lease_expires_unix = None;
    }
    let text = render(&status, Some(&sample_drops()));
    let samples = parse_ok(&text);
    assert_lines(
        &text,
        &[
            "gateway_uplink_has_address 0",
            "gateway_uplink_state{state=\"some \\\"new\\\" state\"} 1",
            "gateway_uplink_state{state=\"bound\"} 0",
        ],
    );
    assert!(!text.contains("gateway_uplink_lease_expiry"), "{text}");
    let current: Vec<Option<&str>> = samples
        .iter()
        .filter(|s| s.name == "gateway_uplink_state" && s.value == 1.0)
        .map(|s| s.label("state"))
        .collect();
    assert_eq!(current, [Some("some \"new\" state")]);
}

#[test]
fn label_values_survive_escaping() {
    let status = Services {
        version: "1.0-\"rc\"\\x\nline".into(),
        ..sample_status()
    };
    let samples = parse_ok(&render(&status, None));
    let info = samples
        .iter()
        .find(|s| s.name == "gateway_build_info")
        .unwrap_or_else(|| panic!("no build info"));
    assert_eq!(info.label("version"), Some("1.0-\"rc\"\\x\nline"));
}

#[test]
fn the_checker_rejects_what_prometheus_would() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    parse_ok(good);
    for (bad, why) in [
        (
            "# HELP a_total A.\n# TYPE a_total counter\na_total 2",
            "newline",
        ),
        ("a_total 2\n", "before its family's TYPE"),
        (
            "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\nb 1\na 1\n",
            "split",
        ),
        ("# HELP a A.\n# TYPE a counter\na 1\n", "_total"),
        (
            "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",
            "twice",
        ),
        ("# HELP a A.\n# TYPE a gauge\na{x=\"\\t\"} 1\n", "escape"),
        ("# HELP a A.\n# TYPE a gauge\na{x=\"1\" } 1\n", "separated"),
        (
            "# HELP a A.\n# TYPE a gauge\na{__x=\"1\"} 1\n",
            "label name",
        ),
        ("# HELP a A.\n# TYPE a gauge\na inf\n", "not a number"),
        (
            "# HELP a A.\n# TYPE a gauge\na 1 2 3\n",
            "after the timestamp",
        ),
        ("# TYPE a gauge\na 1\n", "no HELP"),
        (
            "# HELP a_total A.\n# TYPE a_total counter\na_total -1\n",
            "below zero",
        ),
        ("# HELP a A.\n# TYPE a gauge\n\na 1\n", "empty"),
        ("# HELP a-b A.\n# TYPE a-b gauge\na-b 1\n", "metric name"),
    ] {
        match check::parse(bad) {
            Ok(_) => panic!("accepted {bad:?}"),
            Err(problem) => assert!(problem.contains(why), "{problem:?} for {bad:?}"),
        }
    }
}

// ---- the server ----

fn source(drops_fail: bool) -> MetricsSource {
    let drops = (!drops_fail).then(sample_drops);
    MetricsSource::new(sample_status().source(drops))
}

/// Sends one HTTP/1.1 request and returns the status code, the headers (lower-case names) and
/// the body.
async fn request(
    server: &MetricsServer,
    method: &str,
    path: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap_or_else(|e| panic!("connecting: {e}"));
    let head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("writing: {e}"));
    let mut raw = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_string(&mut raw),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer in 5 s"))
    .unwrap_or_else(|e| panic!("reading: {e}"));
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {raw:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {raw:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn start(drops_fail: bool) -> MetricsServer {
    MetricsServer::start("127.0.0.1:0".parse().unwrap(), source(drops_fail))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test]
async fn get_metrics_serves_the_page() {
    let server = start(false).await;
    let (status, headers, body) = request(&server, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some(CONTENT_TYPE));
    assert_eq!(body, render(&sample_status(), Some(&sample_drops())));
    // A query string does not change the page.
    let (status, _, again) = request(&server, "GET", "/metrics?name[]=x").await;
    assert_eq!((status, again), (200, body));
    // HEAD: the same head, no body.
    let (status, headers, body) = request(&server, "HEAD", "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some(CONTENT_TYPE));
    assert_eq!(body, "");
    server.stop().await;
}

#[tokio::test]
async fn other_paths_and_methods_are_refused() {
    let server = start(false).await;
    for path in ["/", "/metrics/", "/status", "/metricsx"] {
        let (status, _, body) = request(&server, "GET", path).await;
        assert_eq!(status, 404, "{path}");
        assert!(!body.contains("gateway_"), "{path}: {body}");
    }
    for method in ["POST", "PUT", "DELETE"] {
        let (status, headers, body) = request(&server, method, "/metrics").await;
        assert_eq!(status, 405, "{method}");
        assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
        assert!(!body.contains("gateway_"), "{method}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn unreadable_drop_counters_leave_only_their_family_out() {
    let server = start(true).await;
    let (status, _, body) = request(&server, "GET", "/metrics").await;
    assert_eq!(status, 200);
    parse_ok(&body);
    assert!(!body.contains("gateway_dataplane_drops_total"), "{body}");
    assert!(body.contains("\ngateway_dhcp_replies_total{type=\"ack\"} 7\n"));
    server.stop().await;
}

#[tokio::test]
async fn a_taken_address_names_metrics_listen() {
    let server = start(false).await;
    let error = match MetricsServer::start(server.local_addr(), source(false)).await {
        Ok(_) => panic!("bound {} twice", server.local_addr()),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("metrics.listen"), "{error}");
    assert!(error.contains(&server.local_addr().to_string()), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn stop_closes_the_port() {
    let server = start(false).await;
    let address = server.local_addr();
    server.stop().await;
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
}
