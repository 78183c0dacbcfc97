//! `gateway-agent run`: start the service list in order, wait for a signal, and stop it in
//! reverse (the dataplane last of all: it keeps the inside closed until the very end).
//!
//! The list is the one place that names the services. Its order is the fail-closed order the
//! README documents: the uplink's macvlan first (the egress guard attaches to it), the
//! dataplane before anything that answers the inside, DNS before DHCP (restored leases go into
//! the zone), the status page, the control socket and the metrics endpoint last, over
//! everything before them.

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    config::Config,
    console::{self, Console},
    control, dataplane, dhcp, dns, hardening, http_proxy, metrics, mirror, registry,
    service::{Entry, Handles, Running, STOP_BOUND},
    socks, status_page, systemd, tor, transparent, uplink,
};

/// Every service, in start order; stopped in reverse.
pub const SERVICES: [Entry; 14] = [
    hardening::SERVICE,
    uplink::SERVICE,
    dataplane::SERVICE,
    tor::SERVICE,
    dns::SERVICE,
    dhcp::SERVICE,
    socks::SERVICE,
    http_proxy::SERVICE,
    transparent::SERVICE,
    registry::SERVICE,
    mirror::SERVICE,
    status_page::SERVICE,
    control::server::SERVICE,
    metrics::SERVICE,
];

/// Runs the agent until SIGTERM or SIGINT, showing its start on `console`.
pub fn run(cfg: Config, config_path: &Path, console: Arc<Console>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(cfg, config_path, console))
}

async fn serve(cfg: Config, config_path: &Path, console: Arc<Console>) -> Result<()> {
    // Install the handlers before attaching, so a signal during start-up is not lost.
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    let cfg = Arc::new(cfg);
    let mut running = Vec::new();
    let started = start(cfg.clone(), config_path, &console, &mut running).await;
    let follow = match started {
        Ok(follow) => follow,
        Err(err) => {
            // Close the sockets and release the uplink of an agent that never ran; the dataplane's
            // programs stay attached (fail closed).
            if let Err(stop) = stop(running).await {
                tracing::error!("stopping after a failed start: {stop:#}");
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
    follow.abort();
    if console.style() == console::Style::Live {
        console.set_bar(None);
        console.say(&format!("{which}: stopping"));
    }
    tracing::info!("{which}: stopping");
    systemd::notify("STOPPING=1");
    stop(running).await?;
    if console.style() == console::Style::Live {
        console.say("stopped cleanly");
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Starts the list in order, pushing each started service onto `running` and saying so on
/// `console` (a service's start returns once its sockets are bound); then the addresses
/// clients should use. Returns the task that follows the uplink and Tor on the console.
async fn start(
    cfg: Arc<Config>,
    config_path: &Path,
    console: &Arc<Console>,
    running: &mut Vec<Running>,
) -> Result<tokio::task::JoinHandle<()>> {
    let known = SERVICES.iter().map(|entry| entry.name).collect();
    let mut handles = Handles::new(cfg.clone(), config_path.to_path_buf(), known);
    let mut names = Vec::new();
    for entry in SERVICES {
        if let Some(service) = (entry.start)(&mut handles).await? {
            handles.views.push(service.view());
            running.push(service);
            names.push(entry.name);
            let listen = console::listen_of(&cfg, entry.name);
            console.say(&console::started_line(entry.name, listen.as_deref()));
        } else {
            tracing::info!(service = entry.name, "not started (off in the config)");
        }
    }
    for line in console::client_addresses(&cfg, &names) {
        console.say(&line);
    }
    let uplink = handles.uplink.as_ref().map(|uplink| uplink.status.clone());
    Ok(tokio::spawn(console::follow(
        console.clone(),
        uplink,
        handles.tor.clone(),
    )))
}

/// Stops `running` in reverse start order (those marked [`Running::stopped_last`] after all
/// the others), each within [`STOP_BOUND`]; the first error is returned after every service
/// had its turn.
async fn stop(running: Vec<Running>) -> Result<()> {
    let (last, first): (Vec<_>, Vec<_>) = running.into_iter().partition(Running::is_stopped_last);
    let mut first_error = None;
    for service in first.into_iter().rev().chain(last.into_iter().rev()) {
        if let Err(err) = service.stop_within(STOP_BOUND).await {
            tracing::error!("{err:#}");
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}
