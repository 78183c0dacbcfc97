//! Host networking the agent owns beyond the eBPF programs, and what every network service
//! shares: the stoppable accept-loop task and the HTTP server setup.

pub mod forwarding;
pub mod http;
pub mod service_task;
