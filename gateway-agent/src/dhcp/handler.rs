//! The DHCP logic, synchronous and free of I/O: a packet and the time in, the reply, where it
//! goes, the store writes and the lease events out. The server task does the I/O in the order
//! that makes it crash-safe (store, then sinks, then the reply).

use crate::mac::MacAddr;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use anyhow::{anyhow, Result};

use crate::config::{DomainName, Inside, Seconds};
use crate::lease_events::LeaseEvent;
use crate::ratelimit::KeyedBuckets;

use super::config::{ClientKey, Reservation};
use super::hostname;
use super::leases::{Lease, LeaseTable, State};
use super::packet::{self, code, Fqdn, MessageType, Request};
use super::pool::Pool;
use super::reply::{self, Reply, ReplyKind};
use super::stats::DhcpStats;
use super::store::{Loaded, StoreOp, StoredQuarantine};
use super::{DhcpServerSettings, LeaseRecord};

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

    fn discover(&mut self, request: &Request, client: &Client, now: u64) -> Outcome {
        self.stats.discovers += 1;
        let reservation = self.reservation(client);
        let Some(address) = self.pool.choose(
            &self.leases,
            &client.key,
            reservation.as_ref(),
            request.requested_ip,
            now,
        ) else {
            self.stats.pool_exhausted += 1;
            self.log_exhaustion(now, reservation.as_ref());
            return Outcome::default();
        };
        let mut out = Outcome::default();
        let bound_here = self.leases.get(&client.key).is_some_and(|lease| {
            lease.state == State::Bound && lease.address == address && lease.expires > now
        });
        if !bound_here {
            let previous_name = self
                .leases
                .get(&client.key)
                .and_then(|l| l.hostname.clone());
            self.put(
                Lease {
                    key: client.key.clone(),
                    address,
                    mac: client.mac,
                    client_id: client.client_id.clone(),
                    hostname: previous_name,
                    expires: now + OFFER_HOLD_SECS,
                    state: State::Offered,
                },
                &mut out,
            );
        }
        self.stats.offers += 1;
        self.log_query(request, ReplyKind::Offer, address);
        let reply = self.lease_reply(ReplyKind::Offer, request, address, None);
        out.reply = Some(self.outgoing(reply, request));
        out
    }

    fn request(&mut self, request: &Request, client: &Client, now: u64) -> Outcome {
        self.stats.requests += 1;
        let ciaddr = Some(request.ciaddr).filter(|a| !a.is_unspecified());
        let address = match request.server_id {
            // SELECTING (RFC 2131 §4.3.2): the client chose another server's offer.
            Some(server) if server != self.settings.server_ip => {
                if self
                    .leases
                    .get(&client.key)
                    .is_some_and(|lease| lease.state == State::Offered)
                {
                    self.leases.remove(&client.key);
                }
                self.stats.ignored += 1;
                return Outcome::default();
            }
            Some(_) => request.requested_ip.or(ciaddr),
            // RENEWING / REBINDING: ciaddr; INIT-REBOOT: option 50.
            None => ciaddr.or(request.requested_ip),
        };
        let Some(address) = address else {
            self.stats.ignored += 1;
            return Outcome::default();
        };
        let reservation = self.reservation(client);
        if !self.pool.leasable(
            &self.leases,
            &client.key,
            reservation.as_ref(),
            address,
            now,
        ) {
            return self.nak(request, address);
        }

        let mut out = Outcome::default();
        let previous = self.leases.get(&client.key).cloned();
        let wanted = reservation
            .as_ref()
            .and_then(|r| r.name.clone().map(String::from))
            .or_else(|| hostname::requested(request.fqdn.as_ref(), request.hostname.as_deref()))
            .or_else(|| previous.as_ref().and_then(|l| l.hostname.clone()));
        let name = wanted.as_ref().and_then(|wanted| {
            let name = self.unique_name(&client.key, reservation.as_ref(), wanted);
            let changed = previous.as_ref().and_then(|l| l.hostname.as_ref()) != name.as_ref();
            if changed && name.as_ref() != Some(wanted) {
                tracing::info!(
                    wanted = %wanted,
                    given = name.as_deref().unwrap_or("(none)"),
                    "DHCP client's host name is taken; it gets another"
                );
            }
            name
        });
        let lease = Lease {
            key: client.key.clone(),
            address,
            mac: client.mac,
            client_id: client.client_id.clone(),
            hostname: name,
            expires: now + u64::from(self.settings.lease_secs),
            state: State::Bound,
        };
        self.put(lease.clone(), &mut out);
        out.store
            .push(StoreOp::Put(client.key.clone(), lease.stored()));
        out.events.push(LeaseEvent::Bound(lease.info()));
        self.stats.acks += 1;
        self.log_query(request, ReplyKind::Ack, address);
        let fqdn = request
            .fqdn
            .as_ref()
            .and_then(|fqdn| self.fqdn_answer(fqdn, lease.hostname.as_deref()));
        let reply = self.lease_reply(ReplyKind::Ack, request, address, fqdn);
        out.reply = Some(self.outgoing(reply, request));
        out
    }

    fn decline(&mut self, request: &Request, client: &Client, now: u64) -> Outcome {
        let ours = request
            .server_id
            .is_none_or(|id| id == self.settings.server_ip);
        let held = request.requested_ip.filter(|&address| {
            self.leases.get(&client.key).is_some_and(|lease| {
                lease.address == address && matches!(lease.state, State::Offered | State::Bound)
            })
        });
        // Only the holder may decline: otherwise any client could empty the pool.
        let (true, Some(address)) = (ours, held) else {
            self.stats.ignored += 1;
            return Outcome::default();
        };
        let mut out = Outcome::default();
        if let Some(lease) = self.leases.remove(&client.key) {
            if lease.state == State::Bound {
                out.events.push(LeaseEvent::Removed(lease.info()));
            }
        }
        let entry = StoredQuarantine {
            until: now + u64::from(self.settings.decline_quarantine_secs),
            mac: client.mac,
        };
        self.leases.quarantine(address, entry);
        out.store.push(StoreOp::Delete(client.key.clone()));
        out.store.push(StoreOp::Quarantine(address, entry));
        self.stats.declines += 1;
        // Not a per-query log: a decline means another host uses that address.
        tracing::warn!(
            %address,
            secs = self.settings.decline_quarantine_secs.get(),
            "a DHCP client declined an address (in use by another host?); quarantined"
        );
        out
    }

    fn release(&mut self, request: &Request, client: &Client, now: u64) -> Outcome {
        let ours = request
            .server_id
            .is_none_or(|id| id == self.settings.server_ip);
        let lease = self
            .leases
            .get_mut(&client.key)
            .filter(|lease| ours && lease.state == State::Bound && lease.address == request.ciaddr);
        let Some(lease) = lease else {
            self.stats.ignored += 1;
            return Outcome::default();
        };
        lease.state = State::Released;
        lease.expires = now;
        let mut out = Outcome::default();
        out.store
            .push(StoreOp::Put(lease.key.clone(), lease.stored()));
        out.events.push(LeaseEvent::Removed(lease.info()));
        self.stats.releases += 1;
        if self.settings.log_queries {
            tracing::info!(address = %request.ciaddr, mac = %client.mac, "DHCPRELEASE");
        }
        out
    }

    fn inform(&mut self, request: &Request, source: SocketAddrV4) -> Outcome {
        // RFC 2131 §4.3.5: options only, to the address the client already has. Only on our
        // link (unless relayed): a forged ciaddr must not aim our reply anywhere else.
        let target = [request.ciaddr, *source.ip()]
            .into_iter()
            .find(|address| !address.is_unspecified())
            .filter(|&address| {
                !request.giaddr.is_unspecified() || self.settings.inside.contains(address)
            });
        let Some(target) = target else {
            self.stats.ignored += 1;
            return Outcome::default();
        };
        self.stats.informs += 1;
        self.log_query(request, ReplyKind::Ack, target);
        let mut reply = self.reply(ReplyKind::Ack, request, Ipv4Addr::UNSPECIFIED, None, None);
        reply.ciaddr = request.ciaddr;
        let destination = if request.giaddr.is_unspecified() {
            Destination::Unicast(SocketAddrV4::new(target, self.settings.client_port))
        } else {
            self.relay_destination(request)
        };
        Outcome {
            reply: Some(outgoing(reply, request, destination)),
            ..Outcome::default()
        }
    }

    fn nak(&mut self, request: &Request, address: Ipv4Addr) -> Outcome {
        self.stats.naks += 1;
        self.log_query(request, ReplyKind::Nak, address);
        let mut reply = Reply {
            kind: ReplyKind::Nak,
            xid: request.xid,
            flags: request.flags,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: request.giaddr,
            chaddr: request.chaddr,
            options: Vec::new(),
        };
        reply.push(code::SERVER_ID, self.settings.server_ip.octets());
        reply.push_optional(code::MESSAGE, &b"address not available"[..]);
        let destination = if request.giaddr.is_unspecified() {
            Destination::Broadcast(self.settings.client_port)
        } else {
            // RFC 2131 §4.3.2: the relay must broadcast a NAK.
            reply.flags |= 0x8000;
            self.relay_destination(request)
        };
        if let Some(info) = &request.relay_agent_info {
            reply.push(code::RELAY_AGENT_INFO, info.clone());
        }
        Outcome {
            reply: Some(outgoing(reply, request, destination)),
            ..Outcome::default()
        }
    }

    /// An OFFER or lease ACK for `address`.
    fn lease_reply(
        &self,
        kind: ReplyKind,
        request: &Request,
        address: Ipv4Addr,
        fqdn: Option<Vec<u8>>,
    ) -> Reply {
        self.reply(
            kind,
            request,
            address,
            Some(self.settings.lease_secs.get()),
            fqdn,
        )
    }

    fn reply(
        &self,
        kind: ReplyKind,
        request: &Request,
        yiaddr: Ipv4Addr,
        lease_secs: Option<u32>,
        fqdn: Option<Vec<u8>>,
    ) -> Reply {
        let settings = &self.settings;
        let mut reply = Reply {
            kind,
            xid: request.xid,
            flags: request.flags,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr,
            giaddr: request.giaddr,
            chaddr: request.chaddr,
            options: Vec::new(),
        };
        reply.push(code::SERVER_ID, settings.server_ip.octets());
        if let Some(secs) = lease_secs {
            let secs64 = u64::from(secs);
            reply.push(code::LEASE_TIME, secs.to_be_bytes());
            reply.push(code::RENEWAL_TIME, u32_bytes(secs64 / 2));
            reply.push(code::REBINDING_TIME, u32_bytes(secs64 * 7 / 8));
        }
        reply.push(code::SUBNET_MASK, settings.netmask.octets());
        reply.push(code::ROUTER, settings.server_ip.octets());
        reply.push(code::DNS_SERVER, settings.server_ip.octets());
        if let Some(info) = &request.relay_agent_info {
            reply.push(code::RELAY_AGENT_INFO, info.clone());
        }
        // Optional ones last, most expendable last.
        if let Some(domain) = &settings.domain {
            reply.push_optional(code::DOMAIN_NAME, domain.as_bytes());
        }
        if let Some(fqdn) = fqdn {
            reply.push_optional(code::CLIENT_FQDN, fqdn);
        }
        if let Some(search) = &settings.search {
            reply.push_optional(code::DOMAIN_SEARCH, search.clone());
        }
        reply
    }

    /// Option 81 in the ACK (RFC 4702 §4): the name the client got, and that we (the zone)
    /// do the A record, overriding the client if it wanted to.
    fn fqdn_answer(&self, asked: &Fqdn, name: Option<&str>) -> Option<Vec<u8>> {
        let fqdn = format!("{}.{}", name?, self.settings.zone);
        let client_does_it = asked.flags & Fqdn::FLAG_S == 0;
        let wire = asked.flags & Fqdn::FLAG_E != 0;
        let mut flags = Fqdn::FLAG_S;
        if client_does_it {
            flags |= Fqdn::FLAG_O;
        }
        if wire {
            flags |= Fqdn::FLAG_E;
        }
        let mut value = vec![flags, 255, 255];
        if wire {
            value.extend(reply::wire_name(&fqdn)?);
        } else {
            value.extend_from_slice(fqdn.as_bytes());
        }
        Some(value)
    }

    fn outgoing(&self, reply: Reply, request: &Request) -> Outgoing {
        // RFC 2131 §4.1, in order: relay, renewing client, broadcast wanted, else unicast to
        // the new address.
        let port = self.settings.client_port;
        let destination = if !request.giaddr.is_unspecified() {
            self.relay_destination(request)
        } else if !request.ciaddr.is_unspecified() {
            Destination::Unicast(SocketAddrV4::new(request.ciaddr, port))
        } else if request.broadcast() {
            Destination::Broadcast(port)
        } else {
            Destination::Hardware {
                address: SocketAddrV4::new(reply.yiaddr, port),
                mac: request.chaddr,
            }
        };
        outgoing(reply, request, destination)
    }

    fn relay_destination(&self, request: &Request) -> Destination {
        Destination::Unicast(SocketAddrV4::new(request.giaddr, self.settings.server_port))
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

fn u32_bytes(value: u64) -> [u8; 4] {
    u32::try_from(value).unwrap_or(u32::MAX).to_be_bytes()
}

/// Lowercase hex, no separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `reply` encoded for `request`'s size limit, addressed to `destination`.
fn outgoing(reply: Reply, request: &Request, destination: Destination) -> Outgoing {
    let bytes = reply::encode(&reply, request.max_message_size);
    Outgoing {
        reply,
        bytes,
        destination,
    }
}
