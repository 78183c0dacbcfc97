//! The fast path against the slow path: for the same question at the same moment, a hit is
//! byte for byte the slow path's answer (the ID and TTLs patched), and what must not be kept
//! is not.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::RecordType;

use super::{FastPath, Outcome};
use crate::dns::handler::{Admission, Handler};
use crate::dns::tests::{fake, name, shared, with_answered, CLIENT};
use crate::dns::DnsStats;
use crate::lease_events::{LeaseEvent, LeaseInfo, LeaseSink};
use crate::mac::MacAddr;

const SRC: SocketAddr = SocketAddr::new(CLIENT, 40000);

/// A query as a stub resolver sends it: RD set, EDNS with `edns` as the payload if given.
fn request(id: u16, qname: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name(qname), qtype));
    if let Some(payload) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(payload);
        message.set_edns(opt);
    }
    message.to_vec().expect("hickory encodes the query")
}

fn path(capacity: usize) -> (Arc<FastPath>, Arc<crate::dns::tests::Fake>) {
    let upstream = fake(true);
    let shared = Arc::new(shared(Some(upstream.clone()), 0));
    (Arc::new(FastPath::new(Handler(shared), capacity)), upstream)
}

/// What the fast path does with `msg` at `now`: its answer, if it had one.
fn fast_answer(fast: &FastPath, msg: &[u8], now: Instant) -> (Option<Vec<u8>>, Admission) {
    let mut out = vec![0u8; 1232];
    match fast.answer(msg, SRC, now, &mut out) {
        Outcome::Answered(len) => (Some(out[..len].to_vec()), Admission::Unchecked),
        Outcome::Slow(admission) => (None, admission),
    }
}

/// The slow path's answer to `msg` at `now`, as if the fast path had missed.
async fn slow_answer(fast: &FastPath, msg: &[u8], now: Instant) -> Vec<u8> {
    fast.slow(msg.to_vec(), SRC, Admission::Admitted, now)
        .await
        .expect("the slow path answers")
}

fn counters(fast: &FastPath) -> DnsStats {
    fast.handler.0.counters.snapshot()
}

/// Each question: asked once (a miss the slow path answers and the fast path keeps), then
/// again later with another ID, answered by the fast path and, for reference, by the slow
/// path at the same moment. `warm` is asked first, as spelled, through the slow path only.
#[tokio::test]
async fn hits_are_the_slow_paths_answers_byte_for_byte() {
    struct Case {
        what: &'static str,
        name: &'static str,
        qtype: RecordType,
        edns: Option<u16>,
        warm: Option<&'static str>,
    }
    let case = |what, name, qtype, edns, warm| Case {
        what,
        name,
        qtype,
        edns,
        warm,
    };
    use RecordType::{A, AAAA, PTR, SOA};
    let cases = [
        case("a local name", "registry.home.arpa.", A, None, None),
        case(
            "a local name, EDNS",
            "registry.home.arpa.",
            A,
            Some(4096),
            None,
        ),
        case(
            "a local name, small EDNS",
            "gateway.home.arpa.",
            A,
            Some(100),
            None,
        ),
        case("local, case mixed", "ReGiStRy.Home.ARPA.", A, None, None),
        case(
            "local AAAA: NODATA with SOA",
            "registry.home.arpa.",
            AAAA,
            None,
            None,
        ),
        case("local NXDOMAIN", "missing.home.arpa.", A, Some(1232), None),
        case("the zone's SOA", "home.arpa.", SOA, None, None),
        case("a PTR", "1.100.51.198.in-addr.arpa.", PTR, None, None),
        case("localhost", "localhost.", A, None, None),
        case("localhost AAAA", "localhost.", AAAA, Some(1232), None),
        case("never forwarded", "printer.local.", A, None, None),
        case("forwarded", "origin.example.com.", A, None, None),
        case(
            "forwarded, EDNS",
            "origin.example.com.",
            A,
            Some(1232),
            None,
        ),
        case(
            "forwarded, case mixed, from the slow cache",
            "Origin.EXAMPLE.com.",
            A,
            None,
            Some("origin.example.com."),
        ),
        case("forwarded NXDOMAIN", "nx.example.com.", A, None, None),
        case(
            "forwarded NXDOMAIN, EDNS",
            "nx.example.com.",
            A,
            Some(1232),
            None,
        ),
        case(
            "forwarded, rebinding filtered",
            "mixed.example.com.",
            A,
            None,
            None,
        ),
    ];
    // An ID of its own for every query, so a hit that kept the old one shows.
    let mut id = 0x1000u16;
    let mut next_id = || {
        id += 1;
        id
    };
    for c in cases {
        let (fast, _) = path(64);
        let t0 = Instant::now();
        if let Some(warm) = c.warm {
            let msg = request(next_id(), warm, c.qtype, c.edns);
            fast.slow(msg, SRC, Admission::Unchecked, t0)
                .await
                .expect("the warm-up is answered");
        }
        let first = request(next_id(), c.name, c.qtype, c.edns);
        let (hit, admission) = fast_answer(&fast, &first, t0);
        assert!(hit.is_none(), "{}: nothing kept yet", c.what);
        assert!(matches!(admission, Admission::Admitted), "{}", c.what);
        let miss = fast
            .slow(first.clone(), SRC, admission, t0)
            .await
            .expect("the slow path answers");
        assert_eq!(miss[..2], first[..2], "{}", c.what);

        // Ten seconds later (TTLs of the forwarded answers have gone down).
        let t1 = t0 + Duration::from_secs(10);
        let again = request(next_id(), c.name, c.qtype, c.edns);
        let before = counters(&fast);
        let (hit, _) = fast_answer(&fast, &again, t1);
        let hit = hit.unwrap_or_else(|| panic!("{}: a hit", c.what));
        let after_fast = counters(&fast);
        let reference = slow_answer(&fast, &again, t1).await;
        let after_slow = counters(&fast);
        assert_eq!(hit, reference, "{}: fast and slow differ", c.what);
        assert_eq!(hit[..2], again[..2], "{}: the ID", c.what);
        // The hit counted as the slow path counts the same answer.
        let delta = |a: &DnsStats, b: &DnsStats| {
            (
                b.queries - a.queries,
                b.local_answers - a.local_answers,
                b.never_forwarded - a.never_forwarded,
                b.cache_hits - a.cache_hits,
            )
        };
        let fast_counts = delta(&before, &after_fast);
        let mut slow_counts = delta(&after_fast, &after_slow);
        // The reference was admitted by hand: the slow path did not count the query.
        slow_counts.0 += 1;
        assert_eq!(fast_counts, slow_counts, "{}: counters", c.what);
        Message::from_vec(&hit).unwrap_or_else(|e| panic!("{}: {e}", c.what));
    }
}

