//! The server's counters.

use serde::{Deserialize, Serialize};

use super::packet::Rejected;

/// What the inside DHCP server has seen and done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpStats {
    /// Datagrams read from the socket.
    pub received: u64,
    /// Dropped as malformed; the sum of the next eight counters.
    pub malformed: u64,
    pub too_short: u64,
    pub too_long: u64,
    /// op neither BOOTREQUEST nor BOOTREPLY.
    pub bad_op: u64,
    /// Not Ethernet (htype 1, hlen 6), or a zero or multicast chaddr.
    pub bad_hardware: u64,
    pub bad_cookie: u64,
    /// Truncated options, bad lengths, bad option overload.
    pub bad_options: u64,
    /// BOOTP without DHCP (no option 53).
    pub no_message_type: u64,
    /// A DHCP message type the server does not act on.
    pub unsupported: u64,
    /// A server message (BOOTREPLY, OFFER, ACK, NAK) from the inside: a rogue DHCP server.
    pub server_reply_dropped: u64,
    /// Over the per-MAC rate.
    pub rate_limited: u64,
    /// Relayed (giaddr set) while `dhcp.accept_relayed` is off.
    pub relayed_refused: u64,
    /// DISCOVERs that found no free address.
    pub pool_exhausted: u64,
    pub discovers: u64,
    pub requests: u64,
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    pub releases: u64,
    pub declines: u64,
    pub informs: u64,
    /// Messages for another server, or about a lease the client does not hold.
    pub ignored: u64,
    /// Leases that ran out.
    pub expired: u64,
    /// Lease store writes that failed (the reply was not sent).
    pub store_errors: u64,
    /// Replies the socket would not send.
    pub send_errors: u64,
    /// Bugs caught instead of crashing the server.
    pub internal_errors: u64,
    /// Bound leases now.
    pub bound: u64,
    /// Addresses in the dynamic pool.
    pub pool_size: u64,
}

impl DhcpStats {
    /// Counts a packet dropped by the decoder.
    pub(crate) fn count_rejected(&mut self, rejected: Rejected) {
        let counter = match rejected {
            Rejected::WrongDirection => {
                self.server_reply_dropped += 1;
                return;
            }
            Rejected::TooShort => &mut self.too_short,
            Rejected::TooLong => &mut self.too_long,
            Rejected::BadOp => &mut self.bad_op,
            Rejected::BadHardware => &mut self.bad_hardware,
            Rejected::BadCookie => &mut self.bad_cookie,
            Rejected::BadOptions => &mut self.bad_options,
            Rejected::NoMessageType => &mut self.no_message_type,
            Rejected::UnsupportedMessage => &mut self.unsupported,
        };
        *counter += 1;
        self.malformed += 1;
    }
}
