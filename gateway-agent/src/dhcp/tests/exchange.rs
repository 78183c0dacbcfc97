//! The message exchanges of RFC 2131: DORA, renew, rebind, release, decline, inform, NAK,
//! relays, and where each reply goes.

use crate::mac::MacAddr;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Flags, MessageType as Mt, OptionCode};

use super::*;
use crate::config::{DomainName, Seconds};
use crate::dhcp::handler::OFFER_HOLD_SECS;
use crate::dhcp::store::StoreOp;

const LEASE: u64 = 12 * 3600;

#[test]
fn dora_gives_a_pool_address_with_every_option() {
    let mut bench = Bench::new();
    let client = Client::new(1).named("laptop");
    let offer = bench.send(&client.discover());
    assert!(offer.store.is_empty(), "offers are not stored");
    assert!(offer.events.is_empty(), "offers are not announced");
    let offered = reply(&offer);
    assert_eq!(kind(&offered), Mt::Offer);
    assert_eq!(offered.opcode(), dhcproto::v4::Opcode::BootReply);
    assert_eq!(offered.xid(), client.xid);
    assert_eq!(offered.chaddr(), &client.mac.octets());
    assert_eq!(offered.yiaddr(), ip(100), "the lowest pool address");
    // No broadcast flag, no address yet: unicast to the new address via an ARP entry.
    assert_eq!(
        destination(&offer),
        Destination::Hardware {
            address: SocketAddrV4::new(ip(100), 68),
            mac: client.mac
        }
    );

    let ack = bench.send(&client.select(ip(100)));
    let acked = reply(&ack);
    assert_eq!(kind(&acked), Mt::Ack);
    assert_eq!(acked.yiaddr(), ip(100));
    let opts = acked.opts();
    assert_eq!(
        opts.get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opts.get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        opts.get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER]))
    );
    assert_eq!(
        opts.get(OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![SERVER]))
    );
    assert_eq!(
        opts.get(OptionCode::DomainName),
        Some(&DhcpOption::DomainName("home.arpa".into()))
    );
    let Some(DhcpOption::DomainSearch(search)) = opts.get(OptionCode::DomainSearch) else {
        panic!("no option 119: {opts:?}");
    };
    assert_eq!(
        search.iter().map(|n| n.to_ascii()).collect::<Vec<_>>(),
        ["home.arpa."]
    );
    assert_eq!(
        opts.get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(LEASE as u32))
    );
    assert_eq!(
        opts.get(OptionCode::Renewal),
        Some(&DhcpOption::Renewal(LEASE as u32 / 2))
    );
    assert_eq!(
        opts.get(OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(LEASE as u32 * 7 / 8))
    );

    // Stored, then announced, with the name.
    let expected = LeaseInfo {
        address: ip(100),
        mac: client.mac,
        client_id: None,
        hostname: Some("laptop".into()),
        expires_unix: T0 + LEASE,
    };
    assert!(matches!(&ack.store[..], [StoreOp::Put(_, stored)] if stored.address == ip(100)));
    assert_eq!(ack.events, vec![LeaseEvent::Bound(expected)]);
    let stats = bench.handler.stats();
    assert_eq!((stats.offers, stats.acks, stats.bound), (1, 1, 1));

    let records = bench.handler.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, "bound");
    assert_eq!(records[0].mac, "02:00:00:00:00:01");
}

#[test]
fn broadcast_flag_and_renewing_clients_choose_the_destination() {
    let mut bench = Bench::new();
    let client = Client::new(1);
    let mut discover = client.discover();
    discover.set_flags(Flags::default().set_broadcast());
    let offer = bench.send(&discover);
    assert_eq!(destination(&offer), Destination::Broadcast(68));
    assert!(reply(&offer).flags().broadcast(), "flags are copied");

    bench.dora(&client);
    let renew = bench.send(&client.renew(ip(100)));
    assert_eq!(
        destination(&renew),
        Destination::Unicast(SocketAddrV4::new(ip(100), 68))
    );
}

