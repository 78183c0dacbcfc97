//! Reads the pinned maps, so the CLI works from another shell while the agent runs (or after it
//! crashed, which leaves the pins in place).

use crate::mac::MacAddr;
use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Array, HashMap, Map, MapData, MapInfo, PerCpuArray, PerCpuHashMap};
use gateway_common::{
    maps::{
        names, ClientStats, DataplaneConfig, LeaseValue, MacKey, PortKey, CONFIG_FLAG_ALLOW_PING,
        CONFIG_FLAG_READY, IPPROTO_TCP, IPPROTO_UDP,
    },
    DropReason,
};
use serde::Serialize;
use serde_json::{json, Value};

use super::pins::PinLayout;

/// Every map the dataplane pins, in display order.
pub const MAP_NAMES: &[&str] = names::ALL;

/// A row of `maps list`.
#[derive(Debug, Serialize)]
pub struct MapSummary {
    /// Map name.
    pub name: String,
    /// Kernel map type.
    #[serde(rename = "type")]
    pub map_type: String,
    /// Entries in use (hash maps) or slots (arrays).
    pub entries: usize,
    /// Capacity.
    pub max_entries: u32,
}

/// A row of `maps drops`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DropCount {
    /// Reason name.
    pub reason: &'static str,
    /// Packets dropped for it, summed over CPUs.
    pub count: u64,
}

/// A row of `maps clients`.
#[derive(Debug, Serialize)]
pub struct ClientRow {
    /// Source MAC.
    pub mac: String,
    /// The client's IPv4 address if known: its DHCP lease, else the last source address seen.
    pub ip: Option<Ipv4Addr>,
    /// Where `ip` comes from: `lease` or `seen`.
    pub ip_source: Option<&'static str>,
    /// Frames, summed over CPUs.
    pub packets: u64,
    /// Bytes, summed over CPUs.
    pub bytes: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Seconds since the last frame.
    pub idle_secs: Option<u64>,
}

/// Why a map pin cannot be read, and what to check.
fn no_pin(name: &str, path: &Path) -> String {
    format!(
        "no pinned map {name} at {}: the agent pins its maps under dataplane.bpf_pin_dir at \
         start (has it run with this config? `systemctl status gateway-agent`)",
        path.display()
    )
}

fn open(pins: &PinLayout, name: &str) -> Result<Map> {
    let path = pins.map(name);
    let data = MapData::from_pin(&path).with_context(|| no_pin(name, &path))?;
    Map::from_map_data(data).with_context(|| format!("opening map {name}"))
}

/// `maps list`.
pub fn list(pins: &PinLayout) -> Result<Vec<MapSummary>> {
    MAP_NAMES
        .iter()
        .map(|name| {
            let path = pins.map(name);
            let info = MapInfo::from_pin(&path).with_context(|| no_pin(name, &path))?;
            let entries = match *name {
                names::OPEN_PORTS => open_ports(pins)?.len(),
                names::CLIENT_STATS => clients(pins)?.len(),
                names::LEASES => leases(pins)?.len(),
                names::LEASES_BY_IP => leases(pins)?.len(),
                _ => info.max_entries() as usize,
            };
            Ok(MapSummary {
                name: name.to_string(),
                map_type: info
                    .map_type()
                    .map(|t| format!("{t:?}"))
                    .unwrap_or_else(|_| "unknown".into()),
                entries,
                max_entries: info.max_entries(),
            })
        })
        .collect()
}

/// `maps drops`: every reason, zero counts included, so a reason's absence is visible.
pub fn drops(pins: &PinLayout) -> Result<Vec<DropCount>> {
    let map: PerCpuArray<_, u64> = open(pins, names::DROPS)?.try_into()?;
    DropReason::ALL
        .iter()
        .map(|reason| {
            let per_cpu = map
                .get(&(*reason as u32), 0)
                .with_context(|| format!("reading the {} counter", reason.name()))?;
            Ok(DropCount {
                reason: reason.name(),
                count: per_cpu.iter().sum(),
            })
        })
        .collect()
}

/// The drop count for one reason.
pub fn drop_count(pins: &PinLayout, reason: DropReason) -> Result<u64> {
    drops(pins)?
        .into_iter()
        .find(|d| d.reason == reason.name())
        .map(|d| d.count)
        .ok_or_else(|| anyhow!("no counter for {}", reason.name()))
}

