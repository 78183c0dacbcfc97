//! `[dns]` beyond `enabled` and `port`: the zone, the upstream, the cache and the limits, with
//! their defaults, their reader and the rules within the table.

use std::net::{Ipv4Addr, SocketAddr};

use crate::config::reader::{self, Section};
use crate::config::values::{self, DomainName, Seconds};
use crate::config::Errors;
use crate::dns::answered::OnionRange;

/// Where the DNS server sends questions that are not local (`dns.upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsUpstream {
    /// Nothing is forwarded: non-local names get SERVFAIL. The default when Tor is disabled.
    #[default]
    None,
    /// Tor exits (A, AAAA, PTR; other types NOTIMP). The default when Tor is enabled.
    Tor,
    /// The uplink's resolvers, in clear text through the outside interface. Only ever an
    /// explicit choice.
    Uplink,
}

/// `[dns]`: the inside DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// The local zone (RFC 8375 `home.arpa` by default): leases, reservations, service names.
    pub zone: DomainName,
    /// Where other names go.
    pub upstream: DnsUpstream,
    /// Upstream servers for `uplink`; empty: the resolvers from the outside DHCP lease.
    pub upstream_servers: Vec<SocketAddr>,
    /// Cached answers at most.
    pub cache_size: usize,
    /// TTL given to upstream answers that carry none (and the cap for negative answers); at
    /// most `max_ttl`.
    pub default_ttl: Seconds,
    /// Upstream TTLs are capped here.
    pub max_ttl: Seconds,
    /// TTL of local records (leases change).
    pub local_ttl: Seconds,
    /// Queries per second accepted from one client; the rest are REFUSED.
    pub rate_limit: u32,
    /// Inside DNS to any other resolver (UDP and TCP port 53) is answered by this server
    /// (`dns.steer`, on by default): a client with a hard-coded resolver neither leaks nor
    /// breaks.
    pub steer: bool,
    /// Where `.onion` names get addresses (`dns.onion_virtual_range`; with Tor only, default
    /// `10.192.0.0/10`); `None`: `.onion` names are NXDOMAIN.
    pub onion_virtual_range: Option<OnionRange>,
    /// `onion_virtual_range` was set in the file (else it is the default, which gives way to
    /// an inside or uplink subnet it overlaps instead of failing the config).
    pub onion_range_set: bool,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            zone: default_zone(),
            upstream: DnsUpstream::None,
            upstream_servers: Vec::new(),
            cache_size: 10_000,
            default_ttl: Seconds::new(300),
            max_ttl: Seconds::new(86_400),
            local_ttl: Seconds::new(60),
            rate_limit: 200,
            steer: true,
            onion_virtual_range: None,
            onion_range_set: false,
        }
    }
}

/// `home.arpa` (RFC 8375).
fn default_zone() -> DomainName {
    match "home.arpa".parse() {
        Ok(zone) => zone,
        // A constant; the zone tests parse it.
        Err(problem) => unreachable!("the default zone: {problem}"),
    }
}

/// Reads the keys of `[dns]` beyond enabled/port. `upstream` defaults to Tor when
/// `tor_enabled`; asking for Tor without it is an error on `dns.upstream`.
pub(crate) fn read(section: &mut Section, tor_enabled: bool, errors: &mut Errors) -> Option<Dns> {
    let d = Dns {
        upstream: if tor_enabled {
            DnsUpstream::Tor
        } else {
            DnsUpstream::None
        },
        onion_virtual_range: tor_enabled.then_some(OnionRange::DEFAULT),
        ..Dns::default()
    };
    let zone = section.optional("zone", d.zone, errors, |value| {
        reader::string(value)?.parse::<DomainName>()
    });
    let upstream = section.optional("upstream", d.upstream, errors, |value| {
        match upstream(&reader::string(value)?)? {
            DnsUpstream::Tor if !tor_enabled => Err(
                "\"tor\" needs tor.enabled = true; use \"none\" or \"uplink\" without Tor"
                    .to_owned(),
            ),
            upstream => Ok(upstream),
        }
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
    let steer = section.optional("steer", d.steer, errors, reader::boolean);
    let onion_field = section.field("onion_virtual_range", errors, |value| {
        onion_range(value, tor_enabled)
    });
    let onion_range_set = !matches!(onion_field, reader::Field::Absent);
    let onion_virtual_range = onion_field.or(d.onion_virtual_range);

    let mut upstream_servers = Vec::new();
    let mut servers_ok = servers.is_some();
    for (i, entry) in servers.unwrap_or_default().into_iter().enumerate() {
        let server = reader::string(entry).and_then(|text| server(&text));
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
        steer: steer?,
        onion_virtual_range: onion_virtual_range?,
        onion_range_set,
    })
}

/// `"a.b.c.d/len"`, or `false` for none. Only with Tor: nothing else reaches onion services.
fn onion_range(value: toml::Value, tor_enabled: bool) -> Result<Option<OnionRange>, String> {
    if let toml::Value::Boolean(false) = value {
        return Ok(None);
    }
    let text = reader::string(value)
        .map_err(|_| "expected a range like \"10.192.0.0/10\", or false".to_owned())?;
    if !tor_enabled {
        return Err("onion names need tor.enabled = true".to_owned());
    }
    let (network, prefix_len) = values::cidr(&text)?;
    OnionRange::new(network, prefix_len).map(Some)
}

/// `tor`, `none` or `uplink`.
fn upstream(text: &str) -> Result<DnsUpstream, String> {
    match text {
        "tor" => Ok(DnsUpstream::Tor),
        "none" => Ok(DnsUpstream::None),
        "uplink" => Ok(DnsUpstream::Uplink),
        other => Err(format!(
            "{other:?} is not an upstream; expected \"tor\", \"none\" or \"uplink\""
        )),
    }
}

/// A DNS server, `a.b.c.d` (port 53) or `a.b.c.d:port`.
fn server(text: &str) -> Result<SocketAddr, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers() {
        assert_eq!(server("192.0.2.1").map(|a| a.port()), Ok(53));
        assert_eq!(server("192.0.2.1:5353").map(|a| a.port()), Ok(5353));
        assert!(server("192.0.2.1:0").is_err());
        assert!(server("resolver").is_err());
    }

    #[test]
    fn default_zone_parses() {
        assert_eq!(Dns::default().zone, "home.arpa");
    }
}
