//! The request pipeline: ACL → rate limit → local zone → never-forwarded names → cache →
//! (one lookup per question in flight) upstream → rebinding filter → cache → reply. One function, [`Shared::answer`], decides;
//! [`Handler`] only adapts it to hickory-server's request/response types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Header, HeaderCounts, LowerQuery, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use tracing::instrument::WithSubscriber;

use super::answered::{self, AnsweredNames};
use super::cache::{with_ttl, Cache, CacheKey, Cached, TtlPolicy};
use super::inflight::{follow, InFlight, Turn};
use super::names::{is_localhost, NeverForward};
use super::rebind;
use super::stats::{add, bump, Counters};
use super::zone::{LocalZone, ZoneAnswer};
use crate::config::Inside;
use crate::egress::{Upstream, UpstreamAnswer, UpstreamError};
use crate::ratelimit::KeyedBuckets;

/// The largest UDP reply we send, whatever the client offers: DNS Flag Day 2020's 1232
/// bytes avoids IP fragmentation; bigger answers are truncated and fetched over TCP.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// A safety net over the upstream's own timeouts, so a broken upstream implementation cannot
/// hold a request (and a TCP client) forever.
const UPSTREAM_DEADLINE: Duration = Duration::from_secs(15);
/// TTL of `.onion` virtual addresses: short, the mapping itself lasts much longer.
const ONION_TTL: u32 = 60;

/// Everything the pipeline needs, shared by the UDP and TCP paths and the server handle.
pub(crate) struct Shared {
    pub inside: Inside,
    pub zone: Arc<LocalZone>,
    pub never: NeverForward,
    pub upstream: Option<Arc<dyn Upstream>>,
    pub cache: Mutex<Cache>,
    pub inflight: InFlight<CacheKey, Reply>,
    pub limiter: Mutex<KeyedBuckets<IpAddr>>,
    pub policy: TtlPolicy,
    pub counters: Counters,
    pub log_queries: bool,
    /// Where `.onion` names get addresses and answers are remembered for the transparent
    /// listener (`None`: neither).
    pub answered: Option<Arc<AnsweredNames>>,
}

/// Where an answer came from, for the query log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Acl,
    RateLimit,
    BadRequest,
    Local,
    Special,
    Cache,
    Upstream,
    NoUpstream,
    Onion,
}

/// The decision for one request, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub origin: Origin,
    /// Until when a cached or forwarded answer stays in the cache (`None`: it was not
    /// cached). The fast path keeps its wire copy exactly as long.
    pub expires: Option<Instant>,
}

impl Reply {
    fn error(rcode: ResponseCode, origin: Origin) -> Self {
        Reply {
            rcode,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            origin,
            expires: None,
        }
    }

    fn from_cached(value: Cached, origin: Origin) -> Self {
        let mut reply = Reply::error(ResponseCode::NoError, origin);
        match value {
            Cached::Records(records) => reply.answers = records,
            Cached::NoData { soa } => reply.authorities = soa.into_iter().collect(),
            Cached::NxDomain { soa } => {
                reply.rcode = ResponseCode::NXDomain;
                reply.authorities = soa.into_iter().collect();
            }
            Cached::Blocked => reply.rcode = ResponseCode::Refused,
        }
        reply
    }

    fn from_zone(answer: ZoneAnswer) -> Self {
        let mut reply = Reply::error(ResponseCode::NoError, Origin::Local);
        reply.authoritative = true;
        match answer {
            ZoneAnswer::Records(records) => reply.answers = records,
            ZoneAnswer::NoData { soa } => reply.authorities = vec![soa],
            ZoneAnswer::NxDomain { soa } => {
                reply.rcode = ResponseCode::NXDomain;
                reply.authorities = vec![soa];
            }
            ZoneAnswer::NotAuthoritative => reply.rcode = ResponseCode::ServFail,
        }
        reply
    }
}

