//! What the page shows, gathered from the running services' views (and the dataplane's pins)
//! into one plain value the renderer and `/status.json` share.
//!
//! Only what an operator needs to see the network: addresses, states, counters. No status
//! string is copied wholesale: a service's own section shows its numbers and flags, so a field
//! that named what a client looked up or visited could not reach the page.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::chart::Interval;
use crate::dataplane::inspect::{ClientRow, DropCount};
use crate::dataplane::service::PolicyTable;
use crate::dhcp::LeaseRecord;

/// The whole page.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Model {
    pub now_unix: u64,
    pub version: String,
    pub uptime_secs: u64,
    pub inside_address: String,
    pub uplink: Option<Uplink>,
    pub tor: Option<Tor>,
    pub services: Vec<ServiceCounters>,
    /// Services in the list before the page that do not run (off in the config).
    pub off: Vec<String>,
    pub clients: Vec<Client>,
    /// Drops by reason since the maps were made (nonzero reasons, most first).
    pub drops: Vec<(String, u64)>,
    /// Drops per sample interval over the last hour.
    pub drops_history: Vec<Interval>,
    pub dns_cache: Option<Ratio>,
    pub proxy_cache: Option<ProxyCache>,
    pub registry: Option<Vec<Repository>>,
    pub mirror: Option<Vec<MirrorUpstream>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Uplink {
    pub state: String,
    pub address: Option<String>,
    pub lease_left_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tor {
    pub bootstrapped: bool,
    pub percent: u64,
    pub progress: String,
    pub reachable: bool,
    pub isolation_groups: u64,
    pub circuits_in_use: u64,
    pub streams_open: u64,
}

/// One running service: its numbers and flags, by dotted key.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceCounters {
    pub name: String,
    pub counters: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Client {
    pub mac: String,
    pub name: Option<String>,
    pub address: Option<String>,
    /// The lease's state (`bound`, `offered`, `expired`, …).
    pub lease: Option<String>,
    pub lease_left_secs: Option<u64>,
    pub policy: String,
    /// Whether the policy is the client's own (else the default).
    pub policy_set: bool,
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
}

/// `hits` out of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ratio {
    pub hits: u64,
    pub total: u64,
}

