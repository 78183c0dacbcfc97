//! The server's UDP socket: bound to the inside NIC only, able to broadcast, and able to
//! unicast to a client that has no address yet (by writing its ARP entry first, as ISC dhcpd
//! and dnsmasq do).

use crate::mac::MacAddr;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::handler::{Destination, Outgoing};

/// The inside DHCP socket.
pub(crate) struct DhcpSocket {
    socket: UdpSocket,
    interface: String,
}

impl DhcpSocket {
    /// Binds 0.0.0.0:`port` on `interface` (SO_BINDTODEVICE), with SO_BROADCAST and
    /// SO_REUSEADDR. Must be called inside a tokio runtime.
    pub(crate) fn bind(interface: &str, port: u16) -> Result<DhcpSocket> {
        let context = || format!("opening the DHCP server socket on {interface} port {port}");
        let socket =
            Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).with_context(context)?;
        socket.set_reuse_address(true).with_context(context)?;
        socket.set_broadcast(true).with_context(context)?;
        // Clients have no address yet, so only the device tells the inside from the outside.
        socket
            .bind_device(Some(interface.as_bytes()))
            .with_context(|| format!("binding the DHCP server socket to device {interface}"))?;
        socket.set_nonblocking(true).with_context(context)?;
        let address = SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        socket.bind(&address.into()).with_context(context)?;
        let socket = UdpSocket::from_std(socket.into()).with_context(context)?;
        Ok(DhcpSocket {
            socket,
            interface: interface.to_owned(),
        })
    }

    /// Receives one datagram. A datagram larger than `buf` comes back cut to `buf.len()`, so
    /// a buffer one byte over the largest acceptable size tells giants apart.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        loop {
            let (len, source) = self.socket.recv_from(buf).await?;
            if let SocketAddr::V4(source) = source {
                return Ok((len, source));
            }
        }
    }

    /// Receives one datagram if one is queued, without waiting.
    pub(crate) fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddrV4)>> {
        loop {
            match self.socket.try_recv_from(buf) {
                Ok((len, SocketAddr::V4(source))) => return Ok(Some((len, source))),
                Ok(_) => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(err) => return Err(err),
            }
        }
    }

    /// Sends a reply where the handler said.
    pub(crate) async fn send(&self, outgoing: &Outgoing) -> io::Result<()> {
        let target = match outgoing.destination {
            Destination::Broadcast(port) => SocketAddrV4::new(Ipv4Addr::BROADCAST, port),
            Destination::Unicast(target) => target,
            Destination::Hardware { address, mac } => match self.set_arp(*address.ip(), mac) {
                Ok(()) => address,
                Err(error) => {
                    tracing::debug!(%error, "no ARP entry for a DHCP client; broadcasting");
                    SocketAddrV4::new(Ipv4Addr::BROADCAST, address.port())
                }
            },
        };
        self.socket.send_to(&outgoing.bytes, target).await.map(drop)
    }

    /// SIOCSARP: `ip` is at `mac` on our interface, so the kernel can unicast to a client
    /// that cannot answer ARP yet. The entry ages out like any learned one.
    fn set_arp(&self, ip: Ipv4Addr, mac: MacAddr) -> io::Result<()> {
        // SAFETY: arpreq is plain old data; all-zero is a valid value.
        let mut request: libc::arpreq = unsafe { std::mem::zeroed() };
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in and sockaddr are both 16 bytes; arp_pa is a sockaddr.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&raw const address).cast::<u8>(),
                (&raw mut request.arp_pa).cast::<u8>(),
                std::mem::size_of::<libc::sockaddr_in>(),
            );
        }
        request.arp_ha.sa_family = libc::ARPHRD_ETHER;
        for (slot, byte) in request.arp_ha.sa_data.iter_mut().zip(mac.octets()) {
            *slot = byte as libc::c_char;
        }
        request.arp_flags = libc::ATF_COM;
        let name = self.interface.as_bytes();
        if name.len() >= request.arp_dev.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface name too long",
            ));
        }
        for (slot, byte) in request.arp_dev.iter_mut().zip(name) {
            *slot = *byte as libc::c_char;
        }
        // SAFETY: a valid socket fd and a fully initialised arpreq that outlives the call.
        let rc = unsafe {
            libc::ioctl(
                self.socket.as_raw_fd(),
                libc::SIOCSARP as libc::Ioctl,
                &raw const request,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}
