//! The operator's status page (`[status_page]`, `https://127.0.0.1:8443/` by default): one
//! server-rendered HTML page of what the running services show (the uplink, Tor, each
//! service's counters, the clients, drops by reason over the last hour, the caches, the
//! registry, the mirror's upstreams), refreshed by a small inline script, and three admin
//! actions (a client's policy, a cache purge, a certificate revocation).
//!
//! Served over the toolkit's TLS 1.3 acceptor with the gateway PKI's server certificate. On
//! loopback a client certificate is optional (reading needs none; acting needs one named in
//! `status_page.admins`); on the inside address only admin certificates complete the
//! handshake. Nothing on it names what a client looked up or visited.

mod chart;
pub mod config;
mod csrf;
mod form;
pub mod model;
pub mod render;
mod server;
mod service;

pub use service::SERVICE;
