//! What every network service shares: the listener (accept loop, inside check, limits,
//! bounded stop), the stoppable task under it, the TLS acceptor, the HTTP server setup,
//! interfaces by name, the transparent sockets steered traffic lands on.

pub mod http;
pub mod interface;
pub mod listener;
pub mod service_task;
pub mod tls;
pub mod transparent;
