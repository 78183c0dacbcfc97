//! The DNS request path without sockets (`gateway_agent::dns::offline`): hickory's request
//! parser, then the agent's pipeline (ACL, rate limit, request checks, local zone, names never
//! forwarded, cache), then the response's encoding. The first byte picks the client: inside the
//! subnet, or outside it (the ACL path). A panic is a bug; so is a response that is not a
//! response to the request.
//!
//! The response need not parse as a whole: hickory-server echoes the question section's raw
//! bytes, so a question whose name points into the request's header (which hickory's parser
//! accepts) comes back pointing into the response's header. Only the client that crafted it
//! gets that (`dns::offline`'s `a_question_pointing_into_the_header`).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use gateway_agent::dns::offline::RequestPath;
use hickory_proto::op::{MessageType, ResponseCode::NoError};
use libfuzzer_sys::fuzz_target;

fn path() -> &'static RequestPath {
    static PATH: OnceLock<RequestPath> = OnceLock::new();
    PATH.get_or_init(|| RequestPath::new().expect("the stand-alone DNS pipeline"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, request)) = data.split_first() else {
        return;
    };
    let src = if who & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, who | 2))
    } else {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, who))
    };
    if let Some(response) = path().answer(request, src) {
        assert!(
            response.len() >= 12 && response[..2] == request[..2] && response[2] & 0x80 != 0,
            "{response:?} is not a response to {request:?}"
        );
        // Whatever does parse must be consistent: a response, with at most one question.
        if let Ok(message) = hickory_proto::op::Message::from_vec(&response) {
            assert_eq!(message.metadata.message_type, MessageType::Response);
            assert!(message.queries.len() <= 1 || message.metadata.response_code != NoError);
        }
    }
});
