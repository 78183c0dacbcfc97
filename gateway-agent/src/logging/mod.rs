//! Logging: `tracing` to stderr (journald adds timestamps under systemd). Records from the
//! `log` crate, which is what aya-log emits for the eBPF programs, are forwarded into it.
//! Warnings that repeat are folded ([`fold`]); on a terminal the lines go over the live
//! status's bar ([`crate::console`]).

pub mod fold;

use std::sync::Arc;

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

use crate::console::{Console, Style};

/// Installs the subscriber. `RUST_LOG` overrides `level` when set. With a live console the
/// lines are `warn` and above unless `RUST_LOG` says otherwise: the live status says what
/// the `info` lines would.
pub fn init(level: &str, console: &Arc<Console>) {
    let live = console.style() == Style::Live;
    let level = if live && level == "info" {
        "warn"
    } else {
        level
    };
    let filter = EnvFilter::try_from_default_env()
        // hickory logs every answer with the client's address and name: silence its chatter
        // unless RUST_LOG asks for it (privacy: no per-query logs by default).
        .or_else(|_| EnvFilter::try_new(format!("{level},{}", crate::dns::QUIET_HICKORY)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = console.clone();
    // Colour only on a terminal: journald and log files would keep the escape codes.
    let lines = fmt::layer()
        .with_ansi(live)
        .with_writer(move || writer.log_writer());
    // try_init: a second call (tests) keeps the first subscriber instead of panicking.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fold::FoldLayer::new())
        .with(lines)
        .try_init();
}
