//! The two pieces of DNS wire format the fast path reads, by hand and without allocating: a
//! query's question (to find its answer), and the TTL fields of a response the slow path
//! encoded (to count them down). Anything but the plainest query is left to hickory: one
//! question of class IN with an uncompressed name, no answer or authority records, at most an
//! EDNS version 0 OPT record without options, no trailing bytes.

/// The longest cache key: the header flags, the EDNS fields, the type, a 255-byte name.
pub const MAX_KEY: usize = KEY_HEAD + MAX_NAME;
/// Bytes before the name in a key.
const KEY_HEAD: usize = 9;
/// The longest name on the wire (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;
const HEADER: usize = 12;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// Question types the slow path refuses or rejects: never worth a cache entry.
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;

/// A query the fast path may answer from its cache.
pub struct Query {
    /// The request's ID, copied into the answer.
    pub id: [u8; 2],
    /// What the slow path's answer depends on besides the ID (so the same key gets the same
    /// bytes): the flags, the EDNS payload and flags, the type, the name as spelled.
    key: [u8; MAX_KEY],
    key_len: usize,
}

impl Query {
    /// The cache key.
    pub fn key(&self) -> &[u8] {
        &self.key[..self.key_len]
    }

    /// The question's name, as on the wire.
    pub fn name(&self) -> &[u8] {
        &self.key[KEY_HEAD..self.key_len]
    }

    /// The question's type.
    pub fn qtype(&self) -> u16 {
        u16::from_be_bytes([self.key[7], self.key[8]])
    }

    /// Whether the query had an OPT record.
    pub fn has_edns(&self) -> bool {
        self.key[2] == 1
    }
}

