//! What the DNS server told each inside client, for the transparent listener: the virtual
//! addresses it handed out for `.onion` names, and the addresses it recently answered for
//! other names. A steered connection to such an address goes through Tor *by name*: the exit
//! resolves it (so the answer the client got over Tor and the exit agree), and an onion service
//! is reached at all, from any program, with no proxy settings.
//!
//! Both are kept per client: an address one client was given means nothing for another, so no
//! client can learn (or reach) what another one looked up by trying addresses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// `.onion` names mapped at most; the oldest mapping goes first once the range or this
/// bound is used up.
const MAX_ONION_NAMES: u32 = 65_536;
/// Answered addresses remembered at most (all clients).
const MAX_RECENT: usize = 16_384;
/// How long past its TTL an answer is still connected by name: clients and browsers keep
/// addresses longer than they were told.
const RECENT_GRACE: Duration = Duration::from_secs(600);

/// The virtual range `.onion` names get addresses from (`dns.onion_virtual_range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnionRange {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl OnionRange {
    /// `10.192.0.0/10`, like Tor's own `VirtualAddrNetworkIPv4` shifted out of 127/8, which
    /// LAN clients cannot route to the gateway.
    pub const DEFAULT: OnionRange = OnionRange {
        network: Ipv4Addr::new(10, 192, 0, 0),
        prefix_len: 10,
    };

    /// A range from its network address and prefix length (8 to 24: room for many names,
    /// and not the whole address space).
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self, String> {
        if !(8..=24).contains(&prefix_len) {
            return Err(format!(
                "/{prefix_len}: the range must be between a /8 and a /24"
            ));
        }
        let mask = u32::MAX << (32 - u32::from(prefix_len));
        if u32::from(network) & !mask != 0 {
            return Err(format!(
                "{network}/{prefix_len} is not a network address (host bits set)"
            ));
        }
        Ok(OnionRange {
            network,
            prefix_len,
        })
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix_len))
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// Whether the range and `address/prefix_len` share any address.
    pub fn overlaps(&self, address: Ipv4Addr, prefix_len: u8) -> bool {
        let shorter = prefix_len.min(self.prefix_len);
        let mask = if shorter == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(shorter))
        };
        u32::from(address) & mask == u32::from(self.network) & mask
    }

    /// Host addresses in the range (the network and broadcast addresses are not handed out).
    fn hosts(&self) -> u32 {
        (1u32 << (32 - u32::from(self.prefix_len))) - 2
    }

    /// The `i`-th host address.
    fn host(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1 + i)
    }
}

impl std::fmt::Display for OnionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// A v3 onion name (`<56 base32 chars>.onion`, with or without labels before it), lower-cased
/// without the trailing dot; `None` for anything else.
pub fn onion_name(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let rest = name.strip_suffix(".onion")?;
    let service = rest.rsplit('.').next()?;
    let valid = service.len() == 56
        && service
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'));
    valid.then_some(name)
}

struct Onions {
    range: OnionRange,
    by_name: HashMap<(IpAddr, String), Ipv4Addr>,
    by_addr: HashMap<(IpAddr, Ipv4Addr), String>,
    /// Which (client, address) the next allocation takes, in allocation order: a ring.
    ring: Vec<Option<IpAddr>>,
    next: u32,
}

/// The book the DNS server writes and the transparent listener reads.
pub struct AnsweredNames {
    onions: Option<Mutex<Onions>>,
    recent: Mutex<HashMap<(IpAddr, Ipv4Addr), (String, Instant)>>,
}

