//! Host networking the agent owns beyond the eBPF programs.

pub mod forwarding;
pub mod listener;
pub mod service_task;
