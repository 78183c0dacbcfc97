//! The `uplink` forwarder: clear-text DNS to the uplink's resolvers, out of the outside
//! interface. Clearnet, so it is only used when the configuration asks for it.
//!
//! Each question gets a fresh socket (a kernel-chosen random source port) and a random ID,
//! and a reply counts only if it comes from the server asked (connected sockets), carries the
//! ID and repeats the question: the usual defences against off-path spoofing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures::future::BoxFuture;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

use crate::egress::{Upstream, UpstreamAnswer, UpstreamError};

/// The EDNS buffer we advertise upstream (DNS Flag Day 2020: no IP fragmentation).
const EDNS_PAYLOAD: u16 = 1232;
/// CNAME hops followed within one answer before giving up on the chain.
const MAX_CHAIN: usize = 16;

/// Forwards to the resolvers the uplink provides (learned from the outside DHCP lease or
/// configured), optionally pinned to the outside device.
pub struct UplinkUpstream {
    servers: watch::Receiver<Vec<SocketAddr>>,
    bind_device: Option<String>,
    /// The uplink's own address to send from, when set (see [`UplinkUpstream::with_source`]).
    source: Option<watch::Receiver<Option<Ipv4Addr>>>,
    timeout: Duration,
}

impl UplinkUpstream {
    /// `servers` is the current resolver list (it may change at run time); `bind_device` the
    /// outside interface to send from (SO_BINDTODEVICE, needs CAP_NET_RAW); `timeout` how long
    /// each server gets per question.
    pub fn new(
        servers: watch::Receiver<Vec<SocketAddr>>,
        bind_device: Option<String>,
        timeout: Duration,
    ) -> Self {
        UplinkUpstream {
            servers,
            bind_device,
            source: None,
            timeout,
        }
    }

    /// Sends from the uplink's current address, and not at all while it has none. Binding to
    /// the device alone is not enough: with no address on it the kernel picks another
    /// interface's address as the source — the gateway's inside address — for a packet that
    /// leaves by the uplink.
    pub fn with_source(mut self, source: watch::Receiver<Option<Ipv4Addr>>) -> Self {
        self.source = Some(source);
        self
    }

