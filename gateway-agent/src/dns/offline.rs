//! The DNS request path without sockets: bytes in, hickory's request parser, the whole
//! pipeline of [`super::handler`] (ACL, rate limit, request checks, local zone, names never
//! forwarded, cache) and the response's bytes out. The fuzz target drives it
//! (`fuzz/fuzz_targets/dns_request.rs`); there is no upstream, so nothing leaves the process.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use anyhow::{Context as _, Result};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;

use super::cache::{Cache, TtlPolicy};
use super::handler::{question, reply_edns, response, Shared};
use super::inflight::InFlight;
use super::names::NeverForward;
use super::{LocalZone, SERVICE_NAMES};
use crate::config::{Inside, Seconds};
use crate::lease_events::{LeaseEvent, LeaseInfo, LeaseSink};
use crate::mac::MacAddr;
use crate::ratelimit::KeyedBuckets;

/// The gateway's inside address in this stand-alone pipeline: 198.51.100.1/24.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// The request pipeline with a `home.arpa` zone holding one lease (`c1`, 198.51.100.10), no
/// upstream and no rate limit.
pub struct RequestPath {
    shared: Shared,
}

impl RequestPath {
    /// The pipeline, ready to answer.
    pub fn new() -> Result<Self> {
        let inside = Inside {
            address: GATEWAY,
            prefix_len: 24,
        };
        let origin = "home.arpa"
            .parse()
            .map_err(|err| anyhow::anyhow!("the zone name: {err}"))?;
        let zone = Arc::new(
            LocalZone::new(
                &origin,
                inside,
                GATEWAY,
                &SERVICE_NAMES,
                &[],
                Seconds::new(60),
            )
            .context("the local zone")?,
        );
        zone.apply(&LeaseEvent::Bound(LeaseInfo {
            address: Ipv4Addr::new(198, 51, 100, 10),
            mac: MacAddr::new([2, 0, 0, 0, 0, 10]),
            client_id: None,
            hostname: Some("c1".to_owned()),
            expires_unix: u64::MAX,
        }));
        Ok(RequestPath {
            shared: Shared {
                inside,
                never: NeverForward::new(zone.origin(), &inside),
                zone,
                upstream: None,
                cache: Mutex::new(Cache::new(64)),
                inflight: InFlight::new(),
                limiter: Mutex::new(KeyedBuckets::new(0, 1)),
                policy: TtlPolicy {
                    default_ttl: 300,
                    max_ttl: 86_400,
                },
                counters: Default::default(),
                log_queries: false,
                answered: None,
            },
        })
    }

    /// The response to the UDP datagram `bytes` from `src`, or `None` when hickory cannot
    /// parse it as a request (the server drops those too).
    pub fn answer(&self, bytes: &[u8], src: IpAddr) -> Option<Vec<u8>> {
        let request =
            Request::from_bytes(bytes.to_vec(), SocketAddr::new(src, 53000), Protocol::Udp).ok()?;
        let question = question(&request);
        let reply = {
            // Without an upstream the pipeline never waits, so one poll finishes it.
            let mut future = pin!(self.shared.answer(&question, Instant::now()));
            match future
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
            {
                Poll::Ready(reply) => reply,
                Poll::Pending => return None,
            }
        };
        let edns = reply_edns(request.edns.as_ref());
        let mut bytes = Vec::with_capacity(512);
        response(&self.shared, &request, &reply, edns.as_ref())
            .destructive_emit(&mut BinEncoder::new(&mut bytes))
            .ok()?;
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};

    use super::*;

    fn ask(path: &RequestPath, name: &str, src: IpAddr) -> Message {
        let mut message = Message::query();
        message.add_query(Query::query(
            Name::from_ascii(name).expect("a test name"),
            RecordType::A,
        ));
        let bytes = message.to_vec().expect("hickory encodes the query");
        let answer = path.answer(&bytes, src).expect("a response");
        Message::from_vec(&answer).expect("the response parses")
    }

    #[test]
    fn answers_from_the_zone_and_refuses_outsiders() {
        let path = RequestPath::new().expect("the pipeline");
        let inside = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20));
        let reply = ask(&path, "c1.home.arpa.", inside);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(matches!(
            reply.answers.first().map(|r| &r.data),
            Some(RData::A(a)) if a.0 == Ipv4Addr::new(198, 51, 100, 10)
        ));
        let outsider = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
        let refused = ask(&path, "c1.home.arpa.", outsider);
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
        assert_eq!(path.answer(&[0, 1, 2], inside), None, "not a request");
    }

    /// Found by the fuzz target: a question name ending in a compression pointer into the
    /// header (offset 2). hickory's parser accepts it, and hickory-server echoes the question
    /// section's raw bytes, pointer included, under the response's header, where offset 2 now
    /// holds the flags: the response does not parse. It goes only to the client that crafted
    /// it, so the gateway answers it like any other; what must hold is no panic and a
    /// response header that is ours (the request's id, QR set).
    #[test]
    fn a_question_pointing_into_the_header() {
        let path = RequestPath::new().expect("the pipeline");
        let request: &[u8] = &[
            190, 239, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
            7, 7, 7, 7, 7, 7, 39, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 255, 255, 255, 122, 7, 7,
            71, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 2, 255, 48, 4, 7, 71, 7, 7, 7, 7,
            7, 7, 7, 7, 7, 7, 7, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
            8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
            8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 9, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
            8, 8, 8, 8, 8, 8, 8, 8, 2, 7, 7, 192, 2, 99, 49, 4, 104, 111, 109, 101, 4, 65, 114,
            112, 97, 0, 0, 46, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, 0, 1,
        ];
        let inside = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 6));
        let response = path.answer(request, inside).expect("a response");
        assert_eq!(response[..2], request[..2], "the request's id");
        assert_ne!(response[2] & 0x80, 0, "QR: a response");
    }
}
