//! Why the dataplane dropped a packet: one named counter per reason in the `DROPS` map.

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident = $value:literal => $name:literal,)+) => {
        /// Why a packet was dropped. The value is the index of its counter in `DROPS`.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant = $value,)+
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)+];

            /// The stable name shown by the CLI and in metrics.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)+
                }
            }

            /// The reason stored at counter `index`, if any.
            pub const fn from_index(index: u32) -> Option<DropReason> {
                match index {
                    $($value => Some(DropReason::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

drop_reasons! {
    /// The frame ends before a header it announces (runt or truncated frame).
    Truncated = 0 => "truncated",
    /// An 802.1Q/802.1ad tagged frame: the inside LAN is untagged.
    VlanTagged = 1 => "vlan_tagged",
    /// IPv6 is not routed until it is designed.
    Ipv6 = 2 => "ipv6",
    /// An ethertype other than ARP, IPv4, IPv6 or VLAN.
    UnknownEthertype = 3 => "unknown_ethertype",
    /// An IPv4 header with a bad version, header length or total length.
    MalformedIpv4 = 4 => "malformed_ipv4",
    /// An IPv4 fragment: nothing on the inside needs them, and they hide ports.
    Fragment = 5 => "fragment",
    /// IPv4 addressed to something other than the gateway.
    ForeignDestination = 6 => "foreign_destination",
    /// To the gateway, but not to an open service port.
    PortClosed = 7 => "port_closed",
    /// An IP protocol (or ICMP type) the gateway does not accept from the inside.
    ProtocolNotAllowed = 8 => "protocol_not_allowed",
    /// A DHCP server reply coming from an inside client (a rogue DHCP server).
    DhcpServerReply = 9 => "dhcp_server_reply",
    /// Leaving by the outside interface with an inside source address: a leak.
    InsideSourceEgress = 10 => "inside_source_egress",
    /// The agent has not filled the config map yet, so nothing is known to be safe.
    NotConfigured = 11 => "not_configured",
    /// Arriving on the outside uninvited: a TCP SYN, a segment or datagram to a service port,
    /// UDP that answers none of the agent's connected sockets, ICMP other than errors and
    /// echo replies.
    OutsideUnsolicited = 12 => "outside_unsolicited",
    /// Arriving on the outside addressed to the inside subnet: the gateway never routes.
    OutsideToInside = 13 => "outside_to_inside",
    /// IPv4 from the inside whose source is not the address leased to the frame's MAC (IP
    /// source guard).
    SpoofedSource = 14 => "spoofed_source",
    /// ARP whose sender MAC is not the frame's, or whose sender address is neither that MAC's
    /// lease nor 0.0.0.0 (ARP guard).
    SpoofedArp = 15 => "spoofed_arp",
    /// A client's DHCP request whose `chaddr` is not the frame's source MAC (pool starvation).
    ChaddrMismatch = 16 => "chaddr_mismatch",
    /// A relayed DHCP request while `dhcp.accept_relayed` is off.
    RelayRefused = 17 => "relay_refused",
    /// Not allowed by the client's policy (`proxy-only`: only the gateway's ports; `blocked`:
    /// DHCP only).
    Policy = 18 => "policy",
}

/// Number of drop reasons: the size of the `DROPS` array.
pub const DROP_REASON_COUNT: u32 = DropReason::ALL.len() as u32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_round_trip() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*reason as u32, i as u32);
            assert_eq!(DropReason::from_index(i as u32), Some(*reason));
        }
        assert_eq!(DropReason::from_index(DROP_REASON_COUNT), None);
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in DropReason::ALL.iter().enumerate() {
            for b in &DropReason::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
