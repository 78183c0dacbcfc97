//! The one decoder of DHCPv4 bytes, for both ends the gateway plays: the inside server reads
//! client messages with it (`dhcp::packet`), the uplink client reads the upstream server's
//! replies (`uplink::client_socket`). Both peers are untrusted, so both get the same checks.
//!
//! Two layers:
//! - The framing is ours: lengths, op, Ethernet hardware, the cookie, every option's length
//!   field in the options, `file` and `sname` areas (option 52), repeated codes concatenated
//!   across all of them (RFC 3396), and exact lengths for the options either side acts on.
//!   A packet that fails any of these is refused with a [`Rejected`] reason.
//! - The typed view is dhcproto's [`Message`]: its header decoder, and its option decoder run
//!   on one option at a time. An option dhcproto cannot decode is left out of the view alone;
//!   dhcproto's own message decoder would stop at it and drop every option after it. Lengths
//!   that reach a `debug_assert!` (or an underflow) inside dhcproto never get there: that is
//!   what let a hostile server crash a debug build before, and needed `catch_unwind`.
//!
//! The raw option bytes stay available ([`Packet::option`]), because dhcproto's typed form
//! loses what the server must see as sent: host names that are not UTF-8, ASCII-encoded FQDNs,
//! option 82 byte for byte.

use std::collections::BTreeMap;

use dhcproto::v4::{Decodable, Decoder, DhcpOption, Message, MessageType, OptionCode};

use crate::mac::MacAddr;

/// The fixed BOOTP header (236 bytes) plus the magic cookie.
pub const MIN_LEN: usize = 240;
/// Nothing larger fits an Ethernet frame unfragmented; the inside dataplane drops fragments,
/// and a DHCP exchange has no reason to need them on the uplink either.
pub const MAX_LEN: usize = 1500;
/// RFC 2131 §3: 99.130.83.99.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

const SNAME: std::ops::Range<usize> = 44..108;
const FILE: std::ops::Range<usize> = 108..236;

/// Option codes the gateway reads or writes.
pub mod code {
    #![allow(missing_docs)]
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

/// DISCOVER, REQUEST, DECLINE, RELEASE, INFORM.
const CLIENT_MESSAGES: [u8; 5] = [1, 3, 4, 7, 8];
/// OFFER, ACK, NAK.
const SERVER_MESSAGES: [u8; 3] = [2, 5, 6];

/// Who sent a packet, which fixes the op it must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A client: BOOTREQUEST (what the inside server reads).
    Client,
    /// A server: BOOTREPLY (what the uplink client reads).
    Server,
}

/// Why a packet was dropped before any DHCP logic saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Shorter than the fixed header and cookie.
    TooShort,
    /// Larger than [`MAX_LEN`].
    TooLong,
    /// Neither BOOTREQUEST nor BOOTREPLY.
    BadOp,
    /// Going the wrong way: a server message (BOOTREPLY, or OFFER/ACK/NAK) where a client's
    /// was expected, or the reverse.
    WrongDirection,
    /// Not Ethernet (htype 1, hlen 6), or a chaddr no NIC has (zero, multicast).
    BadHardware,
    /// Not DHCP's magic cookie after the header.
    BadCookie,
    /// Truncated option, bad length for an option we read, bad overload value.
    BadOptions,
    /// No option 53: BOOTP is not served.
    NoMessageType,
    /// A message type the reader does not act on (lease query and the like).
    UnsupportedMessage,
}

/// A decoded, validated DHCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    message: Message,
    chaddr: MacAddr,
    message_type: u8,
    /// Every option's value as sent, repeats concatenated, PAD and END left out.
    options: BTreeMap<u8, Vec<u8>>,
}

impl Packet {
    /// dhcproto's view: the header and every option it could decode.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The view, for whoever keeps it (the uplink client's state machine).
    pub fn into_message(self) -> Message {
        self.message
    }

    /// The client hardware address: unicast, not zero.
    pub fn chaddr(&self) -> MacAddr {
        self.chaddr
    }

