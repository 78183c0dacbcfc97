//! What the client sends: the DISCOVER or REQUEST of the current state, and when to send it
//! again.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};

use super::timing::renew_retransmit;
use super::{Action, Client, Destination, State};

/// The options asked for in every DISCOVER and REQUEST (option 55): mask, router, DNS servers,
/// lease time, server identifier, T1, T2. Nothing else, so the request says little about us.
pub const REQUESTED_OPTIONS: [OptionCode; 7] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::AddressLeaseTime,
    OptionCode::ServerIdentifier,
    OptionCode::Renewal,
    OptionCode::Rebinding,
];

impl Client {
    /// Sends the current state's message and arms the retransmission timer.
    pub(super) fn transmit(&mut self, now: Duration) -> Action {
        let (message, to) = self.build(now);
        let backoff = self.backoff(self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        self.deadline = Some(match (self.state, &self.lease) {
            (State::Renewing, Some(lease)) => {
                renew_retransmit(now, lease.rebind_at()).min(lease.rebind_at())
            }
            (State::Rebinding, Some(lease)) => {
                renew_retransmit(now, lease.expires_at()).min(lease.expires_at())
            }
            _ => now.saturating_add(backoff),
        });
        Action::Send { message, to }
    }

    fn build(&self, now: Duration) -> (Message, Destination) {
        let leased = self.lease.as_ref().map(|lease| lease.address);
        let (kind, ciaddr, broadcast_flag, to) = match self.state {
            State::Renewing => (
                MessageType::Request,
                leased,
                false,
                self.lease.as_ref().map_or(Destination::Broadcast, |lease| {
                    Destination::Unicast(lease.server)
                }),
            ),
            State::Rebinding => (MessageType::Request, leased, false, Destination::Broadcast),
            State::Requesting | State::Rebooting => {
                (MessageType::Request, None, true, Destination::Broadcast)
            }
            _ => (MessageType::Discover, None, true, Destination::Broadcast),
        };
        let mut msg = Message::new_with_id(
            self.xid,
            ciaddr.unwrap_or(Ipv4Addr::UNSPECIFIED),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.identity.mac.octets(),
        );
        // Without an address the unicast reply would be dropped by our own stack.
        if broadcast_flag {
            msg.set_flags(Flags::default().set_broadcast());
        }
        let secs = now.saturating_sub(self.exchange_start).as_secs();
        msg.set_secs(u16::try_from(secs).unwrap_or(u16::MAX));
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ClientIdentifier(self.identity.client_id()));
        opts.insert(DhcpOption::ParameterRequestList(REQUESTED_OPTIONS.to_vec()));
        if let Some(hostname) = &self.identity.hostname {
            opts.insert(DhcpOption::Hostname(hostname.clone()));
        }
        match self.state {
            State::Requesting => {
                if let Some((offered, server)) = self.selected {
                    opts.insert(DhcpOption::RequestedIpAddress(offered));
                    opts.insert(DhcpOption::ServerIdentifier(server));
                }
            }
            State::Rebooting | State::Selecting | State::Init => {
                if let Some(hint) = self.hint {
                    opts.insert(DhcpOption::RequestedIpAddress(hint));
                }
            }
            _ => {}
        }
        (msg, to)
    }
}