/// The parts of a request the pipeline looks at.
pub(crate) struct Question<'a> {
    pub src: IpAddr,
    pub op_code: OpCode,
    pub queries: &'a [LowerQuery],
    /// The EDNS version, if the request had an OPT record.
    pub edns_version: Option<u8>,
}

impl Shared {
    pub fn cache(&self) -> MutexGuard<'_, Cache> {
        // Every cache operation leaves it consistent, so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn limiter(&self) -> MutexGuard<'_, KeyedBuckets<IpAddr>> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides the reply to `q`, received at `now`.
    pub async fn answer(&self, q: &Question<'_>, now: Instant) -> Reply {
        match self.admit(q.src, now) {
            Some(refused) => refused,
            None => self.answer_admitted(q, now).await,
        }
    }

    /// Counts a query from `src` and checks the ACL and the client's rate: the refusal, or
    /// `None` when the query may be answered. The fast path calls it once per datagram, so
    /// the slow path it hands a miss to must not ([`Admission`]).
    pub fn admit(&self, src: IpAddr, now: Instant) -> Option<Reply> {
        let counters = &self.counters;
        bump(&counters.queries);
        if !self.admits(src) {
            bump(&counters.refused_acl);
            return Some(Reply::error(ResponseCode::Refused, Origin::Acl));
        }
        if !self.limiter().allow(src, now) {
            bump(&counters.rate_limited);
            return Some(Reply::error(ResponseCode::Refused, Origin::RateLimit));
        }
        None
    }

    /// [`Shared::answer`] for a query [`Shared::admit`] let through.
    pub async fn answer_admitted(&self, q: &Question<'_>, now: Instant) -> Reply {
        let counters = &self.counters;
        if let Some(rcode) = malformed(q) {
            bump(&counters.bad_requests);
            return Reply::error(rcode, Origin::BadRequest);
        }
        let query = q.queries[0].original();
        let (name, qtype) = (query.name(), query.query_type());

        let local = self.zone.lookup(name, qtype);
        if local != ZoneAnswer::NotAuthoritative {
            bump(&counters.local_answers);
            return Reply::from_zone(local);
        }
        if let Some(reply) = self.onion(q.src, name, qtype) {
            bump(&counters.onion_answers);
            return reply;
        }
        if let Some(reply) = self.special(name, qtype) {
            bump(&counters.never_forwarded);
            return reply;
        }

        let key = CacheKey::new(name, qtype, DNSClass::IN);
        if let Some((hit, expires)) = self.cache().get_until(&key, now) {
            bump(&counters.cache_hits);
            let mut reply = Reply::from_cached(hit, Origin::Cache);
            reply.expires = Some(expires);
            return reply;
        }
        let Some(upstream) = &self.upstream else {
            bump(&counters.servfail);
            return Reply::error(ResponseCode::ServFail, Origin::NoUpstream);
        };
        let leader = loop {
            match self.inflight.turn(&key) {
                Turn::Lead(leader) => break leader,
                Turn::Follow(rx) => {
                    if let Some(reply) = follow(rx).await {
                        bump(&counters.coalesced);
                        if reply.rcode == ResponseCode::ServFail {
                            bump(&counters.servfail);
                        }
                        return reply;
                    }
                    // The leader's client hung up before the answer came: one of those
                    // waiting takes over, the others follow it.
                }
            }
        };
        let reply = self.forward(upstream.as_ref(), name, qtype, key, now).await;
        leader.finish(reply.clone());
        reply
    }