#[tokio::test]
async fn ttls_count_down_and_forwarded_answers_expire_with_the_cache() {
    let (fast, upstream) = path(64);
    let t0 = Instant::now();
    let msg = request(7, "origin.example.com.", RecordType::A, None);
    slow_answer(&fast, &msg, t0).await;
    let ttl_of = |bytes: &[u8]| {
        let message = Message::from_vec(bytes).expect("the answer parses");
        message.answers[0].ttl
    };
    // The slow path's cache rounds the seconds left down: so does the patch.
    for (secs, ttl) in [(0, 119), (1, 118), (59, 60), (118, 1)] {
        let at = t0 + Duration::from_millis(secs * 1000 + 400);
        let (hit, _) = fast_answer(&fast, &msg, at);
        let hit = hit.unwrap_or_else(|| panic!("a hit after {secs} s"));
        assert_eq!(ttl_of(&hit), ttl, "{secs} s");
        assert_eq!(hit, slow_answer(&fast, &msg, at).await, "{secs} s");
    }
    let (hit, admission) = fast_answer(&fast, &msg, t0 + Duration::from_millis(119_400));
    assert!(hit.is_none(), "expired with the slow path's entry");
    assert!(matches!(admission, Admission::Admitted));
    assert_eq!(
        upstream.calls.load(Ordering::SeqCst),
        1,
        "asked upstream once"
    );
}

#[tokio::test]
async fn local_answers_are_dropped_when_the_zone_changes() {
    let (fast, _) = path(64);
    let t0 = Instant::now();
    let msg = request(9, "laptop.home.arpa.", RecordType::A, None);
    slow_answer(&fast, &msg, t0).await;
    assert!(fast_answer(&fast, &msg, t0).0.is_some(), "NXDOMAIN is kept");
    fast.handler.0.zone.apply(&LeaseEvent::Bound(LeaseInfo {
        address: Ipv4Addr::new(198, 51, 100, 100),
        mac: MacAddr::new([2, 0, 0, 0, 0, 1]),
        client_id: None,
        hostname: Some("laptop".into()),
        expires_unix: 0,
    }));
    assert!(
        fast_answer(&fast, &msg, t0).0.is_none(),
        "stale after the lease"
    );
    let bound = slow_answer(&fast, &msg, t0).await;
    let message = Message::from_vec(&bound).expect("parses");
    assert_eq!(message.answers.len(), 1, "the new lease's address");
    assert_eq!(fast_answer(&fast, &msg, t0).0, Some(bound));
}

