//! The keys of `[dhcp]`, `[dns]` and the uplink part of `[outside]`, each table's own rules.
//! Rules that need another table (the pool inside the inside subnet) are in `validate`.

use toml::Value;

use std::net::{Ipv4Addr, SocketAddr};

use super::error::Errors;
use super::reader::{self, Section};
use super::services::{
    ClientKey, Dhcp, Dns, DnsUpstream, Egress, HttpProxy, MacvlanMode, Reservation, Tor, Uplink,
};
use super::values::{self, DnsLabel, DomainName};

/// The shortest lease accepted: clients renew at half of it.
const MIN_LEASE_SECS: u32 = 60;

/// The uplink keys of `[outside]`.
pub(crate) fn uplink(section: &mut Section, errors: &mut Errors) -> Option<Uplink> {
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

/// The keys of `[dns]` beyond enabled/port. `upstream` defaults to Tor when `tor_enabled`;
/// asking for Tor without it is an error on `dns.upstream`.
pub(crate) fn dns(section: &mut Section, tor_enabled: bool, errors: &mut Errors) -> Option<Dns> {
    let d = Dns {
        upstream: if tor_enabled {
            DnsUpstream::Tor
        } else {
            DnsUpstream::None
        },
        ..Dns::default()
    };
    let zone = section.optional("zone", d.zone, errors, |value| {
        reader::string(value)?.parse::<DomainName>()
    });
    let upstream = section.optional("upstream", d.upstream, errors, |value| match dns_upstream(
        &reader::string(value)?,
    )? {
        DnsUpstream::Tor if !tor_enabled => Err(
            "\"tor\" needs tor.enabled = true; use \"none\" or \"uplink\" without Tor".to_owned(),
        ),
        upstream => Ok(upstream),
    });
    let servers_key = section.key("upstream_servers");
    let servers = section.optional("upstream_servers", Vec::new(), errors, reader::array);
    let cache_size = section.optional("cache_size", d.cache_size as u64, errors, |value| {
        values::positive(value, 10_000_000)
    });
    let default_ttl = section.optional("default_ttl", d.default_ttl, errors, values::duration);
    let max_ttl = section.optional("max_ttl", d.max_ttl, errors, values::duration);
    let local_ttl = section.optional("local_ttl", d.local_ttl, errors, values::duration);
    let rate_limit = section.optional("rate_limit", u64::from(d.rate_limit), errors, |value| {
        values::positive(value, 1_000_000)
    });

    let mut upstream_servers = Vec::new();
    let mut servers_ok = servers.is_some();
    for (i, entry) in servers.unwrap_or_default().into_iter().enumerate() {
        let server = reader::string(entry).and_then(|text| dns_server(&text));
        match errors.check(&format!("{servers_key}[{i}]"), server) {
            Some(server) => upstream_servers.push(server),
            None => servers_ok = false,
        }
    }
    if let (Some(default_ttl), Some(max_ttl)) = (default_ttl, max_ttl) {
        if default_ttl > max_ttl {
            errors.push(
                &section.key("default_ttl"),
                format!(
                    "{} s is more than dns.max_ttl ({} s)",
                    default_ttl.get(),
                    max_ttl.get()
                ),
            );
            return None;
        }
    }
    servers_ok.then_some(())?;
    Some(Dns {
        zone: zone?,
        upstream: upstream?,
        upstream_servers,
        cache_size: usize::try_from(cache_size?).ok()?,
        default_ttl: default_ttl?,
        max_ttl: max_ttl?,
        local_ttl: local_ttl?,
        rate_limit: u32::try_from(rate_limit?).ok()?,
    })
}

/// The keys of `[http_proxy]` beyond enabled/port.
pub(crate) fn http_proxy(section: &mut Section, errors: &mut Errors) -> Option<HttpProxy> {
    let defaults = HttpProxy::default();
    let egress = section.optional("egress", defaults.egress, errors, |value| {
        egress(&reader::string(value)?)
    });
    let connect_ports = connect_ports(section, errors);
    Some(HttpProxy {
        connect_ports: connect_ports?.unwrap_or(defaults.connect_ports),
        egress: egress?,
    })
}

/// `http_proxy.connect_ports`: `None` when absent.
fn connect_ports(section: &mut Section, errors: &mut Errors) -> Option<Option<Vec<u16>>> {
    let ports_key = section.key("connect_ports");
    let entries = section.optional("connect_ports", None, errors, |value| {
        reader::array(value).map(Some)
    })?;
    let Some(entries) = entries else {
        return Some(None);
    };
    let mut connect_ports = Vec::new();
    let mut ok = true;
    for (i, entry) in entries.into_iter().enumerate() {
        let port = reader::integer(entry)
            .and_then(values::port)
            .and_then(|port| {
                if connect_ports.contains(&port) {
                    Err(format!("{port} is listed twice"))
                } else {
                    Ok(port)
                }
            });
        match errors.check(&format!("{ports_key}[{i}]"), port) {
            Some(port) => connect_ports.push(port),
            None => ok = false,
        }
    }
    ok.then_some(Some(connect_ports))
}

/// `[tor]`: `enabled`, `arti_config`.
pub(crate) fn tor(mut section: Section, errors: &mut Errors) -> Option<Tor> {
    let d = Tor::default();
    let enabled = section.optional("enabled", d.enabled, errors, reader::boolean);
    let arti_config = section.optional("arti_config", d.arti_config, errors, |value| {
        values::absolute_path(&reader::string(value)?).map(Some)
    });
    section.finish(errors);
    Some(Tor {
        enabled: enabled?,
        arti_config: arti_config?,
    })
}

/// The keys of `[dhcp]` beyond enabled/port.
pub(crate) fn dhcp(section: &mut Section, errors: &mut Errors) -> Option<Dhcp> {
    let d = Dhcp::default();
    let pool = section.optional("pool", d.pool, errors, |value| {
        values::ip_range(&reader::string(value)?).map(Some)
    });
    let lease_key = section.key("lease_time");
    let lease_secs = section.optional("lease_time", d.lease_secs, errors, values::duration);
    let search_key = section.key("search");
    let search = section.optional("search", None, errors, |value| {
        reader::array(value).map(Some)
    });
    let accept_relayed =
        section.optional("accept_relayed", d.accept_relayed, errors, reader::boolean);
    let rate_limit = section.optional("rate_limit", u64::from(d.rate_limit), errors, |value| {
        values::positive(value, 100_000)
    });
    let quarantine = section.optional(
        "decline_quarantine",
        d.decline_quarantine_secs,
        errors,
        values::duration,
    );
    let reservations_key = section.key("reservations");
    let reservations = section.optional("reservations", Vec::new(), errors, reader::array);

    let lease_secs = lease_secs.and_then(|secs| {
        if secs.get() < MIN_LEASE_SECS {
            errors.push(
                &lease_key,
                format!(
                    "{} s is too short; use at least {MIN_LEASE_SECS} s",
                    secs.get()
                ),
            );
            None
        } else {
            Some(secs)
        }
    });
    let search = match search? {
        None => Some(None),
        Some(entries) => {
            let mut list = Vec::new();
            let mut ok = true;
            for (i, entry) in entries.into_iter().enumerate() {
                let name = reader::string(entry).and_then(|text| text.parse::<DomainName>());
                match errors.check(&format!("{search_key}[{i}]"), name) {
                    Some(name) => list.push(name),
                    None => ok = false,
                }
            }
            ok.then_some(Some(list))
        }
    };
    let reservations = reservations.and_then(|entries| {
        let mut list = Vec::new();
        let mut ok = true;
        for (i, entry) in entries.into_iter().enumerate() {
            match reservation(format!("{reservations_key}[{i}]"), entry, errors) {
                Some(r) => list.push(r),
                None => ok = false,
            }
        }
        ok.then_some(list)
    });
    Some(Dhcp {
        pool: pool?,
        lease_secs: lease_secs?,
        search: search?,
        accept_relayed: accept_relayed?,
        rate_limit: u32::try_from(rate_limit?).ok()?,
        decline_quarantine_secs: quarantine?,
        reservations: reservations?,
    })
}

/// One `[[dhcp.reservations]]` entry: `mac` or `client_id`, `address`, optional `name`.
fn reservation(path: String, entry: Value, errors: &mut Errors) -> Option<Reservation> {
    let table = match entry {
        Value::Table(table) => table,
        other => {
            errors.push(
                &path,
                reader::expected("a table with mac, address and name", &other),
            );
            return None;
        }
    };
    let mut section = Section::nested(path.clone(), table);
    let mac = section.field("mac", errors, |value| {
        values::unicast_mac(&reader::string(value)?)
    });
    let client_id = section.field("client_id", errors, |value| {
        client_id(&reader::string(value)?)
    });
    let address = section.required(
        "address",
        "the reserved IPv4 address in the inside subnet",
        errors,
        |value| values::ipv4(&reader::string(value)?),
    );
    let name = section.optional("name", None, errors, |value| {
        reader::string(value)?.parse::<DnsLabel>().map(Some)
    });
    section.finish(errors);
    use super::reader::Field;
    let owner = match (mac, client_id) {
        (Field::Valid(mac), Field::Absent) => ClientKey::Mac(mac.octets()),
        (Field::Absent, Field::Valid(id)) => ClientKey::ClientId(id),
        (Field::Valid(_), Field::Valid(_)) => {
            errors.push(&path, "set either mac or client_id, not both");
            return None;
        }
        (Field::Absent, Field::Absent) => {
            errors.push(&path, "missing mac or client_id: whom is the address for?");
            return None;
        }
        _ => return None,
    };
    Some(Reservation {
        owner,
        address: address?,
        name: name?,
    })
}

/// A client identifier (option 61) as hex bytes, `01:02:…` or `0102…`.
fn client_id(text: &str) -> Result<Vec<u8>, String> {
    let hex: String = text.chars().filter(|&c| c != ':' && c != '-').collect();
    let bad =
        || format!("{text:?} is not a client identifier in hex, like \"01:02:00:00:00:00:01\"");
    if hex.is_empty() || !hex.len().is_multiple_of(2) || hex.len() > 2 * 255 {
        return Err(bad());
    }
    // from_str_radix would accept "+a", and slicing needs ASCII.
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad()))
        .collect()
}

/// A DNS server, `a.b.c.d` (port 53) or `a.b.c.d:port`.
fn dns_server(text: &str) -> Result<SocketAddr, String> {
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
fn dns_upstream(text: &str) -> Result<DnsUpstream, String> {
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
fn egress(text: &str) -> Result<Egress, String> {
    match text {
        "tor" => Ok(Egress::Tor),
        "direct" => Ok(Egress::Direct),
        other => Err(format!(
            "{other:?} is not an egress; expected \"tor\" or \"direct\""
        )),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids() {
        assert_eq!(client_id("01:02:ff"), Ok(vec![1, 2, 255]));
        assert_eq!(client_id("0102ff"), Ok(vec![1, 2, 255]));
        assert!(client_id("0").is_err());
        assert!(client_id("+a").is_err());
        assert!(
            client_id("aéb").is_err(),
            "no panic inside a multi-byte character"
        );
    }

    #[test]
    fn servers() {
        assert_eq!(dns_server("192.0.2.1").map(|a| a.port()), Ok(53));
        assert_eq!(dns_server("192.0.2.1:5353").map(|a| a.port()), Ok(5353));
        assert!(dns_server("192.0.2.1:0").is_err());
        assert!(dns_server("resolver").is_err());
    }
}
