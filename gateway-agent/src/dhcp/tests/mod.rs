//! Handler tests: whole exchanges with packets built (and replies read back) by dhcproto, an
//! independent implementation, so both our decoder and our encoder are checked against it.

mod clients;
mod exchange;
mod hostile;
mod names;

use crate::mac::MacAddr;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dhcproto::v4::{
    DhcpOption, Flags, Message, MessageType as Mt, Opcode, OptionCode, UnknownOption,
};
use dhcproto::{Decodable, Encodable};

use crate::config::Inside;
use crate::dhcp::config::Dhcp;
use crate::lease_events::{LeaseEvent, LeaseInfo};

use super::handler::{Destination, Handler, Now, Outcome};
use super::DhcpServerSettings;

pub(super) const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// A plausible "now", so expiries look real.
pub(super) const T0: u64 = 1_700_000_000;

pub(super) fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, last)
}

pub(super) fn settings() -> DhcpServerSettings {
    DhcpServerSettings {
        interface: "inside0".into(),
        server_ip: SERVER,
        inside: Inside {
            address: SERVER,
            prefix_len: 24,
        },
        port: 67,
        client_port: 68,
        dhcp: Dhcp::default(),
        zone: "home.arpa".parse().unwrap(),
        reserved_names: ["gateway", "registry", "mirror", "proxy", "socks"]
            .map(String::from)
            .to_vec(),
        store_path: PathBuf::from("/nonexistent/leases.redb"),
        log_queries: false,
    }
}

/// A handler and its clocks.
pub(super) struct Bench {
    pub handler: Handler,
    pub now: u64,
    mono: Instant,
}

impl Bench {
    pub fn new() -> Bench {
        Bench::with(settings())
    }

    pub fn with(settings: DhcpServerSettings) -> Bench {
        Bench {
            handler: Handler::new(&settings).expect("valid test settings"),
            now: T0,
            mono: Instant::now(),
        }
    }

    pub fn send(&mut self, message: &Message) -> Outcome {
        let bytes = message.to_vec().expect("dhcproto encodes the test message");
        self.send_raw(&bytes)
    }

    /// One packet, a second after the last (so the rate limit stays out of the way).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Outcome {
        self.mono += Duration::from_secs(1);
        let now = Now {
            unix: self.now,
            mono: self.mono,
        };
        self.handler
            .handle_packet(bytes, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68), now)
    }

    pub fn advance(&mut self, secs: u64) {
        self.now += secs;
    }

    pub fn sweep(&mut self) -> Outcome {
        self.handler.sweep(self.now)
    }

    /// DISCOVER, OFFER, REQUEST, ACK; returns the address and the ACK's outcome.
    pub fn dora(&mut self, client: &Client) -> (Ipv4Addr, Outcome) {
        let offer = self.send(&client.discover());
        let offered = reply(&offer);
        assert_eq!(kind(&offered), Mt::Offer);
        let ack = self.send(&client.select(offered.yiaddr()));
        let acked = reply(&ack);
        assert_eq!(kind(&acked), Mt::Ack, "{acked:?}");
        assert_eq!(acked.yiaddr(), offered.yiaddr());
        (acked.yiaddr(), ack)
    }
}

/// A simulated client.
#[derive(Clone)]
pub(super) struct Client {
    pub mac: MacAddr,
    pub client_id: Option<Vec<u8>>,
    pub hostname: Option<Vec<u8>>,
    pub xid: u32,
}

impl Client {
    pub fn new(last: u8) -> Client {
        Client {
            mac: MacAddr::new([0x02, 0, 0, 0, 0, last]),
            client_id: None,
            hostname: None,
            xid: 0x1000 + u32::from(last),
        }
    }

    pub fn id(mut self, id: &[u8]) -> Client {
        self.client_id = Some(id.to_vec());
        self
    }

    pub fn named(mut self, name: &str) -> Client {
        self.hostname = Some(name.as_bytes().to_vec());
        self
    }

