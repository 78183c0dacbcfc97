//! The DNS fast path's hand-written wire readers (`gateway_agent::dns::fast::wire`): the
//! question parser that picks what the answer cache may serve, and the TTL-field walker of
//! responses. A panic is a bug; so is a query the fast parser accepts that hickory reads as
//! another question (other name, type, EDNS presence), since the slow path, which fills the
//! cache, goes by hickory's reading.
#![no_main]

use gateway_agent::dns::fast::wire::{parse_query, ttl_offsets};
use hickory_proto::op::Message;
use hickory_proto::serialize::binary::BinEncodable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(query) = parse_query(data) {
        if let Ok(message) = Message::from_vec(data) {
            assert_eq!(message.queries.len(), 1, "{data:?}");
            assert!(message.answers.is_empty() && message.authorities.is_empty());
            let question = &message.queries[0];
            assert_eq!(u16::from(question.query_type()), query.qtype());
            let name = question.name().to_bytes().expect("a parsed name encodes");
            assert_eq!(name, query.name(), "{data:?}");
            assert_eq!(message.edns.is_some(), query.has_edns(), "{data:?}");
        }
    }
    if let Some(offsets) = ttl_offsets(data) {
        for at in offsets {
            assert!(usize::from(at) + 4 <= data.len());
        }
    }
});
