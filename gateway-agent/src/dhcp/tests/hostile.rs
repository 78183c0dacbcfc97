//! Malformed and hostile packets: each dropped and counted, none a panic.

use crate::mac::MacAddr;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, MessageType as Mt, OptionCode};

use super::*;
use crate::dhcp::config::{ClientKey, Reservation};
use crate::dhcp::stats::DhcpStats;

/// A DISCOVER in raw bytes, options replaced by `options` (END appended).
fn with_options(options: &[u8]) -> Vec<u8> {
    let mut bytes = Client::new(1).discover().to_vec().unwrap();
    bytes.truncate(240);
    bytes.extend_from_slice(options);
    bytes.push(255);
    bytes
}

fn counted(bytes: &[u8]) -> (Outcome, DhcpStats) {
    let mut bench = Bench::new();
    let outcome = bench.send_raw(bytes);
    (outcome, bench.handler.stats())
}

#[test]
fn malformed_packets_are_dropped_and_counted() {
    let valid = Client::new(1).discover().to_vec().unwrap();
    let edit = |at: usize, value: u8| {
        let mut bytes = valid.clone();
        bytes[at] = value;
        bytes
    };
    let mut giant = valid.clone();
    giant.resize(1501, 0);
    type Counter = fn(&DhcpStats) -> u64;
    let cases: Vec<(&str, Vec<u8>, Counter)> = vec![
        ("empty", vec![], |s| s.too_short),
        ("header only", valid[..239].to_vec(), |s| s.too_short),
        ("giant", giant, |s| s.too_long),
        ("bad op", edit(0, 3), |s| s.bad_op),
        ("token ring", edit(1, 6), |s| s.bad_hardware),
        ("long hlen", edit(2, 16), |s| s.bad_hardware),
        ("multicast chaddr", edit(28, 0x01), |s| s.bad_hardware),
        (
            "broadcast chaddr",
            {
                let mut b = valid.clone();
                b[28..34].fill(0xff);
                b
            },
            |s| s.bad_hardware,
        ),
        (
            "zero chaddr",
            {
                let mut b = valid.clone();
                b[28..34].fill(0);
                b
            },
            |s| s.bad_hardware,
        ),
        ("bad cookie", edit(236, 0), |s| s.bad_cookie),
        (
            "option past the end",
            with_options(&[53, 1, 1, 12, 200, b'a']),
            |s| s.bad_options,
        ),
        (
            "length byte missing",
            {
                let mut b = with_options(&[53, 1, 1]);
                b.pop();
                b.push(12);
                b
            },
            |s| s.bad_options,
        ),
        ("two-byte message type", with_options(&[53, 2, 1, 1]), |s| {
            s.bad_options
        }),
        (
            "short requested ip",
            with_options(&[53, 1, 1, 50, 3, 1, 2, 3]),
            |s| s.bad_options,
        ),
        (
            "short server id",
            with_options(&[53, 1, 3, 54, 5, 1, 2, 3, 4, 5]),
            |s| s.bad_options,
        ),
        (
            "one-byte client id",
            with_options(&[53, 1, 1, 61, 1, 1]),
            |s| s.bad_options,
        ),
        ("bad overload", with_options(&[53, 1, 1, 52, 1, 4]), |s| {
            s.bad_options
        }),
        (
            "overload of nothing",
            with_options(&[53, 1, 1, 52, 0]),
            |s| s.bad_options,
        ),
        ("bootp", with_options(&[]), |s| s.no_message_type),
        ("lease query", with_options(&[53, 1, 10]), |s| s.unsupported),
    ];
    for (name, bytes, counter) in cases {
        let (outcome, stats) = counted(&bytes);
        assert_eq!(outcome, Outcome::default(), "{name}");
        assert_eq!(counter(&stats), 1, "{name}: {stats:?}");
        assert_eq!(stats.malformed, 1, "{name}");
        assert_eq!(stats.received, 1, "{name}");
    }
}

#[test]
fn server_messages_from_the_inside_are_dropped_and_counted() {
    let mut reply_op = Client::new(1).discover().to_vec().unwrap();
    reply_op[0] = 2;
    for bytes in [
        reply_op,
        with_options(&[53, 1, 2]), // OFFER
        with_options(&[53, 1, 5]), // ACK
        with_options(&[53, 1, 6]), // NAK
    ] {
        let (outcome, stats) = counted(&bytes);
        assert_eq!(outcome, Outcome::default());
        assert_eq!(stats.server_reply_dropped, 1);
        assert_eq!(stats.malformed, 0);
    }
}