impl Ratio {
    /// `87.5 %`, or `-` before anything was counted.
    pub fn percent(&self) -> String {
        if self.total == 0 {
            return "-".to_owned();
        }
        format!("{:.1} %", self.hits as f64 * 100.0 / self.total as f64)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxyCache {
    pub ratio: Ratio,
    pub entries: u64,
    pub size_bytes: u64,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repository {
    pub name: String,
    pub tags: Vec<String>,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MirrorUpstream {
    pub name: String,
    pub url: String,
    pub counters: Vec<(String, String)>,
}

/// The uplink's section from its status.
pub fn uplink(status: &Value, now_unix: u64) -> Option<Uplink> {
    let status = status.as_object()?;
    Some(Uplink {
        state: status.get("state")?.as_str()?.to_owned(),
        address: status
            .get("address")
            .and_then(Value::as_str)
            .map(
                |address| match status.get("prefix_len").and_then(Value::as_u64) {
                    Some(len) => format!("{address}/{len}"),
                    None => address.to_owned(),
                },
            ),
        lease_left_secs: status
            .get("lease_expires_unix")
            .and_then(Value::as_u64)
            .map(|expires| expires.saturating_sub(now_unix)),
    })
}

/// Tor's section from its status.
pub fn tor(status: &Value) -> Option<Tor> {
    Some(Tor {
        bootstrapped: status.get("bootstrapped")?.as_bool()?,
        percent: status.get("percent")?.as_u64()?,
        progress: status
            .get("progress")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        reachable: status
            .get("reachable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        isolation_groups: status
            .get("isolation_groups")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        circuits_in_use: status
            .get("circuits_in_use")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        streams_open: status
            .get("streams_open")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// The DNS cache's hit ratio: answers from the cache out of those that needed an upstream's
/// (from the cache, or forwarded).
pub fn dns_cache(status: &Value) -> Option<Ratio> {
    let hits = status.get("cache_hits")?.as_u64()?;
    let forwarded = status.get("forwarded")?.as_u64()?;
    Some(Ratio {
        hits,
        total: hits + forwarded,
    })
}

/// The HTTP proxy cache's numbers (none when the cache is off).
pub fn proxy_cache(status: &Value) -> Option<ProxyCache> {
    let cache = status.get("cache")?;
    let number = |key: &str| cache.get(key).and_then(Value::as_u64).unwrap_or(0);
    let hits = number("hits");
    Some(ProxyCache {
        ratio: Ratio {
            hits,
            total: hits + number("misses"),
        },
        entries: number("entries"),
        size_bytes: number("size_bytes"),
        max_bytes: number("max_bytes"),
    })
}

/// The registry's repositories from its `ls` and `du` answers.
pub fn registry(ls: &Value, du: &Value) -> Vec<Repository> {
    let sizes = du.get("repositories");
    ls.as_array()
        .map(|repos| {
            repos
                .iter()
                .filter_map(|repo| {
                    let name = repo.get("repository")?.as_str()?.to_owned();
                    let tags = repo
                        .get("tags")
                        .and_then(Value::as_object)
                        .map(|tags| tags.keys().cloned().collect())
                        .unwrap_or_default();
                    let bytes = sizes
                        .and_then(|sizes| sizes.get(&name))
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    Some(Repository { name, tags, bytes })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The mirror's upstreams: each configured one with its cache's numbers.
pub fn mirror(status: &Value, urls: &[(String, String)]) -> Vec<MirrorUpstream> {
    urls.iter()
        .map(|(name, url)| MirrorUpstream {
            name: name.clone(),
            url: url.clone(),
            counters: status
                .get("upstreams")
                .and_then(|upstreams| upstreams.get(name))
                .map(counters)
                .unwrap_or_default(),
        })
        .collect()
}

/// A status's numbers and flags, nested objects by dotted key (two levels); strings, lists
/// and anything deeper are left out.
pub fn counters(status: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(status, "", 0, &mut out);
    out
}

fn walk(value: &Value, prefix: &str, depth: usize, out: &mut Vec<(String, String)>) {
    let Some(object) = value.as_object() else {
        return;
    };
    for (key, value) in object {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Number(n) => out.push((key, n.to_string())),
            Value::Bool(b) => out.push((key, b.to_string())),
            Value::Object(_) if depth < 1 => walk(value, &key, depth + 1, out),
            _ => {}
        }
    }
}

/// Every known client: leases, per-client policies and the dataplane's counters joined by
/// MAC (as `gateway-agent clients` does).
pub fn clients(
    leases: &[LeaseRecord],
    policies: Option<&PolicyTable>,
    counters: &[ClientRow],
    now_unix: u64,
) -> Vec<Client> {
    let policy_of = |mac: &str| match policies {
        Some(table) => (
            table
                .clients
                .get(mac)
                .copied()
                .unwrap_or(table.default)
                .to_string(),
            table.clients.contains_key(mac),
        ),
        None => ("-".to_owned(), false),
    };
    let mut all: BTreeMap<String, Client> = BTreeMap::new();
    fn entry<'a>(
        all: &'a mut BTreeMap<String, Client>,
        mac: &str,
        policy_of: &dyn Fn(&str) -> (String, bool),
    ) -> &'a mut Client {
        let mac = mac.to_ascii_lowercase();
        let (policy, policy_set) = policy_of(&mac);
        all.entry(mac.clone()).or_insert_with(|| Client {
            mac,
            name: None,
            address: None,
            lease: None,
            lease_left_secs: None,
            policy,
            policy_set,
            packets: 0,
            bytes: 0,
            dropped: 0,
        })
    }
    for lease in leases {
        let client = entry(&mut all, &lease.mac, &policy_of);
        client.address = Some(lease.address.to_string());
        client.name = lease.hostname.clone();
        client.lease_left_secs = Some(lease.expires_unix.saturating_sub(now_unix));
        client.lease = Some(lease.state.clone());
    }
    for row in counters {
        let client = entry(&mut all, &row.mac, &policy_of);
        if client.address.is_none() {
            client.address = row.ip.map(|ip| ip.to_string());
        }
        client.packets = row.packets;
        client.bytes = row.bytes;
        client.dropped = row.dropped;
    }
    if let Some(table) = policies {
        for mac in table.clients.keys() {
            entry(&mut all, mac, &policy_of);
        }
    }
    all.into_values().collect()
}

/// The nonzero reasons, most first.
pub fn drops(totals: &[DropCount]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = totals
        .iter()
        .filter(|d| d.count > 0)
        .map(|d| (d.reason.to_owned(), d.count))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counters_keep_numbers_and_flags_only() {
        let status = json!({
            "queries": 5, "ready": true, "upstream": "tor",
            "cache": {"hits": 2, "names": ["secret.example"], "deep": {"x": 1}},
            "recent": ["secret.example"],
        });
        let got = counters(&status);
        assert_eq!(
            got,
            vec![
                ("cache.hits".to_owned(), "2".to_owned()),
                ("queries".to_owned(), "5".to_owned()),
                ("ready".to_owned(), "true".to_owned()),
            ]
        );
    }

    #[test]
    fn clients_join_leases_policies_and_counters_by_mac() {
        let leases = vec![LeaseRecord {
            address: "198.51.100.50".parse().unwrap(),
            mac: "02:00:00:00:00:0A".into(),
            client_id: None,
            hostname: Some("c1".into()),
            expires_unix: 1600,
            state: "bound".into(),
        }];
        let table: PolicyTable = serde_json::from_value(json!({
            "default": "transparent",
            "clients": {"02:00:00:00:00:0b": "blocked"}
        }))
        .unwrap();
        let counters = vec![ClientRow {
            mac: "02:00:00:00:00:0a".into(),
            ip: None,
            ip_source: None,
            packets: 10,
            bytes: 1000,
            dropped: 2,
            idle_secs: Some(1),
        }];
        let clients = clients(&leases, Some(&table), &counters, 1000);
        assert_eq!(clients.len(), 2);
        let c1 = &clients[0];
        assert_eq!(c1.mac, "02:00:00:00:00:0a");
        assert_eq!(c1.name.as_deref(), Some("c1"));
        assert_eq!(c1.address.as_deref(), Some("198.51.100.50"));
        assert_eq!(c1.lease_left_secs, Some(600));
        assert_eq!((c1.packets, c1.bytes, c1.dropped), (10, 1000, 2));
        assert!(!c1.policy_set);
        let other = &clients[1];
        assert_eq!(other.policy, "blocked");
        assert!(other.policy_set);
    }

    #[test]
    fn sections_read_the_services_statuses() {
        let up = uplink(
            &json!({"state": "bound", "address": "192.0.2.150", "prefix_len": 24,
                    "lease_expires_unix": 1300}),
            1000,
        )
        .unwrap();
        assert_eq!(up.address.as_deref(), Some("192.0.2.150/24"));
        assert_eq!(up.lease_left_secs, Some(300));
        let ratio = dns_cache(&json!({"cache_hits": 3, "forwarded": 1})).unwrap();
        assert_eq!(ratio.percent(), "75.0 %");
        assert_eq!(Ratio { hits: 0, total: 0 }.percent(), "-");
        assert!(proxy_cache(&json!({"requests": 1})).is_none());
        let repos = registry(
            &json!([{"repository": "apps/web", "tags": {"v1": "sha256:aa", "latest": "sha256:aa"},
                     "manifests": 1}]),
            &json!({"repositories": {"apps/web": 4096}, "blobs": 3, "bytes": 5000}),
        );
        assert_eq!(
            repos,
            vec![Repository {
                name: "apps/web".into(),
                tags: vec!["latest".into(), "v1".into()],
                bytes: 4096
            }]
        );
    }
}
