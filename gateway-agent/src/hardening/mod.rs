//! The host's own network knobs, set so that only the agent's sockets and programs decide what
//! crosses: no forwarding of any kind, ARP answered only for an interface's own address (and
//! never by the outside parent NIC), IPv6 off on the inside NIC and the parent NIC (the parent's
//! link-local address would carry its real MAC upstream). Set before the uplink exists, then
//! watched: anything that turns a knob back (Docker turning `ip_forward` on, say) is undone,
//! counted and warned about.

pub mod knobs;
pub mod service;

pub use service::SERVICE;
