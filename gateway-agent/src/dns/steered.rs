//! DNS that inside clients send to other resolvers: the dataplane steers UDP and TCP port 53
//! for any address but the gateway's to these sockets, and the server answers it as if it had
//! been asked directly (same ACL, rate limit, zone, cache and upstream), from the address the
//! client asked. A client with a hard-coded resolver gets the gateway's answers over Tor; its
//! question never leaves in clear text.
//!
//! TCP needs nothing special (hickory serves the transparent listener like its own: the
//! accepted stream already carries the original address). UDP does: hickory's socket would
//! answer from 127.0.0.1, so datagrams are read here with their original destination and each
//! answer is sent from it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use anyhow::Result;
use futures::StreamExt;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::BufDnsStreamHandle;
use hickory_server::server::{Request, ResponseHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::handler::Handler;
use super::stats::bump;
use crate::net::transparent::{self, SteeredUdp};

/// Steered questions answered at once; more are dropped (the client retries), so a flood
/// cannot grow the task count without bound.
const MAX_IN_FLIGHT: usize = 512;

/// The transparent sockets, bound on 127.0.0.1 (ports the kernel picks: only the steering
/// map needs to know them).
pub struct SteeredSockets {
    /// UDP, answered by [`serve_udp`].
    pub udp: SteeredUdp,
    /// TCP, registered with the hickory server.
    pub tcp: TcpListener,
}

impl SteeredSockets {
    /// Binds both (needs CAP_NET_ADMIN for `IP_TRANSPARENT`).
    pub fn bind() -> Result<Self> {
        let any_port = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        Ok(SteeredSockets {
            udp: SteeredUdp::bind(any_port)?,
            tcp: transparent::tcp_listener(SocketAddr::V4(any_port))?,
        })
    }
}

/// Answers steered UDP questions until the task is aborted (which closes the socket, and the
/// kernel takes it out of the steering map).
pub(crate) fn serve_udp(udp: SteeredUdp, handler: Handler) -> JoinHandle<()> {
    tokio::spawn(async move {
        let udp = Arc::new(udp);
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut buf = vec![0u8; 4096];
        loop {
            let datagram = match udp.recv(&mut buf).await {
                Ok(datagram) => datagram,
                Err(err) => {
                    tracing::debug!(error = %err, "reading a steered DNS datagram failed");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let bytes = buf[..datagram.len].to_vec();
            let handler = handler.clone();
            tokio::spawn(async move {
                let _slot = slot;
                answer(&handler, bytes, datagram.from, datagram.to).await;
            });
        }
    })
}

async fn answer(handler: &Handler, bytes: Vec<u8>, client: SocketAddrV4, asked: SocketAddrV4) {
    let src = SocketAddr::V4(client);
    let Ok(request) = Request::from_bytes(bytes, src, Protocol::Udp) else {
        // hickory's own UDP path drops what it cannot parse too.
        bump(&handler.0.counters.bad_requests);
        return;
    };
    let (stream, mut replies) = BufDnsStreamHandle::new(src);
    handler
        .handle(&request, ResponseHandle::new(src, stream, Protocol::Udp))
        .await;
    // The response handle (and the sender in it) is gone now: the stream ends after the reply.
    while let Some(reply) = replies.next().await {
        if let Err(err) = SteeredUdp::reply(asked, client, reply.bytes()).await {
            tracing::debug!(error = %err, "sending a steered DNS reply failed");
        }
    }
}
