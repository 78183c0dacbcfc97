//! The request pipeline end to end, without sockets: a fake upstream and explicit time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hickory_proto::op::{Edns, LowerQuery, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::cache::{soa_record, Cache, TtlPolicy};
use super::handler::{reply_edns, Origin, Question, Reply, Shared};
use super::inflight::InFlight;
use super::names::NeverForward;
use super::zone::LocalZone;
use super::SERVICE_NAMES;
use crate::config::{Inside, Seconds};
use crate::egress::{Upstream, UpstreamAnswer, UpstreamError};
use crate::lease_events::{LeaseEvent, LeaseInfo, LeaseSink};
use crate::mac::MacAddr;

const GW: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub(super) const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 50));

pub(super) fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A::from(Ipv4Addr::from(ip))))
}

/// Answers from a table; counts the questions it gets.
pub(super) struct Fake {
    answers: HashMap<(Name, RecordType), Result<UpstreamAnswer, UpstreamError>>,
    pub(super) calls: AtomicUsize,
    ttls: bool,
}

impl Upstream for Fake {
    fn lookup(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> BoxFuture<'_, Result<UpstreamAnswer, UpstreamError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self
            .answers
            .get(&(name.clone(), rtype))
            .cloned()
            .unwrap_or(Err(UpstreamError::Timeout));
        Box::pin(async move { answer })
    }

    fn name(&self) -> &'static str {
        "fake"
    }

    fn gives_ttls(&self) -> bool {
        self.ttls
    }
}

pub(super) fn fake(ttls: bool) -> Arc<Fake> {
    let mut answers = HashMap::new();
    answers.insert(
        (name("origin.example.com."), RecordType::A),
        Ok(UpstreamAnswer::Records(vec![a(
            "origin.example.com.",
            120,
            [203, 0, 113, 10],
        )])),
    );
    answers.insert(
        (name("evil.example.com."), RecordType::A),
        Ok(UpstreamAnswer::Records(vec![a(
            "evil.example.com.",
            120,
            [10, 0, 0, 1],
        )])),
    );
    answers.insert(
        (name("mixed.example.com."), RecordType::A),
        Ok(UpstreamAnswer::Records(vec![
            a("mixed.example.com.", 120, [203, 0, 113, 11]),
            a("mixed.example.com.", 120, [192, 168, 1, 1]),
        ])),
    );
    answers.insert(
        (name("nx.example.com."), RecordType::A),
        Ok(UpstreamAnswer::NxDomain {
            soa: Some(soa_record("example.com.", 3600, 30)),
        }),
    );
    answers.insert(
        (name("origin.example.com."), RecordType::MX),
        Err(UpstreamError::Unsupported(RecordType::MX)),
    );
    Arc::new(Fake {
        answers,
        calls: AtomicUsize::new(0),
        ttls,
    })
}

fn inside() -> Inside {
    Inside {
        address: GW,
        prefix_len: 24,
    }
}

pub(super) fn shared(upstream: Option<Arc<dyn Upstream>>, rate: u32) -> Shared {
    let (zone_name, ttl) = ("home.arpa".parse().unwrap(), Seconds::new(60));
    let zone =
        Arc::new(LocalZone::new(&zone_name, inside(), GW, &SERVICE_NAMES, &[], ttl).unwrap());
    Shared {
        inside: inside(),
        never: NeverForward::new(zone.origin(), &inside()),
        zone,
        upstream,
        cache: Mutex::new(Cache::new(100)),
        inflight: InFlight::new(),
        limiter: Mutex::new(crate::ratelimit::KeyedBuckets::new(rate, 64)),
        policy: TtlPolicy {
            default_ttl: 300,
            max_ttl: 86_400,
        },
        counters: Default::default(),
        log_queries: false,
        answered: None,
    }
}

fn query(n: &str, rtype: RecordType) -> Vec<LowerQuery> {
    vec![LowerQuery::query(Query::query(name(n), rtype))]
}

async fn ask_from(s: &Shared, src: IpAddr, n: &str, rtype: RecordType, now: Instant) -> Reply {
    let queries = query(n, rtype);
    let q = Question {
        src,
        op_code: OpCode::Query,
        queries: &queries,
        edns_version: None,
    };
    s.answer(&q, now).await
}

