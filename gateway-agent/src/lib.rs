//! The gateway agent: the uplink, the eBPF dataplane, the inside services (DHCP, DNS, HTTP proxy), the
//! control socket and the metrics endpoint. The binary in `main.rs` is a thin CLI over these modules.

pub mod agent;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod control;
pub mod dataplane;
pub mod dhcp;
pub mod dns;
pub mod egress;
pub mod hardening;
pub mod http_proxy;
pub mod lease_events;
pub mod logging;
pub mod mac;
pub mod metrics;
pub mod mirror;
pub mod net;
pub mod pki;
pub mod ratelimit;
pub mod registry;
pub mod service;
pub mod socks;
pub mod status_page;
pub mod systemd;
pub mod tor;
pub mod transparent;
pub mod uplink;