    /// The address to bind to: the uplink's, `None` when unconstrained, an error when the
    /// uplink has no address yet.
    fn source_ip(&self, server: SocketAddr) -> std::io::Result<IpAddr> {
        match (&self.source, server) {
            (Some(source), SocketAddr::V4(_)) => match *source.borrow() {
                Some(ip) => Ok(ip.into()),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::AddrNotAvailable,
                    "the uplink has no address yet",
                )),
            },
            (Some(_), SocketAddr::V6(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                "the uplink has no IPv6 address",
            )),
            (None, SocketAddr::V4(_)) => Ok(Ipv4Addr::UNSPECIFIED.into()),
            (None, SocketAddr::V6(_)) => Ok(Ipv6Addr::UNSPECIFIED.into()),
        }
    }

    /// One question to one server: UDP with EDNS, again without EDNS if the server does not
    /// understand it, over TCP if the reply is truncated.
    async fn ask(
        &self,
        server: SocketAddr,
        name: &Name,
        rtype: RecordType,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let deadline = Instant::now() + self.timeout;
        let mut reply = self.udp(server, name, rtype, true, deadline).await?;
        if reply.metadata.response_code == ResponseCode::FormErr {
            reply = self.udp(server, name, rtype, false, deadline).await?;
        }
        if reply.metadata.truncation {
            reply = self.tcp(server, name, rtype, deadline).await?;
        }
        interpret(&reply, name, rtype, server)
    }

    async fn udp(
        &self,
        server: SocketAddr,
        name: &Name,
        rtype: RecordType,
        edns: bool,
        deadline: Instant,
    ) -> Result<Message, UpstreamError> {
        let query = build_query(name, rtype, edns);
        let bytes = encode(&query)?;
        let socket = self.udp_socket(server).map_err(io_failure(server))?;
        timeout_at(deadline, socket.send(&bytes))
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(io_failure(server))?;
        let mut buf = vec![0u8; 65_535];
        loop {
            let len = timeout_at(deadline, socket.recv(&mut buf))
                .await
                .map_err(|_| UpstreamError::Timeout)?
                .map_err(io_failure(server))?;
            // Anything that is not the reply to this question is ignored, not fatal: an
            // off-path attacker must not be able to make us give up on the real answer.
            if let Some(reply) = buf.get(..len).and_then(|b| matching_reply(b, &query)) {
                return Ok(reply);
            }
            tracing::debug!(%server, "ignored a reply that does not match the question");
        }
    }

    async fn tcp(
        &self,
        server: SocketAddr,
        name: &Name,
        rtype: RecordType,
        deadline: Instant,
    ) -> Result<Message, UpstreamError> {
        let query = build_query(name, rtype, true);
        let bytes = encode(&query)?;
        let exchange = async {
            let socket = match server {
                SocketAddr::V4(_) => TcpSocket::new_v4(),
                SocketAddr::V6(_) => TcpSocket::new_v6(),
            }?;
            if let Some(device) = &self.bind_device {
                socket.bind_device(Some(device.as_bytes()))?;
            }
            socket.bind(SocketAddr::new(self.source_ip(server)?, 0))?;
            let mut stream = socket.connect(server).await?;
            let len = u16::try_from(bytes.len())
                .map_err(|_| std::io::Error::other("query too long for TCP"))?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&bytes);
            stream.write_all(&framed).await?;
            let reply_len = stream.read_u16().await?;
            let mut reply = vec![0u8; usize::from(reply_len)];
            stream.read_exact(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        let reply = timeout_at(deadline, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(io_failure(server))?;
        matching_reply(&reply, &query).ok_or_else(|| {
            UpstreamError::Failed(format!("{server} sent a TCP reply that does not match"))
        })
    }

    fn udp_socket(&self, server: SocketAddr) -> std::io::Result<UdpSocket> {
        let domain = socket2::Domain::for_address(server);
        let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
        socket.set_nonblocking(true)?;
        if let Some(device) = &self.bind_device {
            socket.bind_device(Some(device.as_bytes()))?;
        }
        // Port 0: the kernel picks a random ephemeral port for every question.
        socket.bind(&SocketAddr::new(self.source_ip(server)?, 0).into())?;
        // Connected: the kernel drops datagrams from anyone but the server.
        socket.connect(&server.into())?;
        UdpSocket::from_std(socket.into())
    }
}

impl Upstream for UplinkUpstream {
    fn lookup(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> BoxFuture<'_, Result<UpstreamAnswer, UpstreamError>> {
        let name = name.clone();
        Box::pin(async move {
            let servers = self.servers.borrow().clone();
            let mut last = UpstreamError::NoServers;
            for server in servers {
                match self.ask(server, &name, rtype).await {
                    Ok(answer) => return Ok(answer),
                    Err(err) => {
                        tracing::debug!(%server, error = %err, "upstream server failed");
                        last = err;
                    }
                }
            }
            Err(last)
        })
    }

    fn name(&self) -> &'static str {
        "uplink"
    }
}

fn io_failure(server: SocketAddr) -> impl Fn(std::io::Error) -> UpstreamError {
    move |err| UpstreamError::Failed(format!("{server}: {err}"))
}

/// A recursive query for (`name`, `rtype`, IN) with a random ID.
fn build_query(name: &Name, rtype: RecordType, edns: bool) -> Message {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name.clone(), rtype));
    if edns {
        let mut opt = Edns::new();
        opt.set_max_payload(EDNS_PAYLOAD);
        query.set_edns(opt);
    }
    query
}

