//! Host networking the agent owns beyond the eBPF programs, and what every network service
//! shares: the stoppable accept-loop task, the TLS acceptor, the HTTP server setup.

pub mod forwarding;
pub mod http;
pub mod service_task;
pub mod tls;
