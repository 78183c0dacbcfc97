//! The DHCP logic, synchronous and free of I/O: a packet and the time in, the reply, where it
//! goes, the store writes and the lease events out. The server task does the I/O in the order
//! that makes it crash-safe (store, then sinks, then the reply).
//!
//! Here: the handler's state, its entry points (restore, handle, sweep, the readers) and the
//! lease bookkeeping they share. What each message type does is in `messages`, what goes
//! into the reply in `answer`.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use anyhow::{anyhow, Result};

use crate::config::{DomainName, Inside, Seconds};
use crate::lease_events::LeaseEvent;
use crate::mac::MacAddr;
use crate::ratelimit::KeyedBuckets;

use super::config::{ClientKey, Reservation};
use super::hostname;
use super::lease_table::{Lease, LeaseTable, State};
use super::packet::{self, code, Fqdn, MessageType, Request};
use super::pool::Pool;
use super::reply::{self, Reply, ReplyKind};
use super::stats::DhcpStats;
use super::store::{Loaded, StoreOp, StoredQuarantine};
use super::{DhcpServerSettings, LeaseRecord};

mod answer;
mod messages;

use answer::outgoing;

/// How long an offered address is held for the client that was offered it.
pub(crate) const OFFER_HOLD_SECS: u64 = 60;
/// MACs the rate limit tracks at once. A home LAN has tens; more means a flood of invented
/// MACs, where forgetting some costs nothing but a fresh burst each.
const MAX_TRACKED_MACS: usize = 4096;
/// At most one "pool exhausted" warning this often.
const EXHAUSTION_LOG_SECS: u64 = 60;

/// The clocks the handler reads, passed in so tests control them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    /// Wall clock, Unix seconds: lease expiries (they outlive the process).
    pub unix: u64,
    /// Monotonic: rate limiting.
    pub mono: Instant,
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Destination {
    /// 255.255.255.255 on the inside link, to this port.
    Broadcast(u16),
    /// An address that answers ARP (a renewing client, a relay).
    Unicast(SocketAddrV4),
    /// A client that has no address yet: unicast to `address` once the ARP cache knows `mac`.
    Hardware { address: SocketAddrV4, mac: MacAddr },
}

/// A reply ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub reply: Reply,
    pub bytes: Vec<u8>,
    pub destination: Destination,
}

/// What handling one packet (or one sweep) produced, in the order it must happen.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Written and synced first.
    pub store: Vec<StoreOp>,
    /// Then the sinks.
    pub events: Vec<LeaseEvent>,
    /// Then the reply.
    pub reply: Option<Outgoing>,
}

/// Settings the handler works from, checked and precomputed.
#[derive(Debug, Clone)]
struct Settings {
    server_ip: Ipv4Addr,
    inside: Inside,
    netmask: Ipv4Addr,
    lease_secs: Seconds,
    accept_relayed: bool,
    decline_quarantine_secs: Seconds,
    server_port: u16,
    client_port: u16,
    zone: DomainName,
    /// Option 15.
    domain: Option<DomainName>,
    /// Option 119, wire format.
    search: Option<Vec<u8>>,
    /// Service names and [`hostname::ALWAYS_RESERVED`].
    reserved_names: BTreeSet<String>,
    log_queries: bool,
}

/// Who is asking: the lease key and what identifies the client.
struct Client {
    key: ClientKey,
    mac: MacAddr,
    client_id: Option<Vec<u8>>,
}

impl Client {
    fn of(request: &Request) -> Client {
        Client {
            key: match &request.client_id {
                Some(id) => ClientKey::ClientId(id.clone()),
                None => ClientKey::Mac(request.chaddr),
            },
            mac: request.chaddr,
            client_id: request.client_id.clone(),
        }
    }
}

/// The server's state and logic.
#[derive(Debug)]
pub(crate) struct Handler {
    settings: Settings,
    pool: Pool,
    leases: LeaseTable,
    rate: KeyedBuckets<MacAddr>,
    stats: DhcpStats,
    exhaustion_logged: Option<u64>,
}

