//! Host names end to end: what a client sends in options 12 and 81, what reaches the zone.

use crate::mac::MacAddr;
use dhcproto::v4::{DhcpOption, OptionCode};

use super::*;
use crate::dhcp::config::{ClientKey, Reservation};
use crate::dhcp::hostname;

/// Option 81 bytes: flags, two rcodes, then the name.
fn fqdn_option(flags: u8, name: &[u8]) -> DhcpOption {
    let mut value = vec![flags, 0, 0];
    value.extend_from_slice(name);
    raw(OptionCode::ClientFQDN, &value)
}

/// Wire-format labels.
fn wire(labels: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for label in labels {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

fn name_after_dora(
    bench: &mut Bench,
    client: &Client,
    extra: Option<DhcpOption>,
) -> Option<String> {
    let mut discover = client.discover();
    if let Some(option) = &extra {
        discover.opts_mut().insert(option.clone());
    }
    let offered = reply(&bench.send(&discover)).yiaddr();
    let mut request = client.select(offered);
    if let Some(option) = extra {
        request.opts_mut().insert(option);
    }
    bound_name(&bench.send(&request))
}

#[test]
fn hostile_option_12_values_never_reach_the_zone_as_given() {
    let long = "x".repeat(300);
    let cases: &[(&[u8], Option<&str>)] = &[
        (b"laptop", Some("laptop")),
        (b"LAPTOP", Some("laptop")),
        (b"evil.attacker.example", Some("evil")),
        (b"../../../etc/passwd", None),
        (b"my host", Some("my-host")),
        (b"a\nb IN A 203.0.113.66", Some("a-b-in-a-203")),
        (b"*", None),
        ("schöner-rechner".as_bytes(), Some("sch-ner-rechner")),
        (b"\xff\xfe", None),
        (long.as_bytes(), Some(&long[..63])),
    ];
    for (index, (raw_name, expected)) in cases.iter().enumerate() {
        let mut bench = Bench::new();
        let mut client = Client::new(index as u8 + 1);
        client.hostname = Some(raw_name.to_vec());
        assert_eq!(
            name_after_dora(&mut bench, &client, None).as_deref(),
            *expected,
            "{:?}",
            String::from_utf8_lossy(raw_name)
        );
    }
}

#[test]
fn option_81_wire_ascii_and_rfc3396_long_values() {
    let e_flag = 0x04 | 0x01;
    // A 300-byte first "label" can only be sent split over two option 81 instances; a wire
    // label that long is invalid, so option 12 is the fallback.
    let mut long_wire = vec![200u8];
    long_wire.extend(std::iter::repeat_n(b'a', 300));
    let long_ascii = [b"L".repeat(300), b".home.arpa".to_vec()].concat();
    let cut = "l".repeat(63);
    let cases: Vec<(DhcpOption, Option<&str>)> = vec![
        (
            fqdn_option(e_flag, &wire(&[b"Desk", b"home", b"arpa"])),
            Some("desk"),
        ),
        (
            fqdn_option(0, b"Ascii-Name.example.com"),
            Some("ascii-name"),
        ),
        (fqdn_option(0, &long_ascii), Some(cut.as_str())),
        (fqdn_option(e_flag, &long_wire), Some("fallback")),
        (fqdn_option(e_flag, &wire(&[b"..", b"x"])), Some("fallback")),
        (
            fqdn_option(e_flag, &wire(&[b"has space"])),
            Some("has-space"),
        ),
        (fqdn_option(e_flag, b"\xc0\x0c"), Some("fallback")),
        (raw(OptionCode::ClientFQDN, &[0x05]), Some("fallback")),
    ];
    for (index, (option, expected)) in cases.into_iter().enumerate() {
        let mut bench = Bench::new();
        let client = Client::new(index as u8 + 1).named("fallback");
        assert_eq!(
            name_after_dora(&mut bench, &client, Some(option.clone())).as_deref(),
            expected,
            "{option:?}"
        );
    }
}

#[test]
fn option_81_is_answered_with_the_name_given() {
    let mut bench = Bench::new();
    let client = Client::new(1);
    let option = fqdn_option(0x04, &wire(&[b"Desk"]));
    let offered = reply(&bench.send(&client.discover())).yiaddr();
    let mut request = client.select(offered);
    request.opts_mut().insert(option);
    let ack = reply(&bench.send(&request));
    let Some(DhcpOption::ClientFQDN(fqdn)) = ack.opts().get(OptionCode::ClientFQDN) else {
        panic!("no option 81 in the ACK");
    };
    assert_eq!(fqdn.domain().to_ascii(), "desk.home.arpa.");
    assert!(fqdn.flags().s(), "the server updates the zone");
    assert!(
        fqdn.flags().o(),
        "overriding the client, which asked to do it"
    );
    assert!(fqdn.flags().e());
}

#[test]
fn collisions_get_deterministic_suffixes() {
    let mut settings = settings();
    settings.dhcp.reservations = vec![Reservation {
        owner: ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 9])),
        address: ip(20),
        name: Some("printer".parse().unwrap()),
    }];
    let mut bench = Bench::with(settings);

    let first = Client::new(1).named("laptop");
    let (_, ack) = bench.dora(&first);
    assert_eq!(bound_name(&ack).as_deref(), Some("laptop"));

    let second = Client::new(2).named("laptop");
    let (address, ack) = bench.dora(&second);
    let suffixed = bound_name(&ack).unwrap();
    let expected = hostname::unique("laptop", &ClientKey::Mac(second.mac), |n| n == "laptop");
    assert_eq!(Some(suffixed.clone()), expected);
    assert!(suffixed.starts_with("laptop-") && suffixed.len() == 11);
    // Stable across renewals.
    let renew = bench.send(&second.renew(address));
    assert_eq!(bound_name(&renew), Some(suffixed));

    // Service names, built-in reserved names and other clients' reserved names.
    for (last, wanted) in [
        (3, "gateway"),
        (4, "Registry"),
        (5, "wpad"),
        (6, "printer"),
        (7, "localhost"),
    ] {
        let (_, ack) = bench.dora(&Client::new(last).named(wanted));
        let name = bound_name(&ack).unwrap();
        let lower = wanted.to_ascii_lowercase();
        assert!(name.starts_with(&format!("{lower}-")), "{wanted} → {name}");
    }

    // The reserved client gets its reserved name whatever it asks for.
    let (reserved_address, ack) = bench.dora(&Client::new(9).named("something-else"));
    assert_eq!(reserved_address, ip(20));
    assert_eq!(bound_name(&ack).as_deref(), Some("printer"));

    // Once the first laptop is gone, its name is free again.
    let released = bench.send(&first.release(ip(100)));
    assert_eq!(removed(&released)[0].hostname.as_deref(), Some("laptop"));
    let (_, ack) = bench.dora(&Client::new(8).named("laptop"));
    assert_eq!(bound_name(&ack).as_deref(), Some("laptop"));
}

#[test]
fn no_two_bound_leases_share_a_name() {
    let mut bench = Bench::new();
    for last in 1..=40 {
        bench.dora(&Client::new(last).named("same"));
    }
    let records = bench.handler.records();
    let mut names: Vec<_> = records.iter().filter_map(|r| r.hostname.clone()).collect();
    assert_eq!(names.len(), 40);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 40, "{names:?}");
}
