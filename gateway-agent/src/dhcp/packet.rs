//! Decoding of client messages (BOOTREQUEST) from raw bytes, with every check a hostile LAN
//! needs. Our own parser rather than dhcproto's: its decoder has `debug_assert!`s that a crafted
//! option reaches (a panic in debug builds) and it silently drops every option after the first
//! one it cannot parse, so one bad hostname would cost the message type.

use crate::mac::MacAddr;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The fixed BOOTP header (236 bytes) plus the magic cookie.
pub(crate) const MIN_LEN: usize = 240;
/// Nothing larger fits an Ethernet frame unfragmented; fragments are dropped by the dataplane.
pub(crate) const MAX_LEN: usize = 1500;
/// RFC 2131 §3: 99.130.83.99.
pub(crate) const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

const SNAME: std::ops::Range<usize> = 44..108;
const FILE: std::ops::Range<usize> = 108..236;

/// Option codes the server reads or writes.
pub(crate) mod code {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS_SERVER: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const CLIENT_FQDN: u8 = 81;
    pub const RELAY_AGENT_INFO: u8 = 82;
    pub const DOMAIN_SEARCH: u8 = 119;
    pub const END: u8 = 255;
}

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

/// Why a packet was dropped before any DHCP logic saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Shorter than the fixed header and cookie.
    TooShort,
    /// Larger than [`MAX_LEN`].
    TooLong,
    /// Neither BOOTREQUEST nor BOOTREPLY.
    BadOp,
    /// A server message (BOOTREPLY, or OFFER/ACK/NAK) arriving from the inside.
    ServerReply,
    /// Not Ethernet (htype 1, hlen 6), or a chaddr no NIC has (zero, multicast).
    BadHardware,
    BadCookie,
    /// Truncated option, bad length for an option we read, bad overload value.
    BadOptions,
    /// No option 53: BOOTP clients are not served.
    NoMessageType,
    /// A message type a server does not act on (lease query and the like).
    UnsupportedMessage,
}

/// Decodes and validates one UDP payload received on the server port.
pub(crate) fn decode(bytes: &[u8]) -> Result<Request, Rejected> {
    if bytes.len() > MAX_LEN {
        return Err(Rejected::TooLong);
    }
    if bytes.len() < MIN_LEN {
        return Err(Rejected::TooShort);
    }
    match bytes[0] {
        1 => {}
        2 => return Err(Rejected::ServerReply),
        _ => return Err(Rejected::BadOp),
    }
    if bytes[1] != 1 || bytes[2] != 6 {
        return Err(Rejected::BadHardware);
    }
    // No client has an all-zero or a group (multicast, broadcast) address; a lease for one
    // would only ever be a spoof, and an ARP entry for it nonsense.
    let chaddr = MacAddr::new(field(bytes, 28));
    if chaddr.is_zero() || !chaddr.is_unicast() {
        return Err(Rejected::BadHardware);
    }
    if bytes[236..240] != MAGIC_COOKIE {
        return Err(Rejected::BadCookie);
    }

    let mut options = Options::default();
    parse_area(&bytes[MIN_LEN..], &mut options)?;
    // RFC 2131 §4.1: option 52 is only valid in the options field; with it, the file and then
    // the sname field carry more options (RFC 3396 concatenates across all three).
    let overload = match options.take(code::OVERLOAD) {
        None => 0,
        Some(value) if value.len() == 1 && (1..=3).contains(&value[0]) => value[0],
        Some(_) => return Err(Rejected::BadOptions),
    };
    if overload & 1 != 0 {
        parse_area(&bytes[FILE], &mut options)?;
    }
    if overload & 2 != 0 {
        parse_area(&bytes[SNAME], &mut options)?;
    }
    // A second option 52 inside file or sname would mean nothing.
    options.take(code::OVERLOAD);

    let message_type = match options.take(code::MESSAGE_TYPE) {
        None => return Err(Rejected::NoMessageType),
        Some(value) if value.len() != 1 => return Err(Rejected::BadOptions),
        Some(value) => match value[0] {
            1 => MessageType::Discover,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            2 | 5 | 6 => return Err(Rejected::ServerReply),
            _ => return Err(Rejected::UnsupportedMessage),
        },
    };
    let client_id = match options.take(code::CLIENT_ID) {
        // RFC 2132 §9.14: at least a type and one byte. Longer than one option's worth is
        // legal with RFC 3396 but no real identifier is; it would only bloat the store.
        Some(value) if !(2..=255).contains(&value.len()) => return Err(Rejected::BadOptions),
        other => other,
    };
    let max_message_size = match options.take(code::MAX_MESSAGE_SIZE) {
        None => None,
        Some(value) => Some(u16::from_be_bytes(exact(&value)?)),
    };
    // A broken FQDN option costs the client its name, not its address.
    let fqdn = options
        .take(code::CLIENT_FQDN)
        .filter(|value| value.len() >= 3)
        .map(|value| Fqdn {
            flags: value[0],
            name: value[3..].to_vec(),
        });

    Ok(Request {
        message_type,
        xid: u32::from_be_bytes(field(bytes, 4)),
        flags: u16::from_be_bytes(field(bytes, 10)),
        ciaddr: Ipv4Addr::from(field::<4>(bytes, 12)),
        giaddr: Ipv4Addr::from(field::<4>(bytes, 24)),
        chaddr,
        requested_ip: address_option(&mut options, code::REQUESTED_IP)?,
        server_id: address_option(&mut options, code::SERVER_ID)?,
        client_id,
        hostname: options.take(code::HOSTNAME).filter(|v| !v.is_empty()),
        fqdn,
        max_message_size,
        relay_agent_info: options.take(code::RELAY_AGENT_INFO),
    })
}

/// Options by code; repeated codes concatenated in order (RFC 3396).
#[derive(Default)]
struct Options(BTreeMap<u8, Vec<u8>>);

impl Options {
    fn take(&mut self, code: u8) -> Option<Vec<u8>> {
        self.0.remove(&code)
    }
}

/// Reads the options in one area (options field, file or sname) into `options`.
fn parse_area(area: &[u8], options: &mut Options) -> Result<(), Rejected> {
    let mut at = 0;
    while let Some(&code) = area.get(at) {
        match code {
            code::PAD => at += 1,
            code::END => return Ok(()),
            _ => {
                let len = usize::from(*area.get(at + 1).ok_or(Rejected::BadOptions)?);
                let value = area.get(at + 2..at + 2 + len).ok_or(Rejected::BadOptions)?;
                options.0.entry(code).or_default().extend_from_slice(value);
                at += 2 + len;
            }
        }
    }
    // Clients that omit END are common enough not to punish.
    Ok(())
}

fn address_option(options: &mut Options, code: u8) -> Result<Option<Ipv4Addr>, Rejected> {
    options
        .take(code)
        .map(|value| exact::<4>(&value).map(Ipv4Addr::from))
        .transpose()
}

fn exact<const N: usize>(value: &[u8]) -> Result<[u8; N], Rejected> {
    value.try_into().map_err(|_| Rejected::BadOptions)
}

/// A fixed header field; `bytes` is at least [`MIN_LEN`] long, checked by the caller.
fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}
