//! What a lab is made of, by name: its prefix and slot, the namespaces, the addresses (documentation
//! ranges only), the files under its state dir. Everything else derives its names from here.

use std::collections::BTreeSet;
use std::fs::{self};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Where every lab keeps its state: `<root>/default` or `<root>/<prefix>`.
pub const STATE_ROOT: &str = "/run/gateway-lab";
/// Namespace roles, in creation order (`nas` only when it is started: [`Lab::start_nas`]).
pub const ROLES: [&str; 6] = ["up", "gw", "lan", "c1", "c2", "nas"];
/// The roles of one gateway slot (all of [`ROLES`] but the shared `up`).
pub const SLOT_ROLES: [&str; 4] = ["gw", "lan", "c1", "c2"];
/// The highest gateway slot number (slot N's spare uplink address is 192.0.2.(250 - N)).
pub const MAX_SLOT: u8 = 40;
/// The uplink LAN between modem and gateway.
pub const UPLINK_SUBNET: &str = "192.0.2.0/24";
/// The modem: uplink router, DHCP server and DNS resolver.
pub const MODEM_IP: &str = "192.0.2.1";
/// The modem's MAC (its uplink bridge's; locally administered).
pub const MODEM_MAC: &str = "02:67:77:00:00:01";
/// The modem's DHCP range: the gateway's uplink address comes from here.
pub const UPLINK_DHCP_RANGE: (&str, &str) = ("192.0.2.100", "192.0.2.199");
/// The stand-in internet behind the modem.
pub const INTERNET_SUBNET: &str = "203.0.113.0/24";
/// The HTTP origin.
pub const ORIGIN_IP: &str = "203.0.113.10";
/// The origin's name, resolvable at the modem.
pub const ORIGIN_NAME: &str = "origin.example.com";
/// The origin's URL.
pub const ORIGIN_URL: &str = "http://origin.example.com/";
/// A name the modem maps to 127.0.0.1: a public name that points somewhere the gateway must
/// never connect to for a client (tests of the `direct` egress policy).
pub const LOOPBACK_NAME: &str = "loopback.example.com";
/// The resolver's address on the stand-in internet (the same dnsmasq as the modem's).
pub const INTERNET_RESOLVER_IP: &str = "203.0.113.53";
/// The inside LAN.
pub const INSIDE_SUBNET: &str = "198.51.100.0/24";
/// The gateway's inside address.
pub const GATEWAY_INSIDE_IP: &str = "198.51.100.1";
/// The gateway's outside device (in `gw`).
pub const OUTSIDE_IF: &str = "outside0";
/// The gateway's inside device (in `gw`).
pub const INSIDE_IF: &str = "inside0";

/// The paths `config/lab.toml` uses; each slot's copy points them into its own gateway dir,
/// except [`LAB_WIDE_FILES`], which point into the lab's state dir.
pub(crate) const TEMPLATE_STATE_DIR: &str = "/run/gateway-lab/default/";
/// Files under [`TEMPLATE_STATE_DIR`] that every gateway slot of a lab shares.
/// The arti settings file, in the lab's state dir (`/run/gateway-lab/default/arti.toml` for the
/// default lab, which is the path `config/lab.toml` uses).
pub const ARTI_CONFIG_FILE: &str = "arti.toml";

pub(crate) const LAB_WIDE_FILES: [&str; 1] = [ARTI_CONFIG_FILE];
/// One lab, identified by its prefix ("" for the default lab), seen through one of its gateway
/// slots (0 unless [`Lab::with_slot`] says otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lab {
    pub(crate) prefix: String,
    pub(crate) slot: u8,
}

/// A script the lab's DHCP clients run, from `xtask/lab/`.
pub fn lab_script(name: &str) -> PathBuf {
    crate::build::workspace_root()
        .join("xtask")
        .join("lab")
        .join(name)
}

/// The committed agent config for the lab, in the workspace root.
pub(crate) fn lab_config_template() -> PathBuf {
    crate::build::workspace_root()
        .join("config")
        .join("lab.toml")
}

