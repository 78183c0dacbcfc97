//! Addresses and ports: IPv4 addresses and prefixes, ranges, ports, listen addresses and the
//! `tcp/N` port rules, with the subnet arithmetic the rules need.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

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

/// `a.b.c.d-e.f.g.h`, first to last inclusive.
pub(crate) fn ip_range(text: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let bad = || format!("{text:?} is not a range like \"198.51.100.100-198.51.100.199\"");
    let (start, end) = text.split_once('-').ok_or_else(bad)?;
    let start: Ipv4Addr = start.trim().parse().map_err(|_| bad())?;
    let end: Ipv4Addr = end.trim().parse().map_err(|_| bad())?;
    if u32::from(start) > u32::from(end) {
        return Err(format!("{text:?}: the range ends before it starts"));
    }
    Ok((start, end))
}

/// A TCP/UDP port, 1 to 65535.
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

/// A transport protocol a port is opened for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One (protocol, port) open on the gateway's inside address; written `tcp/22`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PortRule {
    pub protocol: Protocol,
    pub port: u16,
}

impl fmt::Display for PortRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

impl FromStr for PortRule {
    /// The problem, worded for a config error.
    type Err = String;

    /// Parses `tcp/N` or `udp/N` with N in 1..=65535.
    fn from_str(text: &str) -> Result<Self, String> {
        let Some((protocol, port)) = text.split_once('/') else {
            return Err(format!(
                "{text:?} is not a port rule; expected \"tcp/N\" or \"udp/N\", like \"tcp/22\""
            ));
        };
        let protocol = match protocol {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                return Err(format!(
                    "{text:?}: unknown protocol {other:?}; expected \"tcp\" or \"udp\""
                ))
            }
        };
        // u16::from_str would accept "+22"; only plain digits are a port here.
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{text:?}: port {port:?} is not a number; expected 1..=65535"
            ));
        }
        let port = match port.parse::<u64>() {
            Ok(0) => {
                return Err(format!(
                    "{text:?}: port 0 is not a valid port; use 1..=65535"
                ))
            }
            Ok(n) => u16::try_from(n).ok(),
            Err(_) => None,
        }
        .ok_or_else(|| format!("{text:?}: port {port} is out of range 1..=65535"))?;
        Ok(PortRule { protocol, port })
    }
}

/// The mask of a prefix length; lengths over 32 saturate.
pub(crate) fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

/// The network address of `address/prefix_len`.
pub(crate) fn network(address: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(address) & mask(prefix_len))
}

/// The broadcast address of `address/prefix_len`.
pub(crate) fn broadcast(address: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(address) | !mask(prefix_len))
}

/// Whether `a` and `b` are in the same `/prefix_len` subnet.
pub(crate) fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let m = mask(prefix_len);
    u32::from(a) & m == u32::from(b) & m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let (a, b) = ip_range("198.51.100.100-198.51.100.199").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.octets()[3], b.octets()[3]), (100, 199));
        assert!(ip_range("198.51.100.199-198.51.100.100").is_err());
    }
}