async fn ask(s: &Shared, n: &str, rtype: RecordType, now: Instant) -> Reply {
    ask_from(s, CLIENT, n, rtype, now).await
}

fn stats(s: &Shared) -> super::DnsStats {
    s.counters.snapshot()
}

#[tokio::test]
async fn outsiders_are_refused() {
    let s = shared(None, 0);
    let now = Instant::now();
    for src in ["203.0.113.5", "198.51.101.1", "::1", "::ffff:203.0.113.5"] {
        let reply = ask_from(
            &s,
            src.parse().unwrap(),
            "gateway.home.arpa.",
            RecordType::A,
            now,
        )
        .await;
        assert_eq!(reply.rcode, ResponseCode::Refused, "{src}");
        assert_eq!(reply.origin, Origin::Acl);
    }
    // An IPv4-mapped inside client is an inside client.
    let reply = ask_from(
        &s,
        "::ffff:198.51.100.9".parse().unwrap(),
        "gateway.home.arpa.",
        RecordType::A,
        now,
    )
    .await;
    assert_eq!(reply.rcode, ResponseCode::NoError);
    assert_eq!(stats(&s).refused_acl, 4);
}

#[tokio::test]
async fn clients_are_rate_limited() {
    let s = shared(None, 3);
    let now = Instant::now();
    for _ in 0..3 {
        let r = ask(&s, "gateway.home.arpa.", RecordType::A, now).await;
        assert_eq!(r.rcode, ResponseCode::NoError);
    }
    let r = ask(&s, "gateway.home.arpa.", RecordType::A, now).await;
    assert_eq!(
        (r.rcode, r.origin),
        (ResponseCode::Refused, Origin::RateLimit)
    );
    let other = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 51));
    let r = ask_from(&s, other, "gateway.home.arpa.", RecordType::A, now).await;
    assert_eq!(r.rcode, ResponseCode::NoError);
    let r = ask(
        &s,
        "gateway.home.arpa.",
        RecordType::A,
        now + Duration::from_secs(1),
    )
    .await;
    assert_eq!(r.rcode, ResponseCode::NoError);
    assert_eq!(stats(&s).rate_limited, 1);
}

#[tokio::test]
async fn local_names_are_authoritative_and_follow_leases() {
    let up = fake(true);
    let s = shared(Some(up.clone()), 0);
    let now = Instant::now();
    let r = ask(&s, "registry.home.arpa.", RecordType::A, now).await;
    assert!(r.authoritative);
    assert_eq!(
        r.answers,
        vec![a("registry.home.arpa.", 60, [198, 51, 100, 1])]
    );

    s.zone.apply(&LeaseEvent::Bound(LeaseInfo {
        address: Ipv4Addr::new(198, 51, 100, 100),
        mac: MacAddr::new([2, 0, 0, 0, 0, 1]),
        client_id: None,
        hostname: Some("laptop".into()),
        expires_unix: 0,
    }));
    let r = ask(&s, "laptop.home.arpa.", RecordType::A, now).await;
    assert_eq!(r.answers.len(), 1);
    let r = ask(&s, "100.100.51.198.in-addr.arpa.", RecordType::PTR, now).await;
    assert_eq!(r.answers.len(), 1);

    let r = ask(&s, "missing.home.arpa.", RecordType::A, now).await;
    assert_eq!(r.rcode, ResponseCode::NXDomain);
    assert!(r.authoritative);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(
        up.calls.load(Ordering::SeqCst),
        0,
        "nothing local goes upstream"
    );
}

