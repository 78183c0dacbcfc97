//! Which sysctls the gateway needs, and setting them.
//!
//! Files under /proc/sys/net belong to the network namespace of the thread that opens them; the
//! agent runs in one namespace, so any thread will do.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::Config;

/// One sysctl and the value the gateway needs in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Knob {
    /// Its name as `sysctl` shows it, relative to /proc/sys (`net/ipv4/ip_forward`).
    pub name: String,
    /// The value it must hold.
    pub wanted: &'static str,
}

impl Knob {
    fn new(name: impl Into<String>, wanted: &'static str) -> Knob {
        Knob {
            name: name.into(),
            wanted,
        }
    }
}

/// What setting a knob found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It already held the wanted value.
    Kept,
    /// It held `was` and now holds the wanted value.
    Changed { was: String },
    /// It does not exist (an interface not there yet, a kernel without IPv6).
    Absent,
}

/// The knobs for `cfg`, given the interfaces that exist now (each one's forwarding is off).
pub fn wanted(cfg: &Config, interfaces: &[String]) -> Vec<Knob> {
    let inside = cfg.interfaces.inside.as_str();
    let parent = cfg.interfaces.outside.as_str();
    let macvlan = cfg.uplink.macvlan_name.as_str();
    let mut knobs = vec![
        Knob::new("net/ipv4/ip_forward", "0"),
        Knob::new("net/ipv4/conf/all/forwarding", "0"),
        Knob::new("net/ipv4/conf/default/forwarding", "0"),
        Knob::new("net/ipv6/conf/all/forwarding", "0"),
        Knob::new("net/ipv6/conf/default/forwarding", "0"),
        // Answer ARP only for an address on the interface asked (never the uplink address on
        // the inside, never the inside address upstream), and source ARP from that interface's
        // own address.
        Knob::new("net/ipv4/conf/all/arp_ignore", "1"),
        Knob::new("net/ipv4/conf/all/arp_announce", "2"),
        // The parent NIC never answers ARP at all: only the macvlan speaks upstream.
        Knob::new(format!("net/ipv4/conf/{parent}/arp_ignore"), "8"),
        Knob::new(format!("net/ipv6/conf/{parent}/disable_ipv6"), "1"),
        Knob::new(format!("net/ipv6/conf/{parent}/accept_ra"), "0"),
        // IPv6 on the inside waits until it is designed.
        Knob::new(format!("net/ipv6/conf/{inside}/disable_ipv6"), "1"),
    ];
    if !cfg.uplink.ipv6 {
        knobs.push(Knob::new(
            format!("net/ipv6/conf/{macvlan}/disable_ipv6"),
            "1",
        ));
        knobs.push(Knob::new(format!("net/ipv6/conf/{macvlan}/accept_ra"), "0"));
    }
    for interface in interfaces {
        knobs.push(Knob::new(
            format!("net/ipv4/conf/{interface}/forwarding"),
            "0",
        ));
        knobs.push(Knob::new(
            format!("net/ipv6/conf/{interface}/forwarding"),
            "0",
        ));
    }
    knobs
}

/// The interfaces that have an IPv4 conf directory now (`all` and `default` left out).
pub fn interfaces(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("net/ipv4/conf");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != "all" && name != "default" {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Sets `knob` under `root` (/proc/sys) if it differs.
pub fn apply(root: &Path, knob: &Knob) -> Result<Outcome> {
    let path: PathBuf = root.join(&knob.name);
    let current = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::Absent),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    if current == knob.wanted {
        return Ok(Outcome::Kept);
    }
    match std::fs::write(&path, knob.wanted) {
        Ok(()) => Ok(Outcome::Changed { was: current }),
        // The interface went away between the read and the write.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Outcome::Absent),
        Err(err) => {
            Err(err).with_context(|| format!("writing {} to {}", knob.wanted, path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, value).unwrap();
        }
        dir
    }

    #[test]
    fn apply_changes_only_what_differs_and_skips_what_is_absent() {
        let root = tree(&[
            ("net/ipv4/ip_forward", "1\n"),
            ("net/ipv4/conf/all/forwarding", "0\n"),
        ]);
        let forward = Knob::new("net/ipv4/ip_forward", "0");
        assert_eq!(
            apply(root.path(), &forward).unwrap(),
            Outcome::Changed { was: "1".into() }
        );
        assert_eq!(
            std::fs::read_to_string(root.path().join("net/ipv4/ip_forward")).unwrap(),
            "0"
        );
        assert_eq!(apply(root.path(), &forward).unwrap(), Outcome::Kept);
        let all = Knob::new("net/ipv4/conf/all/forwarding", "0");
        assert_eq!(apply(root.path(), &all).unwrap(), Outcome::Kept);
        let missing = Knob::new("net/ipv6/conf/eth9/disable_ipv6", "1");
        assert_eq!(apply(root.path(), &missing).unwrap(), Outcome::Absent);
    }

    #[test]
    fn interfaces_leave_out_all_and_default() {
        let root = tree(&[
            ("net/ipv4/conf/all/forwarding", "0"),
            ("net/ipv4/conf/default/forwarding", "0"),
            ("net/ipv4/conf/eth0/forwarding", "0"),
            ("net/ipv4/conf/lo/forwarding", "0"),
        ]);
        assert_eq!(interfaces(root.path()).unwrap(), vec!["eth0", "lo"]);
    }

    #[test]
    fn every_interface_gets_its_forwarding_knobs_and_the_parent_never_answers_arp() {
        let cfg = crate::config::parse(
            "[interfaces]\noutside = \"up0\"\ninside = \"in0\"\n\
             [inside]\naddress = \"198.51.100.1/24\"\n",
        )
        .unwrap();
        let knobs = wanted(&cfg, &["eth7".to_owned()]);
        let has =
            |name: &str, value: &str| knobs.iter().any(|k| k.name == name && k.wanted == value);
        assert!(has("net/ipv4/conf/eth7/forwarding", "0"));
        assert!(has("net/ipv6/conf/eth7/forwarding", "0"));
        assert!(has(
            &format!("net/ipv4/conf/{}/arp_ignore", cfg.interfaces.outside),
            "8"
        ));
        assert!(has(
            &format!("net/ipv6/conf/{}/disable_ipv6", cfg.interfaces.inside),
            "1"
        ));
    }
}