#[test]
fn renew_and_rebind_extend_the_lease() {
    let mut bench = Bench::new();
    let client = Client::new(1).named("laptop");
    let (address, _) = bench.dora(&client);

    bench.advance(LEASE / 2);
    let renew = bench.send(&client.renew(address));
    assert_eq!(kind(&reply(&renew)), Mt::Ack);
    assert_eq!(reply(&renew).yiaddr(), address);
    let info = &bound(&renew)[0];
    assert_eq!(info.expires_unix, T0 + LEASE / 2 + LEASE);
    assert_eq!(info.hostname.as_deref(), Some("laptop"), "the name stays");
    assert!(
        matches!(&renew.store[..], [StoreOp::Put(..)]),
        "renewals are stored"
    );

    bench.advance(LEASE * 7 / 8);
    let rebind = bench.send(&client.rebind(address));
    assert_eq!(kind(&reply(&rebind)), Mt::Ack);
    assert_eq!(
        destination(&rebind),
        Destination::Unicast(SocketAddrV4::new(address, 68))
    );
    assert_eq!(bound(&rebind)[0].expires_unix, bench.now + LEASE);

    // The name survives a renewal that does not repeat it.
    let quiet = Client {
        hostname: None,
        ..client.clone()
    };
    let renew = bench.send(&quiet.renew(address));
    assert_eq!(bound_name(&renew).as_deref(), Some("laptop"));
}

#[test]
fn release_removes_the_lease_and_keeps_the_address_for_its_owner() {
    let mut bench = Bench::new();
    let first = Client::new(1);
    let (address, _) = bench.dora(&first);

    let release = bench.send(&first.release(address));
    assert!(release.reply.is_none());
    assert_eq!(removed(&release).len(), 1);
    assert_eq!(removed(&release)[0].address, address);
    assert!(
        matches!(&release.store[..], [StoreOp::Put(_, stored)] if stored.expires == T0),
        "{:?}",
        release.store
    );
    assert_eq!(bench.handler.stats().releases, 1);
    assert_eq!(bench.handler.records()[0].state, "released");

    // A newcomer gets a never-used address; the old owner gets its own back.
    let (other, _) = bench.dora(&Client::new(2));
    assert_ne!(other, address);
    let (again, _) = bench.dora(&first);
    assert_eq!(again, address);

    // Releasing what one does not hold does nothing.
    let bogus = bench.send(&Client::new(3).release(address));
    assert!(bogus.events.is_empty() && bogus.store.is_empty());
    assert_eq!(bench.handler.stats().ignored, 1);
}

#[test]
fn decline_quarantines_the_address() {
    let mut settings = settings();
    settings.dhcp.decline_quarantine_secs = Seconds::new(600);
    let mut bench = Bench::with(settings);
    let client = Client::new(1);
    let (address, _) = bench.dora(&client);

    let decline = bench.send(&client.decline(address));
    assert!(decline.reply.is_none());
    assert_eq!(removed(&decline).len(), 1);
    assert!(matches!(
        &decline.store[..],
        [StoreOp::Delete(_), StoreOp::Quarantine(quarantined, entry)]
            if *quarantined == address && entry.until == T0 + 600
    ));
    assert!(bench
        .handler
        .records()
        .iter()
        .any(|r| r.address == address && r.state == "declined"));

    // Nobody gets it, not even by asking for it, until the quarantine ends.
    let offer = reply(&bench.send(&client.discover()));
    assert_ne!(offer.yiaddr(), address);
    let mut asking = Client::new(2).discover();
    asking
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(address));
    assert_ne!(reply(&bench.send(&asking)).yiaddr(), address);
    assert_eq!(
        kind(&reply(&bench.send(&Client::new(3).reboot(address)))),
        Mt::Nak
    );

    bench.advance(601);
    bench.sweep();
    assert_eq!(
        reply(&bench.send(&Client::new(4).discover())).yiaddr(),
        address
    );
}

#[test]
fn only_the_holder_may_decline() {
    let mut bench = Bench::new();
    let (address, _) = bench.dora(&Client::new(1));
    let decline = bench.send(&Client::new(2).decline(address));
    assert!(decline.store.is_empty() && decline.events.is_empty());
    assert_eq!(bench.handler.stats().declines, 0);
    assert_eq!(
        reply(&bench.send(&Client::new(1).renew(address))).yiaddr(),
        address
    );
}

