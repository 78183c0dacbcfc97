//! Rules for single values, each returning the problem worded for the administrator.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use super::types::{broadcast, network, XdpMode, LOG_LEVELS};

/// IFNAMSIZ is 16 including the terminating NUL.
const MAX_INTERFACE_NAME: usize = 15;

/// `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// A Linux interface name, as the kernel's `dev_valid_name` would accept it.
pub(crate) fn interface_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("interface name is empty".to_owned());
    }
    if name.len() > MAX_INTERFACE_NAME {
        return Err(format!(
            "interface name {name:?} is {} bytes long; Linux allows at most {MAX_INTERFACE_NAME}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "interface name {name:?} contains {bad:?}; names may not contain '/', ':', whitespace or control characters"
        ));
    }
    Ok(name.to_owned())
}

/// `a.b.c.d/len`, syntax only.
pub(crate) fn cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let syntax = || {
        format!("{text:?} is not an IPv4 address with a prefix length, like \"198.51.100.1/24\"")
    };
    let (address, prefix) = text.split_once('/').ok_or_else(syntax)?;
    let address = address.parse::<Ipv4Addr>().map_err(|_| syntax())?;
    // u8::from_str would accept "+24".
    if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let prefix_len = prefix.parse::<u8>().map_err(|_| syntax())?;
    if prefix_len > 32 {
        return Err(format!("{text:?}: prefix /{prefix_len} is longer than 32"));
    }
    Ok((address, prefix_len))
}

/// A plain IPv4 address.
pub(crate) fn ipv4(text: &str) -> Result<Ipv4Addr, String> {
    text.parse::<Ipv4Addr>()
        .map_err(|_| format!("{text:?} is not an IPv4 address, like \"192.0.2.1\""))
}

/// An address one of our interfaces can own: a unicast host address within a subnet whose prefix
/// is in `prefixes`, and (when the subnet has them) neither its network nor broadcast address.
pub(crate) fn host_address(
    address: Ipv4Addr,
    prefix_len: u8,
    prefixes: RangeInclusive<u8>,
) -> Result<(), String> {
    let cidr = format!("{address}/{prefix_len}");
    if !prefixes.contains(&prefix_len) {
        return Err(format!(
            "{cidr}: prefix /{prefix_len} is out of range; use /{} to /{}",
            prefixes.start(),
            prefixes.end()
        ));
    }
    unicast(address).map_err(|problem| format!("{cidr}: {problem}"))?;
    // /31 point-to-point subnets (RFC 3021) have no network or broadcast address.
    if prefix_len <= 30 {
        let subnet = format!("{}/{prefix_len}", network(address, prefix_len));
        if address == network(address, prefix_len) {
            return Err(format!(
                "{cidr}: {address} is the network address of {subnet}; use a host address in it"
            ));
        }
        if address == broadcast(address, prefix_len) {
            return Err(format!(
                "{cidr}: {address} is the broadcast address of {subnet}; use a host address in it"
            ));
        }
    }
    Ok(())
}

/// An address usable by a single host.
pub(crate) fn unicast(address: Ipv4Addr) -> Result<(), String> {
    let kind = if address.is_unspecified() {
        "the unspecified address"
    } else if address.is_loopback() {
        "a loopback address"
    } else if address.is_multicast() {
        "a multicast address"
    } else if address.is_link_local() {
        "a link-local address"
    } else if address.is_broadcast() {
        "the broadcast address"
    } else {
        return Ok(());
    };
    Err(format!("{address} is {kind}"))
}

/// An absolute path the agent can hand to the kernel.
pub(crate) fn absolute_path(text: &str) -> Result<PathBuf, String> {
    if text.contains('\0') {
        return Err(format!("{text:?} contains a NUL byte"));
    }
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        return Err(format!("{text:?} is not an absolute path"));
    }
    Ok(path)
}

/// An absolute path short enough for a unix socket's `sun_path`.
pub(crate) fn socket_path(text: &str) -> Result<PathBuf, String> {
    let path = absolute_path(text)?;
    if text.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "{text:?} is {} bytes long; a unix socket path can be at most {MAX_SOCKET_PATH}",
            text.len()
        ));
    }
    Ok(path)
}

/// A TCP/UDP port.
pub(crate) fn port(number: i64) -> Result<u16, String> {
    match u16::try_from(number) {
        Ok(0) => Err("port 0 is not a valid port; use 1..=65535".to_owned()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("port {number} is out of range 1..=65535")),
    }
}

/// An address and port to listen on, `a.b.c.d:port` or `[v6]:port`, port 1..=65535.
pub(crate) fn listen_address(text: &str) -> Result<SocketAddr, String> {
    let address = text
        .parse::<SocketAddr>()
        .map_err(|_| format!("{text:?} is not an address and port, like \"127.0.0.1:9101\""))?;
    if address.port() == 0 {
        // A random port could not be scraped.
        return Err(format!(
            "{text:?}: port 0 is not a valid port; use 1..=65535"
        ));
    }
    Ok(address)
}

/// `auto`, `native` or `skb`.
pub(crate) fn xdp_mode(text: &str) -> Result<XdpMode, String> {
    [XdpMode::Auto, XdpMode::Native, XdpMode::Skb]
        .into_iter()
        .find(|mode| mode.as_str() == text)
        .ok_or_else(|| {
            format!("{text:?} is not an XDP mode; expected \"auto\", \"native\" or \"skb\"")
        })
}

/// One of [`LOG_LEVELS`].
pub(crate) fn log_level(text: &str) -> Result<String, String> {
    if LOG_LEVELS.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a log level; expected one of: {}",
            LOG_LEVELS.join(", ")
        ))
    }
}

/// The default router of a static outside address: another host on that subnet.
pub(crate) fn static_gateway(
    address: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
) -> Result<(), String> {
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
    unicast(gateway)?;
    if prefix_len <= 30 && gateway == network(address, prefix_len) {
        return Err(format!("{gateway} is the network address of {subnet}"));
    }
    if prefix_len <= 30 && gateway == broadcast(address, prefix_len) {
        return Err(format!("{gateway} is the broadcast address of {subnet}"));
    }
    Ok(())
}
