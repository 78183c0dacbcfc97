//! What goes into a reply and where it is sent: the options every reply carries (server,
//! lease times, mask, router, DNS, the relay's information back), the optional ones in the
//! order they are dropped when the client's size limit is tight, the FQDN answer (RFC 4702)
//! and the destination (RFC 2131 §4.1). The encoding itself is `dhcp::reply`'s.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::*;

impl Handler {
    /// An OFFER or lease ACK for `address`.
    pub(super) fn lease_reply(
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

    pub(super) fn reply(
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
    pub(super) fn fqdn_answer(&self, asked: &Fqdn, name: Option<&str>) -> Option<Vec<u8>> {
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

    pub(super) fn outgoing(&self, reply: Reply, request: &Request) -> Outgoing {
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

    pub(super) fn relay_destination(&self, request: &Request) -> Destination {
        Destination::Unicast(SocketAddrV4::new(request.giaddr, self.settings.server_port))
    }
}

fn u32_bytes(value: u64) -> [u8; 4] {
    u32::try_from(value).unwrap_or(u32::MAX).to_be_bytes()
}

/// `reply` encoded for `request`'s size limit, addressed to `destination`.
pub(super) fn outgoing(reply: Reply, request: &Request, destination: Destination) -> Outgoing {
    let bytes = reply::encode(&reply, request.max_message_size);
    Outgoing {
        reply,
        bytes,
        destination,
    }
}
