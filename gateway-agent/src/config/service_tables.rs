//! The keys of `[dhcp]`, `[dns]` and the uplink part of `[outside]`, each table's own rules.
//! Rules that need another table (the pool inside the inside subnet) are in `validate`.

use toml::Value;

use super::error::Errors;
use super::reader::{self, Section};
use super::services::{ClientKey, Dhcp, Dns, DnsUpstream, HttpProxy, Reservation, Tor, Uplink};
use super::{values, values_services as v};

/// The shortest lease accepted: clients renew at half of it.
const MIN_LEASE_SECS: u32 = 60;

/// The uplink keys of `[outside]`.
pub(crate) fn uplink(section: &mut Section, errors: &mut Errors) -> Option<Uplink> {
    let d = Uplink::default();
    let macvlan_name = section.optional("macvlan_name", d.macvlan_name, errors, |value| {
        values::interface_name(&reader::string(value)?)
    });
    let macvlan_mode = section.optional("macvlan_mode", d.macvlan_mode, errors, |value| {
        v::macvlan_mode(&reader::string(value)?)
    });
    let mac = section.optional("mac", d.mac, errors, |value| {
        let text = reader::string(value)?;
        if text == "auto" {
            return Ok(None);
        }
        v::unicast_mac(&text)
            .map(Some)
            .map_err(|p| format!("{p}, or \"auto\""))
    });
    let ipv6 = section.optional("ipv6", d.ipv6, errors, reader::boolean);
    let hostname = section.optional("hostname", d.hostname, errors, |value| {
        v::dns_label(&reader::string(value)?).map(Some)
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
        v::domain(&reader::string(value)?)
    });
    let upstream = section.optional(
        "upstream",
        d.upstream,
        errors,
        |value| match v::dns_upstream(&reader::string(value)?)? {
            DnsUpstream::Tor if !tor_enabled => Err(
                "\"tor\" needs tor.enabled = true; use \"none\" or \"uplink\" without Tor"
                    .to_owned(),
            ),
            upstream => Ok(upstream),
        },
    );
    let servers_key = section.key("upstream_servers");
    let servers = section.optional("upstream_servers", Vec::new(), errors, reader::array);
    let cache_size = section.optional("cache_size", d.cache_size as u64, errors, |value| {
        v::positive(value, 10_000_000)
    });
    let default_ttl = section.optional("default_ttl", d.default_ttl, errors, |value| {
        v::duration_secs(value)
    });
    let max_ttl = section.optional("max_ttl", d.max_ttl, errors, v::duration_secs);
    let local_ttl = section.optional("local_ttl", d.local_ttl, errors, v::duration_secs);
    let rate_limit = section.optional("rate_limit", u64::from(d.rate_limit), errors, |value| {
        v::positive(value, 1_000_000)
    });

    let mut upstream_servers = Vec::new();
    let mut servers_ok = servers.is_some();
    for (i, entry) in servers.unwrap_or_default().into_iter().enumerate() {
        let server = reader::string(entry).and_then(|text| v::dns_server(&text));
        match errors.check(&format!("{servers_key}[{i}]"), server) {
            Some(server) => upstream_servers.push(server),
            None => servers_ok = false,
        }
    }
    if let (Some(default_ttl), Some(max_ttl)) = (default_ttl, max_ttl) {
        if default_ttl > max_ttl {
            errors.push(
                &section.key("default_ttl"),
                format!("{default_ttl} s is more than dns.max_ttl ({max_ttl} s)"),
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
        v::egress(&reader::string(value)?)
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
        v::ip_range(&reader::string(value)?).map(Some)
    });
    let lease_key = section.key("lease_time");
    let lease_secs = section.optional("lease_time", d.lease_secs, errors, v::duration_secs);
    let search_key = section.key("search");
    let search = section.optional("search", None, errors, |value| {
        reader::array(value).map(Some)
    });
    let accept_relayed =
        section.optional("accept_relayed", d.accept_relayed, errors, reader::boolean);
    let rate_limit = section.optional("rate_limit", u64::from(d.rate_limit), errors, |value| {
        v::positive(value, 100_000)
    });
    let quarantine = section.optional(
        "decline_quarantine",
        d.decline_quarantine_secs,
        errors,
        v::duration_secs,
    );
    let reservations_key = section.key("reservations");
    let reservations = section.optional("reservations", Vec::new(), errors, reader::array);

    let lease_secs = lease_secs.and_then(|secs| {
        if secs < MIN_LEASE_SECS {
            errors.push(
                &lease_key,
                format!("{secs} s is too short; use at least {MIN_LEASE_SECS} s"),
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
                let name = reader::string(entry).and_then(|text| v::domain(&text));
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
        v::unicast_mac(&reader::string(value)?)
    });
    let client_id = section.field("client_id", errors, |value| {
        v::client_id(&reader::string(value)?)
    });
    let address = section.required(
        "address",
        "the reserved IPv4 address in the inside subnet",
        errors,
        |value| values::ipv4(&reader::string(value)?),
    );
    let name = section.optional("name", None, errors, |value| {
        v::dns_label(&reader::string(value)?).map(Some)
    });
    section.finish(errors);
    use super::reader::Field;
    let owner = match (mac, client_id) {
        (Field::Valid(mac), Field::Absent) => ClientKey::Mac(mac),
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
