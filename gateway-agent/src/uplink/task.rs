//! The DHCP client task: feeds the state machine packets and timer ticks, and carries out its
//! actions on the socket, the kernel's addresses and routes, the lease file and the watchers.

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::Message;
use rtnetlink::Handle;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::addr;
use super::client_socket::ClientSocket;
use super::dhcp_client::{Action, Client, Destination, Lease, Remembered};
use super::saved_lease::{SavedLease, SavedLeaseFile};
use super::UplinkStatus;

/// Timers further out than this are re-armed, which keeps far deadlines (an infinite lease)
/// away from any overflow in the timer wheel.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Time for the DHCPRELEASE to leave (it may wait for ARP) before its source address goes.
const RELEASE_GRACE: Duration = Duration::from_millis(300);
/// Pause after a receive error, so a vanished device does not spin the task.
const RECV_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Everything the task owns.
pub(super) struct Driver {
    pub netlink: Handle,
    pub index: u32,
    pub device: String,
    pub socket: ClientSocket,
    pub saved_lease: SavedLeaseFile,
    pub status: watch::Sender<UplinkStatus>,
    pub dns: watch::Sender<Vec<Ipv4Addr>>,
    origin: Instant,
    /// The lease whose address is on the device.
    applied: Option<Lease>,
    /// Whether the last send failed, so a dead link logs once, not every retransmission.
    send_failing: bool,
}

enum Event {
    /// `true`: stop() asked; `false`: the handle was dropped.
    Stop(bool),
    Received(io::Result<(Option<Message>, Ipv4Addr)>),
    Timer,
}

impl Driver {
    pub fn new(
        netlink: Handle,
        index: u32,
        device: String,
        socket: ClientSocket,
        saved_lease: SavedLeaseFile,
        status: watch::Sender<UplinkStatus>,
        dns: watch::Sender<Vec<Ipv4Addr>>,
    ) -> Self {
        Driver {
            netlink,
            index,
            device,
            socket,
            saved_lease,
            status,
            dns,
            origin: Instant::now(),
            applied: None,
            send_failing: false,
        }
    }

