//! Namespaces, veths and bridges (`ip`), the bpffs mounts, and taking them apart again.

use std::collections::BTreeSet;
use std::fs::{self};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::process;

use super::clients::CLIENTS;
use super::layout::{parse_ns, Lab, GATEWAY_INSIDE_IP, INSIDE_IF, OUTSIDE_IF, SLOT_ROLES};
use crate::process::{ns_pids, stop_processes};

/// Removes `names` (namespaces, with every process in them, and their resolv.conf dirs), the
/// uplink `port` (namespace, device) if given, and `dir` with every mount below it.
pub(crate) fn remove(
    label: &str,
    names: &[String],
    dir: &Path,
    port: Option<(String, String)>,
) -> Result<()> {
    let existing: Vec<&String> = names.iter().filter(|ns| ns_exists(ns)).collect();
    let resolv_left = names
        .iter()
        .any(|ns| Path::new("/etc/netns").join(ns).exists());
    if existing.is_empty() && !dir.exists() && !resolv_left {
        eprintln!("{label}: nothing to remove");
        return Ok(());
    }
    let mut errors: Vec<String> = Vec::new();

    let pids: BTreeSet<i32> = existing.iter().flat_map(|ns| ns_pids(ns)).collect();
    if !pids.is_empty() {
        eprintln!("{label}: stopping {} process(es)", pids.len());
        stop_processes(&pids);
    }
    // Deleting one end of the veth takes the other (the slot's outside0) with it, even while
    // pinned programs keep the slot's namespace alive until its bpffs is unmounted.
    if let Some((up, port)) = port {
        if ip(&up, &["link", "show", "dev", &port]).is_ok() {
            if let Err(err) = ip(&up, &["link", "del", "dev", &port]) {
                errors.push(format!("{err:#}"));
            }
        }
    }
    for ns in &existing {
        if let Err(err) = process::run("ip", ["netns", "del", ns.as_str()]) {
            errors.push(format!("{err:#}"));
        }
    }
    for ns in names {
        let resolv = Path::new("/etc/netns").join(ns);
        if resolv.exists() {
            if let Err(err) = fs::remove_dir_all(&resolv) {
                errors.push(format!("removing {}: {err}", resolv.display()));
            }
        }
    }
    if let Err(err) = unmount_all_under(dir) {
        errors.push(format!("{err:#}"));
    } else if dir.exists() {
        if let Err(err) = fs::remove_dir_all(dir) {
            errors.push(format!("removing {}: {err}", dir.display()));
        }
    }
    if !errors.is_empty() {
        bail!("{label} down: {}", errors.join("; "));
    }
    eprintln!("{label}: down");
    Ok(())
}

pub(crate) fn ns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

pub(crate) fn ns_exists(ns: &str) -> bool {
    ns_path(ns).exists()
}

/// `ip -n <ns> <args…>`.
pub(crate) fn ip(ns: &str, args: &[&str]) -> Result<()> {
    process::run("ip", ["-n", ns].iter().chain(args))
}

/// IPv4 addresses (CIDR) on the interfaces of `ns`, except `lo`.
pub(crate) fn ns_ipv4_addrs(ns: &str) -> Result<Vec<String>> {
    let out = process::output("ip", ["-n", ns, "-j", "addr"])?;
    parse_ipv4_addrs(&out).with_context(|| format!("parsing `ip -n {ns} -j addr`"))
}

pub(crate) fn parse_ipv4_addrs(json: &str) -> Result<Vec<String>> {
    let links: Vec<serde_json::Value> = serde_json::from_str(json)?;
    let mut addrs = Vec::new();
    for link in &links {
        if link.get("ifname").and_then(|n| n.as_str()) == Some("lo") {
            continue;
        }
        let infos = link.get("addr_info").and_then(|a| a.as_array());
        for info in infos.into_iter().flatten() {
            if info.get("family").and_then(|f| f.as_str()) != Some("inet") {
                continue;
            }
            let local = info.get("local").and_then(|l| l.as_str());
            let len = info.get("prefixlen").and_then(|p| p.as_u64());
            if let (Some(local), Some(len)) = (local, len) {
                addrs.push(format!("{local}/{len}"));
            }
        }
    }
    Ok(addrs)
}