/// `maps clients`, most active first.
pub fn clients(pins: &PinLayout) -> Result<Vec<ClientRow>> {
    let map: PerCpuHashMap<_, MacKey, ClientStats> = open(pins, names::CLIENT_STATS)?.try_into()?;
    let now = monotonic_ns();
    let leases = leases(pins)?;
    let mut rows = Vec::new();
    for entry in map.iter() {
        // An entry evicted between listing and reading is simply skipped.
        let Ok((key, per_cpu)) = entry else { continue };
        let latest = per_cpu.iter().max_by_key(|s| s.last_seen_ns);
        let ip = latest
            .map(|s| s.last_ipv4)
            .filter(|&ip| ip != 0)
            .map(|ip| Ipv4Addr::from(ip.to_ne_bytes()));
        let last_seen = latest.map(|s| s.last_seen_ns).unwrap_or(0);
        let leased = leases
            .iter()
            .find(|(mac, _)| mac.octets() == key.addr)
            .map(|(_, v)| Ipv4Addr::from(v.ipv4.to_ne_bytes()));
        let (ip, ip_source) = match (leased, ip) {
            (Some(lease), _) => (Some(lease), Some("lease")),
            (None, Some(seen)) => (Some(seen), Some("seen")),
            (None, None) => (None, None),
        };
        rows.push(ClientRow {
            mac: MacAddr::from(key).to_string(),
            ip,
            ip_source,
            packets: per_cpu.iter().map(|s| s.packets).sum(),
            bytes: per_cpu.iter().map(|s| s.bytes).sum(),
            dropped: per_cpu.iter().map(|s| s.dropped).sum(),
            idle_secs: now.map(|now| now.saturating_sub(last_seen) / 1_000_000_000),
        });
    }
    rows.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.mac.cmp(&b.mac)));
    Ok(rows)
}

/// The live leases in the dataplane, by MAC.
pub fn leases(pins: &PinLayout) -> Result<Vec<(MacAddr, LeaseValue)>> {
    let map: HashMap<_, MacKey, LeaseValue> = open(pins, names::LEASES)?.try_into()?;
    Ok(map
        .iter()
        .filter_map(Result::ok)
        .map(|(k, v)| (MacAddr::from(k), v))
        .collect())
}

fn open_ports(pins: &PinLayout) -> Result<Vec<String>> {
    let map: HashMap<_, PortKey, u8> = open(pins, names::OPEN_PORTS)?.try_into()?;
    let mut ports: Vec<(u8, u16)> = map
        .keys()
        .filter_map(Result::ok)
        .map(|k| (k.protocol, k.port))
        .collect();
    ports.sort_unstable();
    Ok(ports
        .into_iter()
        .map(|(proto, port)| format!("{}/{port}", protocol_name(proto)))
        .collect())
}

/// `maps dump NAME`: the decoded contents (per-CPU values kept apart).
pub fn dump(pins: &PinLayout, name: &str) -> Result<Value> {
    match name {
        names::CONFIG => {
            let map: Array<_, DataplaneConfig> = open(pins, name)?.try_into()?;
            let cfg = map.get(&0, 0).context("reading CONFIG[0]")?;
            let addr = |v: u32| Ipv4Addr::from(v.to_ne_bytes()).to_string();
            Ok(json!({
                "inside_ip": addr(cfg.inside_ip),
                "inside_net": addr(cfg.inside_net),
                "inside_mask": addr(cfg.inside_mask),
                "ready": cfg.flags & CONFIG_FLAG_READY != 0,
                "allow_ping": cfg.flags & CONFIG_FLAG_ALLOW_PING != 0,
                "flags": cfg.flags,
            }))
        }
        names::OPEN_PORTS => Ok(json!(open_ports(pins)?)),
        names::DROPS => {
            let map: PerCpuArray<_, u64> = open(pins, name)?.try_into()?;
            let mut out = BTreeMap::new();
            for reason in DropReason::ALL {
                let per_cpu = map.get(&(*reason as u32), 0)?;
                out.insert(reason.name(), per_cpu.to_vec());
            }
            Ok(json!(out))
        }
        names::CLIENT_STATS => {
            let map: PerCpuHashMap<_, MacKey, ClientStats> = open(pins, name)?.try_into()?;
            let mut out = BTreeMap::new();
            for entry in map.iter() {
                let Ok((key, per_cpu)) = entry else { continue };
                let cpus: Vec<Value> = per_cpu
                    .iter()
                    .map(|s| {
                        json!({
                            "packets": s.packets,
                            "bytes": s.bytes,
                            "dropped": s.dropped,
                            "last_seen_ns": s.last_seen_ns,
                            "last_ipv4": Ipv4Addr::from(s.last_ipv4.to_ne_bytes()).to_string(),
                        })
                    })
                    .collect();
                out.insert(MacAddr::from(key).to_string(), cpus);
            }
            Ok(json!(out))
        }
        names::LEASES => {
            let out: BTreeMap<String, Value> = leases(pins)?
                .into_iter()
                .map(|(mac, v)| {
                    (
                        mac.to_string(),
                        json!({
                            "ip": Ipv4Addr::from(v.ipv4.to_ne_bytes()).to_string(),
                            "flags": v.flags,
                            "expires_unix": v.expires_unix,
                        }),
                    )
                })
                .collect();
            Ok(json!(out))
        }
        names::LEASES_BY_IP => {
            let map: HashMap<_, u32, MacKey> = open(pins, name)?.try_into()?;
            let out: BTreeMap<String, String> = map
                .iter()
                .filter_map(Result::ok)
                .map(|(ip, mac)| {
                    (
                        Ipv4Addr::from(ip.to_ne_bytes()).to_string(),
                        MacAddr::from(mac).to_string(),
                    )
                })
                .collect();
            Ok(json!(out))
        }
        other => bail!(
            "no map named {other:?}; the maps are: {}",
            MAP_NAMES.join(", ")
        ),
    }
}

fn protocol_name(proto: u8) -> String {
    match proto {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        other => other.to_string(),
    }
}

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-parameter.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}
