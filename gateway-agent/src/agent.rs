//! `gateway-agent run`: bring the dataplane and the control socket up, wait for a signal, and
//! take everything down again.

use std::{path::Path, time::Instant};

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    config::Config,
    control::{
        protocol::AgentStatus,
        server::{ControlServer, ControlState},
    },
    dataplane::Dataplane,
    net, systemd,
};

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(cfg: Config, config_path: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(cfg, config_path))
}

async fn serve(cfg: Config, config_path: &Path) -> Result<()> {
    let started = Instant::now();
    // Install the handlers before attaching, so a signal during start-up is not lost.
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    net::forwarding::ensure_off()?;
    let dataplane = Dataplane::start(&cfg).context("starting the dataplane")?;
    let status = AgentStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        uptime_secs: 0,
        config: config_path.display().to_string(),
        outside_interface: cfg.interfaces.outside.clone(),
        inside_interface: cfg.interfaces.inside.clone(),
        inside_address: cfg.inside.cidr(),
        dataplane: dataplane.status(),
    };
    let control =
        match ControlServer::start(&cfg.control.socket, ControlState { status, started }).await {
            Ok(control) => control,
            Err(err) => {
                // Do not leave programs behind for an agent that never ran.
                if let Err(detach) = dataplane.shutdown() {
                    tracing::error!("detaching after a failed start: {detach:#}");
                }
                return Err(err);
            }
        };
    systemd::notify("READY=1");
    tracing::info!(
        inside = %cfg.interfaces.inside,
        outside = %cfg.interfaces.outside,
        control = %cfg.control.socket.display(),
        "gateway agent running"
    );

    let which = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!("{which}: stopping");
    systemd::notify("STOPPING=1");
    control.stop();
    dataplane.shutdown().context("detaching the dataplane")?;
    tracing::info!("stopped cleanly");
    Ok(())
}