impl std::fmt::Debug for AnsweredNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // What clients looked up is not for logs.
        f.debug_struct("AnsweredNames")
            .field("onion_range", &self.onion_range())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a few map operations that leave the maps consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl AnsweredNames {
    /// An empty book; `onions`: the virtual range, or `None` for no onion addresses.
    pub fn new(onions: Option<OnionRange>) -> Self {
        AnsweredNames {
            onions: onions.map(|range| {
                let slots = range.hosts().min(MAX_ONION_NAMES);
                Mutex::new(Onions {
                    range,
                    by_name: HashMap::new(),
                    by_addr: HashMap::new(),
                    ring: vec![None; slots as usize],
                    next: 0,
                })
            }),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// The virtual range, if onion names get addresses.
    pub fn onion_range(&self) -> Option<OnionRange> {
        self.onions.as_ref().map(|o| lock(o).range)
    }

    /// The virtual address of the onion name `name` (see [`onion_name`]) for `client`: the one
    /// it was given before, else a new one.
    pub fn onion_address(&self, client: IpAddr, name: &str) -> Option<Ipv4Addr> {
        let mut onions = lock(self.onions.as_ref()?);
        let key = (client, name.to_owned());
        if let Some(addr) = onions.by_name.get(&key) {
            return Some(*addr);
        }
        let slot = onions.next;
        onions.next = (slot + 1) % onions.ring.len() as u32;
        let addr = onions.range.host(slot);
        // The slot's last holder loses its address: the oldest mapping goes first.
        if let Some(old_client) = onions.ring[slot as usize].replace(client) {
            if let Some(old_name) = onions.by_addr.remove(&(old_client, addr)) {
                onions.by_name.remove(&(old_client, old_name));
            }
        }
        onions.by_name.insert(key, addr);
        onions.by_addr.insert((client, addr), name.to_owned());
        Some(addr)
    }

    /// Remembers that `client` was told `addrs` for `name`, valid for `ttl` from `now`.
    pub fn record(
        &self,
        client: IpAddr,
        name: &str,
        addrs: &[Ipv4Addr],
        ttl: Duration,
        now: Instant,
    ) {
        if addrs.is_empty() {
            return;
        }
        let until = now + ttl + RECENT_GRACE;
        let mut recent = lock(&self.recent);
        if recent.len() + addrs.len() > MAX_RECENT {
            recent.retain(|_, (_, expiry)| *expiry > now);
        }
        for addr in addrs {
            // The same answer again (a cache hit): a new expiry, no new allocation.
            if let Some((known, expiry)) = recent.get_mut(&(client, *addr)) {
                if known == name {
                    *expiry = until;
                    continue;
                }
            }
            if recent.len() >= MAX_RECENT {
                // Full of live entries: this answer is connected by address instead.
                break;
            }
            recent.insert((client, *addr), (name.to_owned(), until));
        }
    }

    /// The name to connect to for `client`'s steered connection to `addr`, if the DNS server
    /// gave it that address: an onion name for a virtual address, else a recent answer.
    pub fn name_for(&self, client: IpAddr, addr: Ipv4Addr, now: Instant) -> Option<String> {
        if let Some(onions) = &self.onions {
            let onions = lock(onions);
            if onions.range.contains(addr) {
                return onions.by_addr.get(&(client, addr)).cloned();
            }
        }
        let recent = lock(&self.recent);
        match recent.get(&(client, addr)) {
            Some((name, until)) if *until > now => Some(name.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONION: &str = "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion";

    fn client(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, n))
    }

    #[test]
    fn onion_names_are_v3_only() {
        assert_eq!(onion_name(&format!("{ONION}.")).as_deref(), Some(ONION));
        assert_eq!(
            onion_name(&format!("WWW.{}", ONION.to_uppercase())),
            Some(format!("www.{ONION}"))
        );
        assert_eq!(onion_name("abcdefghijklmnop.onion"), None, "v2 is gone");
        assert_eq!(onion_name("onion"), None);
        assert_eq!(onion_name(&ONION.replace('d', "1")), None, "not base32");
        assert_eq!(onion_name("example.com"), None);
    }

    #[test]
    fn ranges() {
        let range = OnionRange::DEFAULT;
        assert!(range.contains(Ipv4Addr::new(10, 192, 0, 1)));
        assert!(range.contains(Ipv4Addr::new(10, 255, 255, 254)));
        assert!(!range.contains(Ipv4Addr::new(10, 191, 255, 255)));
        assert!(range.overlaps(Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(range.overlaps(Ipv4Addr::new(10, 200, 1, 0), 24));
        assert!(!range.overlaps(Ipv4Addr::new(198, 51, 100, 0), 24));
        assert!(OnionRange::new(Ipv4Addr::new(10, 192, 0, 1), 10).is_err());
        assert!(OnionRange::new(Ipv4Addr::new(10, 0, 0, 0), 4).is_err());
        assert!(OnionRange::new(Ipv4Addr::new(10, 0, 0, 0), 30).is_err());
    }

    #[test]
    fn each_client_has_its_own_onion_addresses() {
        let book = AnsweredNames::new(Some(OnionRange::DEFAULT));
        let a = book.onion_address(client(100), ONION).unwrap();
        assert!(OnionRange::DEFAULT.contains(a));
        assert_eq!(book.onion_address(client(100), ONION), Some(a), "stable");
        let now = Instant::now();
        assert_eq!(book.name_for(client(100), a, now).as_deref(), Some(ONION));
        // Another client neither reaches it through the first one's address nor shares it.
        assert_eq!(book.name_for(client(101), a, now), None);
        let b = book.onion_address(client(101), ONION).unwrap();
        assert_ne!(a, b);
        // No onion addresses at all without a range.
        let none = AnsweredNames::new(None);
        assert_eq!(none.onion_address(client(100), ONION), None);
    }

    #[test]
    fn the_oldest_onion_mapping_goes_when_the_range_is_used_up() {
        // A /24 has 254 host addresses.
        let range = OnionRange::new(Ipv4Addr::new(10, 192, 0, 0), 24).unwrap();
        let book = AnsweredNames::new(Some(range));
        let first = book.onion_address(client(100), "first").unwrap();
        for i in 0..253 {
            book.onion_address(client(100), &format!("n{i}")).unwrap();
        }
        let now = Instant::now();
        assert_eq!(
            book.name_for(client(100), first, now).as_deref(),
            Some("first")
        );
        let reused = book.onion_address(client(100), "newest").unwrap();
        assert_eq!(reused, first, "the ring wrapped");
        assert_eq!(
            book.name_for(client(100), first, now).as_deref(),
            Some("newest")
        );
        // `first` gets a new address when asked again.
        let again = book.onion_address(client(100), "first").unwrap();
        assert_ne!(again, first);
    }

    #[test]
    fn answers_expire_after_their_ttl_and_the_grace() {
        let book = AnsweredNames::new(None);
        let now = Instant::now();
        let addr = Ipv4Addr::new(203, 0, 113, 10);
        book.record(
            client(100),
            "origin.example",
            &[addr],
            Duration::from_secs(60),
            now,
        );
        assert_eq!(
            book.name_for(client(100), addr, now).as_deref(),
            Some("origin.example")
        );
        assert_eq!(book.name_for(client(101), addr, now), None, "per client");
        let later = now + Duration::from_secs(60) + RECENT_GRACE + Duration::from_secs(1);
        assert_eq!(book.name_for(client(100), addr, later), None);
    }
}