/// Reads `msg` as a query the fast path handles, or `None` for anything else.
pub fn parse_query(msg: &[u8]) -> Option<Query> {
    let header = msg.get(..HEADER)?;
    let (flags_hi, flags_lo) = (header[2], header[3]);
    // A query (QR clear), opcode QUERY, not truncated; Z and RCODE clear.
    if flags_hi & 0xfa != 0 || flags_lo & 0x4f != 0 {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut key = [0u8; MAX_KEY];
    key[0] = flags_hi;
    key[1] = flags_lo;

    // The name: plain labels up to the root label, no compression, at most 255 bytes.
    let mut at = HEADER;
    loop {
        let len = usize::from(*msg.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
        if at - HEADER >= MAX_NAME {
            return None;
        }
    }
    let name = msg.get(HEADER..at)?;
    let fixed = msg.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    if qclass != CLASS_IN || matches!(qtype, TYPE_OPT | TYPE_AXFR | TYPE_IXFR) {
        return None;
    }
    at += 4;

    if ar == 1 {
        // OPT: root owner, type 41, CLASS the payload size, TTL extended RCODE (0), version
        // (0) and flags, no options (those vary and are hickory's to read).
        let opt = msg.get(at..)?;
        if opt.len() != 11 || opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT {
            return None;
        }
        if opt[5] != 0 || opt[6] != 0 || opt[9] != 0 || opt[10] != 0 {
            return None;
        }
        key[2] = 1;
        key[3..5].copy_from_slice(&opt[3..5]);
        key[5..7].copy_from_slice(&opt[7..9]);
    } else if at != msg.len() {
        return None;
    }
    key[7..9].copy_from_slice(&fixed[..2]);
    key[KEY_HEAD..KEY_HEAD + name.len()].copy_from_slice(name);
    Some(Query {
        id: [header[0], header[1]],
        key,
        key_len: KEY_HEAD + name.len(),
    })
}

/// The offsets of the TTL fields in `msg`, a response (the OPT record's is not a TTL), or
/// `None` when it does not parse.
pub fn ttl_offsets(msg: &[u8]) -> Option<Vec<u16>> {
    let header = msg.get(..HEADER)?;
    let count = |at: usize| usize::from(u16::from_be_bytes([header[at], header[at + 1]]));
    let records = count(6) + count(8) + count(10);
    let mut at = HEADER;
    for _ in 0..count(4) {
        at = skip_name(msg, at)? + 4;
    }
    let mut offsets = Vec::with_capacity(records);
    for _ in 0..records {
        at = skip_name(msg, at)?;
        let fixed = msg.get(at..at + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        if rtype != TYPE_OPT {
            offsets.push(u16::try_from(at + 4).ok()?);
        }
        at += 10 + usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    }
    (at == msg.len()).then_some(offsets)
}

/// The offset just past the name at `at` (which may end in a compression pointer).
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            1..=63 => at += 1 + usize::from(len),
            0xc0..=0xff => {
                msg.get(at + 1)?;
                return Some(at + 2);
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` (wire labels), type A, optionally with an OPT record.
    fn query(name: &[u8], opt: Option<[u8; 11]>) -> Vec<u8> {
        let mut msg = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(opt.is_some()),
        ];
        msg.extend_from_slice(name);
        msg.extend_from_slice(&[0, 1, 0, 1]);
        if let Some(opt) = opt {
            msg.extend_from_slice(&opt);
        }
        msg
    }

    const NAME: &[u8] = b"\x02h1\x04home\x04arpa\x00";
    const OPT: [u8; 11] = [0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0];

    #[test]
    fn plain_queries_parse_into_their_key() {
        let q = parse_query(&query(NAME, None)).expect("a plain query");
        assert_eq!(q.id, [0x12, 0x34]);
        let mut want = vec![0x01, 0x00, 0, 0, 0, 0, 0, 0, 1];
        want.extend_from_slice(NAME);
        assert_eq!(q.key(), want);

        let e = parse_query(&query(NAME, Some(OPT))).expect("with EDNS");
        assert_eq!(&e.key()[..9], &[0x01, 0x00, 1, 0x10, 0, 0x80, 0, 0, 1]);
        // Spelling is part of the key: the slow path's answer bytes depend on it.
        let upper = parse_query(&query(b"\x02H1\x04home\x04arpa\x00", None)).expect("parses");
        assert_ne!(upper.key(), q.key());
    }

    #[test]
    fn anything_unusual_is_left_to_the_slow_path() {
        let base = query(NAME, None);
        let with = |at: usize, byte: u8| {
            let mut m = base.clone();
            m[at] = byte;
            m
        };
        let mut trailing = base.clone();
        trailing.push(0);
        let mut pointer = base[..12].to_vec();
        pointer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        let mut long_name = Vec::new();
        for _ in 0..4 {
            long_name.push(63);
            long_name.extend_from_slice(&[b'x'; 63]);
        }
        long_name.push(0);
        let mut bad_opt = OPT;
        bad_opt[6] = 1; // EDNS version 1
        let mut opt_with_option = query(NAME, None);
        opt_with_option[11] = 1;
        opt_with_option.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 4, 0, 10, 0, 0]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("a response", with(2, 0x81)),
            ("opcode NOTIFY", with(2, 0x21)),
            ("truncated", with(2, 0x03)),
            ("Z set", with(3, 0x40)),
            ("two questions", with(5, 2)),
            ("an answer", with(7, 1)),
            ("an authority", with(9, 1)),
            ("an additional that is not OPT", with(11, 1)),
            ("class CH", with(base.len() - 1, 3)),
            ("type OPT", with(base.len() - 3, 41)),
            ("type AXFR", with(base.len() - 3, 252)),
            ("trailing bytes", trailing),
            ("a compressed name", pointer),
            ("a name over 255 bytes", query(&long_name, None)),
            ("EDNS version 1", query(NAME, Some(bad_opt))),
            ("EDNS options", opt_with_option),
            ("cut short", base[..base.len() - 1].to_vec()),
            ("only a header", base[..12].to_vec()),
            ("empty", Vec::new()),
        ];
        for (what, msg) in cases {
            assert!(parse_query(&msg).is_none(), "{what}");
        }
    }

    #[test]
    fn ttl_offsets_skip_the_question_and_opt() {
        // One question, one answer (name a pointer to the question), one OPT.
        let mut msg = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 1];
        msg.extend_from_slice(NAME);
        msg.extend_from_slice(&[0, 1, 0, 1]);
        let answer_at = msg.len();
        msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 51, 100, 20]);
        msg.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ttl_offsets(&msg), Some(vec![(answer_at + 6) as u16]));
        assert_eq!(ttl_offsets(&msg[..msg.len() - 1]), None, "cut short");
        let mut longer = msg.clone();
        longer.push(0);
        assert_eq!(ttl_offsets(&longer), None, "trailing bytes");
    }

    /// The fuzz target's property over every one-byte change and every cut of a few queries:
    /// what the fast parser accepts and hickory reads, both read as the same question.
    #[test]
    fn the_parser_agrees_with_hickory_on_near_misses() {
        use hickory_proto::op::Message;
        use hickory_proto::serialize::binary::BinEncodable;
        let bases = [
            query(NAME, None),
            query(NAME, Some(OPT)),
            query(b"\x02H1\x04HoMe\x04arpa\x00", None),
            query(b"\x00", Some(OPT)),
        ];
        let mut accepted = 0;
        for base in &bases {
            let mut variants: Vec<Vec<u8>> = (0..base.len()).map(|n| base[..n].to_vec()).collect();
            for at in 0..base.len() {
                for byte in [0, 1, 2, 0x3f, 0x40, 0x80, 0xc0, 0xff, base[at] ^ 0x20] {
                    let mut m = base.clone();
                    m[at] = byte;
                    variants.push(m);
                }
            }
            for msg in variants {
                let Some(q) = parse_query(&msg) else {
                    continue;
                };
                accepted += 1;
                let Ok(message) = Message::from_vec(&msg) else {
                    continue;
                };
                assert_eq!(message.queries.len(), 1, "{msg:?}");
                let question = &message.queries[0];
                assert_eq!(u16::from(question.query_type()), q.qtype(), "{msg:?}");
                let name = question.name().to_bytes().expect("a parsed name encodes");
                assert_eq!(name, q.name(), "{msg:?}");
                assert_eq!(message.edns.is_some(), q.has_edns(), "{msg:?}");
            }
        }
        assert!(
            accepted > bases.len(),
            "some variants are plain queries too"
        );
    }
}
