//! Types shared by the gateway's eBPF programs and its agent.
//!
//! Everything here is `#[repr(C)]` with explicit padding, because the same bytes are read by the
//! kernel-side programs and by userspace through the map syscalls. IPv4 addresses are stored as
//! the four bytes in network order reinterpreted as a native `u32`
//! (`u32::from_ne_bytes(addr.octets())`): the programs compare them straight from the packet
//! without swapping, and masks still apply bytewise.
#![no_std]

pub mod drop_reason;
pub mod event;
pub mod maps;

pub use drop_reason::DropReason;
