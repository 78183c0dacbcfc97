//! The outside DHCP client as a state machine (RFC 2131 §4.4), free of sockets and clocks.
//!
//! Time is a [`Duration`] since an arbitrary origin that the caller owns, so tests drive it with
//! a fake clock. The caller feeds events in ([`Client::start`], [`Client::handle_packet`],
//! [`Client::handle_timeout`] when [`Client::next_deadline`] has passed, [`Client::release`]) and
//! carries out the [`Action`]s that come back, in order.
//!
//! Not implemented, on purpose or for now: collecting several offers (the first acceptable one
//! wins), the 1–10 s random delay before the first DISCOVER (one gateway does not cause a
//! start-up storm), ARP probing of the offered address and DHCPDECLINE, DHCPINFORM, FORCERENEW.

mod reply;
mod request;
mod timing;

use crate::mac::MacAddr;
use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode};

pub use reply::usable_unicast;
use reply::{parse_lease, server_id};
pub use request::REQUESTED_OPTIONS;
use timing::{nak_pause, Rng, INFINITE_SECS, MAX_REBOOT_REQUESTS, MAX_REQUESTS};

#[cfg(test)]
use dhcproto::v4::OptionCode;
#[cfg(test)]
use reply::{classful_prefix, prefix_of, timers};

/// Where the client is in RFC 2131's state diagram (figure 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting before the next DISCOVER (after a NAK).
    Init,
    /// DISCOVER sent, waiting for an offer.
    Selecting,
    /// REQUEST for an offer sent, waiting for the ACK.
    Requesting,
    /// INIT-REBOOT: REQUEST for the remembered address sent, waiting for the ACK.
    Rebooting,
    /// The lease is configured; nothing to do until T1.
    Bound,
    /// After T1: REQUEST unicast to the leasing server.
    Renewing,
    /// After T2: REQUEST broadcast to any server.
    Rebinding,
    /// Released or shut down; ignores everything.
    Stopped,
}

impl State {
    /// Every state, in the order of the diagram.
    pub const ALL: [State; 8] = [
        State::Init,
        State::Selecting,
        State::Requesting,
        State::Rebooting,
        State::Bound,
        State::Renewing,
        State::Rebinding,
        State::Stopped,
    ];

    /// Lower-case name, as the status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Init => "init",
            State::Selecting => "selecting",
            State::Requesting => "requesting",
            State::Rebooting => "rebooting",
            State::Bound => "bound",
            State::Renewing => "renewing",
            State::Rebinding => "rebinding",
            State::Stopped => "stopped",
        }
    }
}

/// A lease as acknowledged by a server. Times are on the caller's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// The first usable router of option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6, unicast addresses only.
    pub dns_servers: Vec<Ipv4Addr>,
    /// The server identifier (option 54), where renewals go.
    pub server: Ipv4Addr,
    /// Option 51.
    pub lease_time: Duration,
    /// Renewal time, from `obtained_at`.
    pub t1: Duration,
    /// Rebinding time, from `obtained_at`.
    pub t2: Duration,
    /// When the REQUEST that got this lease was first sent (RFC 2131 §4.4.1 counts from there).
    pub obtained_at: Duration,
}

impl Lease {
    /// When the client moves to RENEWING.
    pub fn renew_at(&self) -> Duration {
        self.obtained_at.saturating_add(self.t1)
    }

    /// When the client moves to REBINDING.
    pub fn rebind_at(&self) -> Duration {
        self.obtained_at.saturating_add(self.t2)
    }

    /// When the address must stop being used.
    pub fn expires_at(&self) -> Duration {
        self.obtained_at.saturating_add(self.lease_time)
    }

    /// An infinite lease never expires nor renews.
    pub fn is_infinite(&self) -> bool {
        self.lease_time == Duration::from_secs(u64::from(INFINITE_SECS))
    }

    /// Time left at `now` (zero once expired).
    pub fn remaining(&self, now: Duration) -> Duration {
        self.expires_at().saturating_sub(now)
    }
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:67 on the uplink.
    Broadcast,
    /// The server's address, port 67.
    Unicast(Ipv4Addr),
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send {
        message: Message,
        to: Destination,
    },
    /// Put the lease's address (with its remaining lifetime) and default route in place; also
    /// for a renewal of the same address.
    Configure(Lease),
    /// Take the lease's address and route away: it expired, was refused, or was released.
    Deconfigure(Lease),
}

/// Who the client says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The macvlan's MAC: chaddr, and the client identifier's body.
    pub mac: MacAddr,
    /// Option 12; `None` sends no host name.
    pub hostname: Option<String>,
}

impl Identity {
    /// Option 61: hardware type 1 (Ethernet) and the MAC (RFC 2132 §9.14).
    pub fn client_id(&self) -> Vec<u8> {
        let mut id = Vec::with_capacity(7);
        id.push(1);
        id.extend_from_slice(&self.mac.octets());
        id
    }
}