#[tokio::test]
async fn what_is_not_kept() {
    let t0 = Instant::now();
    // Upstream failure (SERVFAIL), an unsupported type (NOTIMP), an `.onion` name without a
    // virtual range (never forwarded, but NXDOMAIN is fine: it is kept) are checked here;
    // spelling, refusals and logging below.
    for (qname, qtype) in [
        ("timeout.example.com.", RecordType::A),
        ("origin.example.com.", RecordType::MX),
    ] {
        let (fast, _) = path(64);
        let msg = request(3, qname, qtype, None);
        slow_answer(&fast, &msg, t0).await;
        assert_eq!(fast.kept(), 0, "{qname} {qtype}");
        assert!(fast_answer(&fast, &msg, t0).0.is_none(), "{qname} {qtype}");
    }

    // Another spelling is another question: its bytes differ.
    let (fast, _) = path(64);
    let lower = request(4, "registry.home.arpa.", RecordType::A, None);
    slow_answer(&fast, &lower, t0).await;
    let upper = request(4, "REGISTRY.home.arpa.", RecordType::A, None);
    assert!(fast_answer(&fast, &upper, t0).0.is_none());
    // So is another EDNS payload, or none.
    let edns = request(4, "registry.home.arpa.", RecordType::A, Some(1232));
    assert!(fast_answer(&fast, &edns, t0).0.is_none());

    // Outsiders are refused before the cache, through the slow path's encoder.
    let mut out = vec![0u8; 1232];
    let outsider = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 5353);
    match fast.answer(&lower, outsider, t0, &mut out) {
        Outcome::Slow(Admission::Refused(reply)) => {
            let bytes = fast
                .slow(lower.clone(), outsider, Admission::Refused(reply), t0)
                .await
                .expect("a refusal");
            let message = Message::from_vec(&bytes).expect("parses");
            assert_eq!(
                message.metadata.response_code,
                hickory_proto::op::ResponseCode::Refused
            );
        }
        _ => panic!("an outsider got past the ACL"),
    }
    assert_eq!(counters(&fast).refused_acl, 1);

    // Rate limited clients too.
    let limited = Arc::new(FastPath::new(Handler(Arc::new(shared(None, 1))), 64));
    let (_, admission) = fast_answer(&limited, &lower, t0);
    limited.slow(lower.clone(), SRC, admission, t0).await;
    match limited.answer(&lower, SRC, t0, &mut out) {
        Outcome::Slow(Admission::Refused(_)) => {}
        _ => panic!("a client over its rate got an answer"),
    }
    assert_eq!(limited.handler.0.counters.snapshot().rate_limited, 1);

    // No cache, no copies.
    let (none, _) = path(0);
    slow_answer(&none, &lower, t0).await;
    assert!(fast_answer(&none, &lower, t0).0.is_none());
}

#[tokio::test]
async fn with_query_logging_everything_takes_the_slow_path() {
    let mut s = shared(None, 0);
    s.log_queries = true;
    let fast = FastPath::new(Handler(Arc::new(s)), 64);
    let msg = request(5, "registry.home.arpa.", RecordType::A, None);
    let t0 = Instant::now();
    let (hit, admission) = fast_answer(&fast, &msg, t0);
    assert!(hit.is_none());
    assert!(matches!(admission, Admission::Unchecked));
    fast.slow(msg.clone(), SRC, admission, t0)
        .await
        .expect("answered");
    assert!(fast_answer(&fast, &msg, t0).0.is_none(), "nothing kept");
}

/// With the transparent listener on, a hit tells it who was told what, as the slow path does:
/// another client's hit on the same cached answer is remembered for that client.
#[tokio::test]
async fn hits_on_forwarded_answers_are_remembered_for_their_client() {
    let (s, book) = with_answered(shared(Some(fake(true)), 0));
    let fast = FastPath::new(Handler(Arc::new(s)), 64);
    let t0 = Instant::now();
    let msg = request(11, "origin.example.com.", RecordType::A, None);
    slow_answer(&fast, &msg, t0).await;
    let origin = Ipv4Addr::new(203, 0, 113, 10);
    let other = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77)), 5300);
    assert_eq!(book.name_for(other.ip(), origin, t0), None);
    let mut out = vec![0u8; 1232];
    let t1 = t0 + Duration::from_secs(5);
    assert!(matches!(
        fast.answer(&msg, other, t1, &mut out),
        Outcome::Answered(_)
    ));
    assert_eq!(
        book.name_for(other.ip(), origin, t1).as_deref(),
        Some("origin.example.com")
    );
}
