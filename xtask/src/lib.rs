//! Tasks behind `cargo xtask`: installing dependencies, building the eBPF object and the agent,
//! and the network-namespace lab the gateway runs and is tested in.

pub mod bench;
pub mod build;
pub mod deps;
pub mod hints;
pub mod lab;
pub mod package;
pub mod process;