/// The address from an earlier run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    pub address: Ipv4Addr,
    /// The lease was still valid and not released: confirm it with INIT-REBOOT. Otherwise the
    /// address is only suggested in DISCOVER (option 50).
    pub reboot: bool,
}

/// The client. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Client {
    identity: Identity,
    rng: Rng,
    state: State,
    xid: u32,
    deadline: Option<Duration>,
    /// Messages sent in the current exchange (for the backoff and for giving up).
    attempts: u32,
    /// When the current exchange began (the `secs` field counts from here).
    exchange_start: Duration,
    /// When the first REQUEST of the current exchange went out.
    request_start: Duration,
    /// (offered address, server identifier) while REQUESTING.
    selected: Option<(Ipv4Addr, Ipv4Addr)>,
    lease: Option<Lease>,
    /// Address to ask for: the remembered one, or the one just lost.
    hint: Option<Ipv4Addr>,
    /// NAKs in a row, for the pause before the next DISCOVER.
    naks: u32,
}

impl Client {
    /// A client in INIT; `seed` feeds the xids and the jitter.
    pub fn new(identity: Identity, seed: u64) -> Self {
        Client {
            identity,
            rng: Rng::new(seed),
            state: State::Init,
            xid: 0,
            deadline: None,
            attempts: 0,
            exchange_start: Duration::ZERO,
            request_start: Duration::ZERO,
            selected: None,
            lease: None,
            hint: None,
            naks: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The lease in use (BOUND, RENEWING, REBINDING).
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// When [`Client::handle_timeout`] wants to be called; `None`: only packets matter.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// Starts acquisition: INIT-REBOOT for a remembered valid lease, else DISCOVER.
    pub fn start(&mut self, now: Duration, remembered: Option<Remembered>) -> Vec<Action> {
        match remembered {
            Some(Remembered {
                address,
                reboot: true,
            }) if usable_unicast(address) => {
                self.hint = Some(address);
                self.state = State::Rebooting;
                self.begin_exchange(now);
                self.request_start = now;
                vec![self.transmit(now)]
            }
            Some(Remembered { address, .. }) => {
                self.hint = Some(address).filter(|a| usable_unicast(*a));
                self.discover(now)
            }
            None => self.discover(now),
        }
    }

    /// A timer event. Does nothing before [`Client::next_deadline`].
    pub fn handle_timeout(&mut self, now: Duration) -> Vec<Action> {
        match self.deadline {
            Some(deadline) if now >= deadline => {}
            _ => return Vec::new(),
        }
        match self.state {
            State::Init => self.discover(now),
            State::Selecting => vec![self.transmit(now)],
            State::Requesting | State::Rebooting => {
                let limit = if self.state == State::Rebooting {
                    MAX_REBOOT_REQUESTS
                } else {
                    MAX_REQUESTS
                };
                if self.attempts >= limit {
                    if let Some((offered, _)) = self.selected {
                        self.hint = Some(offered);
                    }
                    self.discover(now)
                } else {
                    vec![self.transmit(now)]
                }
            }
            State::Bound | State::Renewing | State::Rebinding => {
                let Some(lease) = &self.lease else {
                    // Unreachable by construction; recover rather than stall.
                    return self.discover(now);
                };
                if now >= lease.expires_at() {
                    self.expire(now)
                } else if now >= lease.rebind_at() && self.state != State::Rebinding {
                    self.state = State::Rebinding;
                    self.begin_exchange(now);
                    self.request_start = now;
                    vec![self.transmit(now)]
                } else if self.state == State::Bound {
                    self.state = State::Renewing;
                    self.begin_exchange(now);
                    self.request_start = now;
                    vec![self.transmit(now)]
                } else {
                    vec![self.transmit(now)]
                }
            }
            State::Stopped => Vec::new(),
        }
    }

    /// A DHCP message received on the uplink from `from` (its IP source address). Anything that
    /// is not a reply to our current exchange is ignored.
    pub fn handle_packet(&mut self, now: Duration, msg: &Message, from: Ipv4Addr) -> Vec<Action> {
        if !self.is_reply_to_us(msg) {
            return Vec::new();
        }
        let Some(kind) = msg.opts().msg_type() else {
            return Vec::new();
        };
        match (self.state, kind) {
            (State::Selecting, MessageType::Offer) => self.on_offer(now, msg),
            (
                State::Requesting | State::Rebooting | State::Renewing | State::Rebinding,
                MessageType::Ack,
            ) => self.on_ack(msg, from),
            (
                State::Requesting | State::Rebooting | State::Renewing | State::Rebinding,
                MessageType::Nak,
            ) => self.on_nak(now, msg),
            _ => Vec::new(),
        }
    }

    /// Clean shutdown: DHCPRELEASE to the server and the lease taken down, if there is one.
    /// The client stops for good.
    pub fn release(&mut self, _now: Duration) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(lease) = self.lease.take() {
            self.xid = self.rng.next_u32();
            let mut msg = Message::new_with_id(
                self.xid,
                lease.address,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                &self.identity.mac.octets(),
            );
            let opts = msg.opts_mut();
            opts.insert(DhcpOption::MessageType(MessageType::Release));
            opts.insert(DhcpOption::ServerIdentifier(lease.server));
            opts.insert(DhcpOption::ClientIdentifier(self.identity.client_id()));
            actions.push(Action::Send {
                message: msg,
                to: Destination::Unicast(lease.server),
            });
            actions.push(Action::Deconfigure(lease));
        }
        self.state = State::Stopped;
        self.deadline = None;
        actions
    }

    fn is_reply_to_us(&self, msg: &Message) -> bool {
        // hlen comes off the wire and `chaddr()` slices by it: check it first.
        msg.opcode() == Opcode::BootReply
            && msg.xid() == self.xid
            && msg.htype() == HType::Eth
            && msg.hlen() == 6
            && msg.chaddr() == self.identity.mac.octets()
    }

    fn begin_exchange(&mut self, now: Duration) {
        self.xid = self.rng.next_u32();
        self.attempts = 0;
        self.exchange_start = now;
    }

    fn discover(&mut self, now: Duration) -> Vec<Action> {
        self.state = State::Selecting;
        self.selected = None;
        self.begin_exchange(now);
        vec![self.transmit(now)]
    }

    fn expire(&mut self, now: Duration) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(lease) = self.lease.take() {
            self.hint = Some(lease.address);
            actions.push(Action::Deconfigure(lease));
        }
        actions.extend(self.discover(now));
        actions
    }

