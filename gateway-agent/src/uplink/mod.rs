//! The uplink: the macvlan the agent makes on the outside NIC, and its address — from the
//! upstream's DHCP server (the agent's own client) or static.
//!
//! [`Uplink::start`] returns as soon as the macvlan is up; a DHCP lease arrives later, and
//! [`Uplink::dns_servers`] and [`Uplink::status`] follow it. Everything that depends on the
//! network namespace (the netlink and UDP sockets, the /proc/sys write) is created on the
//! thread that calls `start`, so a thread that has entered a namespace with `setns` gets the
//! uplink in that namespace.

mod addr;
mod client_socket;
pub mod config;
pub mod dhcp_client;
pub mod follow;
pub mod mac_key;
mod macvlan;
mod raw_send;
mod saved_lease;
pub(crate) mod service;
mod task;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use rtnetlink::Handle;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use config::OutsideAddress;
use dhcp_client::{Client, Identity, Remembered};
use saved_lease::SavedLeaseFile;

pub use macvlan::derive_mac;
pub use saved_lease::FILE_NAME as LEASE_FILE_NAME;
pub use service::SERVICE;

/// How long [`Uplink::stop`] waits for the DHCP task to release and clean up.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the uplink needs from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSettings {
    /// `interfaces.outside`: the NIC the macvlan is made on.
    pub parent: String,
    /// `outside.address`: DHCP or static.
    pub address: OutsideAddress,
    /// The rest of `[outside]`: macvlan name, mode, MAC, IPv6, host name.
    pub uplink: config::Uplink,
    /// Where the last lease is kept for INIT-REBOOT (`state.dir`).
    pub state_dir: PathBuf,
}

/// The uplink as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkStatus {
    /// The macvlan.
    pub device: String,
    /// The NIC it sits on.
    pub parent: String,
    /// The macvlan's MAC, `02:…`.
    pub mac: String,
    /// `static`, or the DHCP client's state: `init`, `selecting`, `requesting`, `rebooting`,
    /// `bound`, `renewing`, `rebinding`, `stopped`.
    pub state: String,
    pub address: Option<Ipv4Addr>,
    pub prefix_len: Option<u8>,
    /// The default router.
    pub router: Option<Ipv4Addr>,
    /// The DHCP server that granted the lease.
    pub server: Option<Ipv4Addr>,
    /// The lease's DNS servers (option 6).
    pub dns_servers: Vec<Ipv4Addr>,
    /// Seconds since the Unix epoch; `None` without a lease, for an infinite one, or static.
    pub lease_expires_unix: Option<u64>,
    /// Successful renewals (or rebinds) of the same address since start.
    pub renewals: u64,
}

/// Every value [`UplinkStatus::state`] takes: `static`, then the DHCP client's states.
pub fn states() -> impl Iterator<Item = &'static str> {
    std::iter::once(STATIC_STATE).chain(dhcp_client::State::ALL.iter().map(|s| s.as_str()))
}

/// [`UplinkStatus::state`] of a static address.
const STATIC_STATE: &str = "static";

/// The running uplink. Dropping it without [`Uplink::stop`] ends the DHCP client without a
/// release, as a crash would: the address stays until its lease runs out (the kernel removes
/// it then), and the next start confirms the lease with INIT-REBOOT.
pub struct Uplink {
    device: String,
    status: watch::Receiver<UplinkStatus>,
    dns: watch::Receiver<Vec<Ipv4Addr>>,
    running: Running,
}

enum Running {
    Dhcp {
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    },
    Static {
        netlink: Handle,
        index: u32,
        address: Ipv4Addr,
        gateway: Option<Ipv4Addr>,
        status: watch::Sender<UplinkStatus>,
        // Kept so dns_servers() receivers stay open (always empty when static).
        _dns: watch::Sender<Vec<Ipv4Addr>>,
    },
}