    /// Option 53: one the sender may send (DISCOVER … INFORM from a client, OFFER, ACK or
    /// NAK from a server).
    pub fn message_type(&self) -> MessageType {
        MessageType::from(self.message_type)
    }

    /// The value of option `code` as sent (RFC 3396 concatenated), if present.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options.get(&code).map(Vec::as_slice)
    }
}

/// Decodes and validates one UDP payload from `sender`.
pub fn decode(bytes: &[u8], sender: Sender) -> Result<Packet, Rejected> {
    if bytes.len() > MAX_LEN {
        return Err(Rejected::TooLong);
    }
    if bytes.len() < MIN_LEN {
        return Err(Rejected::TooShort);
    }
    let expected_op = match sender {
        Sender::Client => 1,
        Sender::Server => 2,
    };
    match bytes[0] {
        op if op == expected_op => {}
        1 | 2 => return Err(Rejected::WrongDirection),
        _ => return Err(Rejected::BadOp),
    }
    if bytes[1] != 1 || bytes[2] != 6 {
        return Err(Rejected::BadHardware);
    }
    // No NIC has an all-zero or a group (multicast, broadcast) address: a lease for one would
    // only ever be a spoof, an ARP entry for it nonsense, and no reply is addressed to one.
    let chaddr = MacAddr::from_slice(&bytes[28..34]).ok_or(Rejected::BadHardware)?;
    if chaddr.is_zero() || !chaddr.is_unicast() {
        return Err(Rejected::BadHardware);
    }
    if bytes[236..240] != MAGIC_COOKIE {
        return Err(Rejected::BadCookie);
    }

    let mut options = BTreeMap::new();
    parse_area(&bytes[MIN_LEN..], &mut options)?;
    // RFC 2131 §4.1: option 52 is only valid in the options field; with it, the file and then
    // the sname field carry more options (RFC 3396 concatenates across all three).
    let overload = match options.remove(&code::OVERLOAD) {
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
    options.remove(&code::OVERLOAD);
    let message_type = match options.get(&code::MESSAGE_TYPE).map(Vec::as_slice) {
        None => return Err(Rejected::NoMessageType),
        Some(&[kind]) => kind,
        Some(_) => return Err(Rejected::BadOptions),
    };
    // RFC 2131 table 2: what each side sends. A peer that sends the other side's messages
    // is confused or probing; anything else (lease query, FORCERENEW) neither side acts on.
    let (ours, theirs): (&[u8], &[u8]) = match sender {
        Sender::Client => (&CLIENT_MESSAGES, &SERVER_MESSAGES),
        Sender::Server => (&SERVER_MESSAGES, &CLIENT_MESSAGES),
    };
    if theirs.contains(&message_type) {
        return Err(Rejected::WrongDirection);
    }
    if !ours.contains(&message_type) {
        return Err(Rejected::UnsupportedMessage);
    }
    check_lengths(&options)?;

    let mut message = header(bytes)?;
    if overload & 1 != 0 {
        message.clear_fname();
    }
    if overload & 2 != 0 {
        message.clear_sname();
    }
    for (&code, value) in &options {
        if let Some(option) = typed(code, value) {
            message.opts_mut().insert(option);
        }
    }
    Ok(Packet {
        message,
        chaddr,
        message_type,
        options,
    })
}

/// Reads the options in one area (options field, file or sname) into `options`.
fn parse_area(area: &[u8], options: &mut BTreeMap<u8, Vec<u8>>) -> Result<(), Rejected> {
    let mut at = 0;
    while let Some(&code) = area.get(at) {
        match code {
            code::PAD => at += 1,
            code::END => return Ok(()),
            _ => {
                let len = usize::from(*area.get(at + 1).ok_or(Rejected::BadOptions)?);
                let value = area.get(at + 2..at + 2 + len).ok_or(Rejected::BadOptions)?;
                options.entry(code).or_default().extend_from_slice(value);
                at += 2 + len;
            }
        }
    }
    // Peers that omit END are common enough not to punish.
    Ok(())
}

/// The options the gateway acts on, at the lengths they must have.
fn check_lengths(options: &BTreeMap<u8, Vec<u8>>) -> Result<(), Rejected> {
    for (&code, value) in options {
        let fits = match code {
            code::REQUESTED_IP | code::SERVER_ID => value.len() == 4,
            code::MAX_MESSAGE_SIZE => value.len() == 2,
            // RFC 2132 §9.14: at least a type and one byte. Longer than one option's worth is
            // legal with RFC 3396 but no real identifier is; it would only bloat the store.
            code::CLIENT_ID => (2..=255).contains(&value.len()),
            _ => true,
        };
        if !fits {
            return Err(Rejected::BadOptions);
        }
    }
    Ok(())
}

/// The fixed header through dhcproto, without options (those are added one by one).
fn header(bytes: &[u8]) -> Result<Message, Rejected> {
    let mut fixed = [0u8; MIN_LEN + 1];
    fixed[..MIN_LEN].copy_from_slice(&bytes[..MIN_LEN]);
    fixed[MIN_LEN] = code::END;
    // Cannot fail on 241 bytes; an error would still only drop the packet.
    Message::decode(&mut Decoder::new(&fixed)).map_err(|_| Rejected::BadOptions)
}

/// Whether dhcproto's decoder may see option `code` with a value of `len` bytes. These
/// lengths reach a `debug_assert!` or a `len - 1` in dhcproto 0.15's `decode_inner`.
fn dhcproto_accepts(code: u8, len: usize) -> bool {
    match code {
        // Rapid commit: no value.
        80 => len == 0,
        // Client FQDN: flags and two rcodes first.
        81 => len >= 3,
        // Client network interface: type, major, minor.
        94 => len == 3,
        // Bulk lease query status: a code byte first.
        151 => len >= 1,
        // Bulk lease query times.
        152..=155 => len == 4,
        _ => true,
    }
}

/// dhcproto's decoding of one option, or `None` if it has none that keeps the code.
fn typed(code: u8, value: &[u8]) -> Option<DhcpOption> {
    if !dhcproto_accepts(code, value.len()) {
        return None;
    }
    // dhcproto decodes an option from its wire form, so give it that: 255-byte pieces (RFC
    // 3396), which it joins again.
    let mut wire = Vec::with_capacity(value.len() + 2 * (value.len() / 255 + 1));
    let mut pieces = value.chunks(255).peekable();
    if pieces.peek().is_none() {
        wire.extend_from_slice(&[code, 0]);
    }
    for piece in pieces {
        wire.push(code);
        wire.push(piece.len() as u8);
        wire.extend_from_slice(piece);
    }
    let option = DhcpOption::decode(&mut Decoder::new(&wire)).ok()?;
    // dhcproto files a few codes under another (37 decodes as 23); such a view would overwrite
    // the real one, so the option stays raw only.
    (OptionCode::from(&option) == OptionCode::from(code)).then_some(option)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::{Encodable, Encoder};
    use std::net::Ipv4Addr;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn encode(message: &Message) -> Vec<u8> {
        let mut bytes = Vec::new();
        message
            .encode(&mut Encoder::new(&mut bytes))
            .expect("dhcproto encodes the test message");
        bytes
    }

    fn reply(kind: MessageType) -> Message {
        let mut message = Message::new_with_id(
            7,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(192, 0, 2, 100),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        message.set_opcode(dhcproto::v4::Opcode::BootReply);
        message.opts_mut().insert(DhcpOption::MessageType(kind));
        message
    }

    /// The header plus cookie of a reply, to which tests append raw options.
    fn reply_header() -> Vec<u8> {
        encode(&reply(MessageType::Ack))[..MIN_LEN].to_vec()
    }

    #[test]
    fn a_reply_round_trips() {
        let mut message = reply(MessageType::Offer);
        message
            .opts_mut()
            .insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::LOCALHOST]));
        message
            .opts_mut()
            .insert(DhcpOption::AddressLeaseTime(3600));
        let packet = decode(&encode(&message), Sender::Server).expect("a valid reply");
        assert_eq!(packet.message(), &message);
        assert_eq!(packet.chaddr(), MacAddr::new(MAC));
        assert_eq!(packet.message_type(), MessageType::Offer);
        assert_eq!(
            packet.option(code::LEASE_TIME),
            Some(&3600u32.to_be_bytes()[..])
        );
    }

    #[test]
    fn the_direction_is_checked() {
        let bytes = encode(&reply(MessageType::Offer));
        assert_eq!(
            decode(&bytes, Sender::Client),
            Err(Rejected::WrongDirection)
        );
        let mut bad_op = bytes.clone();
        bad_op[0] = 3;
        assert_eq!(decode(&bad_op, Sender::Server), Err(Rejected::BadOp));
    }

    #[test]
    fn framing_is_checked() {
        let bytes = encode(&reply(MessageType::Ack));
        assert_eq!(
            decode(&bytes[..239], Sender::Server),
            Err(Rejected::TooShort)
        );
        assert_eq!(decode(&[0; 1501], Sender::Server), Err(Rejected::TooLong));
        let mut cookie = bytes.clone();
        cookie[236] = 0;
        assert_eq!(decode(&cookie, Sender::Server), Err(Rejected::BadCookie));
        // An hlen beyond chaddr's 16 bytes would make dhcproto's chaddr() panic: refused.
        let mut long_hlen = bytes.clone();
        long_hlen[2] = 200;
        assert_eq!(
            decode(&long_hlen, Sender::Server),
            Err(Rejected::BadHardware)
        );
        let mut multicast = bytes.clone();
        multicast[28] = 1;
        assert_eq!(
            decode(&multicast, Sender::Server),
            Err(Rejected::BadHardware)
        );
        // A truncated option is refused, not silently the end of the options.
        let mut truncated = reply_header();
        truncated.extend_from_slice(&[53, 1, 5, 6, 8, 1, 2, 3, 4]);
        assert_eq!(
            decode(&truncated, Sender::Server),
            Err(Rejected::BadOptions)
        );
        let mut no_type = reply_header();
        no_type.extend_from_slice(&[54, 4, 192, 0, 2, 1, 255]);
        assert_eq!(
            decode(&no_type, Sender::Server),
            Err(Rejected::NoMessageType)
        );
        let mut long_type = reply_header();
        long_type.extend_from_slice(&[53, 2, 5, 5, 255]);
        assert_eq!(
            decode(&long_type, Sender::Server),
            Err(Rejected::BadOptions)
        );
        let mut discover = reply_header();
        discover.extend_from_slice(&[53, 1, 1, 255]);
        assert_eq!(
            decode(&discover, Sender::Server),
            Err(Rejected::WrongDirection)
        );
        let mut force_renew = reply_header();
        force_renew.extend_from_slice(&[53, 1, 9, 255]);
        assert_eq!(
            decode(&force_renew, Sender::Server),
            Err(Rejected::UnsupportedMessage)
        );
    }

    /// Lengths that trip dhcproto's debug assertions, or underflow in it, are kept raw and
    /// left out of the typed view; the rest of the message is unaffected.
    #[test]
    fn options_dhcproto_would_panic_on_are_raw_only() {
        for option in [
            &[81u8, 1, 0][..],
            &[80, 1, 0],
            &[94, 2, 1, 2],
            &[151, 0],
            &[152, 2, 0, 0],
            &[155, 5, 0, 0, 0, 0, 0],
        ] {
            let mut bytes = reply_header();
            bytes.extend_from_slice(&[53, 1, 5]);
            bytes.extend_from_slice(option);
            bytes.extend_from_slice(&[51, 4, 0, 0, 14, 16, 255]);
            let packet = decode(&bytes, Sender::Server).expect("valid framing");
            let code = OptionCode::from(option[0]);
            assert!(packet.message().opts().get(code).is_none(), "{option:?}");
            assert_eq!(packet.option(option[0]), Some(&option[2..]));
            assert_eq!(
                packet.message().opts().get(OptionCode::AddressLeaseTime),
                Some(&DhcpOption::AddressLeaseTime(3600)),
                "options after {option:?} survive"
            );
        }
    }

    /// One option dhcproto cannot decode costs only itself; its decoder would have stopped
    /// there and lost the lease time after it.
    #[test]
    fn a_bad_option_costs_only_itself() {
        let mut bytes = reply_header();
        // Routers: 5 bytes is not a list of addresses.
        bytes.extend_from_slice(&[53, 1, 5, 3, 5, 1, 2, 3, 4, 5, 51, 4, 0, 0, 14, 16, 255]);
        let packet = decode(&bytes, Sender::Server).expect("valid framing");
        assert!(packet.message().opts().get(OptionCode::Router).is_none());
        assert_eq!(
            packet.message().opts().get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(3600))
        );
    }

    /// Options in `file` and `sname` (option 52) and repeated codes (RFC 3396) are joined.
    #[test]
    fn overload_and_concatenation() {
        let mut bytes = reply_header();
        // file: the lease time; sname: half the DNS servers.
        bytes[FILE.start..FILE.start + 7].copy_from_slice(&[51, 4, 0, 0, 14, 16, 255]);
        bytes[SNAME.start..SNAME.start + 7].copy_from_slice(&[6, 4, 192, 0, 2, 2, 255]);
        bytes.extend_from_slice(&[53, 1, 5, 52, 1, 3, 6, 4, 192, 0, 2, 1, 255]);
        let packet = decode(&bytes, Sender::Server).expect("valid overload");
        let opts = packet.message().opts();
        assert_eq!(
            opts.get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(3600))
        );
        assert_eq!(
            opts.get(OptionCode::DomainNameServer),
            Some(&DhcpOption::DomainNameServer(vec![
                Ipv4Addr::new(192, 0, 2, 1),
                Ipv4Addr::new(192, 0, 2, 2)
            ]))
        );
        assert_eq!(packet.message().sname(), None);
        assert_eq!(packet.message().fname(), None);
        let mut bad = reply_header();
        bad.extend_from_slice(&[53, 1, 5, 52, 1, 4, 255]);
        assert_eq!(decode(&bad, Sender::Server), Err(Rejected::BadOptions));
    }

    /// A value over 255 bytes reaches dhcproto in pieces it joins again.
    #[test]
    fn long_values_are_typed_whole() {
        let servers: Vec<Ipv4Addr> = (0..100).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
        let mut bytes = reply_header();
        bytes.extend_from_slice(&[53, 1, 5]);
        let value: Vec<u8> = servers.iter().flat_map(|ip| ip.octets()).collect();
        for piece in value.chunks(200) {
            bytes.extend_from_slice(&[6, piece.len() as u8]);
            bytes.extend_from_slice(piece);
        }
        bytes.push(255);
        let packet = decode(&bytes, Sender::Server).expect("valid");
        assert_eq!(
            packet.message().opts().get(OptionCode::DomainNameServer),
            Some(&DhcpOption::DomainNameServer(servers))
        );
    }

    /// dhcproto decodes code 37 as code 23; the view keeps neither wrong.
    #[test]
    fn codes_dhcproto_renames_stay_raw() {
        let mut bytes = reply_header();
        bytes.extend_from_slice(&[53, 1, 5, 23, 1, 64, 37, 1, 32, 255]);
        let packet = decode(&bytes, Sender::Server).expect("valid");
        assert_eq!(
            packet.message().opts().get(OptionCode::DefaultIpTtl),
            Some(&DhcpOption::DefaultIpTtl(64))
        );
        assert_eq!(packet.option(37), Some(&[32u8][..]));
    }
}