/// Mount points from /proc/self/mountinfo as (mount point, fs type), in mount order.
pub(crate) fn mounts() -> Vec<(PathBuf, String)> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?;
            Some((PathBuf::from(unescape_mountinfo(point)), fstype.to_string()))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(&[b'\\', a, b, c]) = bytes.get(i..i + 4) {
            // Escapes encode bytes, so the first digit is at most 3.
            if (b'0'..=b'3').contains(&a) && [b, c].iter().all(|d| (b'0'..=b'7').contains(d)) {
                out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn is_mounted_bpf(dir: &Path) -> bool {
    mounts().iter().any(|(p, t)| p == dir && t == "bpf")
}

/// Unmounts everything mounted at or below `dir`, newest first, including stacked mounts.
pub(crate) fn unmount_all_under(dir: &Path) -> Result<()> {
    for _ in 0..10 {
        let under: Vec<PathBuf> = mounts()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p.starts_with(dir))
            .collect();
        let Some(last) = under.last() else {
            return Ok(());
        };
        if process::run("umount", [last]).is_err() {
            // Busy (an fd still open in a dying process): detach it now, it goes when freed.
            process::run("umount", ["-l".as_ref(), last.as_os_str()])
                .with_context(|| format!("unmounting {}", last.display()))?;
        }
    }
    bail!("{} still has mounts after 10 unmounts", dir.display())
}

impl Lab {
    /// This slot's namespaces: the gateway host with its outside leg on the lab's uplink
    /// bridge, the inside bridge and the clients.
    pub(crate) fn build_namespaces(&self) -> Result<()> {
        let up = self.ns("up");
        let gw = self.ns("gw");
        let lan = self.ns("lan");
        for role in SLOT_ROLES {
            let ns = self.ns(role);
            self.write_resolv_conf(&ns, role)?;
            process::run("ip", ["netns", "add", &ns])?;
            ip(&ns, &["link", "set", "lo", "up"])?;
        }

        // The gateway's outside leg on the uplink bridge. A port of the same name left by a
        // slot whose namespace the kernel has not freed yet would be in the way.
        let port = self.uplink_port();
        if ip(&up, &["link", "show", "dev", &port]).is_ok() {
            ip(&up, &["link", "del", "dev", &port])?;
        }
        ip(
            &up,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", OUTSIDE_IF, "netns", &gw,
            ],
        )?;
        ip(&up, &["link", "set", &port, "master", "br0", "up"])?;
        // No address here: the agent makes its macvlan on outside0 and takes a DHCP lease from
        // the modem, as on a real uplink.
        ip(&gw, &["link", "set", OUTSIDE_IF, "up"])?;

        // The inside LAN bridge and the gateway's inside leg.
        ip(&lan, &["link", "add", "br0", "type", "bridge"])?;
        ip(&lan, &["link", "set", "br0", "up"])?;
        ip(
            &lan,
            &[
                "link", "add", "gw0", "type", "veth", "peer", "name", INSIDE_IF, "netns", &gw,
            ],
        )?;
        ip(&lan, &["link", "set", "gw0", "master", "br0", "up"])?;
        ip(
            &gw,
            &[
                "addr",
                "add",
                &format!("{GATEWAY_INSIDE_IP}/24"),
                "dev",
                INSIDE_IF,
            ],
        )?;
        ip(&gw, &["link", "set", INSIDE_IF, "up"])?;

        for (role, _) in CLIENTS {
            let client = self.ns(role);
            ip(
                &lan,
                &[
                    "link", "add", role, "type", "veth", "peer", "name", "eth0", "netns", &client,
                ],
            )?;
            ip(&lan, &["link", "set", role, "master", "br0", "up"])?;
            // No address: clients take theirs from the gateway's DHCP server.
            ip(&client, &["link", "set", "eth0", "up"])?;
        }
        Ok(())
    }
}

impl Lab {
    /// The gateway slots of this lab whose `gw` namespace exists, in order.
    pub fn slots(&self) -> Vec<u8> {
        let mut slots: Vec<u8> = self
            .all_ns_names()
            .iter()
            .filter(|ns| ns_exists(ns))
            .filter_map(|ns| parse_ns(ns))
            .filter(|(_, role, _)| role == "gw")
            .map(|(_, _, slot)| slot)
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json() {
        let json = r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
            {"ifname":"br0","addr_info":[{"family":"inet","local":"192.0.2.1","prefixlen":24},
             {"family":"inet6","local":"fe80::1","prefixlen":64}]}]"#;
        assert_eq!(parse_ipv4_addrs(json).unwrap(), vec!["192.0.2.1/24"]);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }
}
