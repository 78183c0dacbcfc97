//! IPv4 forwarding stays off: inside traffic is only ever delivered to the gateway's own
//! sockets, never routed, so a host that forwards is a leak waiting for a missing rule.

use anyhow::{Context, Result};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns IPv4 forwarding off in the agent's network namespace, saying so if it was on. It is
/// never turned back on: when the agent stops, the host stays closed.
pub fn ensure_off() -> Result<()> {
    let current =
        std::fs::read_to_string(IP_FORWARD).with_context(|| format!("reading {IP_FORWARD}"))?;
    if current.trim() != "0" {
        std::fs::write(IP_FORWARD, "0").with_context(|| format!("writing 0 to {IP_FORWARD}"))?;
        tracing::warn!("IPv4 forwarding was on; turned it off (the gateway never routes)");
    }
    Ok(())
}
