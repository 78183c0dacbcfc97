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
    Ok(())
}
