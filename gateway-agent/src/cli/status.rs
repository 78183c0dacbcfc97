//! `gateway-agent status`: what the status page's first screen shows, as text. The uplink
//! (address, lease left), Tor (bootstrap, reachable), the clients, the drops, the DNS and HTTP
//! caches' hit ratios, then every service with its state and its own lines. The numbers come
//! from the same readers as the page ([`crate::status_page::model`]); `--json` is the control
//! socket's status unchanged (scripts and tests read it).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::config::Config;
use crate::control::{
    client,
    protocol::{AgentStatus, Request, Response},
};
use crate::dataplane::{inspect, pins::PinLayout};
use crate::dhcp::LeaseRecord;
use crate::status_page::model::{self, ProxyCache, Ratio, Tor, Uplink};
use crate::status_page::render::{bytes, duration};

/// Everything the first screen shows.
#[derive(Debug, Clone)]
pub struct Screen {
    pub status: AgentStatus,
    pub now_unix: u64,
    pub uplink: Option<Uplink>,
    pub tor: Option<Tor>,
    /// Known clients (leases and the dataplane's counters joined by MAC) and bound leases.
    pub clients: usize,
    pub bound: usize,
    /// Drops by reason, most first (none when the maps cannot be read).
    pub drops: Option<Vec<(String, u64)>>,
    pub dns_cache: Option<Ratio>,
    pub proxy_cache: Option<ProxyCache>,
    /// Every service of the list before the control socket, in order, and whether it runs
    /// (the control socket answered this, and it and the metrics endpoint are not in the
    /// status they serve).
    pub services: Vec<(&'static str, bool)>,
}

impl Screen {
    /// The screen for `status` as the agent gave it, with its `leases` and the pinned drop
    /// counters.
    pub fn new(
        status: AgentStatus,
        leases: &[LeaseRecord],
        counters: &[inspect::ClientRow],
        drops: Option<&[inspect::DropCount]>,
        now_unix: u64,
    ) -> Screen {
        let service = |name: &str| status.services.get(name);
        let clients = model::clients(leases, None, counters, now_unix).len();
        Screen {
            now_unix,
            uplink: service("uplink").and_then(|s| model::uplink(s, now_unix)),
            tor: service("tor").and_then(model::tor),
            clients,
            bound: leases.iter().filter(|l| l.state == "bound").count(),
            drops: drops.map(model::drops),
            dns_cache: service("dns").and_then(model::dns_cache),
            proxy_cache: service("http_proxy").and_then(model::proxy_cache),
            services: crate::agent::SERVICES
                .iter()
                .take_while(|entry| entry.name != crate::control::server::SERVICE.name)
                .map(|entry| (entry.name, status.services.contains_key(entry.name)))
                .collect(),
            status,
        }
    }
}

/// Width of the label column.
const LABEL: usize = 12;

/// The screen as text.
pub fn render(screen: &Screen) -> String {
    let s = &screen.status;
    let mut out = String::new();
    let mut row = |label: &str, text: String| {
        let _ = writeln!(out, "{label:<LABEL$} {text}");
    };
    row(
        "agent",
        format!(
            "{} (pid {}), up {}, config {}",
            s.version,
            s.pid,
            duration(s.uptime_secs),
            s.config
        ),
    );
    row(
        "inside",
        format!("{} on {}", s.inside_address, s.inside_interface),
    );
    row(
        "uplink",
        match &screen.uplink {
            Some(up) => format!(
                "{} on {} ({}), lease left {}",
                up.address.as_deref().unwrap_or("no address"),
                s.outside_interface,
                up.state,
                up.lease_left_secs.map_or_else(|| "-".to_owned(), duration)
            ),
            None => format!("{} (not running)", s.outside_interface),
        },
    );
    row(
        "tor",
        match &screen.tor {
            Some(tor) => format!(
                "bootstrap {} %{}, {}, {} circuits in use, {} isolation groups{}",
                tor.percent,
                if tor.bootstrapped { " (ready)" } else { "" },
                if tor.reachable {
                    "network reachable"
                } else {
                    "NETWORK UNREACHABLE (streams and lookups refused)"
                },
                tor.circuits_in_use,
                tor.isolation_groups,
                if tor.bootstrapped || tor.progress.is_empty() {
                    String::new()
                } else {
                    format!(": {}", tor.progress)
                }
            ),
            None => "off".to_owned(),
        },
    );
    row(
        "clients",
        format!("{} known, {} leases bound", screen.clients, screen.bound),
    );
    row(
        "drops",
        match &screen.drops {
            None => "- (the dataplane's maps are not readable here)".to_owned(),
            Some(drops) if drops.is_empty() => "none".to_owned(),
            Some(drops) => {
                let total: u64 = drops.iter().map(|(_, n)| n).sum();
                let top: Vec<String> = drops
                    .iter()
                    .take(3)
                    .map(|(reason, n)| format!("{reason} {n}"))
                    .collect();
                let more = if drops.len() > 3 { ", …" } else { "" };
                format!("{total} ({}{more}; `maps drops` for all)", top.join(", "))
            }
        },
    );
    row(
        "DNS cache",
        match &screen.dns_cache {
            Some(r) if r.total == 0 => "nothing looked up upstream yet".to_owned(),
            Some(r) => format!("{} hits ({} of {})", r.percent(), r.hits, r.total),
            None => "off".to_owned(),
        },
    );
    row(
        "HTTP cache",
        match &screen.proxy_cache {
            Some(c) => format!(
                "{}, {} objects, {} of {}",
                if c.ratio.total == 0 {
                    "no cacheable requests yet".to_owned()
                } else {
                    format!(
                        "{} hits ({} of {})",
                        c.ratio.percent(),
                        c.ratio.hits,
                        c.ratio.total
                    )
                },
                c.entries,
                bytes(c.size_bytes),
                bytes(c.max_bytes)
            ),
            None => "off".to_owned(),
        },
    );
    let _ = writeln!(out, "services");
    for (name, runs) in &screen.services {
        let lines: Vec<&str> = s
            .summary
            .iter()
            .filter(|line| line.service == *name)
            .map(|line| line.line.as_str())
            .collect();
        let state = if *runs { "running" } else { "off" };
        match lines.split_first() {
            Some((first, rest)) => {
                let _ = writeln!(out, "  {name:<LABEL$} {state:<8} {first}");
                for line in rest {
                    let _ = writeln!(out, "  {:<LABEL$} {:<8} {line}", "", "");
                }
            }
            None => {
                let _ = writeln!(out, "  {name:<LABEL$} {state}");
            }
        }
    }
    out
}

/// Prints the running agent's status; fails plainly when no agent answers.
pub fn run(cfg: &Config, json: bool) -> Result<()> {
    let socket = &cfg.control.socket;
    let status = match client::request(socket, &Request::Status)? {
        Response::Status(status) => *status,
        Response::Error { message } => {
            bail!("the agent on {} refused: {message}", socket.display())
        }
        other => bail!("the agent answered something else: {other:?}"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    // Best effort: without DHCP there are no leases; the maps need root.
    let leases: Vec<LeaseRecord> = operate(socket, "dhcp", "leases")
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let pins = PinLayout::new(&cfg.dataplane.bpf_pin_dir);
    let counters = inspect::clients(&pins).unwrap_or_default();
    let drops = inspect::drops(&pins).ok();
    let screen = Screen::new(
        status,
        &leases,
        &counters,
        drops.as_deref(),
        crate::clock::unix_now(),
    );
    print!("{}", render(&screen));
    Ok(())
}

fn operate(socket: &Path, service: &str, operation: &str) -> Option<Value> {
    client::operate(socket, service, operation, Value::Null).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::SummaryLine;
    use serde_json::json;

    fn status() -> AgentStatus {
        let services = [
            (
                "uplink",
                json!({"state": "bound", "address": "192.0.2.150", "prefix_len": 24,
                       "lease_expires_unix": 1000 + 3 * 3600 + 60}),
            ),
            (
                "tor",
                json!({"bootstrapped": false, "percent": 40, "progress": "loading directory",
                       "reachable": true, "isolation_groups": 2, "circuits_in_use": 1}),
            ),
            (
                "dns",
                json!({"cache_hits": 3, "forwarded": 1, "queries": 9}),
            ),
            (
                "http_proxy",
                json!({"cache": {"hits": 1, "misses": 3, "entries": 2, "size_bytes": 2048,
                                  "max_bytes": 1048576}}),
            ),
        ];
        AgentStatus {
            version: "0.1.0".into(),
            pid: 42,
            uptime_secs: 125,
            config: "/etc/gateway/gateway.toml".into(),
            outside_interface: "outside0".into(),
            inside_interface: "inside0".into(),
            inside_address: "198.51.100.1/24".into(),
            summary: vec![
                SummaryLine {
                    service: "dns".into(),
                    line: "9 queries".into(),
                },
                SummaryLine {
                    service: "dns".into(),
                    line: "upstream tor".into(),
                },
            ],
            services: services
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        }
    }

    #[test]
    fn the_first_screen_from_a_fixed_status() {
        let leases = vec![LeaseRecord {
            address: "198.51.100.100".parse().unwrap(),
            mac: "02:00:00:00:00:0a".into(),
            client_id: None,
            hostname: Some("c1".into()),
            expires_unix: 2000,
            state: "bound".into(),
        }];
        let drops = [
            inspect::DropCount {
                reason: "ipv6",
                count: 7,
            },
            inspect::DropCount {
                reason: "foreign_destination",
                count: 50,
            },
            inspect::DropCount {
                reason: "arp_spoof",
                count: 0,
            },
        ];
        let screen = Screen::new(status(), &leases, &[], Some(&drops), 1000);
        let text = render(&screen);
        let expected = [
            "agent        0.1.0 (pid 42), up 2 min 05 s, config /etc/gateway/gateway.toml",
            "inside       198.51.100.1/24 on inside0",
            "uplink       192.0.2.150/24 on outside0 (bound), lease left 3 h 01 min",
            "tor          bootstrap 40 %, network reachable, 1 circuits in use, 2 isolation groups: loading directory",
            "clients      1 known, 1 leases bound",
            "drops        57 (foreign_destination 50, ipv6 7; `maps drops` for all)",
            "DNS cache    75.0 % hits (3 of 4)",
            "HTTP cache   25.0 % hits (1 of 4), 2 objects, 2.0 KiB of 1.0 MiB",
            "services",
            "  hardening    off",
            "  uplink       running",
            "  dataplane    off",
            "  tor          running",
            "  dns          running  9 queries",
            "                        upstream tor",
            "  dhcp         off",
        ];
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[..expected.len()], &expected[..], "{text}");
        assert!(text.ends_with("  status_page  off\n"), "{text}");
        assert!(!text.contains("control"), "{text}");
    }

    #[test]
    fn missing_parts_say_so() {
        let mut bare = status();
        bare.services.clear();
        bare.summary.clear();
        let text = render(&Screen::new(bare, &[], &[], None, 1000));
        assert!(
            text.contains("uplink       outside0 (not running)"),
            "{text}"
        );
        assert!(text.contains("tor          off"), "{text}");
        assert!(
            text.contains("drops        - (the dataplane's maps"),
            "{text}"
        );
        assert!(text.contains("HTTP cache   off"), "{text}");
    }
}
