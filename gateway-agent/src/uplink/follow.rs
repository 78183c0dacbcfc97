//! Watches derived from the uplink's status, for the services that follow it: Tor waits for
//! an address before bootstrapping, the uplink resolver sends from the current address to the
//! current lease's resolvers.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::sync::watch;

use super::UplinkStatus;

/// Whether the uplink has an address (a lease, or a static one).
pub fn up(mut uplink: watch::Receiver<UplinkStatus>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(uplink.borrow_and_update().address.is_some());
    tokio::spawn(async move {
        while uplink.changed().await.is_ok() {
            let up = uplink.borrow_and_update().address.is_some();
            tx.send_if_modified(|current| std::mem::replace(current, up) != up);
            if tx.is_closed() {
                break;
            }
        }
    });
    rx
}

/// The uplink's current address (none until it has a lease).
pub fn address(mut uplink: watch::Receiver<UplinkStatus>) -> watch::Receiver<Option<Ipv4Addr>> {
    let (tx, rx) = watch::channel(uplink.borrow_and_update().address);
    tokio::spawn(async move {
        while uplink.changed().await.is_ok() {
            let address = uplink.borrow_and_update().address;
            tx.send_if_modified(|current| {
                let changed = *current != address;
                *current = address;
                changed
            });
            if tx.is_closed() {
                break;
            }
        }
    });
    rx
}

/// The resolvers of the current uplink lease, as DNS server addresses.
pub fn lease_servers(
    mut lease: watch::Receiver<Vec<Ipv4Addr>>,
) -> watch::Receiver<Vec<SocketAddr>> {
    let to_sockets =
        |ips: &[Ipv4Addr]| -> Vec<SocketAddr> { ips.iter().map(|ip| (*ip, 53).into()).collect() };
    let (tx, rx) = watch::channel(to_sockets(&lease.borrow_and_update()));
    tokio::spawn(async move {
        while lease.changed().await.is_ok() {
            let servers = to_sockets(&lease.borrow_and_update());
            if tx.send(servers).is_err() {
                break;
            }
        }
    });
    rx
}