#[tokio::test]
async fn never_forwarded_names_stay_here() {
    let up = fake(true);
    let s = shared(Some(up.clone()), 0);
    let now = Instant::now();
    for n in [
        "printer.local.",
        "x.invalid.",
        "5.1.168.192.in-addr.arpa.",
        "1.0.0.10.in-addr.arpa.",
        "9.100.51.198.in-addr.arpa.",
        "other.home.arpa.",
        "abcdef.onion.",
    ] {
        let r = ask(&s, n, RecordType::A, now).await;
        assert_eq!(r.rcode, ResponseCode::NXDomain, "{n}");
        assert_eq!(r.authorities.len(), 1, "{n}: negative answers carry an SOA");
    }
    let r = ask(&s, "localhost.", RecordType::A, now).await;
    assert_eq!(r.answers, vec![a("localhost.", 300, [127, 0, 0, 1])]);
    let r = ask(&s, "foo.localhost.", RecordType::AAAA, now).await;
    assert_eq!(r.answers.len(), 1);
    assert_eq!(up.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn without_an_upstream_other_names_fail() {
    let s = shared(None, 0);
    let r = ask(&s, "origin.example.com.", RecordType::A, Instant::now()).await;
    assert_eq!(
        (r.rcode, r.origin),
        (ResponseCode::ServFail, Origin::NoUpstream)
    );
    assert_eq!(stats(&s).servfail, 1);
}

#[tokio::test]
async fn forwarded_answers_are_cached_with_counting_down_ttls() {
    let up = fake(true);
    let s = shared(Some(up.clone()), 0);
    let t0 = Instant::now();
    let r = ask(&s, "origin.example.com.", RecordType::A, t0).await;
    assert_eq!(r.origin, Origin::Upstream);
    assert_eq!(r.answers[0].ttl, 120);
    assert!(!r.authoritative);
    let r = ask(
        &s,
        "ORIGIN.example.com.",
        RecordType::A,
        t0 + Duration::from_secs(20),
    )
    .await;
    assert_eq!(r.origin, Origin::Cache);
    assert_eq!(r.answers[0].ttl, 100);
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);
    // Expired: asked again.
    ask(
        &s,
        "origin.example.com.",
        RecordType::A,
        t0 + Duration::from_secs(121),
    )
    .await;
    assert_eq!(up.calls.load(Ordering::SeqCst), 2);
    let st = stats(&s);
    assert_eq!((st.forwarded, st.cache_hits), (2, 1));
}

#[tokio::test]
async fn negative_answers_are_cached_by_the_soa() {
    let up = fake(true);
    let s = shared(Some(up.clone()), 0);
    let t0 = Instant::now();
    let r = ask(&s, "nx.example.com.", RecordType::A, t0).await;
    assert_eq!(r.rcode, ResponseCode::NXDomain);
    assert_eq!(r.authorities[0].ttl, 30, "min(SOA TTL, MINIMUM)");
    let r = ask(
        &s,
        "nx.example.com.",
        RecordType::A,
        t0 + Duration::from_secs(10),
    )
    .await;
    assert_eq!((r.rcode, r.origin), (ResponseCode::NXDomain, Origin::Cache));
    assert_eq!(r.authorities[0].ttl, 20);
    ask(
        &s,
        "nx.example.com.",
        RecordType::A,
        t0 + Duration::from_secs(31),
    )
    .await;
    assert_eq!(up.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn rebinding_answers_are_filtered_or_refused() {
    let up = fake(true);
    let s = shared(Some(up.clone()), 0);
    let t0 = Instant::now();
    let r = ask(&s, "evil.example.com.", RecordType::A, t0).await;
    assert_eq!(r.rcode, ResponseCode::Refused);
    assert!(r.answers.is_empty());
    // The verdict is cached too.
    let r = ask(&s, "evil.example.com.", RecordType::A, t0).await;
    assert_eq!((r.rcode, r.origin), (ResponseCode::Refused, Origin::Cache));
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);

    let r = ask(&s, "mixed.example.com.", RecordType::A, t0).await;
    assert_eq!(r.rcode, ResponseCode::NoError);
    assert_eq!(
        r.answers,
        vec![a("mixed.example.com.", 120, [203, 0, 113, 11])]
    );
    let st = stats(&s);
    assert_eq!((st.rebinding_dropped, st.rebinding_refused), (2, 1));
}

#[tokio::test]
async fn upstream_failures_and_unsupported_types() {
    let up = fake(true);
    let s = shared(Some(up.clone()), 0);
    let t0 = Instant::now();
    let r = ask(&s, "down.example.com.", RecordType::A, t0).await;
    assert_eq!(r.rcode, ResponseCode::ServFail);
    let r = ask(&s, "origin.example.com.", RecordType::MX, t0).await;
    assert_eq!(r.rcode, ResponseCode::NotImp);
    // Failures are not cached.
    ask(&s, "down.example.com.", RecordType::A, t0).await;
    assert_eq!(up.calls.load(Ordering::SeqCst), 3);
    assert_eq!(stats(&s).upstream_errors, 2);
}

#[tokio::test]
async fn upstreams_without_ttls_get_the_default() {
    let up = fake(false);
    let s = shared(Some(up.clone()), 0);
    let t0 = Instant::now();
    let r = ask(&s, "origin.example.com.", RecordType::A, t0).await;
    assert_eq!(r.answers[0].ttl, 300);
    let mut no_soa = HashMap::new();
    no_soa.insert(
        (name("gone.example.com."), RecordType::A),
        Ok(UpstreamAnswer::NxDomain { soa: None }),
    );
    let tor = Arc::new(Fake {
        answers: no_soa,
        calls: AtomicUsize::new(0),
        ttls: false,
    });
    let s = shared(Some(tor.clone()), 0);
    ask(&s, "gone.example.com.", RecordType::A, t0).await;
    let r = ask(
        &s,
        "gone.example.com.",
        RecordType::A,
        t0 + Duration::from_secs(299),
    )
    .await;
    assert_eq!((r.rcode, r.origin), (ResponseCode::NXDomain, Origin::Cache));
    assert_eq!(tor.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_and_unsupported_requests() {
    let s = shared(Some(fake(true)), 0);
    let now = Instant::now();
    let mut chaos = Query::query(name("version.bind."), RecordType::TXT);
    chaos.set_query_class(DNSClass::CH);
    let cases: Vec<(Vec<LowerQuery>, OpCode, Option<u8>, ResponseCode)> = vec![
        (
            vec![LowerQuery::query(chaos)],
            OpCode::Query,
            None,
            ResponseCode::Refused,
        ),
        (
            query("home.arpa.", RecordType::AXFR),
            OpCode::Query,
            None,
            ResponseCode::Refused,
        ),
        (
            query("gateway.home.arpa.", RecordType::A),
            OpCode::Update,
            None,
            ResponseCode::NotImp,
        ),
        (
            query("gateway.home.arpa.", RecordType::A),
            OpCode::Query,
            Some(1),
            ResponseCode::BADVERS,
        ),
        (Vec::new(), OpCode::Query, None, ResponseCode::FormErr),
        (
            [
                query("a.home.arpa.", RecordType::A),
                query("b.home.arpa.", RecordType::A),
            ]
            .concat(),
            OpCode::Query,
            None,
            ResponseCode::FormErr,
        ),
    ];
    for (queries, op_code, edns_version, rcode) in cases {
        let q = Question {
            src: CLIENT,
            op_code,
            queries: &queries,
            edns_version,
        };
        assert_eq!(
            s.answer(&q, now).await.rcode,
            rcode,
            "{op_code:?} {edns_version:?}"
        );
    }
    assert_eq!(stats(&s).bad_requests, 6);
}

#[test]
fn reply_buffer_size_follows_the_client_within_bounds() {
    assert!(reply_edns(None).is_none());
    let with = |size: u16| {
        let mut e = Edns::new();
        e.set_max_payload(size);
        reply_edns(Some(&e)).map(|e| e.max_payload())
    };
    assert_eq!(with(512), Some(512));
    assert_eq!(with(100), Some(512));
    assert_eq!(with(1000), Some(1000));
    assert_eq!(with(4096), Some(super::MAX_UDP_PAYLOAD));
}

/// Answers `origin.example.com` only once the gate opens; counts the questions it gets.
struct Gated {
    gate: tokio::sync::Semaphore,
    calls: AtomicUsize,
}

impl Upstream for Gated {
    fn lookup(
        &self,
        _name: &Name,
        _rtype: RecordType,
    ) -> BoxFuture<'_, Result<UpstreamAnswer, UpstreamError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let _permit = self.gate.acquire().await;
            Ok(UpstreamAnswer::Records(vec![a(
                "origin.example.com.",
                120,
                [203, 0, 113, 10],
            )]))
        })
    }

    fn name(&self) -> &'static str {
        "gated"
    }

    fn gives_ttls(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn identical_questions_in_flight_share_one_lookup() {
    let gated = Arc::new(Gated {
        gate: tokio::sync::Semaphore::new(0),
        calls: AtomicUsize::new(0),
    });
    let s = Arc::new(shared(Some(gated.clone()), 0));
    let now = Instant::now();
    let askers: Vec<_> = (0..5)
        .map(|i| {
            let s = s.clone();
            // Case differs between askers: one question all the same.
            let n = if i % 2 == 0 {
                "origin.example.com."
            } else {
                "ORIGIN.example.com."
            };
            tokio::spawn(async move { ask(&s, n, RecordType::A, now).await })
        })
        .collect();
    while s.inflight.len() == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    gated.gate.add_permits(100);
    for asker in askers {
        let reply = asker.await.unwrap();
        assert_eq!(reply.rcode, ResponseCode::NoError);
        assert_eq!(reply.answers.len(), 1);
    }
    assert_eq!(gated.calls.load(Ordering::SeqCst), 1, "one lookup upstream");
    let st = stats(&s);
    assert_eq!((st.forwarded, st.coalesced), (1, 4), "{st:?}");
    assert_eq!(s.inflight.len(), 0);

    // A leader whose client hangs up releases the others: one of them takes over, the rest
    // follow it.
    let gated = Arc::new(Gated {
        gate: tokio::sync::Semaphore::new(0),
        calls: AtomicUsize::new(0),
    });
    let s = Arc::new(shared(Some(gated.clone()), 0));
    let leader = {
        let s = s.clone();
        tokio::spawn(async move { ask(&s, "origin.example.com.", RecordType::A, now).await })
    };
    while s.inflight.len() == 0 {
        tokio::task::yield_now().await;
    }
    let followers: Vec<_> = (0..3)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { ask(&s, "origin.example.com.", RecordType::A, now).await })
        })
        .collect();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    leader.abort();
    let _ = leader.await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    gated.gate.add_permits(100);
    for follower in followers {
        assert_eq!(follower.await.unwrap().answers.len(), 1);
    }
    assert_eq!(
        gated.calls.load(Ordering::SeqCst),
        2,
        "the aborted leader's lookup and the one of whoever took over"
    );
    assert_eq!(stats(&s).coalesced, 2);
}