/// "" (the default lab) or 1–8 characters of `[a-z0-9]`; never "default" (the default state dir).
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    prefix.is_empty()
        || (prefix.len() <= 8
            && prefix != "default"
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// The lab prefix a namespace name belongs to, if it is named like a lab's.
pub(crate) fn lab_prefix_of_ns(name: &str) -> Option<String> {
    parse_ns(name).map(|(prefix, _, _)| prefix)
}

/// A lab namespace name as (prefix, role, slot): `[<prefix>-]<role>` for `up` and slot 0,
/// `[<prefix>-]<role>.<slot>` for slot 1..=[`MAX_SLOT`].
pub(crate) fn parse_ns(name: &str) -> Option<(String, String, u8)> {
    let (prefix, rest) = match name.split_once('-') {
        Some((prefix, rest)) if !prefix.is_empty() && valid_prefix(prefix) => (prefix, rest),
        Some(_) => return None,
        None => ("", name),
    };
    if ROLES.contains(&rest) {
        return Some((prefix.to_string(), rest.to_string(), 0));
    }
    let (role, slot) = rest.split_once('.')?;
    let n: u8 = slot.parse().ok()?;
    (SLOT_ROLES.contains(&role) && (1..=MAX_SLOT).contains(&n) && n.to_string() == slot)
        .then(|| (prefix.to_string(), role.to_string(), n))
}

impl Lab {
    /// A lab with namespace names `<prefix>-<role>`; "" is the default lab (names `<role>`).
    /// The prefix is checked (at most 8 of `[a-z0-9]`) when the lab is used. Its slot 0.
    pub fn new(prefix: &str) -> Lab {
        Lab {
            prefix: prefix.to_string(),
            slot: 0,
        }
    }

    /// The default lab, the one `cargo xtask lab up` makes.
    pub fn default_lab() -> Lab {
        Lab::new("")
    }

    /// The same lab seen through gateway slot `slot` (checked, at most [`MAX_SLOT`], when used).
    pub fn with_slot(&self, slot: u8) -> Lab {
        Lab {
            prefix: self.prefix.clone(),
            slot,
        }
    }

    /// The prefix ("" for the default lab).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The gateway slot this value stands for.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The namespace name of `role` ("up", "gw", "lan", "c1", "c2"): `up` is the lab's, the
    /// others this slot's (`<role>` for slot 0, `<role>.<slot>` for the others).
    pub fn ns(&self, role: &str) -> String {
        let name = if self.slot == 0 || !SLOT_ROLES.contains(&role) {
            role.to_string()
        } else {
            format!("{role}.{}", self.slot)
        };
        if self.prefix.is_empty() {
            name
        } else {
            format!("{}-{name}", self.prefix)
        }
    }

    /// This lab's state dir: `/run/gateway-lab/default` or `/run/gateway-lab/<prefix>`. Shared
    /// by every slot: the modem's and the origin's files, the Tor network, `arti.toml`.
    pub fn state_dir(&self) -> PathBuf {
        let name = if self.prefix.is_empty() {
            "default"
        } else {
            &self.prefix
        };
        Path::new(STATE_ROOT).join(name)
    }

    /// This slot's files: the state dir itself for slot 0, `<state dir>/slot<N>` for slot N.
    pub fn gateway_dir(&self) -> PathBuf {
        if self.slot == 0 {
            self.state_dir()
        } else {
            self.state_dir().join(format!("slot{}", self.slot))
        }
    }

    /// The bpffs mounted for this slot; its agent's pin dir.
    pub fn bpf_dir(&self) -> PathBuf {
        self.gateway_dir().join("bpf")
    }

    /// The agent's control socket in this slot.
    pub fn control_socket(&self) -> PathBuf {
        self.gateway_dir().join("control.sock")
    }

    /// The agent's state dir in this slot.
    pub fn agent_state_dir(&self) -> PathBuf {
        self.gateway_dir().join("state")
    }

    /// The agent config for this slot, written by [`Lab::up`] from `config/lab.toml`.
    pub fn agent_config(&self) -> PathBuf {
        self.gateway_dir().join("gateway.toml")
    }

    /// dnsmasq's log (queries and DHCP), shared by every slot.
    pub fn dnsmasq_log(&self) -> PathBuf {
        self.state_dir().join("dnsmasq.log")
    }

    /// The origin's access log (shows client addresses), shared by every slot.
    pub fn origin_log(&self) -> PathBuf {
        self.state_dir().join("origin.log")
    }

    /// This slot's port on the uplink bridge (`br0` in `up`): `gw<slot>`, the peer of the
    /// slot's `outside0`. A capture there sees this gateway's uplink traffic and no other's.
    pub fn uplink_port(&self) -> String {
        format!("gw{}", self.slot)
    }

    /// An uplink address outside the modem's DHCP range that only this slot uses, for tests
    /// that give `outside0` a static address: 192.0.2.(250 - slot).
    pub fn spare_uplink_ip(&self) -> String {
        format!("192.0.2.{}", 250 - u16::from(self.slot.min(MAX_SLOT)))
    }

    pub(crate) fn label(&self) -> String {
        let lab = if self.prefix.is_empty() {
            "lab".to_string()
        } else {
            format!("lab {}", self.prefix)
        };
        if self.slot == 0 {
            lab
        } else {
            format!("{lab} slot {}", self.slot)
        }
    }

    /// `up` and this slot's namespaces.
    pub(crate) fn ns_names(&self) -> Vec<String> {
        ROLES.iter().map(|r| self.ns(r)).collect()
    }

    /// This slot's namespaces.
    pub(crate) fn slot_ns_names(&self) -> Vec<String> {
        SLOT_ROLES.iter().map(|r| self.ns(r)).collect()
    }

    /// Every namespace of this lab, of any slot, that exists (or left a resolv.conf behind).
    pub(crate) fn all_ns_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.with_slot(0).ns_names().into_iter().collect();
        for dir in ["/run/netns", "/etc/netns"] {
            if let Ok(entries) = fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if lab_prefix_of_ns(&name).as_deref() == Some(self.prefix.as_str()) {
                        names.insert(name);
                    }
                }
            }
        }
        names
    }

    pub(crate) fn check_prefix(&self) -> Result<()> {
        if !valid_prefix(&self.prefix) {
            bail!(
                "invalid lab prefix {:?}: use at most 8 characters of [a-z0-9] (\"\" is the default lab)",
                self.prefix
            );
        }
        if self.slot > MAX_SLOT {
            bail!("invalid gateway slot {}: at most {MAX_SLOT}", self.slot);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn names_derive_from_prefix() {
        let lab = Lab::default_lab();
        assert_eq!(lab.ns("gw"), "gw");
        assert_eq!(lab.state_dir(), PathBuf::from("/run/gateway-lab/default"));
        let lab = Lab::new("t1234a");
        assert_eq!(lab.ns("c1"), "t1234a-c1");
        assert_eq!(lab.state_dir(), PathBuf::from("/run/gateway-lab/t1234a"));
        assert_eq!(
            lab.agent_config(),
            PathBuf::from("/run/gateway-lab/t1234a/gateway.toml")
        );
    }

    #[test]
    pub(crate) fn slots_have_their_own_names_and_files() {
        let lab = Lab::new("t1234a").with_slot(3);
        assert_eq!(lab.ns("up"), "t1234a-up", "the uplink is the lab's");
        assert_eq!(lab.ns("gw"), "t1234a-gw.3");
        assert_eq!(lab.ns("lan"), "t1234a-lan.3");
        assert_eq!(lab.ns("c2"), "t1234a-c2.3");
        assert_eq!(Lab::default_lab().with_slot(12).ns("c1"), "c1.12");
        assert_eq!(lab.state_dir(), PathBuf::from("/run/gateway-lab/t1234a"));
        assert_eq!(
            lab.gateway_dir(),
            PathBuf::from("/run/gateway-lab/t1234a/slot3")
        );
        assert_eq!(
            lab.bpf_dir(),
            PathBuf::from("/run/gateway-lab/t1234a/slot3/bpf")
        );
        assert_eq!(
            lab.control_socket(),
            PathBuf::from("/run/gateway-lab/t1234a/slot3/control.sock")
        );
        assert_eq!(
            lab.dnsmasq_log(),
            PathBuf::from("/run/gateway-lab/t1234a/dnsmasq.log")
        );
        assert_eq!(lab.uplink_port(), "gw3");
        assert_eq!(lab.spare_uplink_ip(), "192.0.2.247");
        assert_eq!(lab.with_slot(0).uplink_port(), "gw0");
        assert_eq!(lab.with_slot(0).spare_uplink_ip(), "192.0.2.250");
        assert_eq!(lab.with_slot(0).gateway_dir(), lab.state_dir());
        assert!(lab.with_slot(MAX_SLOT + 1).check_prefix().is_err());
        // Interface names stay within IFNAMSIZ.
        assert!(lab.with_slot(MAX_SLOT).uplink_port().len() <= 15);
    }

    #[test]
    pub(crate) fn slot_namespaces_map_back_to_labs() {
        let of = |name: &str| parse_ns(name);
        assert_eq!(of("gw.2"), Some((String::new(), "gw".into(), 2)));
        assert_eq!(of("t12-lan.40"), Some(("t12".into(), "lan".into(), 40)));
        assert_eq!(of("t12-c1"), Some(("t12".into(), "c1".into(), 0)));
        assert_eq!(of("t12-up.2"), None, "up is never a slot's");
        assert_eq!(of("t12-gw.0"), None);
        assert_eq!(of("t12-gw.02"), None);
        assert_eq!(of("t12-gw.41"), None);
        assert_eq!(of("t12-gw."), None);
        assert_eq!(lab_prefix_of_ns("t12-c2.7"), Some("t12".to_string()));
    }

    #[test]
    pub(crate) fn prefixes() {
        assert!(valid_prefix(""));
        assert!(valid_prefix("t1234a"));
        assert!(valid_prefix("abcdefgh"));
        assert!(!valid_prefix("abcdefghi"));
        assert!(!valid_prefix("a-b"));
        assert!(!valid_prefix("A"));
        assert!(!valid_prefix("default"));
        assert!(!valid_prefix("../x"));
        assert!(Lab::new("../x").check_prefix().is_err());
    }

    #[test]
    pub(crate) fn namespace_names_map_back_to_labs() {
        assert_eq!(lab_prefix_of_ns("gw"), Some(String::new()));
        assert_eq!(lab_prefix_of_ns("t12-c2"), Some("t12".to_string()));
        assert_eq!(lab_prefix_of_ns("t12-c9"), None);
        assert_eq!(lab_prefix_of_ns("other"), None);
        assert_eq!(lab_prefix_of_ns("-gw"), None);
        assert_eq!(lab_prefix_of_ns("a-b-gw"), None);
    }
}