fn encode(message: &Message) -> Result<Vec<u8>, UpstreamError> {
    message
        .to_vec()
        .map_err(|err| UpstreamError::Failed(format!("encoding the query: {err}")))
}

/// `bytes` parsed, if it is the reply to `query`: a response, same ID, same question.
fn matching_reply(bytes: &[u8], query: &Message) -> Option<Message> {
    let reply = Message::from_vec(bytes).ok()?;
    let same_question = match (reply.queries.as_slice(), query.queries.as_slice()) {
        ([got], [asked]) => {
            got.name() == asked.name()
                && got.query_type() == asked.query_type()
                && got.query_class() == asked.query_class()
        }
        _ => false,
    };
    (reply.metadata.message_type == MessageType::Response
        && reply.metadata.op_code == OpCode::Query
        && reply.metadata.id == query.metadata.id
        && same_question)
        .then_some(reply)
}

/// What a validated reply means for the question.
fn interpret(
    reply: &Message,
    name: &Name,
    rtype: RecordType,
    server: SocketAddr,
) -> Result<UpstreamAnswer, UpstreamError> {
    match reply.metadata.response_code {
        ResponseCode::NoError => {
            let records = answer_chain(&reply.answers, name, rtype);
            if records.is_empty() {
                Ok(UpstreamAnswer::NoData {
                    soa: negative_soa(reply, name),
                })
            } else {
                Ok(UpstreamAnswer::Records(records))
            }
        }
        ResponseCode::NXDomain => Ok(UpstreamAnswer::NxDomain {
            soa: negative_soa(reply, name),
        }),
        code => Err(UpstreamError::Failed(format!("{server} answered {code}"))),
    }
}

/// The answer records that belong to the question: those owned by `name`, and along the
/// CNAME chain from it. Anything else a server put in the answer section is not ours to pass
/// on (or to cache).
fn answer_chain(answers: &[Record], name: &Name, rtype: RecordType) -> Vec<Record> {
    let mut out = Vec::new();
    let mut owner = name.clone();
    for _ in 0..MAX_CHAIN {
        let here = answers
            .iter()
            .filter(|r| r.dns_class == DNSClass::IN && r.name == owner);
        let mut next = None;
        for record in here {
            let wanted = rtype == RecordType::ANY || record.record_type() == rtype;
            if wanted {
                out.push(record.clone());
            } else if let RData::CNAME(target) = &record.data {
                if next.is_none() {
                    out.push(record.clone());
                    next = Some(target.0.clone());
                }
            }
        }
        match next {
            // Records of the type itself end the chain.
            Some(target) if !out.iter().any(|r| r.record_type() == rtype) => owner = target,
            _ => break,
        }
    }
    out
}

