//! Every outbound stream of the agent (Tor's own relay connections aside) goes through one
//! [`Connector`], chosen per service by config: `tor` (the default) or `direct` (clear text
//! through the outside interface, only ever an explicit choice). A connector that cannot
//! serve refuses; nothing ever falls back from `tor` to `direct`. Name lookups that leave the
//! gateway go through an [`Upstream`] in the same way.
//!
//! This module is the vocabulary the carriers implement and the services use; it depends on
//! neither. The `tor` connector and forwarder live with the Tor client (`crate::tor`), the
//! clear-text forwarder with the DNS server (`crate::dns`).

pub mod config;
mod direct;
mod relay;
mod resolve;

use std::{fmt, net::IpAddr};

pub use config::Egress;
pub use direct::{DirectConnector, DirectSettings};
pub use relay::relay;
pub use resolve::{Upstream, UpstreamAnswer, UpstreamError};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to the target, whatever carries it.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// An owned outbound stream.
pub type BoxStream = Box<dyn Stream>;

/// Where a stream goes: a name (resolved by the connector, so over Tor names never touch a
/// local resolver) or an address, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host name or address.
    pub host: Host,
    /// TCP port.
    pub port: u16,
}

/// The host part of a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name (or a `.onion` address).
    Name(String),
    /// An IP address.
    Ip(IpAddr),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Name(name) => write!(f, "{name}:{}", self.port),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
        }
    }
}

/// Which streams may share a circuit. Streams with different keys never share one (Tor's
/// stream isolation); `direct` ignores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Isolation(pub String);

impl Isolation {
    /// Streams of one inside client.
    pub fn client(addr: IpAddr) -> Self {
        Isolation(format!("client:{addr}"))
    }
}

/// Why a stream could not be opened. Each maps to a clear answer for the inside client
/// (a SOCKS reply code, an HTTP status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The connector is not ready (Tor not bootstrapped, no uplink): fail closed.
    #[error("egress not ready: {0}")]
    NotReady(String),
    /// Policy forbids this target (a private address over `direct`, say).
    #[error("refused by policy: {0}")]
    Refused(String),
    /// The name did not resolve.
    #[error("host not found: {0}")]
    NotFound(String),
    /// The target did not answer or refused the connection.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

/// Opens outbound streams.
pub trait Connector: Send + Sync {
    /// Opens a stream to `target` under `isolation`.
    fn connect<'a>(
        &'a self,
        target: &'a Target,
        isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<BoxStream, EgressError>>;

    /// `tor` or `direct`, for logs and status.
    fn name(&self) -> &'static str;
}

/// Whether `name` is an onion service address (`….onion`, any case, optional root dot).
pub(crate) fn is_onion(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.len() > ".onion".len()
        && name
            .get(name.len() - ".onion".len()..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(".onion"))
}

#[cfg(test)]
mod tests {
    use super::is_onion;

    #[test]
    fn onion_names() {
        assert!(is_onion("abcdefghijklmnop.onion"));
        assert!(is_onion("sub.abcdefghijklmnop.ONION."));
        assert!(!is_onion(".onion"));
        assert!(!is_onion("onion"));
        assert!(!is_onion("example.com"));
        assert!(!is_onion("notonion"));
    }
}
