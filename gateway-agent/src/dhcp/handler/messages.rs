//! The exchange of RFC 2131, one method per message type: what a DISCOVER, REQUEST, DECLINE,
//! RELEASE or INFORM does to the lease table, the store and the sinks, and which reply (or
//! none) it earns. The dispatch, the table and the clocks are the handler's; composing the
//! reply is `answer`'s.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::*;

impl Handler {
    pub(super) fn discover(&mut self, request: &Request, client: &Client, now: u64) -> Outcome {
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

    pub(super) fn request(&mut self, request: &Request, client: &Client, now: u64) -> Outcome {
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

    pub(super) fn decline(&mut self, request: &Request, client: &Client, now: u64) -> Outcome {
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

    pub(super) fn release(&mut self, request: &Request, client: &Client, now: u64) -> Outcome {
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

    pub(super) fn inform(&mut self, request: &Request, source: SocketAddrV4) -> Outcome {
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

    pub(super) fn nak(&mut self, request: &Request, address: Ipv4Addr) -> Outcome {
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
}
