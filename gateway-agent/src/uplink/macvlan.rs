//! The uplink macvlan: found or made on the outside NIC, with a MAC that is the same on every
//! start, IPv6 as configured, and up.

use crate::mac::MacAddr;
use anyhow::{bail, Context, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, LinkAttribute, LinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::{Handle, LinkMacVlan, LinkMessageBuilder, LinkUnspec};

use super::config::{self, MacvlanMode};

/// The macvlan as the agent uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macvlan {
    pub index: u32,
    pub name: String,
    /// Its MAC as the kernel reports it after set-up (the DHCP chaddr and client id).
    pub mac: MacAddr,
    /// Made by this start (false: reused).
    pub created: bool,
}

/// Finds or creates the macvlan `uplink.macvlan_name` on `parent` and brings both up.
pub async fn ensure(
    handle: &Handle,
    parent: &str,
    uplink: &config::Uplink,
    mac_key: &[u8],
) -> Result<Macvlan> {
    let name = uplink.macvlan_name.as_str();
    let Some(parent_link) = find(handle, parent)
        .await
        .with_context(|| format!("looking up the outside interface {parent:?}"))?
    else {
        bail!("interfaces.outside: there is no interface {parent:?}");
    };
    let parent_index = parent_link.header.index;
    let parent_mac = mac_of(&parent_link).with_context(|| {
        format!("interfaces.outside: {parent:?} has no Ethernet address to put a macvlan on")
    })?;
    let mode = kernel_mode(uplink.macvlan_mode);
    // In passthru mode the macvlan takes the NIC's own MAC (and setting one changes the NIC's),
    // so only an explicitly configured MAC is applied there.
    let wanted_mac = match (uplink.mac, uplink.macvlan_mode) {
        (Some(mac), _) => Some(mac),
        (None, MacvlanMode::Passthru) => None,
        (None, _) => Some(derive_mac(mac_key, &parent_mac)),
    };

    let existing = find(handle, name)
        .await
        .with_context(|| format!("looking up the uplink macvlan {name:?}"))?;
    let created = existing.is_none();
    let index = match existing {
        Some(link) => {
            reuse(handle, &link, name, parent, parent_index, mode).await?;
            link.header.index
        }
        None => {
            let mut builder = LinkMacVlan::new(name, parent_index, mode);
            if let Some(mac) = wanted_mac {
                builder = builder.address(mac.octets().to_vec());
            }
            handle
                .link()
                .add(builder.build())
                .execute()
                .await
                .with_context(|| {
                    format!("outside.macvlan_name: creating macvlan {name:?} on {parent:?}")
                })?;
            let Some(link) = find(handle, name).await? else {
                bail!("the macvlan {name:?} vanished right after it was created");
            };
            link.header.index
        }
    };

    if let Some(mac) = wanted_mac {
        set_mac_if_different(handle, index, name, mac).await?;
    }
    // Before the link comes up, so no IPv6 link-local address or router solicitation ever
    // carries the MAC upstream.
    set_ipv6(name, uplink.ipv6)?;
    set_up(handle, parent_index)
        .await
        .with_context(|| format!("bringing the outside interface {parent:?} up"))?;
    set_up(handle, index)
        .await
        .with_context(|| format!("bringing the uplink macvlan {name:?} up"))?;

    let Some(link) = find(handle, name).await? else {
        bail!("the macvlan {name:?} vanished while it was being set up");
    };
    let mac = mac_of(&link).with_context(|| format!("reading the MAC of {name:?}"))?;
    Ok(Macvlan {
        index,
        name: name.to_owned(),
        mac,
        created,
    })
}

/// Checks that a link left from an earlier run is our kind of macvlan; fixes its mode.
async fn reuse(
    handle: &Handle,
    link: &LinkMessage,
    name: &str,
    parent: &str,
    parent_index: u32,
    mode: MacVlanMode,
) -> Result<()> {
    let infos = link_infos(link);
    let kind = infos.iter().find_map(|info| match info {
        LinkInfo::Kind(kind) => Some(kind.clone()),
        _ => None,
    });
    if kind != Some(InfoKind::MacVlan) {
        let kind = kind.map_or_else(|| "plain device".to_owned(), |k| k.to_string());
        bail!(
            "outside.macvlan_name: an interface {name:?} already exists and is a {kind}, not a \
             macvlan; remove it or choose another outside.macvlan_name"
        );
    }
    let lower = link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Link(index) => Some(*index),
        _ => None,
    });
    if lower != Some(parent_index) {
        bail!(
            "outside.macvlan_name: the macvlan {name:?} already exists on another interface \
             (index {}), not on {parent:?}; remove it or choose another outside.macvlan_name",
            lower.map_or_else(|| "unknown".to_owned(), |i| i.to_string())
        );
    }
    let current_mode = infos.iter().find_map(|info| match info {
        LinkInfo::Data(InfoData::MacVlan(data)) => data.iter().find_map(|d| match d {
            InfoMacVlan::Mode(mode) => Some(*mode),
            _ => None,
        }),
        _ => None,
    });
    if current_mode != Some(mode) {
        let change = LinkMessageBuilder::<LinkMacVlan>::new(name)
            .index(link.header.index)
            .mode(mode)
            .build();
        handle
            .link()
            .change(change)
            .execute()
            .await
            .with_context(|| {
                format!(
                    "outside.macvlan_mode: changing the mode of the existing macvlan {name:?} \
                 (delete it to have it re-created)"
                )
            })?;
    }
    Ok(())
}