    pub fn message(&self, message_type: Mt) -> Message {
        let zero = Ipv4Addr::UNSPECIFIED;
        let mut message =
            Message::new_with_id(self.xid, zero, zero, zero, zero, &self.mac.octets());
        message.set_opcode(Opcode::BootRequest);
        let opts = message.opts_mut();
        opts.insert(DhcpOption::MessageType(message_type));
        if let Some(id) = &self.client_id {
            opts.insert(DhcpOption::ClientIdentifier(id.clone()));
        }
        if let Some(name) = &self.hostname {
            // Raw, so the tests can send bytes that are not UTF-8.
            opts.insert(raw(OptionCode::Hostname, name));
        }
        message
    }

    pub fn discover(&self) -> Message {
        self.message(Mt::Discover)
    }

    /// REQUEST in SELECTING state: our server identifier and the offered address.
    pub fn select(&self, address: Ipv4Addr) -> Message {
        let mut message = self.message(Mt::Request);
        message
            .opts_mut()
            .insert(DhcpOption::ServerIdentifier(SERVER));
        message
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(address));
        message
    }

    /// REQUEST in RENEWING state: unicast, ciaddr set.
    pub fn renew(&self, address: Ipv4Addr) -> Message {
        let mut message = self.message(Mt::Request);
        message.set_ciaddr(address);
        message
    }

    /// REQUEST in REBINDING state: broadcast, ciaddr set.
    pub fn rebind(&self, address: Ipv4Addr) -> Message {
        let mut message = self.renew(address);
        message.set_flags(Flags::default().set_broadcast());
        message
    }

    /// REQUEST in INIT-REBOOT state: option 50, no server identifier.
    pub fn reboot(&self, address: Ipv4Addr) -> Message {
        let mut message = self.message(Mt::Request);
        message
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(address));
        message
    }

    pub fn release(&self, address: Ipv4Addr) -> Message {
        let mut message = self.message(Mt::Release);
        message.set_ciaddr(address);
        message
            .opts_mut()
            .insert(DhcpOption::ServerIdentifier(SERVER));
        message
    }

    pub fn decline(&self, address: Ipv4Addr) -> Message {
        let mut message = self.message(Mt::Decline);
        message
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(address));
        message
            .opts_mut()
            .insert(DhcpOption::ServerIdentifier(SERVER));
        message
    }

    pub fn inform(&self, address: Ipv4Addr) -> Message {
        let mut message = self.message(Mt::Inform);
        message.set_ciaddr(address);
        message
    }
}

/// An option with arbitrary bytes; dhcproto splits it per RFC 3396 when over 255.
pub(super) fn raw(code: OptionCode, bytes: &[u8]) -> DhcpOption {
    DhcpOption::Unknown(UnknownOption::new(code, bytes.to_vec()))
}

/// The reply, decoded by dhcproto.
pub(super) fn reply(outcome: &Outcome) -> Message {
    let outgoing = outcome.reply.as_ref().expect("a reply");
    assert!(outgoing.bytes.len() >= 300, "BOOTP minimum size");
    Message::from_bytes(&outgoing.bytes).expect("dhcproto decodes our reply")
}

pub(super) fn destination(outcome: &Outcome) -> Destination {
    outcome.reply.as_ref().expect("a reply").destination
}

pub(super) fn kind(message: &Message) -> Mt {
    message.opts().msg_type().expect("option 53")
}

pub(super) fn bound(outcome: &Outcome) -> Vec<LeaseInfo> {
    outcome
        .events
        .iter()
        .filter_map(|event| match event {
            LeaseEvent::Bound(info) => Some(info.clone()),
            LeaseEvent::Removed(_) => None,
        })
        .collect()
}

pub(super) fn removed(outcome: &Outcome) -> Vec<LeaseInfo> {
    outcome
        .events
        .iter()
        .filter_map(|event| match event {
            LeaseEvent::Removed(info) => Some(info.clone()),
            LeaseEvent::Bound(_) => None,
        })
        .collect()
}

/// The host name the ACK bound.
pub(super) fn bound_name(outcome: &Outcome) -> Option<String> {
    let infos = bound(outcome);
    assert_eq!(infos.len(), 1, "{:?}", outcome.events);
    infos[0].hostname.clone()
}
