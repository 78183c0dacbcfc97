//! `gateway-agent status`.

use std::path::Path;

use anyhow::{bail, Result};

use crate::control::{
    client,
    protocol::{Request, Response},
};

/// Prints the running agent's status; fails plainly when no agent answers.
pub fn run(socket: &Path, json: bool) -> Result<()> {
    let status = match client::request(socket, &Request::Status)? {
        Response::Status(status) => status,
        Response::Error { message } => bail!("the agent refused: {message}"),
        other => bail!("the agent answered something else: {other:?}"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("gateway-agent {} (pid {})", status.version, status.pid);
    println!("  up for      {}s", status.uptime_secs);
    println!("  config      {}", status.config);
    println!(
        "  inside      {} ({})",
        status.inside_interface, status.inside_address
    );
    println!("  outside     {}", status.outside_interface);
    println!("  pins        {}", status.dataplane.pin_dir);
    for prog in &status.dataplane.programs {
        println!(
            "  program     {} on {} ({})",
            prog.name, prog.interface, prog.hook
        );
    }
    if let Some(uplink) = &status.uplink {
        let address = match (uplink.address, uplink.prefix_len) {
            (Some(a), Some(p)) => format!("{a}/{p}"),
            _ => "no address".into(),
        };
        println!(
            "  uplink      {} on {} ({}): {address}, router {}",
            uplink.device,
            uplink.parent,
            uplink.state,
            uplink
                .router
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
    if let Some(dhcp) = &status.dhcp {
        println!(
            "  dhcp        {} bound of {}, {} acks, {} naks, {} malformed, {} rate-limited",
            dhcp.bound, dhcp.pool_size, dhcp.acks, dhcp.naks, dhcp.malformed, dhcp.rate_limited,
        );
    }
    if let Some(tor) = &status.tor {
        println!(
            "  tor         {} ({}%: {}), {} isolation groups{}",
            if tor.bootstrapped {
                "ready"
            } else {
                "not ready"
            },
            tor.percent,
            tor.progress,
            tor.isolation_groups,
            tor.last_error
                .as_deref()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default(),
        );
    }
    if let Some(socks) = &status.socks {
        println!(
            "  socks       {} connections ({} active), {} streams, {} resolves",
            socks.connections, socks.active, socks.streams, socks.resolves,
        );
    }
    if let Some(proxy) = &status.http_proxy {
        println!(
            "  http proxy  {} requests, {} CONNECTs, {} active",
            proxy.requests, proxy.connects, proxy.active,
        );
    }
    if let Some(dns) = &status.dns {
        println!(
            "  dns         {} queries, {} local, {} cached, {} forwarded to {}, {} refused",
            dns.queries,
            dns.local_answers,
            dns.cache_hits,
            dns.forwarded,
            dns.upstream.as_deref().unwrap_or("nothing"),
            dns.refused_acl + dns.rate_limited + dns.rebinding_refused,
        );
    }
    Ok(())
}