impl Uplink {
    /// Creates (or reuses) the macvlan, sets IPv6 on it as configured, brings it up, then
    /// applies the static address or starts the DHCP client. Returns once the macvlan is up,
    /// without waiting for a lease. Must run inside a tokio runtime.
    pub async fn start(settings: UplinkSettings) -> Result<Uplink> {
        let (connection, netlink, _) =
            rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(connection);

        let mac_key = mac_key::load_or_create(&settings.state_dir)
            .context("the key of the uplink macvlan's MAC")?;
        let link = macvlan::ensure(&netlink, &settings.parent, &settings.uplink, &mac_key).await?;
        let mac = link.mac.to_string();
        tracing::info!(
            device = %link.name,
            parent = %settings.parent,
            mac = %mac,
            "uplink macvlan {}",
            if link.created { "created" } else { "reused" }
        );
        let initial = UplinkStatus {
            device: link.name.clone(),
            parent: settings.parent.clone(),
            mac,
            state: "init".to_owned(),
            address: None,
            prefix_len: None,
            router: None,
            server: None,
            dns_servers: Vec::new(),
            lease_expires_unix: None,
            renewals: 0,
        };
        let (status_tx, status_rx) = watch::channel(initial);
        let (dns_tx, dns_rx) = watch::channel(Vec::new());

        let running = match settings.address {
            OutsideAddress::Static {
                address,
                prefix_len,
                gateway,
            } => {
                addr::set_address(&netlink, link.index, address, prefix_len, None)
                    .await
                    .context("outside.address")?;
                match gateway {
                    Some(gateway) => addr::set_default_route(&netlink, link.index, gateway).await,
                    None => addr::remove_default_routes(&netlink, link.index).await,
                }
                .context("outside.address")?;
                status_tx.send_modify(|s| {
                    s.state = STATIC_STATE.to_owned();
                    s.address = Some(address);
                    s.prefix_len = Some(prefix_len);
                    s.router = gateway;
                });
                tracing::info!(
                    device = %link.name,
                    address = %format!("{address}/{prefix_len}"),
                    router = ?gateway,
                    "uplink configured statically"
                );
                Running::Static {
                    netlink,
                    index: link.index,
                    address,
                    gateway,
                    status: status_tx,
                    _dns: dns_tx,
                }
            }
            OutsideAddress::Dhcp => {
                let socket = client_socket::ClientSocket::open(&link.name)?;
                // Whatever an earlier run left is confirmed by INIT-REBOOT before it is used
                // again, not trusted as is.
                addr::remove_default_routes(&netlink, link.index).await?;
                addr::flush_addresses(&netlink, link.index).await?;
                let saved_lease = SavedLeaseFile::new(&settings.state_dir);
                let now = crate::clock::unix_now();
                let remembered = saved_lease.load().map(|stored| Remembered {
                    address: stored.address,
                    reboot: !stored.released
                        && stored.expires_unix.is_none_or(|expires| expires > now),
                });
                let client = Client::new(
                    Identity {
                        mac: link.mac,
                        hostname: settings.uplink.hostname.clone().map(String::from),
                    },
                    random_seed(),
                );
                let driver = task::Driver::new(
                    netlink,
                    link.index,
                    link.name.clone(),
                    socket,
                    saved_lease,
                    status_tx,
                    dns_tx,
                );
                let (stop, stop_rx) = oneshot::channel();
                let task = tokio::spawn(driver.run(client, remembered, stop_rx));
                Running::Dhcp { stop, task }
            }
        };
        Ok(Uplink {
            device: link.name,
            status: status_rx,
            dns: dns_rx,
            running,
        })
    }

    /// The macvlan's name (the dataplane attaches its outside TC programs there).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The current lease's DNS servers (option 6); empty without a lease, and when static.
    pub fn dns_servers(&self) -> watch::Receiver<Vec<Ipv4Addr>> {
        self.dns.clone()
    }

    /// A snapshot of the uplink's state.
    pub fn status(&self) -> UplinkStatus {
        self.status.borrow().clone()
    }

    /// The status as it changes (for the control socket, or to wait for a lease).
    pub fn status_watch(&self) -> watch::Receiver<UplinkStatus> {
        self.status.clone()
    }

    /// Clean shutdown: DHCPRELEASE, and the address and default route taken away.
    ///
    /// The macvlan itself stays. The outside TC programs are attached to it and the dataplane
    /// re-uses them and their pins on the next run; deleting and re-creating the device would
    /// also make the upstream switch relearn the MAC for nothing. Without an address nothing
    /// is routed through it, and the next start reuses it.
    pub async fn stop(self) {
        match self.running {
            Running::Dhcp { stop, task } => {
                let abort = task.abort_handle();
                // An error means the task already ended; there is nothing to release then.
                let _ = stop.send(());
                match tokio::time::timeout(STOP_TIMEOUT, task).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => tracing::error!("the uplink DHCP client failed: {err}"),
                    Err(_) => {
                        abort.abort();
                        tracing::error!(
                            "the uplink DHCP client did not stop within {STOP_TIMEOUT:?}; \
                             its address may remain until the lease runs out"
                        );
                    }
                }
            }
            Running::Static {
                netlink,
                index,
                address,
                gateway,
                status,
                _dns,
            } => {
                if gateway.is_some() {
                    if let Err(err) = addr::remove_default_routes(&netlink, index).await {
                        tracing::error!("{err:#}");
                    }
                }
                if let Err(err) = addr::remove_address(&netlink, index, address).await {
                    tracing::error!("{err:#}");
                }
                status.send_modify(|s| {
                    s.state = "stopped".to_owned();
                    s.address = None;
                    s.prefix_len = None;
                    s.router = None;
                });
            }
        }
        tracing::info!(device = %self.device, "uplink stopped");
    }
}

/// A seed for xids and jitter that other hosts cannot guess.
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for writes of its length.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got == 8 {
        return u64::from_ne_bytes(bytes);
    }
    // getrandom cannot fail on a supported kernel; this keeps the client working regardless.
    let nanos = crate::clock::since_epoch().as_nanos() as u64;
    nanos ^ (u64::from(std::process::id()) << 32)
}
