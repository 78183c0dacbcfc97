//! Forwards the eBPF programs' aya-log records into `tracing` (through the `log` bridge that
//! `tracing-subscriber` installs).

use anyhow::{Context, Result};
use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::{io::unix::AsyncFd, task::JoinHandle};

/// Starts draining the log ring buffer. The logger must live as long as the programs: dropping
/// it closes the map's fd.
pub fn spawn(ebpf: &mut Ebpf) -> Result<JoinHandle<()>> {
    let logger = EbpfLogger::init(ebpf).context("initialising aya-log")?;
    // SAFETY: the logger owns the ring buffer's fd for as long as the AsyncFd owns the logger,
    // and as_raw_fd always returns that same fd.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
        .context("registering the aya-log ring buffer with tokio")?;
    Ok(tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(guard) => guard,
                Err(err) => {
                    tracing::error!("aya-log ring buffer: {err}");
                    return;
                }
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}