async fn set_mac_if_different(handle: &Handle, index: u32, name: &str, mac: MacAddr) -> Result<()> {
    let Some(link) = find_index(handle, index).await? else {
        bail!("the macvlan {name:?} vanished while it was being set up");
    };
    if mac_of(&link).ok() == Some(mac) {
        return Ok(());
    }
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .address(mac.octets().to_vec())
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("outside.mac: setting the MAC of {name:?} to {mac}"))
}

async fn set_up(handle: &Handle, index: u32) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await?;
    Ok(())
}

/// `net.ipv6.conf.<dev>.disable_ipv6`, written to /proc directly. /proc/sys/net shows the
/// namespace of the thread that opens it, hence a plain blocking write on the calling thread
/// rather than tokio::fs (which would run it on a pool thread).
fn set_ipv6(device: &str, enabled: bool) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{device}/disable_ipv6");
    let value = if enabled { "0\n" } else { "1\n" };
    match std::fs::write(&path, value) {
        Ok(()) => Ok(()),
        // A kernel without IPv6 has no such file, and nothing to disable.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !enabled => Ok(()),
        Err(err) => Err(err).with_context(|| format!("outside.ipv6: writing {value:?} to {path}")),
    }
}

/// The link called `name`, if there is one.
async fn find(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    not_found_is_none(
        handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await,
    )
}

async fn find_index(handle: &Handle, index: u32) -> Result<Option<LinkMessage>> {
    not_found_is_none(
        handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await,
    )
}

fn not_found_is_none(
    result: Result<Option<LinkMessage>, rtnetlink::Error>,
) -> Result<Option<LinkMessage>> {
    match result {
        Ok(link) => Ok(link),
        Err(rtnetlink::Error::NetlinkError(err))
            if err.code.map(|c| c.get()) == Some(-libc::ENODEV) =>
        {
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

fn link_infos(link: &LinkMessage) -> &[LinkInfo] {
    link.attributes
        .iter()
        .find_map(|attr| match attr {
            LinkAttribute::LinkInfo(infos) => Some(infos.as_slice()),
            _ => None,
        })
        .unwrap_or(&[])
}

fn mac_of(link: &LinkMessage) -> Result<MacAddr> {
    link.attributes
        .iter()
        .find_map(|attr| match attr {
            LinkAttribute::Address(bytes) => MacAddr::from_slice(bytes),
            _ => None,
        })
        .context("no 6-byte hardware address")
}

fn kernel_mode(mode: MacvlanMode) -> MacVlanMode {
    match mode {
        MacvlanMode::Bridge => MacVlanMode::Bridge,
        MacvlanMode::Private => MacVlanMode::Private,
        MacvlanMode::Vepa => MacVlanMode::Vepa,
        MacvlanMode::Passthru => MacVlanMode::Passthrough,
    }
}

/// A MAC derived from the NIC's and a secret key (`mac_key`): the same on every start (so the
/// upstream server hands back the same lease), unlinkable to the NIC's own without the key,
/// locally administered and unicast.
pub fn derive_mac(key: &[u8], parent: &MacAddr) -> MacAddr {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(b"gateway uplink macvlan\0");
    context.update(&parent.octets());
    let tag = context.sign();
    let bytes = tag.as_ref();
    let mut mac = [bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]];
    mac[0] = (mac[0] & 0xfc) | 0x02;
    if mac == parent.octets() {
        // Vanishingly unlikely, but two equal MACs on one segment would be a real outage.
        mac[5] ^= 0x01;
    }
    MacAddr::new(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_mac_is_stable_local_unicast() {
        let parent = MacAddr::new([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        let key = [7u8; 32];
        let mac = derive_mac(&key, &parent);
        assert_eq!(mac, derive_mac(&key, &parent), "the same on every call");
        assert_ne!(
            mac,
            derive_mac(&[8u8; 32], &parent),
            "keyed: another key, another MAC"
        );
        assert_eq!(mac.octets()[0] & 0x01, 0, "unicast");
        assert_eq!(mac.octets()[0] & 0x02, 0x02, "locally administered");
        assert_ne!(mac, parent);
        assert_ne!(
            derive_mac(&key, &MacAddr::new([0x52, 0x54, 0x00, 0x12, 0x34, 0x57])),
            mac
        );
        // Pinned: a change here changes every deployed gateway's MAC, and with it its lease.
        assert_eq!(mac.to_string(), "92:31:93:1d:a3:cb");
    }

    #[test]
    fn mac_format() {
        assert_eq!(
            MacAddr::new([2, 0x11, 0xab, 0, 0xff, 9]).to_string(),
            "02:11:ab:00:ff:09"
        );
    }
}