    fn on_offer(&mut self, now: Duration, msg: &Message) -> Vec<Action> {
        let offered = msg.yiaddr();
        let Some(server) = server_id(msg) else {
            return Vec::new();
        };
        if !usable_unicast(offered) {
            return Vec::new();
        }
        // RFC 2131 §4.4.1: the REQUEST keeps the offer's xid.
        self.selected = Some((offered, server));
        self.state = State::Requesting;
        self.attempts = 0;
        self.request_start = now;
        vec![self.transmit(now)]
    }

    fn on_ack(&mut self, msg: &Message, from: Ipv4Addr) -> Vec<Action> {
        let claimed_server = server_id(msg);
        // Answers from a server other than the one asked are not ours to take.
        let expected_server = match self.state {
            State::Requesting => self.selected.map(|(_, server)| server),
            State::Renewing => self.lease.as_ref().map(|lease| lease.server),
            _ => None,
        };
        if let (Some(expected), Some(claimed)) = (expected_server, claimed_server) {
            if expected != claimed {
                return Vec::new();
            }
        }
        let server = claimed_server
            .or(expected_server)
            .or(Some(from).filter(|a| usable_unicast(*a)));
        let Some(server) = server else {
            return Vec::new();
        };
        let Some(lease) = parse_lease(msg, server, self.request_start) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        if let Some(old) = self.lease.take() {
            if old.address != lease.address {
                actions.push(Action::Deconfigure(old));
            }
        }
        self.state = State::Bound;
        self.naks = 0;
        self.selected = None;
        self.hint = Some(lease.address);
        self.deadline = Some(lease.renew_at());
        self.lease = Some(lease.clone());
        actions.push(Action::Configure(lease));
        actions
    }

    fn on_nak(&mut self, now: Duration, msg: &Message) -> Vec<Action> {
        let expected_server = match self.state {
            State::Requesting => self.selected.map(|(_, server)| server),
            State::Renewing => self.lease.as_ref().map(|lease| lease.server),
            _ => None,
        };
        if let (Some(expected), Some(claimed)) = (expected_server, server_id(msg)) {
            if expected != claimed {
                return Vec::new();
            }
        }
        let mut actions = Vec::new();
        if let Some(lease) = self.lease.take() {
            actions.push(Action::Deconfigure(lease));
        }
        // The server refused the address: do not ask for it again.
        self.hint = None;
        self.naks = self.naks.saturating_add(1);
        // A server that NAKs everything must not get a DISCOVER/REQUEST loop at line rate.
        let pause = nak_pause(self.naks);
        if pause.is_zero() {
            actions.extend(self.discover(now));
        } else {
            self.state = State::Init;
            self.selected = None;
            self.deadline = Some(now.saturating_add(pause));
        }
        actions
    }
}

#[cfg(test)]
#[path = "dhcp_client_tests.rs"]
mod tests;
