//! Writes the agent's configuration into the `CONFIG` and `OPEN_PORTS` maps.

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{Array, HashMap},
    Ebpf,
};
use gateway_common::maps::{
    names, DataplaneConfig, PortKey, CONFIG_FLAG_ACCEPT_RELAYED, CONFIG_FLAG_ALLOW_PING,
    CONFIG_FLAG_OUTSIDE_IPV6, CONFIG_FLAG_READY, CONFIG_FLAG_STEER_DNS, CONFIG_FLAG_STEER_TCP,
    IPPROTO_TCP, IPPROTO_UDP,
};

use crate::config::{Config, Protocol};
use crate::mac::MacAddr;

/// The `CONFIG` entry for `cfg`, with the uplink macvlan's MAC.
pub fn dataplane_config(cfg: &Config, uplink_mac: MacAddr) -> DataplaneConfig {
    let encode = |addr: std::net::Ipv4Addr| u32::from_ne_bytes(addr.octets());
    let mut flags = CONFIG_FLAG_READY;
    if cfg.dataplane.allow_ping {
        flags |= CONFIG_FLAG_ALLOW_PING;
    }
    if cfg.uplink.ipv6 {
        flags |= CONFIG_FLAG_OUTSIDE_IPV6;
    }
    if cfg.dhcp.accept_relayed {
        flags |= CONFIG_FLAG_ACCEPT_RELAYED;
    }
    if cfg.transparent.enabled {
        flags |= CONFIG_FLAG_STEER_TCP;
    }
    if cfg.steers_dns() {
        flags |= CONFIG_FLAG_STEER_DNS;
    }
    DataplaneConfig {
        inside_ip: encode(cfg.inside.address),
        inside_net: encode(cfg.inside.network()),
        inside_mask: encode(cfg.inside.netmask()),
        flags,
        uplink_mac: uplink_mac.octets(),
        _pad: [0; 2],
        // 0 if the inside NIC is missing: then nothing is steered.
        inside_ifindex: crate::net::interface::index(&cfg.interfaces.inside).unwrap_or(0),
        default_policy: cfg.dataplane.default_policy.value(),
    }
}

/// The `OPEN_PORTS` keys for `cfg`.
pub fn open_port_keys(cfg: &Config) -> Vec<PortKey> {
    cfg.open_ports()
        .into_iter()
        .map(|rule| {
            let protocol = match rule.protocol {
                Protocol::Tcp => IPPROTO_TCP,
                Protocol::Udp => IPPROTO_UDP,
            };
            PortKey::new(protocol, rule.port)
        })
        .collect()
}

/// Fills the maps. Ports go in before `CONFIG` is marked ready, so a program never sees a
/// ready config with a half-filled port set.
pub fn write(ebpf: &mut Ebpf, cfg: &Config, uplink_mac: MacAddr) -> Result<()> {
    let mut ports: HashMap<_, PortKey, u8> = HashMap::try_from(
        ebpf.map_mut(names::OPEN_PORTS)
            .ok_or_else(|| anyhow!("the eBPF object has no {} map", names::OPEN_PORTS))?,
    )?;
    for key in open_port_keys(cfg) {
        ports
            .insert(key, 1, 0)
            .with_context(|| format!("opening port {}/{}", key.protocol, key.port))?;
    }
    let mut config: Array<_, DataplaneConfig> = Array::try_from(
        ebpf.map_mut(names::CONFIG)
            .ok_or_else(|| anyhow!("the eBPF object has no {} map", names::CONFIG))?,
    )?;
    config
        .set(0, dataplane_config(cfg, uplink_mac), 0)
        .context("writing the CONFIG map")?;
    Ok(())
}
