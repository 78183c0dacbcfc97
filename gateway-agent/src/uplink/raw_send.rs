//! Broadcasts from the DHCP client with the right source address, through a packet socket.
//!
//! A UDP socket cannot send from 0.0.0.0: with no address on the macvlan the kernel picks one
//! from another interface — the gateway's inside address — and that would leave by the uplink
//! (the egress guard drops it, and the DHCP exchange then never completes). Like udhcpc and
//! dhclient, the client therefore builds the IPv4 and UDP headers itself for its broadcasts.

use std::{io, net::Ipv4Addr, os::fd::AsRawFd};

use anyhow::{bail, Context, Result};
use socket2::{Domain, Socket, Type};

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
const TTL: u8 = 64;

/// A send-only packet socket on one device.
pub struct RawBroadcast {
    socket: Socket,
    ifindex: i32,
}

impl RawBroadcast {
    /// Opens the socket for `device` in the calling thread's network namespace.
    pub fn open(device: &str) -> Result<Self> {
        let name = std::ffi::CString::new(device)
            .with_context(|| format!("device name {device:?} contains a NUL byte"))?;
        // SAFETY: name is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no device {device} for the DHCP client");
        }
        // Protocol 0: this socket receives nothing; replies arrive on the UDP socket.
        let socket = Socket::new(Domain::PACKET, Type::DGRAM, None)
            .context("creating the DHCP client's packet socket (needs CAP_NET_RAW)")?;
        socket
            .set_nonblocking(true)
            .context("making the packet socket non-blocking")?;
        Ok(RawBroadcast {
            socket,
            ifindex: ifindex as i32,
        })
    }

    /// Sends `payload` from `src`:68 to 255.255.255.255:67, to the Ethernet broadcast address.
    pub fn send(&self, src: Ipv4Addr, src_port: u16, dst_port: u16, payload: &[u8]) -> Result<()> {
        let packet = ipv4_udp(src, Ipv4Addr::BROADCAST, src_port, dst_port, payload)?;
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_IP.to_be();
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: packet and addr outlive the call; the length matches the address type.
        let sent = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error()).context("sending a DHCP broadcast");
        }
        Ok(())
    }
}

/// An IPv4 header (no options, DF clear) and a UDP header in front of `payload`.
fn ipv4_udp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let udp_len = u16::try_from(8 + payload.len()).context("DHCP message too large")?;
    let total = u16::try_from(20 + 8 + payload.len()).context("DHCP message too large")?;
    let mut p = Vec::with_capacity(usize::from(total));
    p.extend_from_slice(&[0x45, 0x10]); // version 4, IHL 5; DSCP low delay, as dhclient does
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]); // id, flags, fragment offset
    p.extend_from_slice(&[TTL, IPPROTO_UDP, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let header_sum = checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&header_sum.to_be_bytes());

    let mut udp = Vec::with_capacity(usize::from(udp_len));
    udp.extend_from_slice(&src_port.to_be_bytes());
    udp.extend_from_slice(&dst_port.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    // The UDP checksum covers a pseudo-header of addresses, protocol and length.
    let mut pseudo = 0u32;
    for pair in src.octets().chunks(2).chain(dst.octets().chunks(2)) {
        pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    pseudo += u32::from(IPPROTO_UDP) + u32::from(udp_len);
    let udp_sum = match checksum(&udp, pseudo) {
        0 => 0xffff, // zero means "no checksum" in UDP over IPv4
        sum => sum,
    };
    udp[6..8].copy_from_slice(&udp_sum.to_be_bytes());
    p.extend_from_slice(&udp);
    Ok(p)
}

/// The Internet checksum (RFC 1071) of `data`, starting from `initial`.
fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = match chunk {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_verify() {
        let payload = b"dhcp payload, odd length";
        let p = ipv4_udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, payload).unwrap();
        assert_eq!(p.len(), 20 + 8 + payload.len());
        // A correct header sums to zero with its checksum included.
        assert_eq!(checksum(&p[..20], 0), 0);
        assert_eq!(&p[12..16], &[0, 0, 0, 0], "source 0.0.0.0");
        assert_eq!(&p[16..20], &[255, 255, 255, 255]);
        let udp = &p[20..];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 68);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 67);
        let pseudo = 0xffff + 0xffff + u32::from(IPPROTO_UDP) + udp.len() as u32;
        assert_eq!(checksum(udp, pseudo), 0, "UDP checksum verifies");
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data, 0), !0xddf2);
    }
}
