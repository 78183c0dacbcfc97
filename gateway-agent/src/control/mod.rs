//! The control socket: a unix socket on which the running agent answers the CLI's questions
//! about live state. One JSON request line in, one JSON response line out.

pub mod client;
pub mod config;
pub mod protocol;
pub mod server;
