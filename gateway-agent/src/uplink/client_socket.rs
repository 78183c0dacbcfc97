//! The DHCP client's UDP socket: 0.0.0.0:68, bound to the macvlan.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context, Result};
use dhcproto::v4::{Decodable, Decoder, Encodable, Encoder, Message, CLIENT_PORT, SERVER_PORT};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::dhcp_client::Destination;
use super::raw_send::RawBroadcast;

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

/// Decodes a datagram; anything that is not a well-formed DHCP message is `None`.
pub(super) fn decode(bytes: &[u8]) -> Option<Message> {
    // The fixed header plus the magic cookie; dhcproto does not check the cookie.
    const HEADER: usize = 236;
    if bytes.len() < HEADER + 4 || bytes[HEADER..HEADER + 4] != dhcproto::v4::MAGIC {
        return None;
    }
    // dhcproto has debug assertions on option lengths that a hostile server can trip (an
    // option 81 shorter than 3 bytes); a reply that trips one is dropped, not a crash.
    std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(bytes)).ok())
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{DhcpOption, MessageType};

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
        msg.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        let bytes = encode(&msg).unwrap();
        assert_eq!(decode(&bytes), Some(msg));
    }

    #[test]
    fn garbage_is_not_a_message() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0u8; 300]), None, "no magic cookie");
        // Every truncation of a valid message and some noise after the cookie must not panic.
        let mut msg = Message::default();
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
        // inside dhcproto; it must come back as "not a message", not a panic.
        let mut short_fqdn = bytes[..240].to_vec();
        short_fqdn.extend_from_slice(&[53, 1, 2, 81, 1, 0, 255]);
        let _ = decode(&short_fqdn);
        // An hlen beyond chaddr's 16 bytes decodes; the client checks hlen before chaddr().
        let mut long_hlen = bytes.clone();
        long_hlen[2] = 200;
        assert!(decode(&long_hlen).is_some_and(|m| m.hlen() == 200));
    }
}
