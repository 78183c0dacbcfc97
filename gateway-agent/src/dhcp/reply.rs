//! Server messages (BOOTREPLY): what goes in them and their encoding.

use crate::mac::MacAddr;
use std::net::Ipv4Addr;

use super::packet::{code, MAGIC_COOKIE};

/// The replies the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyKind {
    Offer,
    Ack,
    Nak,
}

impl ReplyKind {
    fn message_type(self) -> u8 {
        match self {
            ReplyKind::Offer => 2,
            ReplyKind::Ack => 5,
            ReplyKind::Nak => 6,
        }
    }

    /// The name used in logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ReplyKind::Offer => "DHCPOFFER",
            ReplyKind::Ack => "DHCPACK",
            ReplyKind::Nak => "DHCPNAK",
        }
    }
}

/// One option of a reply; `optional` ones are left out, last first, when the reply would not
/// fit the client's maximum message size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplyOption {
    pub code: u8,
    pub value: Vec<u8>,
    pub optional: bool,
}

/// A reply before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub kind: ReplyKind,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: MacAddr,
    /// Without option 53, which [`encode`] puts first.
    pub options: Vec<ReplyOption>,
}

impl Reply {
    /// Adds a required option.
    pub(crate) fn push(&mut self, code: u8, value: impl Into<Vec<u8>>) {
        self.options.push(ReplyOption {
            code,
            value: value.into(),
            optional: false,
        });
    }

    /// Adds an option that may be dropped for size.
    pub(crate) fn push_optional(&mut self, code: u8, value: impl Into<Vec<u8>>) {
        self.options.push(ReplyOption {
            code,
            value: value.into(),
            optional: true,
        });
    }
}

/// BOOTP's minimum message size (RFC 1542 §2.1); some relays and clients want no less.
const MIN_REPLY: usize = 300;
/// Every DHCP client must accept 576-byte IP datagrams (RFC 2131 §2); 28 bytes go to the IP
/// and UDP headers.
const DEFAULT_MAX_REPLY: usize = 576 - 28;

/// Encodes `reply`, dropping optional options until it fits the client's option 57.
pub(crate) fn encode(reply: &Reply, max_message_size: Option<u16>) -> Vec<u8> {
    let limit = max_message_size
        .map(|size| usize::from(size).saturating_sub(28))
        .unwrap_or(DEFAULT_MAX_REPLY)
        .clamp(DEFAULT_MAX_REPLY, super::packet::MAX_LEN - 28);
    let mut options: Vec<&ReplyOption> = reply.options.iter().collect();
    loop {
        let bytes = encode_with(reply, &options);
        if bytes.len() <= limit {
            return bytes;
        }
        match options.iter().rposition(|option| option.optional) {
            Some(at) => {
                options.remove(at);
            }
            // Only required options left; they are small, so this cannot really happen.
            None => return bytes,
        }
    }
}

fn encode_with(reply: &Reply, options: &[&ReplyOption]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MIN_REPLY);
    out.extend_from_slice(&[2, 1, 6, 0]); // BOOTREPLY, Ethernet, hlen 6, hops 0
    out.extend_from_slice(&reply.xid.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // secs
    out.extend_from_slice(&reply.flags.to_be_bytes());
    out.extend_from_slice(&reply.ciaddr.octets());
    out.extend_from_slice(&reply.yiaddr.octets());
    out.extend_from_slice(&Ipv4Addr::UNSPECIFIED.octets()); // siaddr: no boot server
    out.extend_from_slice(&reply.giaddr.octets());
    out.extend_from_slice(&reply.chaddr.octets());
    out.resize(236, 0); // rest of chaddr, sname, file
    out.extend_from_slice(&MAGIC_COOKIE);
    put_option(&mut out, code::MESSAGE_TYPE, &[reply.kind.message_type()]);
    for option in options {
        put_option(&mut out, option.code, &option.value);
    }
    out.push(code::END);
    if out.len() < MIN_REPLY {
        out.resize(MIN_REPLY, code::PAD);
    }
    out
}

/// Writes one option, split into several of the same code when longer than 255 (RFC 3396).
fn put_option(out: &mut Vec<u8>, code: u8, value: &[u8]) {
    if value.is_empty() {
        out.extend_from_slice(&[code, 0]);
        return;
    }
    for chunk in value.chunks(255) {
        out.push(code);
        out.push(chunk.len() as u8); // chunks(255): fits
        out.extend_from_slice(chunk);
    }
}

/// A domain name in DNS wire format (no compression), as options 81 and 119 carry it.
/// `None` if a label is empty or longer than 63 bytes, or the name longer than 255.
pub(crate) fn wire_name(name: &str) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    (out.len() <= 255).then_some(out)
}