#[test]
fn inform_gets_options_but_no_lease() {
    let mut bench = Bench::new();
    let outcome = bench.send(&Client::new(1).inform(ip(50)));
    let ack = reply(&outcome);
    assert_eq!(kind(&ack), Mt::Ack);
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(ack.ciaddr(), ip(50));
    assert!(ack.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(ack.opts().get(OptionCode::Router).is_some());
    assert!(ack.opts().get(OptionCode::DomainNameServer).is_some());
    assert_eq!(
        destination(&outcome),
        Destination::Unicast(SocketAddrV4::new(ip(50), 68))
    );
    assert!(outcome.store.is_empty() && outcome.events.is_empty());
    assert_eq!(bench.handler.stats().informs, 1);

    // A forged address off our link gets nothing: no reply aimed elsewhere.
    let forged = bench.send(&Client::new(1).inform(Ipv4Addr::new(203, 0, 113, 9)));
    assert!(forged.reply.is_none());
    assert_eq!(bench.handler.stats().ignored, 1);
}

#[test]
fn naks_for_foreign_taken_and_reserved_addresses() {
    let mut settings = settings();
    settings.dhcp.reservations = vec![crate::dhcp::config::Reservation {
        owner: crate::dhcp::config::ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 9])),
        address: ip(20),
        name: None,
    }];
    let mut bench = Bench::with(settings);
    let (taken, _) = bench.dora(&Client::new(1));
    let client = Client::new(2);
    for address in [
        Ipv4Addr::new(10, 0, 0, 5), // another network
        taken,                      // someone else's lease
        ip(20),                     // someone else's reservation
        ip(50),                     // in the subnet, outside the pool
        SERVER,
        ip(255),
    ] {
        let outcome = bench.send(&client.reboot(address));
        let nak = reply(&outcome);
        assert_eq!(kind(&nak), Mt::Nak, "{address}");
        assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(destination(&outcome), Destination::Broadcast(68));
        assert!(outcome.store.is_empty() && outcome.events.is_empty());
    }
    // Renewing an address that is not one's own.
    assert_eq!(kind(&reply(&bench.send(&client.renew(taken)))), Mt::Nak);
    // SELECTING with our server id, asking for something else's.
    assert_eq!(kind(&reply(&bench.send(&client.select(taken)))), Mt::Nak);
    assert_eq!(bench.handler.stats().naks, 8);

    // INIT-REBOOT for a free pool address with no record: granted.
    assert_eq!(kind(&reply(&bench.send(&client.reboot(ip(150))))), Mt::Ack);
}

#[test]
fn expired_and_taken_is_nak_expired_and_free_is_rebound() {
    let mut settings = settings();
    settings.dhcp.pool = Some((ip(100), ip(100)));
    let mut bench = Bench::with(settings);
    let sleeper = Client::new(1);
    let (address, _) = bench.dora(&sleeper);

    bench.advance(LEASE + 1);
    let swept = bench.sweep();
    assert_eq!(removed(&swept).len(), 1, "expiry removes the lease");
    assert_eq!(bench.handler.stats().expired, 1);
    assert_eq!(bench.handler.records()[0].state, "expired");

    // Still free: the sleeper wakes and gets it back.
    assert_eq!(kind(&reply(&bench.send(&sleeper.renew(address)))), Mt::Ack);

    // Expired again and taken by someone else meanwhile: NAK.
    bench.advance(LEASE + 1);
    bench.sweep();
    let (stolen, _) = bench.dora(&Client::new(2));
    assert_eq!(stolen, address);
    assert_eq!(kind(&reply(&bench.send(&sleeper.renew(address)))), Mt::Nak);
    assert_eq!(kind(&reply(&bench.send(&sleeper.reboot(address)))), Mt::Nak);
}

#[test]
fn a_request_for_another_server_drops_our_offer() {
    let mut settings = settings();
    settings.dhcp.pool = Some((ip(100), ip(100)));
    let mut bench = Bench::with(settings);
    let client = Client::new(1);
    assert_eq!(reply(&bench.send(&client.discover())).yiaddr(), ip(100));
    // While offered to client 1, nobody else gets it.
    assert!(bench.send(&Client::new(2).discover()).reply.is_none());

    let mut elsewhere = client.select(Ipv4Addr::new(192, 0, 2, 50));
    elsewhere
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 51, 100, 2)));
    let outcome = bench.send(&elsewhere);
    assert!(outcome.reply.is_none());
    assert_eq!(
        reply(&bench.send(&Client::new(2).discover())).yiaddr(),
        ip(100)
    );
}

