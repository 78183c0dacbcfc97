//! What the DHCP server tells the rest of the agent about leases. The DNS zone and the
//! dataplane's lease maps each implement [`LeaseSink`]; the DHCP server calls every sink right
//! after a lease is stored (bound) or removed, so names and maps follow leases at once.

use crate::mac::MacAddr;
use std::net::Ipv4Addr;

/// A lease as the other services see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The leased address.
    pub address: Ipv4Addr,
    /// The client's hardware address.
    pub mac: MacAddr,
    /// Option 61, if the client sent one.
    pub client_id: Option<Vec<u8>>,
    /// The sanitized, unique DNS label for the client, if it has one.
    pub hostname: Option<String>,
    /// Seconds since the Unix epoch when the lease ends.
    pub expires_unix: u64,
}

/// A change to the set of live leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A lease was acknowledged (new, renewed, or restored from the store at start).
    Bound(LeaseInfo),
    /// A lease ended (released, expired, declined); its name and map entries go.
    Removed(LeaseInfo),
}

/// Something that follows the live leases.
pub trait LeaseSink: Send + Sync {
    /// Applies one change. Must not block for long: it runs on the DHCP server's path.
    fn apply(&self, event: &LeaseEvent);
}
