//! The transparent Tor listener: inside TCP to any host but the gateway, steered here by the
//! dataplane's `inside_steer` program, leaves through Tor with no proxy settings on the client.
//!
//! The listener is bound to 127.0.0.1 with `IP_TRANSPARENT`, so only steered connections reach
//! it, and an accepted socket's local address is the client's original destination. Each
//! connection goes out through the `tor` connector in the client's isolation group; when the
//! stream cannot be opened (Tor not bootstrapped, the exit refuses) the client gets a reset at
//! once, never a timeout and never the clearnet. While the listener is closed the steering
//! slot is empty and the program drops: a client then times out, but nothing falls through to
//! another host socket.

pub mod config;
mod conn;
pub mod service;

pub use service::SERVICE;
