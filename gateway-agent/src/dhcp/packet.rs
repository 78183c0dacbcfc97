//! The server's view of a client message (BOOTREQUEST): the fields and options the DHCP logic
//! acts on, taken from a packet [`wire::decode`] has validated (framing, hardware, lengths,
//! message type; see there why that decoder and not dhcproto's alone).

use std::net::Ipv4Addr;

use crate::mac::MacAddr;

use super::wire::{self, Packet, Sender};

pub(crate) use super::wire::{code, Rejected, MAGIC_COOKIE, MAX_LEN};

/// The client messages the server acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageType {
    Discover,
    Request,
    Decline,
    Release,
    Inform,
}

impl MessageType {
    /// The name used in logs, e.g. `DHCPDISCOVER`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            MessageType::Discover => "DHCPDISCOVER",
            MessageType::Request => "DHCPREQUEST",
            MessageType::Decline => "DHCPDECLINE",
            MessageType::Release => "DHCPRELEASE",
            MessageType::Inform => "DHCPINFORM",
        }
    }
}

/// Option 81 as sent (RFC 4702): flags and the raw name bytes (wire or ASCII encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fqdn {
    pub flags: u8,
    pub name: Vec<u8>,
}

impl Fqdn {
    /// RFC 4702 §2.1: E set means the name is in DNS wire format.
    pub(crate) const FLAG_E: u8 = 0x04;
    /// S: the server should do the A update.
    pub(crate) const FLAG_S: u8 = 0x01;
    /// O: the server overrode the client's S.
    pub(crate) const FLAG_O: u8 = 0x02;
}

/// A decoded, validated client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub message_type: MessageType,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: MacAddr,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    /// Option 61, raw (type byte included).
    pub client_id: Option<Vec<u8>>,
    /// Option 12, raw: anything at all until the hostname module has looked at it.
    pub hostname: Option<Vec<u8>>,
    pub fqdn: Option<Fqdn>,
    /// Option 57.
    pub max_message_size: Option<u16>,
    /// Option 82, echoed to a relay.
    pub relay_agent_info: Option<Vec<u8>>,
}

impl Request {
    /// The BOOTP broadcast flag (RFC 2131 §4.1): the client cannot receive unicast yet.
    pub(crate) fn broadcast(&self) -> bool {
        self.flags & 0x8000 != 0
    }
}

/// Decodes and validates one UDP payload received on the server port.
pub(crate) fn decode(bytes: &[u8]) -> Result<Request, Rejected> {
    let packet = wire::decode(bytes, Sender::Client)?;
    let message_type = match u8::from(packet.message_type()) {
        1 => MessageType::Discover,
        3 => MessageType::Request,
        4 => MessageType::Decline,
        7 => MessageType::Release,
        8 => MessageType::Inform,
        // wire::decode lets only client messages through.
        _ => return Err(Rejected::UnsupportedMessage),
    };
    let message = packet.message();
    let owned = |code| packet.option(code).map(<[u8]>::to_vec);
    // A broken FQDN option costs the client its name, not its address.
    let fqdn = packet
        .option(code::CLIENT_FQDN)
        .filter(|value| value.len() >= 3)
        .map(|value| Fqdn {
            flags: value[0],
            name: value[3..].to_vec(),
        });
    Ok(Request {
        message_type,
        xid: message.xid(),
        flags: message.flags().into(),
        ciaddr: message.ciaddr(),
        giaddr: message.giaddr(),
        chaddr: packet.chaddr(),
        requested_ip: address(&packet, code::REQUESTED_IP),
        server_id: address(&packet, code::SERVER_ID),
        client_id: owned(code::CLIENT_ID),
        hostname: owned(code::HOSTNAME).filter(|v| !v.is_empty()),
        fqdn,
        // wire::decode checked the length.
        max_message_size: packet
            .option(code::MAX_MESSAGE_SIZE)
            .and_then(|value| value.try_into().ok())
            .map(u16::from_be_bytes),
        relay_agent_info: owned(code::RELAY_AGENT_INFO),
    })
}

/// An address option (4 bytes, checked by wire::decode).
fn address(packet: &Packet, code: u8) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = packet.option(code)?.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}
