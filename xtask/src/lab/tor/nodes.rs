//! The network's nodes: who they are (authorities, relays, exits), where they live on the stand-in
//! internet and on disk, and whether one runs.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::lab::layout::{Lab, ARTI_CONFIG_FILE};

/// Every node's ORPort, on its own address.
pub const OR_PORT: u16 = 5000;
/// Every node's DirPort, on its own address.
pub const DIR_PORT: u16 = 7000;
/// The node that hosts the onion service (in front of the origin's port 80).
pub const ONION_HOST: &str = "relay1";
/// What a node does in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A v3 directory authority (also a relay, never an exit).
    Authority,
    /// A middle relay.
    Relay,
    /// An exit relay, with a policy ending in `accept *:*`.
    Exit,
}

/// One node of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// Its nickname, also the name of its directory.
    pub nick: &'static str,
    pub role: Role,
    /// Its own address on the stand-in internet (on `inet0` in `up`).
    pub address: &'static str,
}

/// The network: authorities .21–.23, relays .31–.33, exits .41–.43.
pub const NODES: [Node; 9] = [
    node("auth1", Role::Authority, "203.0.113.21"),
    node("auth2", Role::Authority, "203.0.113.22"),
    node("auth3", Role::Authority, "203.0.113.23"),
    node("relay1", Role::Relay, "203.0.113.31"),
    node("relay2", Role::Relay, "203.0.113.32"),
    node("relay3", Role::Relay, "203.0.113.33"),
    node("exit1", Role::Exit, "203.0.113.41"),
    node("exit2", Role::Exit, "203.0.113.42"),
    node("exit3", Role::Exit, "203.0.113.43"),
];

pub(crate) const fn node(nick: &'static str, role: Role, address: &'static str) -> Node {
    Node {
        nick,
        role,
        address,
    }
}

impl Node {
    /// `address:ORPort`.
    pub fn or_addr(&self) -> String {
        format!("{}:{OR_PORT}", self.address)
    }

    /// `address:DirPort`.
    pub fn dir_addr(&self) -> String {
        format!("{}:{DIR_PORT}", self.address)
    }
}

/// `<lab state dir>/tor`.
pub fn tor_dir(lab: &Lab) -> PathBuf {
    lab.state_dir().join("tor")
}

/// `<lab state dir>/tor/<nick>`: torrc, pid file, logs.
pub fn node_dir(lab: &Lab, nick: &str) -> PathBuf {
    tor_dir(lab).join(nick)
}

/// The node's DataDirectory (keys, cached consensus).
pub fn data_dir(lab: &Lab, nick: &str) -> PathBuf {
    node_dir(lab, nick).join("data")
}

/// The node's notice log.
pub fn node_log(lab: &Lab, nick: &str) -> PathBuf {
    node_dir(lab, nick).join("notice.log")
}

/// `<lab state dir>/arti.toml`.
pub fn arti_config_path(lab: &Lab) -> PathBuf {
    lab.state_dir().join(ARTI_CONFIG_FILE)
}

/// The resolv.conf the exits resolve names with: the modem's dnsmasq on the stand-in internet.
pub(crate) fn resolv_conf(lab: &Lab) -> PathBuf {
    tor_dir(lab).join("resolv.conf")
}

/// When [`start`] last started a node (unix seconds): a consensus is fresh if it is newer.
pub(crate) fn started_file(lab: &Lab) -> PathBuf {
    tor_dir(lab).join("started")
}

/// Whether [`start`] has ever started this lab's network (it may have been stopped since):
/// labs that start Tor only when a test first needs it ask this.
pub fn ever_started(lab: &Lab) -> bool {
    started_file(lab).is_file()
}

pub(crate) fn pid_file_rel(nick: &str) -> PathBuf {
    Path::new("tor").join(nick).join("tor.pid")
}

/// Whether `node` runs in this lab's `up` namespace.
pub(crate) fn node_running(lab: &Lab, node: &Node) -> bool {
    lab.daemon_alive(pid_file_rel(node.nick))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::layout::{INTERNET_RESOLVER_IP, ORIGIN_IP};

    #[test]
    fn addresses_are_distinct_and_on_the_internet() {
        let mut seen = std::collections::BTreeSet::new();
        for n in &NODES {
            assert!(n.address.starts_with("203.0.113."), "{n:?}");
            assert!(seen.insert(n.address), "{n:?}");
            assert!(seen.insert(n.nick), "{n:?}");
        }
        assert!(!seen.contains(ORIGIN_IP) && !seen.contains(INTERNET_RESOLVER_IP));
    }
}