    /// Asks the upstream, filters and caches the answer.
    async fn forward(
        &self,
        upstream: &dyn Upstream,
        name: &Name,
        qtype: RecordType,
        key: CacheKey,
        now: Instant,
    ) -> Reply {
        let counters = &self.counters;
        bump(&counters.forwarded);
        let result = tokio::time::timeout(UPSTREAM_DEADLINE, upstream.lookup(name, qtype))
            .await
            .unwrap_or(Err(UpstreamError::Timeout));
        let gives_ttls = upstream.gives_ttls();
        let (value, ttl) = match result {
            Ok(UpstreamAnswer::Records(records)) => {
                let ttl_all = self.policy.positive(&records, gives_ttls);
                let filtered = rebind::filter(records, qtype, &self.inside);
                add(&counters.rebinding_dropped, filtered.dropped);
                if filtered.blocked {
                    bump(&counters.rebinding_refused);
                    (Cached::Blocked, ttl_all)
                } else {
                    let ttl = self.policy.positive(&filtered.records, gives_ttls);
                    (Cached::Records(filtered.records), ttl)
                }
            }
            Ok(UpstreamAnswer::NoData { soa }) => {
                let ttl = self.policy.negative(soa.as_ref(), gives_ttls);
                (Cached::NoData { soa }, ttl)
            }
            Ok(UpstreamAnswer::NxDomain { soa }) => {
                let ttl = self.policy.negative(soa.as_ref(), gives_ttls);
                (Cached::NxDomain { soa }, ttl)
            }
            Err(UpstreamError::Unsupported(_)) => {
                return Reply::error(ResponseCode::NotImp, Origin::Upstream);
            }
            Err(err) => {
                tracing::debug!(upstream = upstream.name(), error = %err, "upstream failed");
                bump(&counters.upstream_errors);
                bump(&counters.servfail);
                return Reply::error(ResponseCode::ServFail, Origin::Upstream);
            }
        };
        let value = with_ttl(value, ttl);
        let cached = self.cache().insert(key, value.clone(), ttl, now);
        let mut reply = Reply::from_cached(value, Origin::Upstream);
        reply.expires = cached.then(|| now + Duration::from_secs(u64::from(ttl)));
        reply
    }

    /// Only clients in the inside subnet are served; the gateway is nobody's open resolver.
    fn admits(&self, src: IpAddr) -> bool {
        let v4 = match src {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        };
        v4.is_some_and(|v4| self.inside.contains(v4))
    }

    /// Local answers for names that must not be forwarded: loopback for `localhost`
    /// (RFC 6761 §6.3), NXDOMAIN under a synthesized SOA for the rest.
    /// A `.onion` name, when they get virtual addresses: a v3 name's address for this client
    /// (A), nothing else (other types); NXDOMAIN for names that cannot be onion services.
    /// `None` (the name is not an onion, or there is no range) lets the next step decide.
    fn onion(&self, client: IpAddr, name: &Name, qtype: RecordType) -> Option<Reply> {
        let answered = self.answered.as_ref()?;
        answered.onion_range()?;
        let text = name.to_ascii();
        if !crate::egress::is_onion(&text) {
            return None;
        }
        let apex = Name::from_ascii("onion.").unwrap_or_else(|_| Name::root());
        let mut reply = Reply::error(ResponseCode::NoError, Origin::Onion);
        let soa = synthetic_soa(&apex, ONION_TTL);
        let Some(onion) = answered::onion_name(&text) else {
            reply.rcode = ResponseCode::NXDomain;
            reply.authorities = vec![soa];
            return Some(reply);
        };
        match qtype {
            RecordType::A | RecordType::ANY => {
                let addr = answered.onion_address(client, &onion)?;
                reply.answers = vec![Record::from_rdata(
                    name.clone(),
                    ONION_TTL,
                    RData::A(A(addr)),
                )];
            }
            _ => reply.authorities = vec![soa],
        }
        Some(reply)
    }

    /// Remembers the addresses an upstream (or cached) answer gave `client`, for the
    /// transparent listener to connect by name.
    pub(super) fn remember(&self, client: IpAddr, q: &Question<'_>, reply: &Reply, now: Instant) {
        let Some(answered) = &self.answered else {
            return;
        };
        if let Some(told) = told(q, reply) {
            told.record(answered, client, now);
        }
    }

