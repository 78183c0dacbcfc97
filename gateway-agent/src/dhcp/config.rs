//! `[dhcp]` beyond `enabled` and `port`: the pool, lease time, search list, limits and
//! reservations, with their defaults, their reader and the rules within the table. That the
//! pool and reservations lie in the inside subnet spans tables: `config::validate` checks it.

use crate::mac::MacAddr;
use std::collections::HashMap;
use std::net::Ipv4Addr;

use toml::Value;

use crate::config::reader::{self, Field, Section};
use crate::config::values::{self, DnsLabel, DomainName, Seconds};
use crate::config::{Errors, Inside};

/// The shortest lease accepted: clients renew at half of it.
const MIN_LEASE_SECS: u32 = 60;

/// Who a lease or reservation belongs to (RFC 2131: the client identifier when the client sends
/// one, else the hardware address).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    /// Option 61, raw bytes (type byte included).
    ClientId(Vec<u8>),
    /// The chaddr of an Ethernet client.
    Mac(MacAddr),
}

/// `[[dhcp.reservations]]`: a fixed address (and optionally a name) for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The client, by `mac` or `client_id`.
    pub owner: ClientKey,
    /// Its address, inside the inside subnet (it need not be in the pool).
    pub address: Ipv4Addr,
    /// Its DNS name, which no other client may take.
    pub name: Option<DnsLabel>,
}

/// `[dhcp]`: the inside DHCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp {
    /// First and last address of the dynamic pool; `None` takes [`Dhcp::default_pool`].
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Lease time, at least a minute (T1 is half, T2 seven eighths).
    pub lease_secs: Seconds,
    /// Domain search list (option 119); the first entry is also option 15 unless empty.
    /// Defaults to the DNS zone.
    pub search: Option<Vec<DomainName>>,
    /// Answer requests relayed by a DHCP relay (giaddr set); off: the LAN is one segment.
    pub accept_relayed: bool,
    /// Packets per second accepted from one MAC before the rest are dropped and counted.
    pub rate_limit: u32,
    /// How long a DECLINEd address stays out of the pool.
    pub decline_quarantine_secs: Seconds,
    /// Fixed addresses; owners, addresses and names are unique.
    pub reservations: Vec<Reservation>,
}

impl Default for Dhcp {
    fn default() -> Self {
        Dhcp {
            pool: None,
            lease_secs: Seconds::new(12 * 3600),
            search: None,
            accept_relayed: false,
            rate_limit: 10,
            decline_quarantine_secs: Seconds::new(600),
            reservations: Vec::new(),
        }
    }
}

impl Dhcp {
    /// The configured pool, or the default for `inside`.
    pub fn pool_range(&self, inside: &Inside) -> (Ipv4Addr, Ipv4Addr) {
        if let Some(pool) = self.pool {
            return pool;
        }
        Dhcp::default_pool(inside)
    }

    /// The default pool for `inside`: `.100`–`.199` of a /24 or larger subnet, the upper half
    /// of a smaller one (short of the broadcast address).
    pub fn default_pool(inside: &Inside) -> (Ipv4Addr, Ipv4Addr) {
        let network = u32::from(inside.network());
        let broadcast = u32::from(inside.broadcast());
        if inside.prefix_len <= 24 {
            (Ipv4Addr::from(network + 100), Ipv4Addr::from(network + 199))
        } else {
            let size = broadcast - network;
            (
                Ipv4Addr::from(network + (size / 2).max(2)),
                Ipv4Addr::from(broadcast - 1),
            )
        }
    }

    /// The search list to hand out: the configured one, else just `zone`.
    pub fn search_list<'a>(&'a self, zone: &'a DomainName) -> &'a [DomainName] {
        self.search.as_deref().unwrap_or(std::slice::from_ref(zone))
    }
}

/// Reads the keys of `[dhcp]` beyond enabled/port.
pub(crate) fn read(section: &mut Section, errors: &mut Errors) -> Option<Dhcp> {
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
        if ok {
            reservations_unique(&reservations_key, &list, errors);
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

/// No two reservations share an address, a client or a name, and none takes one of the
/// gateway's own names; every later one is an error that names the first.
fn reservations_unique(key: &str, reservations: &[Reservation], errors: &mut Errors) {
    let mut addresses = HashMap::new();
    let mut owners = HashMap::new();
    let mut names = HashMap::new();
    for (i, r) in reservations.iter().enumerate() {
        let entry = format!("{key}[{i}]");
        if let Some(first) = addresses.insert(r.address, i) {
            errors.push(
                &format!("{entry}.address"),
                format!("{} is already reserved by {key}[{first}]", r.address),
            );
        }
        if let Some(first) = owners.insert(&r.owner, i) {
            errors.push(&entry, format!("this client already has {key}[{first}]"));
        }
        if let Some(name) = &r.name {
            if crate::dns::SERVICE_NAMES.contains(&name.as_str()) {
                errors.push(
                    &format!("{entry}.name"),
                    format!(
                        "{:?} is one of the gateway's own service names",
                        name.as_str()
                    ),
                );
            }
            if let Some(first) = names.insert(name, i) {
                errors.push(
                    &format!("{entry}.name"),
                    format!("{:?} is already the name of {key}[{first}]", name.as_str()),
                );
            }
        }
    }
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
}
