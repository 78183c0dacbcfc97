//! Logging: `tracing` to stderr (journald adds timestamps under systemd). Records from the
//! `log` crate, which is what aya-log emits for the eBPF programs, are forwarded into it.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the subscriber. `RUST_LOG` overrides `level` when set.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        // hickory logs every answer with the client's address and name: silence its chatter
        // unless RUST_LOG asks for it (privacy: no per-query logs by default).
        .or_else(|_| EnvFilter::try_new(format!("{level},{}", crate::dns::QUIET_HICKORY)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // try_init: a second call (tests) keeps the first subscriber instead of panicking.
    // Colour only on a terminal: journald and log files would keep the escape codes.
    let _ = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