    fn special(&self, name: &Name, qtype: RecordType) -> Option<Reply> {
        let apex = self.never.zone_of(name)?;
        let ttl = self.policy.default_ttl;
        let mut reply = Reply::error(ResponseCode::NoError, Origin::Special);
        reply.authoritative = true;
        let soa = synthetic_soa(apex, ttl);
        if is_localhost(name) {
            let v4 = || Record::from_rdata(name.clone(), ttl, RData::A(A(Ipv4Addr::LOCALHOST)));
            let v6 =
                || Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)));
            match qtype {
                RecordType::A => reply.answers = vec![v4()],
                RecordType::AAAA => reply.answers = vec![v6()],
                RecordType::ANY => reply.answers = vec![v4(), v6()],
                _ => reply.authorities = vec![soa],
            }
        } else {
            reply.rcode = ResponseCode::NXDomain;
            reply.authorities = vec![soa];
        }
        Some(reply)
    }
}

/// What [`Shared::remember`] keeps of a forwarded answer: the name asked (without the final
/// dot) and the A addresses given, with the shortest of their TTLs.
#[derive(Debug)]
pub(crate) struct Told {
    pub name: String,
    pub addrs: Vec<Ipv4Addr>,
    pub ttl: u32,
}

impl Told {
    /// Records that `client` was told this at `now`.
    pub fn record(&self, answered: &AnsweredNames, client: IpAddr, now: Instant) {
        answered.record(
            client,
            &self.name,
            &self.addrs,
            Duration::from_secs(u64::from(self.ttl)),
            now,
        );
    }
}

/// What the transparent listener learns from `reply` to `q`: only from forwarded NOERROR
/// answers, and only their A records.
pub(crate) fn told(q: &Question<'_>, reply: &Reply) -> Option<Told> {
    if !matches!(reply.origin, Origin::Upstream | Origin::Cache)
        || reply.rcode != ResponseCode::NoError
    {
        return None;
    }
    let query = q.queries.first()?;
    let mut ttl = u32::MAX;
    let addrs: Vec<Ipv4Addr> = reply
        .answers
        .iter()
        .filter_map(|record| match record.data {
            RData::A(a) => {
                ttl = ttl.min(record.ttl);
                Some(a.0)
            }
            _ => None,
        })
        .collect();
    let name = query.name().to_ascii();
    Some(Told {
        name: name.trim_end_matches('.').to_owned(),
        addrs,
        ttl,
    })
}

/// What is wrong with a request the pipeline will not serve, if anything.
fn malformed(q: &Question<'_>) -> Option<ResponseCode> {
    if q.edns_version.is_some_and(|v| v > 0) {
        return Some(ResponseCode::BADVERS);
    }
    if q.op_code != OpCode::Query {
        return Some(ResponseCode::NotImp);
    }
    let [query] = q.queries else {
        return Some(ResponseCode::FormErr);
    };
    if query.query_class() != DNSClass::IN {
        // CHAOS `version.bind` and friends: nothing to tell.
        return Some(ResponseCode::Refused);
    }
    match query.query_type() {
        RecordType::AXFR | RecordType::IXFR => Some(ResponseCode::Refused),
        RecordType::OPT => Some(ResponseCode::FormErr),
        _ => None,
    }
}

/// An SOA for a zone the gateway answers negatively on its own (RFC 6303 style).
fn synthetic_soa(apex: &Name, ttl: u32) -> Record {
    let localhost = Name::from_ascii("localhost.").unwrap_or_else(|_| Name::root());
    let nobody = Name::from_ascii("nobody.invalid.").unwrap_or_else(|_| Name::root());
    let soa = SOA::new(localhost, nobody, 1, 3600, 1200, 604_800, ttl);
    Record::from_rdata(apex.clone(), ttl, RData::SOA(soa))
}

