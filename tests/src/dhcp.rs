//! Real DHCP clients (dhclient, udhcpc) on the lab's inside clients, and the events their hook
//! scripts report.

use std::time::Duration;

use crate::{eventually, OrFail, TestLab};

pub use xtask::lab::DhcpClient;

/// One event a DHCP client reported through its hook script (`reason`, `ip`, `router`, `dns`,
/// `domain`, `search`, `lease`, `mask`).
pub type DhcpEvent = std::collections::BTreeMap<String, String>;

/// Events that mean "bound" for dhclient and udhcpc.
const BOUND: [&str; 4] = ["BOUND", "REBOOT", "RENEW", "bound"];

impl TestLab {
    /// Runs a real DHCP client on `role`'s eth0 (sending `hostname` if given) until it is
    /// bound; it keeps running and renewing until the lab goes down. Returns the bound event.
    pub fn dhcp(&self, role: &str, client: DhcpClient, hostname: Option<&str>) -> DhcpEvent {
        let before = self.dhcp_events(role).len();
        self.lab
            .start_dhcp_client(role, client, hostname)
            .or_fail(format_args!("starting {client:?} in {role}"));
        let mut bound = None;
        let ok = eventually(Duration::from_secs(30), || {
            bound = self
                .dhcp_events(role)
                .into_iter()
                .skip(before)
                .find(|e| BOUND.contains(&e.get("reason").map(String::as_str).unwrap_or("")));
            bound.is_some()
        });
        assert!(
            ok,
            "{client:?} in {role} reported no lease: {:?}",
            self.dhcp_events(role)
        );
        bound.unwrap_or_default()
    }

    /// Every event `role`'s DHCP client reported so far, oldest first.
    pub fn dhcp_events(&self, role: &str) -> Vec<DhcpEvent> {
        let text = std::fs::read_to_string(self.lab.dhcp_log(role)).unwrap_or_default();
        text.split("--\n")
            .filter(|chunk| !chunk.trim().is_empty())
            .map(|chunk| {
                chunk
                    .lines()
                    .filter_map(|line| line.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                    .collect()
            })
            .collect()
    }
}
