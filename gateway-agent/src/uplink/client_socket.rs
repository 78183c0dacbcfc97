//! The DHCP client's UDP socket: 0.0.0.0:68, bound to the macvlan.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context, Result};
use dhcproto::v4::{Encodable, Encoder, Message, CLIENT_PORT, SERVER_PORT};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::dhcp_client::Destination;
use super::raw_send::RawBroadcast;
use crate::dhcp::wire::{self, Sender};

/// Large enough for any DHCP message on an Ethernet link.
const RECV_BUFFER: usize = 2048;

/// A UDP socket on port 68 that only sees and sends traffic of one device.
pub struct ClientSocket {
    socket: UdpSocket,
    /// Broadcasts go out here, so their source is the client's own (0.0.0.0 while unbound).
    broadcast: RawBroadcast,
    buffer: Vec<u8>,
}

impl ClientSocket {
    /// Opens the socket in the calling thread's network namespace. Must run inside a tokio
    /// runtime.
    pub fn open(device: &str) -> Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .context("creating the DHCP client socket")?;
        // SO_BINDTODEVICE: without it broadcasts would leave by whatever interface the routing
        // table picks, and replies meant for the inside (or another uplink) would reach us.
        socket
            .bind_device(Some(device.as_bytes()))
            .with_context(|| format!("binding the DHCP client socket to {device}"))?;
        // Another DHCP client on another device may hold *:68 too; each sees only its device.
        socket
            .set_reuse_address(true)
            .context("setting SO_REUSEADDR on the DHCP client socket")?;
        socket
            .set_broadcast(true)
            .context("setting SO_BROADCAST on the DHCP client socket")?;
        socket
            .set_nonblocking(true)
            .context("making the DHCP client socket non-blocking")?;
        let local = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT));
        socket
            .bind(&local.into())
            .with_context(|| format!("binding the DHCP client socket to {local} on {device}"))?;
        let socket = UdpSocket::from_std(socket.into())
            .context("registering the DHCP client socket with tokio")?;
        Ok(ClientSocket {
            socket,
            broadcast: RawBroadcast::open(device)?,
            buffer: vec![0; RECV_BUFFER],
        })
    }

    /// Sends `msg` to the server port of `to`.
    pub async fn send(&self, msg: &Message, to: Destination) -> Result<()> {
        let bytes = encode(msg)?;
        let ip = match to {
            // ciaddr is 0.0.0.0 until bound, the leased address when rebinding (RFC 2131 4.1).
            Destination::Broadcast => {
                return self
                    .broadcast
                    .send(msg.ciaddr(), CLIENT_PORT, SERVER_PORT, &bytes)
            }
            Destination::Unicast(ip) => ip,
        };
        let dest = SocketAddrV4::new(ip, SERVER_PORT);
        self.socket
            .send_to(&bytes, dest)
            .await
            .with_context(|| format!("sending a DHCP message to {dest}"))?;
        Ok(())
    }

    /// The next datagram: the decoded message (`None` if it is not DHCP) and its source.
    pub async fn recv(&mut self) -> io::Result<(Option<Message>, Ipv4Addr)> {
        let (len, from) = self.socket.recv_from(&mut self.buffer).await?;
        let from = match from {
            SocketAddr::V4(v4) => *v4.ip(),
            SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        Ok((decode(&self.buffer[..len]), from))
    }
}

fn encode(msg: &Message) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(576);
    msg.encode(&mut Encoder::new(&mut bytes))
        .context("encoding a DHCP message")?;
    Ok(bytes)
}

/// Decodes a datagram with the same decoder, and checks, as the inside server's: anything that
/// is not a well-formed reply from a server (OFFER, ACK, NAK) is `None`.
pub(super) fn decode(bytes: &[u8]) -> Option<Message> {
    match wire::decode(bytes, Sender::Server) {
        Ok(packet) => Some(packet.into_message()),
        Err(rejected) => {
            tracing::debug!(
                ?rejected,
                len = bytes.len(),
                "dropped a DHCP reply on the uplink"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{DhcpOption, MessageType, Opcode};

    #[test]
    fn round_trip() {
        let mut msg = Message::new_with_id(
            7,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[2, 0, 0, 0, 0, 1],
        );
        msg.set_opcode(Opcode::BootReply);
        msg.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Offer));
        let bytes = encode(&msg).unwrap();
        assert_eq!(decode(&bytes), Some(msg.clone()));
        // Our own requests, looped back or another client's, are not replies.
        msg.set_opcode(Opcode::BootRequest);
        msg.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        assert_eq!(decode(&encode(&msg).unwrap()), None);
    }

    #[test]
    fn garbage_is_not_a_message() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0u8; 300]), None, "no magic cookie");
        // Every truncation of a valid message and some noise after the cookie must not panic.
        let mut msg = Message::default();
        msg.set_opcode(Opcode::BootReply);
        msg.set_chaddr(&[2, 0, 0, 0, 0, 1]);
        msg.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Offer));
        msg.opts_mut()
            .insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::LOCALHOST]));
        let bytes = encode(&msg).unwrap();
        for len in 0..bytes.len() {
            let _ = decode(&bytes[..len]);
        }
        let mut noisy = bytes[..240].to_vec();
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            noisy.push((x >> 16) as u8);
            let _ = decode(&noisy);
        }
        // An option 81 (client FQDN) shorter than its 3 fixed bytes trips a debug assertion
        // inside dhcproto; it must not panic. The decoder keeps it out of the typed view, so
        // the rest of the reply survives.
        let mut short_fqdn = bytes[..240].to_vec();
        short_fqdn.extend_from_slice(&[53, 1, 2, 81, 1, 0, 255]);
        let offer = decode(&short_fqdn).expect("the reply around the bad option");
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        assert!(offer
            .opts()
            .get(dhcproto::v4::OptionCode::ClientFQDN)
            .is_none());
        // An hlen beyond chaddr's 16 bytes would make chaddr() panic; the decoder refuses
        // anything but Ethernet's 6 (the client checks hlen again before chaddr()).
        let mut long_hlen = bytes.clone();
        long_hlen[2] = 200;
        assert_eq!(decode(&long_hlen), None);
    }
}
