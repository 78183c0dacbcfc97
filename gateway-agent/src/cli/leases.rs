//! `gateway-agent leases`: the DHCP server's leases, from the running agent.

use std::path::Path;

use anyhow::Result;

use super::table;
use crate::control::client;
use crate::dhcp::LeaseRecord;

/// Prints the leases; fails plainly when no agent answers.
pub fn run(socket: &Path, json: bool) -> Result<()> {
    let value = client::operate(socket, "dhcp", "leases", serde_json::Value::Null)?;
    let leases: Vec<LeaseRecord> = serde_json::from_value(value)
        .map_err(|err| anyhow::anyhow!("the agent's leases are not readable: {err}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&leases)?);
        return Ok(());
    }
    let now = crate::clock::unix_now();
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            vec![
                l.address.to_string(),
                l.mac.clone(),
                l.client_id.clone().unwrap_or_else(|| "-".into()),
                l.hostname.clone().unwrap_or_else(|| "-".into()),
                format!("{}s", l.expires_unix.saturating_sub(now)),
                l.state.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(
            &["address", "mac", "client-id", "name", "expires in", "state"],
            &rows
        )
    );
    Ok(())
}
