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

use std::time::Instant;

use anyhow::Result;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::fast::{FastPath, Outcome};
use super::MAX_UDP_PAYLOAD;
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
/// kernel takes it out of the steering map): from the fast path's answers when it has one,
/// through the slow path otherwise, as for the inside address.
pub(crate) fn serve_udp(udp: SteeredUdp, fast: Arc<FastPath>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut buf = vec![0u8; 4096];
        let mut out = vec![0u8; usize::from(MAX_UDP_PAYLOAD)];
        loop {
            let datagram = match udp.recv(&mut buf).await {
                Ok(datagram) => datagram,
                Err(err) => {
                    tracing::debug!(error = %err, "reading a steered DNS datagram failed");
                    continue;
                }
            };
            let (client, asked) = (datagram.from, datagram.to);
            let now = Instant::now();
            let msg = &buf[..datagram.len];
            let admission = match fast.answer(msg, SocketAddr::V4(client), now, &mut out) {
                Outcome::Answered(len) => {
                    send(asked, client, &out[..len]).await;
                    continue;
                }
                Outcome::Slow(admission) => admission,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let (msg, fast) = (msg.to_vec(), fast.clone());
            tokio::spawn(async move {
                let _slot = slot;
                if let Some(reply) = fast.slow(msg, SocketAddr::V4(client), admission, now).await {
                    send(asked, client, &reply).await;
                }
            });
        }
    })
}

async fn send(asked: SocketAddrV4, client: SocketAddrV4, reply: &[u8]) {
    if let Err(err) = SteeredUdp::reply(asked, client, reply).await {
        tracing::debug!(error = %err, "sending a steered DNS reply failed");
    }
}