/// The EDNS record of a reply to a request with `request` EDNS: version 0, our buffer size
/// (the client's, at least 512, at most [`MAX_UDP_PAYLOAD`]), which is also the size the
/// reply is truncated to over UDP.
pub(crate) fn reply_edns(request: Option<&Edns>) -> Option<Edns> {
    request.map(|req| {
        let mut edns = Edns::new();
        edns.set_version(0);
        edns.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        edns
    })
}

/// hickory-server's adapter around [`Shared`].
#[derive(Clone)]
pub(crate) struct Handler(pub Arc<Shared>);

/// What the pipeline looks at in a parsed request.
pub(crate) fn question(request: &Request) -> Question<'_> {
    Question {
        src: request.src().ip(),
        op_code: request.metadata.op_code,
        queries: request.queries.queries(),
        edns_version: request.edns.as_ref().map(Edns::version),
    }
}

/// The response to `request`: `reply` under a header made from the request's.
pub(crate) fn response<'q>(
    shared: &Shared,
    request: &'q Request,
    reply: &'q Reply,
    edns: Option<&'q Edns>,
) -> MessageResponse<
    'q,
    'q,
    std::slice::Iter<'q, Record>,
    std::slice::Iter<'q, Record>,
    std::iter::Empty<&'q Record>,
    std::iter::Empty<&'q Record>,
> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = reply.rcode;
    metadata.authoritative = reply.authoritative;
    metadata.recursion_available = shared.upstream.is_some();
    MessageResponseBuilder::new(&request.queries, edns).build(
        metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        std::iter::empty(),
        std::iter::empty(),
    )
}

/// What is left to check of a request the slow path gets.
pub(crate) enum Admission {
    /// Everything: it came straight from a socket.
    Unchecked,
    /// The fast path counted it and let it through ([`Shared::admit`]).
    Admitted,
    /// The fast path refused it; only the refusal is left to encode.
    Refused(Reply),
}

impl Handler {
    pub(super) async fn handle<R: ResponseHandler>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        self.respond(request, response, Admission::Unchecked, Instant::now())
            .await
            .0
    }

    /// Answers `request`, received at `now`, and returns the reply it was made from too
    /// (for the fast path's cache).
    pub(super) async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
        admission: Admission,
        now: Instant,
    ) -> (ResponseInfo, Reply) {
        let shared = &self.0;
        let question = question(request);
        let reply = match admission {
            Admission::Unchecked => shared.answer(&question, now).await,
            Admission::Admitted => shared.answer_admitted(&question, now).await,
            Admission::Refused(reply) => reply,
        };
        shared.remember(question.src, &question, &reply, now);
        if shared.log_queries {
            log_query(&question, &reply);
        }

        let edns = reply_edns(request.edns.as_ref());
        let message = self::response(shared, request, &reply, edns.as_ref());
        // hickory-server logs every response at INFO, client address and name included; the
        // query log is ours to switch on, so its subscriber is muted for the send.
        let sent = response
            .send_response(message)
            .with_subscriber(tracing::subscriber::NoSubscriber::default())
            .await;
        let info = match sent {
            Ok(info) => {
                if info.truncation {
                    bump(&shared.counters.truncated);
                }
                info
            }
            Err(err) => {
                tracing::debug!(error = %err, "sending a DNS reply failed");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: failed,
                    counts: HeaderCounts::default(),
                })
            }
        };
        (info, reply)
    }
}

fn log_query(q: &Question<'_>, reply: &Reply) {
    let (name, qtype) = match q.queries {
        [query] => (query.name().to_string(), query.query_type().to_string()),
        _ => (String::from("-"), String::from("-")),
    };
    tracing::info!(
        client = %q.src,
        %name,
        %qtype,
        rcode = %reply.rcode,
        origin = ?reply.origin,
        answers = reply.answers.len(),
        "dns query"
    );
}

// `RequestHandler` is declared with `#[async_trait]`; this is that macro's expansion, written
// out so the crate does not need async-trait for one impl.
impl RequestHandler for Handler {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn std::future::Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.handle(request, response_handle))
    }
}