#[test]
fn offers_lapse_after_the_hold_time() {
    let mut settings = settings();
    settings.dhcp.pool = Some((ip(100), ip(100)));
    let mut bench = Bench::with(settings);
    bench.send(&Client::new(1).discover());
    assert!(bench.send(&Client::new(2).discover()).reply.is_none());
    bench.advance(OFFER_HOLD_SECS);
    assert!(
        bench.sweep().events.is_empty(),
        "offers were never announced"
    );
    assert_eq!(
        reply(&bench.send(&Client::new(2).discover())).yiaddr(),
        ip(100)
    );
}

#[test]
fn relayed_requests_are_refused_unless_configured() {
    let relay = Ipv4Addr::new(198, 51, 100, 2);
    // Option 82 appended by hand: dhcproto writes an unknown-typed 82 twice.
    let relayed = |client: &Client| {
        let mut message = client.discover();
        message.set_giaddr(relay);
        message.set_hops(1);
        let mut bytes = message.to_vec().unwrap();
        assert_eq!(bytes.pop(), Some(255));
        bytes.extend_from_slice(&[82, 6, 1, 4, b'p', b'o', b'r', b't', 255]);
        bytes
    };
    let mut bench = Bench::new();
    assert!(bench.send_raw(&relayed(&Client::new(1))).reply.is_none());
    assert_eq!(bench.handler.stats().relayed_refused, 1);

    let mut settings = settings();
    settings.dhcp.accept_relayed = true;
    let mut bench = Bench::with(settings);
    let outcome = bench.send_raw(&relayed(&Client::new(1)));
    let offer = reply(&outcome);
    assert_eq!(kind(&offer), Mt::Offer);
    assert_eq!(offer.giaddr(), relay);
    assert_eq!(
        destination(&outcome),
        Destination::Unicast(SocketAddrV4::new(relay, 67))
    );
    let echoed = outcome.reply.as_ref().unwrap();
    assert!(
        echoed
            .reply
            .options
            .iter()
            .any(|o| o.code == 82 && o.value == [1, 4, b'p', b'o', b'r', b't']),
        "option 82 is echoed"
    );
    // A relayed NAK goes to the relay with the broadcast bit set.
    let mut reboot = Client::new(2).reboot(Ipv4Addr::new(10, 0, 0, 1));
    reboot.set_giaddr(relay);
    let outcome = bench.send(&reboot);
    let nak = reply(&outcome);
    assert_eq!(kind(&nak), Mt::Nak);
    assert!(nak.flags().broadcast());
    assert_eq!(
        destination(&outcome),
        Destination::Unicast(SocketAddrV4::new(relay, 67))
    );
}

#[test]
fn option_57_decides_whether_a_long_search_list_fits() {
    let mut settings = settings();
    // About 600 bytes of search list: more than 576 allows.
    let search: Vec<DomainName> = (0..20)
        .map(|i| {
            format!("subdomain-number-{i:02}.example.org")
                .parse()
                .unwrap()
        })
        .collect();
    settings.dhcp.search = Some(search);
    let mut bench = Bench::with(settings);
    let client = Client::new(1);

    let small = reply(&bench.send(&client.discover()));
    assert!(small.opts().get(OptionCode::DomainSearch).is_none());
    assert!(small.opts().get(OptionCode::Router).is_some());
    assert_eq!(
        small.opts().get(OptionCode::DomainName),
        Some(&DhcpOption::DomainName(
            "subdomain-number-00.example.org".into()
        ))
    );

    let mut big = client.discover();
    big.opts_mut().insert(DhcpOption::MaxMessageSize(1500));
    let outcome = bench.send(&big);
    assert!(outcome.reply.as_ref().unwrap().bytes.len() > 576);
    let Some(DhcpOption::DomainSearch(names)) = reply(&outcome)
        .opts()
        .get(OptionCode::DomainSearch)
        .cloned()
    else {
        panic!("option 119 expected when it fits");
    };
    assert_eq!(
        names.len(),
        20,
        "split over several options (RFC 3396) and joined again"
    );
}
