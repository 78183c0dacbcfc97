//! The gateway agent: loads the eBPF dataplane, serves the control socket, and (in later
//! issues) the inside services. The binary in `main.rs` is a thin CLI over these modules.

pub mod agent;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod dhcp;
pub mod lease_events;
pub mod logging;
pub mod systemd;