impl Handler {
    /// Starts with no leases. The config has checked the names, the search list and the lease
    /// time; the pool checks its range and reservations against `settings.inside` and
    /// `settings.server_ip`, which the agent passes apart from the config.
    pub(crate) fn new(settings: &DhcpServerSettings) -> Result<Handler> {
        let dhcp = &settings.dhcp;
        let pool = Pool::new(
            settings.inside,
            settings.server_ip,
            dhcp.pool_range(&settings.inside),
            dhcp.reservations.clone(),
        )
        .map_err(|problem| anyhow!("dhcp: {problem}"))?;

        let search_list = dhcp.search_list(&settings.zone);
        let mut search = Vec::new();
        for name in search_list {
            // A domain name is at most 253 bytes, so its wire form always fits.
            let wire = reply::wire_name(name)
                .ok_or_else(|| anyhow!("dhcp.search: {name} does not fit a DNS name"))?;
            search.extend_from_slice(&wire);
        }
        let domain = search_list.first().cloned();
        let reserved_names = settings
            .reserved_names
            .iter()
            .map(|name| name.to_ascii_lowercase())
            .chain(
                hostname::ALWAYS_RESERVED
                    .iter()
                    .map(|name| name.to_string()),
            )
            .collect();
        let pool_size = pool.size();
        Ok(Handler {
            settings: Settings {
                server_ip: settings.server_ip,
                inside: settings.inside,
                netmask: settings.inside.netmask(),
                lease_secs: dhcp.lease_secs,
                accept_relayed: dhcp.accept_relayed,
                decline_quarantine_secs: dhcp.decline_quarantine_secs,
                server_port: settings.port,
                client_port: settings.client_port,
                zone: settings.zone.clone(),
                domain,
                search: (!search.is_empty()).then_some(search),
                reserved_names,
                log_queries: settings.log_queries,
            },
            pool,
            leases: LeaseTable::default(),
            rate: KeyedBuckets::new(dhcp.rate_limit, MAX_TRACKED_MACS),
            stats: DhcpStats {
                pool_size,
                ..DhcpStats::default()
            },
            exhaustion_logged: None,
        })
    }

    /// Takes over the store's rows at start: live leases become bound (and are returned as
    /// `Bound` events), past ones become hints, and rows that conflict with each other or with
    /// the current config are deleted.
    pub(crate) fn restore(&mut self, loaded: Loaded, now: u64) -> Outcome {
        let mut out = Outcome::default();
        for (address, entry) in loaded.quarantine {
            if entry.until > now {
                self.leases.quarantine(address, entry);
            } else {
                out.store.push(StoreOp::Unquarantine(address));
            }
        }
        let mut rows = loaded.leases;
        // Live leases first, then the most recent: they win conflicts. Then by key, so names
        // come out the same on every start.
        rows.sort_by(|(a_key, a), (b_key, b)| {
            (b.expires > now)
                .cmp(&(a.expires > now))
                .then(b.expires.cmp(&a.expires))
                .then(a_key.cmp(b_key))
        });
        for (key, row) in rows {
            let client_id = match &key {
                ClientKey::ClientId(id) => Some(id.as_slice()),
                ClientKey::Mac(_) => None,
            };
            let reservation = self.pool.reservation(client_id, row.mac).cloned();
            let fits = self.leases.at(row.address).is_none()
                && self
                    .pool
                    .leasable(&self.leases, &key, reservation.as_ref(), row.address, now);
            if !fits {
                out.store.push(StoreOp::Delete(key));
                continue;
            }
            let live = row.expires > now;
            let hostname = if live {
                let wanted = reservation
                    .as_ref()
                    .and_then(|r| r.name.clone().map(String::from))
                    .or_else(|| {
                        // From the store, which an older version may have written.
                        row.hostname
                            .as_deref()
                            .and_then(|n| hostname::sanitize(n.as_bytes()))
                    });
                wanted.and_then(|wanted| self.unique_name(&key, reservation.as_ref(), &wanted))
            } else {
                row.hostname.clone()
            };
            let lease = Lease {
                key: key.clone(),
                address: row.address,
                mac: row.mac,
                client_id: row.client_id.clone(),
                hostname,
                expires: row.expires,
                state: if live { State::Bound } else { State::Expired },
            };
            if lease.stored() != row {
                out.store.push(StoreOp::Put(key, lease.stored()));
            }
            if live {
                out.events.push(LeaseEvent::Bound(lease.info()));
            }
            self.leases.insert(lease);
        }
        out
    }

    /// Decodes, rate-limits and answers one datagram from `source`.
    pub(crate) fn handle_packet(
        &mut self,
        bytes: &[u8],
        source: SocketAddrV4,
        now: Now,
    ) -> Outcome {
        self.stats.received += 1;
        let request = match packet::decode(bytes) {
            Ok(request) => request,
            Err(rejected) => {
                self.stats.count_rejected(rejected);
                tracing::debug!(?rejected, len = bytes.len(), "dropped a DHCP packet");
                return Outcome::default();
            }
        };
        if !self.rate.allow(request.chaddr, now.mono) {
            self.stats.rate_limited += 1;
            return Outcome::default();
        }
        if !request.giaddr.is_unspecified() && !self.settings.accept_relayed {
            self.stats.relayed_refused += 1;
            return Outcome::default();
        }
        self.handle(&request, source, now.unix)
    }

