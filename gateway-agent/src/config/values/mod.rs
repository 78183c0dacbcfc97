//! Typed values and their parsers. Each parser returns the problem worded for the
//! administrator; the reader files it under the key. The types ([`DnsLabel`], [`DomainName`],
//! [`Seconds`], [`PortRule`]) are only made by parsing, so whoever receives one does not check
//! it again. [`MacAddr`] is the agent's shared type (`crate::mac`); config adds the rule that a
//! configured MAC is one host's (`unicast_mac`).

mod mac;
mod names;
mod net;
mod time;

use std::path::PathBuf;

pub use mac::MacAddr;
pub use names::{DnsLabel, DomainName};
pub use net::{PortRule, Protocol};
pub use time::Seconds;

pub(crate) use mac::unicast_mac;
pub(crate) use net::{
    broadcast, cidr, host_address, ip_range, ipv4, listen_address, mask, network, port,
    same_subnet, unicast,
};
pub(crate) use time::duration;

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

/// A positive integer no larger than `max`.
pub(crate) fn positive(value: toml::Value, max: u64) -> Result<u64, String> {
    let n = super::reader::integer(value)?;
    match u64::try_from(n) {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{n} is out of range 1..={max}")),
    }
}
