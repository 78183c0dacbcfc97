//! `[outside]`: the uplink's address (DHCP or static, with its default router) and the macvlan
//! the agent makes on the uplink NIC, with their defaults, their reader and the rules within
//! the table. That a static subnet stays clear of the inside one spans tables
//! (`config::validate`).

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use crate::config::reader::{self, Field, Section};
use crate::config::values::{self, broadcast, network, DnsLabel, MacAddr};
use crate::config::Errors;

/// An uplink may be a /31 point-to-point link (RFC 3021).
const OUTSIDE_PREFIXES: RangeInclusive<u8> = 8..=31;

/// How the outside interface gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutsideAddress {
    /// From the uplink's DHCP server (the default).
    #[default]
    Dhcp,
    /// A fixed address; `gateway` is the default router, inside that subnet.
    Static {
        address: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
    },
}

/// `[outside]`: the uplink's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outside {
    pub address: OutsideAddress,
}

/// `outside.macvlan_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MacvlanMode {
    #[default]
    Bridge,
    Private,
    Vepa,
    Passthru,
}

/// `[outside]` beyond the address: the macvlan the agent makes on the uplink NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// Name of the macvlan the agent creates on `interfaces.outside`.
    pub macvlan_name: String,
    /// Its mode.
    pub macvlan_mode: MacvlanMode,
    /// Its MAC, a unicast one; `None` derives one from the NIC's MAC, the same on every start,
    /// so the upstream DHCP server hands back the same lease.
    pub mac: Option<MacAddr>,
    /// IPv6 on the uplink (off: the inside has no IPv6 yet, and it would only leak).
    pub ipv6: bool,
    /// Host name sent to the upstream DHCP server (option 12); none by default (privacy).
    pub hostname: Option<DnsLabel>,
}

impl Default for Uplink {
    fn default() -> Self {
        Uplink {
            macvlan_name: "gw-uplink".to_owned(),
            macvlan_mode: MacvlanMode::Bridge,
            mac: None,
            ipv6: false,
            hostname: None,
        }
    }
}

/// Reads `[outside]`: the address and its router, then the macvlan's keys.
pub(crate) fn read(
    section: &mut Section,
    errors: &mut Errors,
) -> (Option<Outside>, Option<Uplink>) {
    // `None` is DHCP.
    let address = section.optional("address", None, errors, |value| {
        let text = reader::string(value)?;
        if text == "dhcp" {
            return Ok(None);
        }
        let (address, prefix_len) =
            values::cidr(&text).map_err(|problem| format!("{problem}, or \"dhcp\""))?;
        values::host_address(address, prefix_len, OUTSIDE_PREFIXES)?;
        Ok(Some((address, prefix_len)))
    });
    let gateway_key = section.key("gateway");
    let gateway = section.field("gateway", errors, |value| {
        values::ipv4(&reader::string(value)?)
    });
    let uplink = uplink(section, errors);
    (
        outside_address(address, gateway, gateway_key, errors),
        uplink,
    )
}

/// The macvlan's keys of `[outside]`.
fn uplink(section: &mut Section, errors: &mut Errors) -> Option<Uplink> {
    let d = Uplink::default();
    let macvlan_name = section.optional("macvlan_name", d.macvlan_name, errors, |value| {
        values::interface_name(&reader::string(value)?)
    });
    let macvlan_mode = section.optional("macvlan_mode", d.macvlan_mode, errors, |value| {
        macvlan_mode(&reader::string(value)?)
    });
    let mac = section.optional("mac", d.mac, errors, |value| {
        let text = reader::string(value)?;
        if text == "auto" {
            return Ok(None);
        }
        values::unicast_mac(&text)
            .map(Some)
            .map_err(|p| format!("{p}, or \"auto\""))
    });
    let ipv6 = section.optional("ipv6", d.ipv6, errors, reader::boolean);
    let hostname = section.optional("hostname", d.hostname, errors, |value| {
        reader::string(value)?.parse::<DnsLabel>().map(Some)
    });
    Some(Uplink {
        macvlan_name: macvlan_name?,
        macvlan_mode: macvlan_mode?,
        mac: mac?,
        ipv6: ipv6?,
        hostname: hostname?,
    })
}

/// The address and its router: a router only with a static address, and on its subnet.
fn outside_address(
    address: Option<Option<(Ipv4Addr, u8)>>,
    gateway: Field<Ipv4Addr>,
    gateway_key: String,
    errors: &mut Errors,
) -> Option<Outside> {
    let gateway: Option<Ipv4Addr> = match gateway {
        Field::Absent => None,
        Field::Invalid => return None,
        Field::Valid(gateway) => Some(gateway),
    };
    let address = match address? {
        None => {
            if gateway.is_some() {
                errors.push(
                    &gateway_key,
                    "only allowed with a static outside.address; with \"dhcp\" the default router comes from the DHCP lease",
                );
                return None;
            }
            OutsideAddress::Dhcp
        }
        Some((address, prefix_len)) => {
            if let Some(gateway) = gateway {
                errors.check(&gateway_key, static_gateway(address, prefix_len, gateway))?;
            }
            OutsideAddress::Static {
                address,
                prefix_len,
                gateway,
            }
        }
    };
    Some(Outside { address })
}

/// The default router of a static outside address: another host on that subnet.
fn static_gateway(address: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> Result<(), String> {
    let subnet = format!("{}/{prefix_len}", network(address, prefix_len));
    if network(gateway, prefix_len) != network(address, prefix_len) {
        return Err(format!(
            "{gateway} is not in the outside subnet {subnet} (outside.address); the default router must be on that subnet"
        ));
    }
    if gateway == address {
        return Err(format!(
            "{gateway} is outside.address itself; the default router is another host on {subnet}"
        ));
    }
    values::unicast(gateway)?;
    if prefix_len <= 30 && gateway == network(address, prefix_len) {
        return Err(format!("{gateway} is the network address of {subnet}"));
    }
    if prefix_len <= 30 && gateway == broadcast(address, prefix_len) {
        return Err(format!("{gateway} is the broadcast address of {subnet}"));
    }
    Ok(())
}

/// `bridge`, `private`, `vepa` or `passthru`.
fn macvlan_mode(text: &str) -> Result<MacvlanMode, String> {
    match text {
        "bridge" => Ok(MacvlanMode::Bridge),
        "private" => Ok(MacvlanMode::Private),
        "vepa" => Ok(MacvlanMode::Vepa),
        "passthru" => Ok(MacvlanMode::Passthru),
        other => Err(format!(
            "{other:?} is not a macvlan mode; expected \"bridge\", \"private\", \"vepa\" or \"passthru\""
        )),
    }
}