    /// Answers one decoded request.
    pub(crate) fn handle(&mut self, request: &Request, source: SocketAddrV4, now: u64) -> Outcome {
        let client = Client::of(request);
        match request.message_type {
            MessageType::Discover => self.discover(request, &client, now),
            MessageType::Request => self.request(request, &client, now),
            MessageType::Decline => self.decline(request, &client, now),
            MessageType::Release => self.release(request, &client, now),
            MessageType::Inform => self.inform(request, source),
        }
    }

    /// Ends leases and offers past their time, and quarantines that are over.
    pub(crate) fn sweep(&mut self, now: u64) -> Outcome {
        let mut out = Outcome::default();
        for lease in self.leases.expire(now) {
            self.stats.expired += 1;
            if self.settings.log_queries {
                tracing::info!(address = %lease.address, mac = %lease.mac, "DHCP lease expired");
            }
            out.events.push(LeaseEvent::Removed(lease.info()));
        }
        self.leases.end_quarantines(now);
        out
    }

    /// The table for `gateway-agent leases`, in address order.
    pub(crate) fn records(&self) -> Vec<LeaseRecord> {
        let mut records: Vec<LeaseRecord> = self
            .leases
            .iter()
            .map(|lease| LeaseRecord {
                address: lease.address,
                mac: lease.mac.to_string(),
                client_id: lease.client_id.as_deref().map(hex),
                hostname: lease.hostname.clone(),
                expires_unix: lease.expires,
                state: lease.state.as_str().to_owned(),
            })
            .chain(
                self.leases
                    .quarantined()
                    .map(|(address, entry)| LeaseRecord {
                        address,
                        mac: entry.mac.to_string(),
                        client_id: None,
                        hostname: None,
                        expires_unix: entry.until,
                        state: "declined".to_owned(),
                    }),
            )
            .collect();
        records.sort_by_key(|record| (record.address, record.state.clone()));
        records
    }

    /// The counters, with the gauges filled in.
    pub(crate) fn stats(&self) -> DhcpStats {
        DhcpStats {
            bound: self
                .leases
                .iter()
                .filter(|lease| lease.state == State::Bound)
                .count() as u64,
            ..self.stats.clone()
        }
    }

    pub(crate) fn stats_mut(&mut self) -> &mut DhcpStats {
        &mut self.stats
    }

    fn reservation(&self, client: &Client) -> Option<Reservation> {
        self.pool
            .reservation(client.client_id.as_deref(), client.mac)
            .cloned()
    }

    /// Stores `lease`, telling the sinks about any bound lease it displaces: the client's own
    /// at another address or from another MAC (the maps are keyed by MAC), or a past lease of
    /// someone else at this one.
    fn put(&mut self, lease: Lease, out: &mut Outcome) {
        if let Some(old) = self.leases.get(&lease.key) {
            if old.state == State::Bound
                && (old.address != lease.address
                    || old.mac != lease.mac
                    || lease.state != State::Bound)
            {
                out.events.push(LeaseEvent::Removed(old.info()));
            }
        }
        if let Some(evicted) = self.leases.insert(lease) {
            if evicted.state == State::Bound {
                out.events.push(LeaseEvent::Removed(evicted.info()));
            }
            out.store.push(StoreOp::Delete(evicted.key));
        }
    }

    /// `wanted`, or a suffixed variant, whichever no one else holds: service names, other
    /// clients' reservations, other bound leases.
    fn unique_name(
        &self,
        key: &ClientKey,
        reservation: Option<&Reservation>,
        wanted: &str,
    ) -> Option<String> {
        let taken = |name: &str| {
            self.settings.reserved_names.contains(name)
                || self.pool.reservations().iter().any(|r| {
                    r.name.as_deref() == Some(name)
                        && Some(&r.owner) != reservation.map(|o| &o.owner)
                })
                || self.leases.iter().any(|lease| {
                    lease.state == State::Bound
                        && &lease.key != key
                        && lease.hostname.as_deref() == Some(name)
                })
        };
        hostname::unique(wanted, key, taken)
    }

    fn log_exhaustion(&mut self, now: u64, reservation: Option<&Reservation>) {
        if self
            .exhaustion_logged
            .is_some_and(|at| now < at + EXHAUSTION_LOG_SECS)
        {
            return;
        }
        self.exhaustion_logged = Some(now);
        match reservation {
            Some(reservation) => tracing::warn!(
                address = %reservation.address,
                "a reserved address is unusable (declined, or held by another client); no answer"
            ),
            None => tracing::warn!(
                pool_size = self.pool.size(),
                "the DHCP pool is exhausted: new clients get no answer \
                 (logged at most once a minute; see the pool_exhausted counter)"
            ),
        }
    }

    fn log_query(&self, request: &Request, kind: ReplyKind, address: Ipv4Addr) {
        if self.settings.log_queries {
            tracing::info!(
                mac = %request.chaddr,
                %address,
                "{} -> {}",
                request.message_type.name(),
                kind.name()
            );
        }
    }
}

/// Lowercase hex, no separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
