//! DNS rebinding protection: upstream answers may not point into the LAN or other non-public
//! space, or a web page from outside could make a client's browser talk to inside hosts (the
//! gateway's registry among them) under an outside origin.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::{RData, Record, RecordType};

use crate::config::Inside;

/// What the filter did to an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// The records left.
    pub records: Vec<Record>,
    /// How many address records were dropped.
    pub dropped: usize,
    /// True when the question's type had records and none survived: the answer is refused
    /// as a whole (like dnsmasq's `--stop-dns-rebind`), rather than turned into a NODATA or
    /// NXDOMAIN that would be a lie clients cache.
    pub blocked: bool,
}

/// Drops A/AAAA records whose address is not public or is in the inside subnet.
pub fn filter(records: Vec<Record>, qtype: RecordType, inside: &Inside) -> Filtered {
    let had_qtype = records.iter().any(|r| answers_type(r, qtype));
    let before = records.len();
    let records: Vec<Record> = records
        .into_iter()
        .filter(|r| !is_rebinding(&r.data, inside))
        .collect();
    let dropped = before - records.len();
    let blocked = dropped > 0 && had_qtype && !records.iter().any(|r| answers_type(r, qtype));
    Filtered {
        records,
        dropped,
        blocked,
    }
}

fn answers_type(record: &Record, qtype: RecordType) -> bool {
    qtype == RecordType::ANY || record.record_type() == qtype
}

/// Whether `data` is an address record pointing somewhere an outside name must not point.
pub fn is_rebinding(data: &RData, inside: &Inside) -> bool {
    match data {
        RData::A(a) => is_forbidden_v4(a.0, inside),
        RData::AAAA(aaaa) => is_forbidden_v6(aaaa.0, inside),
        _ => false,
    }
}

fn is_forbidden_v4(ip: Ipv4Addr, inside: &Inside) -> bool {
    let [a, b, ..] = ip.octets();
    inside.contains(ip)
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || a == 0 // 0/8, "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10: the ISP's side of the LAN
}

fn is_forbidden_v6(ip: Ipv6Addr, inside: &Inside) -> bool {
    // An IPv4-mapped address reaches the IPv4 host on dual-stack sockets.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4, inside);
    }
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || (first & 0xfe00) == 0xfc00 // ULA fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // deprecated site-local fec0::/10
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::Name;

    fn inside() -> Inside {
        Inside {
            address: Ipv4Addr::new(198, 51, 100, 1),
            prefix_len: 24,
        }
    }

    fn a(ip: [u8; 4]) -> Record {
        Record::from_rdata(
            Name::from_ascii("x.example.com.").unwrap(),
            60,
            RData::A(A::from(Ipv4Addr::from(ip))),
        )
    }

    fn aaaa(ip: &str) -> Record {
        Record::from_rdata(
            Name::from_ascii("x.example.com.").unwrap(),
            60,
            RData::AAAA(AAAA(ip.parse().unwrap())),
        )
    }

    fn cname() -> Record {
        Record::from_rdata(
            Name::from_ascii("www.example.com.").unwrap(),
            60,
            RData::CNAME(CNAME(Name::from_ascii("x.example.com.").unwrap())),
        )
    }

    #[test]
    fn forbidden_ipv4() {
        for ip in [
            [10, 0, 0, 1],
            [172, 16, 0, 1],
            [172, 31, 255, 255],
            [192, 168, 1, 1],
            [127, 0, 0, 1],
            [169, 254, 1, 1],
            [100, 64, 0, 1],
            [100, 127, 255, 255],
            [0, 0, 0, 0],
            [255, 255, 255, 255],
            [198, 51, 100, 20], // the inside subnet
        ] {
            assert!(is_rebinding(&a(ip).data, &inside()), "{ip:?}");
        }
    }

    #[test]
    fn public_ipv4_passes() {
        for ip in [
            [203, 0, 113, 10],
            [198, 51, 101, 1],
            [172, 32, 0, 1],
            [100, 63, 0, 1],
            [100, 128, 0, 1],
            [8, 8, 8, 8],
        ] {
            assert!(!is_rebinding(&a(ip).data, &inside()), "{ip:?}");
        }
    }

    #[test]
    fn ipv6() {
        for ip in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "::ffff:10.0.0.1",
            "::ffff:198.51.100.9",
        ] {
            assert!(is_rebinding(&aaaa(ip).data, &inside()), "{ip}");
        }
        for ip in ["2001:db8::1", "2606:4700::1111", "::ffff:203.0.113.1"] {
            assert!(!is_rebinding(&aaaa(ip).data, &inside()), "{ip}");
        }
    }

    #[test]
    fn partial_answers_keep_the_public_records() {
        let out = filter(
            vec![a([203, 0, 113, 1]), a([10, 0, 0, 1])],
            RecordType::A,
            &inside(),
        );
        assert_eq!(out.records, vec![a([203, 0, 113, 1])]);
        assert_eq!(out.dropped, 1);
        assert!(!out.blocked);
    }

    #[test]
    fn an_answer_with_only_forbidden_addresses_is_blocked() {
        let out = filter(
            vec![cname(), a([192, 168, 0, 1]), a([10, 0, 0, 1])],
            RecordType::A,
            &inside(),
        );
        assert_eq!(out.dropped, 2);
        assert!(out.blocked);
    }

    #[test]
    fn clean_answers_are_untouched() {
        let records = vec![cname(), a([203, 0, 113, 1])];
        let out = filter(records.clone(), RecordType::A, &inside());
        assert_eq!(out.records, records);
        assert_eq!(out.dropped, 0);
        assert!(!out.blocked);
        // a CNAME-only answer has nothing to filter
        let out = filter(vec![cname()], RecordType::CNAME, &inside());
        assert!(!out.blocked);
    }
}