#[test]
fn option_overload_is_read_from_file_and_sname() {
    // Options field: only 52 (file and sname) and END; message type in `file`, the host name
    // in `sname`, a long one split across both (RFC 3396 order: options, file, sname).
    let mut bytes = with_options(&[52, 1, 3]);
    bytes[108..113].copy_from_slice(&[53, 1, 1, 12, 4]);
    bytes[113..117].copy_from_slice(b"desk");
    bytes[117] = 255;
    bytes[44..50].copy_from_slice(&[12, 3, b't', b'o', b'p', 255]);
    let mut bench = Bench::new();
    let offer = bench.send_raw(&bytes);
    assert_eq!(kind(&reply(&offer)), Mt::Offer);

    let mut request = bytes.clone();
    request[110] = 3; // REQUEST; add 50 and 54 in the options field
    request.truncate(240);
    request.extend_from_slice(&[
        52, 1, 3, 50, 4, 198, 51, 100, 100, 54, 4, 198, 51, 100, 1, 255,
    ]);
    let ack = bench.send_raw(&request);
    assert_eq!(kind(&reply(&ack)), Mt::Ack);
    assert_eq!(bound_name(&ack).as_deref(), Some("desktop"));
}

#[test]
fn broken_fqdn_costs_the_name_not_the_lease() {
    let bytes = with_options(&[53, 1, 1, 81, 1, 0]);
    let (outcome, stats) = counted(&bytes);
    assert_eq!(kind(&reply(&outcome)), Mt::Offer);
    assert_eq!(stats.malformed, 0);
}

#[test]
fn per_mac_rate_limit() {
    let mut bench = Bench::new();
    let flood = Client::new(1).discover().to_vec().unwrap();
    let other = Client::new(2).discover().to_vec().unwrap();
    let source = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
    let t0 = Instant::now();
    let at = |ms| Now {
        unix: T0,
        mono: t0 + Duration::from_millis(ms),
    };
    let answered = (0..25)
        .filter(|_| {
            bench
                .handler
                .handle_packet(&flood, source, at(5000))
                .reply
                .is_some()
        })
        .count();
    assert_eq!(answered, 10, "the default: 10 a second");
    assert_eq!(bench.handler.stats().rate_limited, 15);
    // Others are unaffected, and the flooder recovers.
    assert!(bench
        .handler
        .handle_packet(&other, source, at(5000))
        .reply
        .is_some());
    assert!(bench
        .handler
        .handle_packet(&flood, source, at(5200))
        .reply
        .is_some());
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let named = Client::new(1).named("laptop");
    let with_id = Client::new(2).id(&[0xff, 1, 2, 3, 4, 0, 1, 0, 1, 9, 9, 9, 9]);
    let mut fqdn = with_id.discover();
    fqdn.opts_mut().insert(raw(
        OptionCode::ClientFQDN,
        b"\x05\0\0\x04desk\x04home\x04arpa\0",
    ));
    fqdn.opts_mut().insert(DhcpOption::MaxMessageSize(1500));
    let mut relayed = named.discover();
    relayed.set_giaddr(ip(2));
    relayed
        .opts_mut()
        .insert(raw(OptionCode::RelayAgentInformation, &[1, 2, 3, 4]));
    let messages = [
        named.discover(),
        named.select(ip(100)),
        named.renew(ip(100)),
        named.rebind(ip(101)),
        named.reboot(ip(102)),
        named.release(ip(100)),
        named.decline(ip(100)),
        named.inform(ip(50)),
        with_id.select(ip(101)),
        fqdn,
        relayed,
    ];
    let mut seeds: Vec<Vec<u8>> = messages.iter().map(|m| m.to_vec().unwrap()).collect();
    let mut overloaded = with_options(&[52, 1, 3]);
    overloaded[108..111].copy_from_slice(&[53, 1, 1]);
    overloaded[111] = 255;
    overloaded[44] = 255;
    seeds.push(overloaded);
    seeds
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            // Flip bytes anywhere (header fields, cookie, options).
            0 | 1 => {
                for _ in 0..=rng.below(8) {
                    let at = rng.below(bytes.len());
                    if let Some(byte) = bytes.get_mut(at) {
                        *byte = rng.byte();
                    }
                }
            }
            // Cut.
            2 => bytes.truncate(rng.below(bytes.len() + 1)),
            // Grow with garbage, sometimes past the size limit.
            3 => {
                let extra = rng.below(1400);
                bytes.extend((0..extra).map(|_| rng.byte()));
            }
            // Splice a random option (often a code we read) into the options.
            4 => {
                let codes = [12, 50, 51, 52, 53, 54, 55, 57, 61, 81, 82, 119, 255, 0];
                let code = codes[rng.below(codes.len())];
                let len = rng.below(300).min(255);
                let mut option = vec![code, len as u8];
                option.extend((0..rng.below(len + 2)).map(|_| rng.byte()));
                let at = 240 + rng.below(bytes.len().saturating_sub(240) + 1);
                let at = at.min(bytes.len());
                bytes.splice(at..at, option);
            }
            // Small header values that matter: op, htype, hlen, flags, addresses.
            5 => {
                let at = [0, 1, 2, 10, 12, 16, 24, 236][rng.below(8)];
                if let Some(byte) = bytes.get_mut(at) {
                    *byte = [0, 1, 2, 6, 0x80, 0xff][rng.below(6)];
                }
            }
            // A message type from the whole range.
            _ => {
                if let Some(at) = bytes.windows(2).position(|w| w == [53, 1]) {
                    if let Some(byte) = bytes.get_mut(at + 2) {
                        *byte = rng.byte() % 20;
                    }
                }
            }
        }
    }
    bytes
}

