//! Sockets for steered inside traffic (`dataplane::steering`): bound to 127.0.0.1 with
//! `IP_TRANSPARENT`, so only what `inside_steer` hands them arrives, and their answers leave
//! from the address the client asked for. Without `IP_TRANSPARENT` the kernel receives a
//! steered SYN but never routes the SYN-ACK back, and a UDP reply from a foreign source fails.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use socket2::{Domain, Socket, Type};
use tokio::io::Interest;
use tokio::net::{TcpListener, UdpSocket};

/// A TCP listener on `listen` for steered connections; `getsockname()` on an accepted stream
/// is the address the client connected to.
pub fn tcp_listener(listen: SocketAddr) -> Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).context("creating a socket")?;
    socket
        .set_ip_transparent_v4(true)
        .context("setting IP_TRANSPARENT (needs CAP_NET_ADMIN)")?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&listen.into())
        .with_context(|| format!("binding {listen}"))?;
    socket.listen(1024).context("listening")?;
    TcpListener::from_std(socket.into()).context("registering the listener with tokio")
}

/// One steered datagram: who sent it, and to which address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// Its length in the buffer.
    pub len: usize,
    /// The client.
    pub from: SocketAddrV4,
    /// The destination the client chose (`IP_ORIGDSTADDR`).
    pub to: SocketAddrV4,
}

/// A UDP socket for steered datagrams that answers each from the address it was sent to.
pub struct SteeredUdp {
    socket: UdpSocket,
}

impl SteeredUdp {
    /// Binds `listen` (a loopback address; port 0 picks one) with `IP_TRANSPARENT` and
    /// `IP_RECVORIGDSTADDR`.
    pub fn bind(listen: SocketAddrV4) -> Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, None).context("creating a socket")?;
        socket
            .set_ip_transparent_v4(true)
            .context("setting IP_TRANSPARENT (needs CAP_NET_ADMIN)")?;
        set_recv_orig_dst(&socket).context("setting IP_RECVORIGDSTADDR")?;
        socket.set_nonblocking(true)?;
        socket
            .bind(&SocketAddr::V4(listen).into())
            .with_context(|| format!("binding {listen}"))?;
        let socket = UdpSocket::from_std(socket.into()).context("registering with tokio")?;
        Ok(SteeredUdp { socket })
    }

    /// The socket, for the steering map.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The next datagram into `buf`. One without its original destination (not steered: a
    /// local process sent it to 127.0.0.1) is skipped.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        loop {
            let got = self
                .socket
                .async_io(Interest::READABLE, || recv_with_orig_dst(&self.socket, buf))
                .await?;
            if let Some(datagram) = got {
                return Ok(datagram);
            }
        }
    }

    /// Sends `bytes` to `to` from `from` (the destination the client chose): through a
    /// short-lived transparent socket bound there, since only the address, not the port, of
    /// a reply can be chosen per datagram (`IP_PKTINFO`).
    pub async fn reply(from: SocketAddrV4, to: SocketAddrV4, bytes: &[u8]) -> io::Result<()> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
        socket.set_ip_transparent_v4(true)?;
        // Concurrent answers from the same address and port each have their own socket.
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&SocketAddr::V4(from).into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        socket.send_to(bytes, to).await?;
        Ok(())
    }
}

fn set_recv_orig_dst(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_IP,
            libc::IP_RECVORIGDSTADDR,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `recvmsg` with the `IP_ORIGDSTADDR` control message; `None` if the datagram had none.
fn recv_with_orig_dst(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
    // Room for one sockaddr_in control message (and some slack for others the kernel adds).
    let mut control = [0u64; 16];
    // SAFETY: plain C structs; zeroed is a valid initial value for each.
    let mut name: libc::sockaddr_in = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>();
    // SAFETY: every pointer in msg points at live buffers of the lengths given.
    let len = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = v4(&name);
    let mut to = None;
    // SAFETY: the CMSG_* walk stays within msg_control/msg_controllen, which the kernel set.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            if header.cmsg_level == libc::SOL_IP
                && header.cmsg_type == libc::IP_ORIGDSTADDR
                && header.cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::sockaddr_in>() as u32) as usize
            {
                let addr =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::sockaddr_in>());
                to = Some(v4(&addr));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let truncated = msg.msg_flags & libc::MSG_TRUNC != 0;
    Ok(match to {
        Some(to) if !truncated => Some(Datagram {
            len: len as usize,
            from,
            to,
        }),
        _ => None,
    })
}

fn v4(addr: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
        u16::from_be(addr.sin_port),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback without steering: the original destination is the socket's own address, and
    /// a reply from a chosen (local) address arrives from there.
    #[tokio::test]
    async fn datagrams_carry_their_destination() {
        let Ok(steered) = SteeredUdp::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)) else {
            eprintln!("skipped: IP_TRANSPARENT needs CAP_NET_ADMIN");
            return;
        };
        let SocketAddr::V4(local) = steered.socket().local_addr().unwrap() else {
            panic!("not IPv4");
        };
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"question", local).await.unwrap();
        let mut buf = [0u8; 64];
        let got = steered.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..got.len], b"question");
        assert_eq!(got.to, local);
        assert_eq!(SocketAddr::V4(got.from), client.local_addr().unwrap());

        let answer_from = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 53), 5353);
        SteeredUdp::reply(answer_from, got.from, b"answer")
            .await
            .unwrap();
        let (n, source) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"answer");
        assert_eq!(source, SocketAddr::V4(answer_from));
    }
}