    /// The state machine's clock.
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Runs the client until `stop` fires (release) or its sender is dropped (no release: as
    /// after a crash, the next start confirms the lease).
    pub async fn run(
        mut self,
        mut client: Client,
        remembered: Option<Remembered>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let actions = client.start(self.now(), remembered);
        self.execute(&client, actions).await;
        loop {
            let now = self.now();
            let wait = client
                .next_deadline()
                .map_or(MAX_WAIT, |deadline| deadline.saturating_sub(now))
                .min(MAX_WAIT);
            let event = tokio::select! {
                biased;
                signal = &mut stop => Event::Stop(signal.is_ok()),
                received = self.socket.recv() => Event::Received(received),
                () = tokio::time::sleep(wait) => Event::Timer,
            };
            let actions = match event {
                Event::Stop(true) => break,
                Event::Stop(false) => return,
                Event::Timer => client.handle_timeout(self.now()),
                Event::Received(Ok((Some(msg), from))) => {
                    client.handle_packet(self.now(), &msg, from)
                }
                Event::Received(Ok((None, _))) => Vec::new(),
                Event::Received(Err(err)) => {
                    tracing::warn!(device = %self.device, "DHCP client receive: {err}");
                    tokio::time::sleep(RECV_ERROR_PAUSE).await;
                    Vec::new()
                }
            };
            self.execute(&client, actions).await;
        }

        let actions = client.release(self.now());
        for action in actions {
            match action {
                Action::Send { message, to } => self.send(&message, to).await,
                Action::Deconfigure(lease) => {
                    tokio::time::sleep(RELEASE_GRACE).await;
                    self.deconfigure(&lease, "released").await;
                }
                Action::Configure(lease) => self.configure(lease).await,
            }
        }
        self.status
            .send_modify(|s| s.state = client.state().as_str().to_owned());
    }

    async fn execute(&mut self, client: &Client, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { message, to } => self.send(&message, to).await,
                Action::Configure(lease) => self.configure(lease).await,
                Action::Deconfigure(lease) => self.deconfigure(&lease, "lost").await,
            }
        }
        let state = client.state().as_str();
        self.status.send_if_modified(|s| {
            let changed = s.state != state;
            if changed {
                s.state = state.to_owned();
            }
            changed
        });
    }

    async fn send(&mut self, message: &Message, to: Destination) {
        match self.socket.send(message, to).await {
            Ok(()) => self.send_failing = false,
            Err(err) if !self.send_failing => {
                self.send_failing = true;
                tracing::warn!(device = %self.device, "DHCP client: {err:#}");
            }
            Err(err) => tracing::debug!(device = %self.device, "DHCP client: {err:#}"),
        }
    }

    async fn configure(&mut self, lease: Lease) {
        let now = self.now();
        let renewal = self
            .applied
            .as_ref()
            .is_some_and(|applied| applied.address == lease.address);
        let lifetime = (!lease.is_infinite()).then(|| lease.remaining(now));
        if let Err(err) = addr::set_address(
            &self.netlink,
            self.index,
            lease.address,
            lease.prefix_len,
            lifetime,
        )
        .await
        {
            tracing::error!(device = %self.device, "{err:#}");
        }
        let route = match lease.router {
            Some(router) => addr::set_default_route(&self.netlink, self.index, router).await,
            None => addr::remove_default_routes(&self.netlink, self.index).await,
        };
        if let Err(err) = route {
            tracing::error!(device = %self.device, "{err:#}");
        }

        let expires_unix =
            lifetime.map(|left| crate::clock::unix_now().saturating_add(left.as_secs()));
        let stored = SavedLease {
            address: lease.address,
            server: lease.server,
            expires_unix,
            released: false,
        };
        if let Err(err) = self.saved_lease.store(&stored) {
            tracing::warn!("remembering the uplink lease: {err:#}");
        }
        let dns = lease.dns_servers.clone();
        self.dns.send_if_modified(|current| {
            let changed = *current != dns;
            *current = dns;
            changed
        });
        self.status.send_modify(|s| {
            s.address = Some(lease.address);
            s.prefix_len = Some(lease.prefix_len);
            s.router = lease.router;
            s.server = Some(lease.server);
            s.dns_servers = lease.dns_servers.clone();
            s.lease_expires_unix = expires_unix;
            if renewal {
                s.renewals = s.renewals.saturating_add(1);
            }
        });
        let lease_secs = lease.lease_time.as_secs();
        if renewal {
            tracing::info!(
                device = %self.device,
                address = %lease.address,
                lease_secs,
                "uplink lease renewed"
            );
        } else {
            tracing::info!(
                device = %self.device,
                address = %format!("{}/{}", lease.address, lease.prefix_len),
                router = ?lease.router,
                server = %lease.server,
                dns = ?lease.dns_servers,
                lease_secs,
                "uplink lease acquired"
            );
        }
        self.applied = Some(lease);
    }

    async fn deconfigure(&mut self, lease: &Lease, why: &str) {
        if let Err(err) = addr::remove_default_routes(&self.netlink, self.index).await {
            tracing::error!(device = %self.device, "{err:#}");
        }
        if let Err(err) = addr::remove_address(&self.netlink, self.index, lease.address).await {
            tracing::error!(device = %self.device, "{err:#}");
        }
        let stored = SavedLease {
            address: lease.address,
            server: lease.server,
            expires_unix: None,
            released: true,
        };
        if let Err(err) = self.saved_lease.store(&stored) {
            tracing::warn!("remembering the uplink lease: {err:#}");
        }
        self.dns.send_if_modified(|current| {
            let changed = !current.is_empty();
            current.clear();
            changed
        });
        self.status.send_modify(|s| {
            s.address = None;
            s.prefix_len = None;
            s.router = None;
            s.server = None;
            s.dns_servers.clear();
            s.lease_expires_unix = None;
        });
        tracing::info!(device = %self.device, address = %lease.address, "uplink lease {why}");
        self.applied = None;
    }
}
