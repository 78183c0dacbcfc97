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
    // Each running service's own lines, in the service list's order.
    for line in &status.summary {
        println!("  {:<11} {}", line.service, line.line);
    }
    Ok(())
}