const ONION: &str = "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion";

pub(super) fn with_answered(mut s: Shared) -> (Shared, Arc<super::answered::AnsweredNames>) {
    use super::answered::{AnsweredNames, OnionRange};
    let book = Arc::new(AnsweredNames::new(Some(OnionRange::DEFAULT)));
    s.answered = Some(book.clone());
    (s, book)
}

#[tokio::test]
async fn onion_names_get_virtual_addresses_per_client() {
    let up = fake(true);
    let (s, book) = with_answered(shared(Some(up.clone()), 0));
    let now = Instant::now();
    let r = ask(&s, &format!("{ONION}."), RecordType::A, now).await;
    assert_eq!(r.rcode, ResponseCode::NoError);
    let [record] = &r.answers[..] else {
        panic!("one A record: {r:?}")
    };
    let RData::A(addr) = record.data else {
        panic!("not an A record: {record:?}")
    };
    assert!(super::answered::OnionRange::DEFAULT.contains(addr.0));
    assert_eq!(book.name_for(CLIENT, addr.0, now).as_deref(), Some(ONION));
    // Other types: no data; a name that cannot be an onion service: NXDOMAIN.
    let r = ask(&s, &format!("{ONION}."), RecordType::AAAA, now).await;
    assert_eq!((r.rcode, r.answers.len()), (ResponseCode::NoError, 0));
    let r = ask(&s, "abcdef.onion.", RecordType::A, now).await;
    assert_eq!(r.rcode, ResponseCode::NXDomain);
    assert_eq!(
        up.calls.load(Ordering::SeqCst),
        0,
        "onion names never go upstream"
    );
    assert_eq!(stats(&s).onion_answers, 3);
}

#[tokio::test]
async fn upstream_answers_are_remembered_for_their_client() {
    let up = fake(true);
    let (s, book) = with_answered(shared(Some(up), 0));
    let now = Instant::now();
    let queries = query("origin.example.com.", RecordType::A);
    let q = Question {
        src: CLIENT,
        op_code: OpCode::Query,
        queries: &queries,
        edns_version: None,
    };
    let reply = s.answer(&q, now).await;
    s.remember(CLIENT, &q, &reply, now);
    let origin = Ipv4Addr::new(203, 0, 113, 10);
    assert_eq!(
        book.name_for(CLIENT, origin, now).as_deref(),
        Some("origin.example.com")
    );
    // A refused or local answer is not remembered.
    let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
    let refused = ask_from(&s, other, "origin.example.com.", RecordType::A, now).await;
    s.remember(other, &q, &refused, now);
    assert_eq!(book.name_for(other, origin, now), None);
}
