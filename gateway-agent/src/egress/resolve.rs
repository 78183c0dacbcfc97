//! The resolver interface: how a name the gateway does not serve itself gets answered, for the
//! DNS server's forwarding and for the `direct` connector's targets alike. It lives with the
//! connectors because a lookup leaves the gateway just as a stream does: through Tor
//! ([`crate::tor::TorUpstream`]) or in clear text ([`crate::dns::UplinkUpstream`]).
//!
//! It works at the level of a question (name, type) and its outcome, not raw DNS messages, so
//! that resolvers that are not DNS servers (Tor's `resolve`/`resolve_ptr`) implement it too.
//! Caching, the rebinding filter and the reply to the client stay in the DNS module.

use futures::future::BoxFuture;
use hickory_proto::rr::{Name, Record, RecordType};

/// What an upstream said about a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAnswer {
    /// The records answering the question, a CNAME chain leading to them included. Never
    /// empty: an answer without records is [`UpstreamAnswer::NoData`].
    Records(Vec<Record>),
    /// The name exists but has no records of the type (RFC 2308 NODATA). `soa` is the
    /// authority's SOA when the upstream gave one; it drives negative caching.
    NoData { soa: Option<Record> },
    /// The name does not exist (NXDOMAIN). `soa` as for [`UpstreamAnswer::NoData`].
    NxDomain { soa: Option<Record> },
}

/// Why an upstream gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// No upstream server is known yet (e.g. the outside DHCP lease has not named any).
    #[error("no upstream servers known")]
    NoServers,
    /// No usable reply before the deadline.
    #[error("upstream timed out")]
    Timeout,
    /// The upstream failed (SERVFAIL, REFUSED, a transport error, a malformed reply).
    #[error("upstream failed: {0}")]
    Failed(String),
    /// The upstream cannot answer this type at all (a Tor resolver asked for MX); the client
    /// gets NOTIMP rather than a misleading SERVFAIL.
    #[error("record type {0} not supported by this upstream")]
    Unsupported(RecordType),
}

/// A resolver for names the gateway does not serve itself.
pub trait Upstream: Send + Sync {
    /// Resolves `name` (fully qualified) for `rtype`, class IN.
    fn lookup(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> BoxFuture<'_, Result<UpstreamAnswer, UpstreamError>>;

    /// A short name for logs and stats, e.g. `uplink` or `tor`.
    fn name(&self) -> &'static str;

    /// Whether the TTLs in the answers mean anything. An upstream that has no notion of TTL
    /// (Tor's resolver) returns false and its answers are cached for the configured
    /// `default_ttl`, negative ones included.
    fn gives_ttls(&self) -> bool {
        true
    }
}