fn fuzz(settings: crate::dhcp::DhcpServerSettings, seed: u64, iterations: usize) {
    let mut rng = Rng(seed);
    let mut bench = Bench::with(settings);
    let seeds = seeds();
    for iteration in 0..iterations {
        let base = &seeds[rng.below(seeds.len())];
        // Mostly mutated, sometimes pristine (so real leases exist to be disturbed).
        let bytes = if rng.below(4) == 0 {
            base.clone()
        } else {
            mutate(&mut rng, base)
        };
        let outcome = bench.send_raw(&bytes);
        if let Some(outgoing) = &outcome.reply {
            assert!(outgoing.bytes.len() >= 300 && outgoing.bytes.len() <= 1500);
            assert_eq!(outgoing.bytes[0], 2, "a BOOTREPLY");
            assert_eq!(&outgoing.bytes[236..240], &[99, 130, 83, 99]);
        }
        if iteration % 97 == 0 {
            bench.advance(rng.below(50_000) as u64);
            bench.sweep();
        }
        // No address bound twice, nothing bound outside the subnet, names valid and unique.
        let records = bench.handler.records();
        let bound: Vec<_> = records.iter().filter(|r| r.state == "bound").collect();
        let addresses: HashSet<_> = bound.iter().map(|r| r.address).collect();
        assert_eq!(addresses.len(), bound.len(), "iteration {iteration}");
        assert!(bound
            .iter()
            .all(|r| r.address.octets()[..3] == [198, 51, 100]));
        let names: Vec<_> = bound.iter().filter_map(|r| r.hostname.as_deref()).collect();
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "iteration {iteration}: {names:?}"
        );
        for name in names {
            assert!(!name.is_empty() && name.len() <= 63);
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }
    }
    let stats = bench.handler.stats();
    assert_eq!(stats.received, iterations as u64);
    assert!(stats.malformed > 0 && stats.acks > 0, "{stats:?}");
}

#[test]
fn fuzz_default_settings() {
    fuzz(settings(), 0x9e37_79b9_7f4a_7c15, 12_000);
}

#[test]
fn fuzz_relays_reservations_small_pool() {
    let mut settings = settings();
    settings.dhcp.accept_relayed = true;
    settings.dhcp.pool = Some((ip(100), ip(103)));
    settings.dhcp.rate_limit = 0;
    settings.dhcp.reservations = vec![Reservation {
        owner: ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 1])),
        address: ip(20),
        name: Some("laptop".parse().unwrap()),
    }];
    fuzz(settings, 0x0123_4567_89ab_cdef, 12_000);
}