/// The SOA of a negative reply, if it is for a zone containing `name`.
fn negative_soa(reply: &Message, name: &Name) -> Option<Record> {
    reply
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA && r.name.zone_of(name))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME, SOA};
    use std::net::Ipv4Addr;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn a(owner: &str, last: u8) -> Record {
        Record::from_rdata(
            name(owner),
            60,
            RData::A(A::from(Ipv4Addr::new(203, 0, 113, last))),
        )
    }

    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(name(owner), 60, RData::CNAME(CNAME(name(target))))
    }

    fn reply_to(query: &Message) -> Message {
        let mut reply = Message::response(query.metadata.id, OpCode::Query);
        reply.add_queries(query.queries.clone());
        reply
    }

    #[test]
    fn only_the_reply_to_our_question_is_accepted() {
        let query = build_query(&name("www.example.com."), RecordType::A, true);
        let good = reply_to(&query);
        assert!(matching_reply(&good.to_vec().unwrap(), &query).is_some());

        let mut wrong_id = good.clone();
        wrong_id.metadata.id = query.metadata.id.wrapping_add(1);
        assert!(matching_reply(&wrong_id.to_vec().unwrap(), &query).is_none());

        let mut wrong_name = Message::response(query.metadata.id, OpCode::Query);
        wrong_name.add_query(Query::query(name("evil.example.com."), RecordType::A));
        assert!(matching_reply(&wrong_name.to_vec().unwrap(), &query).is_none());

        let mut wrong_type = Message::response(query.metadata.id, OpCode::Query);
        wrong_type.add_query(Query::query(name("www.example.com."), RecordType::AAAA));
        assert!(matching_reply(&wrong_type.to_vec().unwrap(), &query).is_none());

        // Our own query echoed back is not a response.
        assert!(matching_reply(&query.to_vec().unwrap(), &query).is_none());
        assert!(matching_reply(b"garbage", &query).is_none());

        // Case differences in the question are fine (0x20-style servers).
        let mut upper = Message::response(query.metadata.id, OpCode::Query);
        upper.add_query(Query::query(name("WWW.Example.COM."), RecordType::A));
        assert!(matching_reply(&upper.to_vec().unwrap(), &query).is_some());
    }

    #[test]
    fn query_ids_vary() {
        let ids: std::collections::HashSet<u16> = (0..64)
            .map(|_| build_query(&name("a."), RecordType::A, true).metadata.id)
            .collect();
        assert!(ids.len() > 32, "IDs are random");
    }

    #[test]
    fn chains_keep_only_what_belongs_to_the_question() {
        let answers = vec![
            cname("www.example.com.", "cdn.example.net."),
            a("cdn.example.net.", 1),
            a("cdn.example.net.", 2),
            a("unrelated.example.org.", 9),
        ];
        let chain = answer_chain(&answers, &name("www.example.com."), RecordType::A);
        assert_eq!(chain, answers[..3].to_vec());
        // Asking for the CNAME itself stops there.
        let chain = answer_chain(&answers, &name("www.example.com."), RecordType::CNAME);
        assert_eq!(chain, answers[..1].to_vec());
        // A loop ends.
        let looped = vec![cname("a.", "b."), cname("b.", "a.")];
        assert!(answer_chain(&looped, &name("a."), RecordType::A).len() <= MAX_CHAIN);
    }

    #[test]
    fn rcodes_map_to_outcomes() {
        let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let q = name("x.example.com.");
        let query = build_query(&q, RecordType::A, true);

        let mut nx = reply_to(&query);
        nx.metadata.response_code = ResponseCode::NXDomain;
        let soa = Record::from_rdata(
            name("example.com."),
            300,
            RData::SOA(SOA::new(name("ns."), name("h."), 1, 1, 1, 1, 60)),
        );
        nx.add_authority(soa.clone());
        assert_eq!(
            interpret(&nx, &q, RecordType::A, server),
            Ok(UpstreamAnswer::NxDomain {
                soa: Some(soa.clone())
            })
        );

        let empty = reply_to(&query);
        assert_eq!(
            interpret(&empty, &q, RecordType::A, server),
            Ok(UpstreamAnswer::NoData { soa: None })
        );

        let mut fail = reply_to(&query);
        fail.metadata.response_code = ResponseCode::ServFail;
        assert!(interpret(&fail, &q, RecordType::A, server).is_err());

        // An SOA for an unrelated zone is not used for negative caching.
        let mut foreign = reply_to(&query);
        foreign.metadata.response_code = ResponseCode::NXDomain;
        let mut other = soa.clone();
        other.name = name("example.org.");
        foreign.add_authority(other);
        assert_eq!(
            interpret(&foreign, &q, RecordType::A, server),
            Ok(UpstreamAnswer::NxDomain { soa: None })
        );
    }

    #[tokio::test]
    async fn no_servers_no_answer() {
        let (_tx, rx) = watch::channel(Vec::new());
        let up = UplinkUpstream::new(rx, None, Duration::from_millis(100));
        assert_eq!(
            up.lookup(&name("example.com."), RecordType::A).await,
            Err(UpstreamError::NoServers)
        );
    }
}
