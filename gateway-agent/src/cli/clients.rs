//! `gateway-agent clients`: every known inside client (leases, per-client policies, the
//! dataplane's counters) joined by MAC; `clients set MAC POLICY` changes one client's policy
//! through the running agent, which keeps the state file and the pinned map in step.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::table;
use crate::control::client;
use crate::dataplane::{inspect, pins::PinLayout, policy::Policy, service::PolicyTable};
use crate::dhcp::LeaseRecord;

/// One client as `clients` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientEntry {
    pub mac: String,
    pub address: Option<String>,
    pub name: Option<String>,
    pub lease: Option<String>,
    pub policy: Policy,
    /// Whether the policy is the client's own (else the default).
    pub policy_set: bool,
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
}

fn operate(socket: &Path, service: &str, operation: &str, args: Value) -> Result<Value> {
    client::operate(socket, service, operation, args)
}

/// Sets `mac`'s policy.
pub fn set(socket: &Path, mac: &str, policy: Policy) -> Result<()> {
    let args = serde_json::json!({ "mac": mac, "policy": policy });
    let done = operate(socket, "dataplane", "set_policy", args)?;
    println!(
        "{} is {}",
        done["mac"].as_str().unwrap_or(mac),
        done["policy"].as_str().unwrap_or(policy.as_str())
    );
    Ok(())
}

/// Prints every client.
pub fn list(socket: &Path, pin_dir: &Path, json: bool) -> Result<()> {
    let table: PolicyTable =
        serde_json::from_value(operate(socket, "dataplane", "policies", Value::Null)?)
            .context("the agent's policies are not readable")?;
    // Leases only when the DHCP server runs; the counters only while the maps are pinned.
    let leases: Vec<LeaseRecord> = operate(socket, "dhcp", "leases", Value::Null)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let counters = inspect::clients(&PinLayout::new(pin_dir)).unwrap_or_default();

    let mut all: BTreeMap<String, ClientEntry> = BTreeMap::new();
    let entry = |all: &mut BTreeMap<String, ClientEntry>, mac: &str| {
        let mac = mac.to_ascii_lowercase();
        all.entry(mac.clone())
            .or_insert_with(|| ClientEntry {
                policy: table.clients.get(&mac).copied().unwrap_or(table.default),
                policy_set: table.clients.contains_key(&mac),
                mac,
                address: None,
                name: None,
                lease: None,
                packets: 0,
                bytes: 0,
                dropped: 0,
            })
            .mac
            .clone()
    };
    for lease in &leases {
        let mac = entry(&mut all, &lease.mac);
        if let Some(e) = all.get_mut(&mac) {
            e.address = Some(lease.address.to_string());
            e.name = lease.hostname.clone();
            e.lease = Some(lease.state.clone());
        }
    }
    for row in &counters {
        let mac = entry(&mut all, &row.mac);
        if let Some(e) = all.get_mut(&mac) {
            if e.address.is_none() {
                e.address = row.ip.map(|ip| ip.to_string());
            }
            e.packets = row.packets;
            e.bytes = row.bytes;
            e.dropped = row.dropped;
        }
    }
    for mac in table.clients.keys() {
        entry(&mut all, mac);
    }
    let clients: Vec<ClientEntry> = all.into_values().collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&clients)?);
        return Ok(());
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = clients
        .iter()
        .map(|c| {
            let policy = if c.policy_set {
                c.policy.to_string()
            } else {
                format!("{} (default)", c.policy)
            };
            vec![
                c.mac.clone(),
                dash(&c.address),
                dash(&c.name),
                dash(&c.lease),
                policy,
                c.packets.to_string(),
                c.bytes.to_string(),
                c.dropped.to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(
            &["mac", "address", "name", "lease", "policy", "packets", "bytes", "dropped"],
            &rows
        )
    );
    Ok(())
}
