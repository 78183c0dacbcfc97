//! The inside DHCP server (RFC 2131) on udp/67 of the inside NIC.
//!
//! Leases belong to the client identifier (option 61) when the client sends one, else to the
//! MAC. Every acknowledged lease is committed to a redb file before the DHCPACK leaves, so a
//! `kill -9` loses none; at start the live ones are restored and announced to the sinks (the
//! DNS zone, the dataplane's lease maps) before anything is served.
//!
//! Layout: `packet` decodes and validates what clients send, `handler` is the DHCP logic
//! (pure: packet and time in, reply and changes out; `handler::messages` per message type,
//! `handler::answer` the reply's options and destination), `pool` picks addresses,
//! `hostname` makes client names safe and unique, `lease_table` is the in-memory table,
//! `store` the redb file, `rate` the per-MAC limit, `reply` the encoder, `socket` and
//! `server` the I/O.

pub mod config;
mod handler;
mod hostname;
mod lease_table;
mod packet;
mod pool;
mod reply;
mod server;
pub(crate) mod service;
mod socket;
mod stats;
mod store;
pub mod wire;

#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{DomainName, Inside};
use crate::lease_events::LeaseSink;
use crate::net::service_task::ServiceTask;

pub use service::SERVICE;
pub use stats::DhcpStats;

/// The inside server's reading of a datagram: [`wire::decode`] as a client message, plus the
/// server's own rules (the message types it serves). `Ok` when the DHCP logic would see it.
/// For the fuzz target; the server calls the same code.
pub fn decode_request(bytes: &[u8]) -> Result<(), wire::Rejected> {
    packet::decode(bytes).map(drop)
}

use handler::Handler;
use server::Server;
use socket::DhcpSocket;
use store::Store;

/// What the server needs to know; the agent fills it from the config.
#[derive(Debug, Clone)]
pub struct DhcpServerSettings {
    /// The inside NIC; the socket is bound to it (SO_BINDTODEVICE).
    pub interface: String,
    /// The gateway's inside address: server identifier, router and DNS server for clients.
    pub server_ip: Ipv4Addr,
    /// The inside subnet.
    pub inside: Inside,
    /// Server port, 67 (tests may use another).
    pub port: u16,
    /// Client port, 68.
    pub client_port: u16,
    /// `[dhcp]`: pool, lease time, reservations, limits.
    pub dhcp: config::Dhcp,
    /// The local DNS zone (e.g. `home.arpa`): the default search list and clients' FQDN.
    pub zone: DomainName,
    /// Names clients may not take (the service names: gateway, registry, mirror, …).
    pub reserved_names: Vec<String>,
    /// The lease store file (redb), e.g. `<state dir>/dhcp-leases.redb`.
    pub store_path: PathBuf,
    /// Log every exchange (MAC, address); off by default, for privacy.
    pub log_queries: bool,
}

/// One row of `gateway-agent leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub address: Ipv4Addr,
    /// `02:00:00:00:00:01`.
    pub mac: String,
    /// Option 61 in lowercase hex, if the client sent one.
    pub client_id: Option<String>,
    pub hostname: Option<String>,
    /// Unix seconds: end of the lease, the offer, or the quarantine.
    pub expires_unix: u64,
    /// `bound`, `offered`, `released`, `expired` (kept to give the client its address back)
    /// or `declined` (quarantined).
    pub state: String,
}

/// The running server.
pub struct DhcpServer {
    handler: Arc<Mutex<Handler>>,
    task: ServiceTask,
}

impl DhcpServer {
    /// Opens the socket and the store, restores the stored leases (sending `Bound` to every
    /// sink for each live one), then serves until [`DhcpServer::stop`] or the handle is dropped.
    pub async fn start(
        settings: DhcpServerSettings,
        sinks: Vec<Arc<dyn LeaseSink>>,
    ) -> Result<DhcpServer> {
        let mut handler = Handler::new(&settings).context("checking the DHCP server settings")?;
        let socket = DhcpSocket::bind(&settings.interface, settings.port)?;
        let path = settings.store_path.clone();
        let (store, mut loaded) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&path)?;
            let loaded = store.load()?;
            anyhow::Ok((store, loaded))
        })
        .await
        .context("the lease store task failed")??;
        let store = Arc::new(store);

        let unreadable = std::mem::take(&mut loaded.unreadable);
        if !unreadable.is_empty() {
            tracing::warn!(
                rows = unreadable.len(),
                "unreadable rows in the DHCP lease store; removing them"
            );
        }
        let restored = handler.restore(loaded, crate::clock::unix_now());
        let cleanup = restored.store;
        let writer = store.clone();
        tokio::task::spawn_blocking(move || {
            writer.delete_raw(&unreadable)?;
            writer.apply(&cleanup)
        })
        .await
        .context("the lease store task failed")??;
        tracing::info!(
            interface = %settings.interface,
            restored = restored.events.len(),
            "DHCP server running"
        );

        let handler = Arc::new(Mutex::new(handler));
        let server = Server::new(handler.clone(), store, socket, sinks);
        server.emit(&restored.events);
        let task = ServiceTask::spawn("DHCP server", |shutdown| server.run(shutdown));
        Ok(DhcpServer { handler, task })
    }

    /// Every lease, offer, past lease and quarantined address, in address order.
    pub fn leases(&self) -> Vec<LeaseRecord> {
        server::lock(&self.handler).records()
    }

    /// The counters.
    pub fn stats(&self) -> DhcpStats {
        server::lock(&self.handler).stats()
    }

    /// A handle that reads leases and counters while the server runs, for the control socket.
    pub fn reader(&self) -> DhcpReader {
        DhcpReader(self.handler.clone())
    }

    /// Stops serving, within the service-task bound. Nothing needs flushing: every change was
    /// synced when it was made, and a commit cut short never acknowledged its lease.
    pub async fn stop(self) {
        self.task.stop().await;
    }
}

/// Reads a running server's leases and counters (see [`DhcpServer::reader`]).
#[derive(Clone)]
pub struct DhcpReader(Arc<Mutex<Handler>>);

impl DhcpReader {
    /// The leases, as `gateway-agent leases` shows them.
    pub fn leases(&self) -> Vec<LeaseRecord> {
        server::lock(&self.0).records()
    }

    /// The counters since start.
    pub fn stats(&self) -> DhcpStats {
        server::lock(&self.0).stats()
    }
}
