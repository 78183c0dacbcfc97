//! Rules for single values of the service and uplink tables.

use std::net::{Ipv4Addr, SocketAddr};

use super::services::{DnsUpstream, Egress, MacvlanMode};

/// A duration: seconds as an integer, or a string with a unit (`"90s"`, `"30m"`, `"12h"`,
/// `"7d"`), as dnsmasq writes lease times.
pub(crate) fn duration_secs(value: toml::Value) -> Result<u32, String> {
    let hint = "a number of seconds or a string like \"30m\", \"12h\", \"7d\"";
    let secs: u64 = match value {
        toml::Value::Integer(n) => u64::try_from(n).map_err(|_| format!("{n} is negative"))?,
        toml::Value::String(text) => {
            let (digits, unit) = text.split_at(text.len().saturating_sub(1));
            let multiplier = match unit {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => return Err(format!("{text:?} is not {hint}")),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{text:?} is not {hint}"));
            }
            digits
                .parse::<u64>()
                .map_err(|_| format!("{text:?} is too long"))?
                .saturating_mul(multiplier)
        }
        other => return Err(super::reader::expected(hint, &other)),
    };
    u32::try_from(secs).map_err(|_| format!("{secs} seconds is too long"))
}

/// A MAC address `aa:bb:cc:dd:ee:ff` (or with `-`).
pub(crate) fn mac(text: &str) -> Result<[u8; 6], String> {
    let bad = || format!("{text:?} is not a MAC address like \"02:00:00:00:00:01\"");
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

/// A unicast MAC (the multicast bit clear, not all zero).
pub(crate) fn unicast_mac(text: &str) -> Result<[u8; 6], String> {
    let mac = mac(text)?;
    if mac[0] & 1 == 1 {
        return Err(format!("{text:?} is a multicast MAC address"));
    }
    if mac == [0; 6] {
        return Err(format!("{text:?} is the all-zero MAC address"));
    }
    Ok(mac)
}

/// A client identifier (option 61) as hex bytes, `01:02:…` or `0102…`.
pub(crate) fn client_id(text: &str) -> Result<Vec<u8>, String> {
    let hex: String = text.chars().filter(|&c| c != ':' && c != '-').collect();
    let bad =
        || format!("{text:?} is not a client identifier in hex, like \"01:02:00:00:00:00:01\"");
    if hex.is_empty() || !hex.len().is_multiple_of(2) || hex.len() > 2 * 255 {
        return Err(bad());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad()))
        .collect()
}

/// One RFC 1123 host label: letters, digits and inner hyphens, at most 63.
pub(crate) fn dns_label(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if ok {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "{text:?} is not a host name label (letters, digits and inner '-', at most 63)"
        ))
    }
}

/// A domain name of RFC 1123 labels, like `home.arpa`.
pub(crate) fn domain(text: &str) -> Result<String, String> {
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(format!("{text:?} is not a domain name like \"home.arpa\""));
    }
    trimmed
        .split('.')
        .map(dns_label)
        .collect::<Result<Vec<_>, _>>()
        .map(|labels| labels.join("."))
        .map_err(|problem| format!("{text:?} is not a domain name: {problem}"))
}

/// `a.b.c.d-e.f.g.h`.
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

/// A DNS server, `a.b.c.d` (port 53) or `a.b.c.d:port`.
pub(crate) fn dns_server(text: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Ok(SocketAddr::from((ip, 53)));
    }
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Ok(addr),
        _ => Err(format!(
            "{text:?} is not a DNS server address like \"192.0.2.1\" or \"192.0.2.1:53\""
        )),
    }
}

/// `tor`, `none` or `uplink`.
pub(crate) fn dns_upstream(text: &str) -> Result<DnsUpstream, String> {
    match text {
        "tor" => Ok(DnsUpstream::Tor),
        "none" => Ok(DnsUpstream::None),
        "uplink" => Ok(DnsUpstream::Uplink),
        other => Err(format!(
            "{other:?} is not an upstream; expected \"tor\", \"none\" or \"uplink\""
        )),
    }
}

/// `tor` or `direct`.
pub(crate) fn egress(text: &str) -> Result<Egress, String> {
    match text {
        "tor" => Ok(Egress::Tor),
        "direct" => Ok(Egress::Direct),
        other => Err(format!(
            "{other:?} is not an egress; expected \"tor\" or \"direct\""
        )),
    }
}

/// `bridge`, `private`, `vepa` or `passthru`.
pub(crate) fn macvlan_mode(text: &str) -> Result<MacvlanMode, String> {
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

/// A positive integer no larger than `max`.
pub(crate) fn positive(value: toml::Value, max: u64) -> Result<u64, String> {
    let n = super::reader::integer(value)?;
    match u64::try_from(n) {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{n} is out of range 1..={max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_secs(toml::Value::Integer(90)), Ok(90));
        assert_eq!(duration_secs(toml::Value::String("12h".into())), Ok(43_200));
        assert_eq!(duration_secs(toml::Value::String("2m".into())), Ok(120));
        assert!(duration_secs(toml::Value::String("12".into())).is_err());
        assert!(duration_secs(toml::Value::String("h".into())).is_err());
        assert!(duration_secs(toml::Value::String("-1h".into())).is_err());
        assert!(duration_secs(toml::Value::Integer(-5)).is_err());
    }

    #[test]
    fn macs_and_client_ids() {
        assert_eq!(mac("02:00:00:00:00:0a"), Ok([2, 0, 0, 0, 0, 10]));
        assert_eq!(mac("02-00-00-00-00-0A"), Ok([2, 0, 0, 0, 0, 10]));
        assert!(mac("02:00:00:00:00").is_err());
        assert!(mac("02:00:00:00:00:zz").is_err());
        assert!(unicast_mac("01:00:5e:00:00:01").is_err());
        assert_eq!(client_id("01:02:ff"), Ok(vec![1, 2, 255]));
        assert!(client_id("0").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(dns_label("NAS-1"), Ok("nas-1".into()));
        assert!(dns_label("-nas").is_err());
        assert!(dns_label("a.b").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert_eq!(domain("Home.Arpa."), Ok("home.arpa".into()));
        assert!(domain("home..arpa").is_err());
        assert!(domain("../etc").is_err());
    }

    #[test]
    fn ranges_and_servers() {
        let (a, b) = ip_range("198.51.100.100-198.51.100.199").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.octets()[3], b.octets()[3]), (100, 199));
        assert!(ip_range("198.51.100.199-198.51.100.100").is_err());
        assert_eq!(dns_server("192.0.2.1").map(|a| a.port()), Ok(53));
        assert_eq!(dns_server("192.0.2.1:5353").map(|a| a.port()), Ok(5353));
        assert!(dns_server("resolver").is_err());
    }
}
