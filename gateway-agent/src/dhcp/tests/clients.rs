//! Who owns a lease: reservations, client identifiers, exhaustion, and restarts.

use crate::mac::MacAddr;
use dhcproto::v4::MessageType as Mt;

use super::*;
use crate::dhcp::config::{ClientKey, Reservation};
use crate::dhcp::store::{Store, StoreOp};

/// A dhcpcd-style client identifier: type 255, IAID, DUID-LLT (RFC 4361).
fn duid(tail: u8) -> Vec<u8> {
    vec![
        0xff, 0x6e, 0x2b, 0x1c, 0x9a, 0x00, 0x01, 0x00, 0x01, 0x2c, 0x3d, 0x4e, 0x5f, 0x02, 0x00,
        0x00, 0x00, 0x00, tail,
    ]
}

#[test]
fn reservation_by_mac_and_by_client_id() {
    let mut settings = settings();
    settings.dhcp.reservations = vec![
        Reservation {
            owner: ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 7])),
            address: ip(20),
            name: Some("nas".parse().unwrap()),
        },
        Reservation {
            owner: ClientKey::ClientId(duid(8)),
            address: ip(21),
            name: None,
        },
    ];
    let mut bench = Bench::with(settings);

    let (address, ack) = bench.dora(&Client::new(7).named("whatever"));
    assert_eq!(address, ip(20), "outside the pool, but reserved");
    assert_eq!(bound_name(&ack).as_deref(), Some("nas"));

    // By client id, whatever the MAC; the name is the client's own.
    let (address, ack) = bench.dora(&Client::new(100).id(&duid(8)).named("phone"));
    assert_eq!(address, ip(21));
    assert_eq!(bound_name(&ack).as_deref(), Some("phone"));

    // A reservation by MAC holds for a client that also sends a DUID.
    let mut bench = Bench::with(bench_settings_with_mac_reservation());
    let (address, _) = bench.dora(&Client::new(7).id(&duid(1)));
    assert_eq!(address, ip(20));

    // Nobody else gets a reserved address, even by asking.
    let mut bench = Bench::with(bench_settings_with_mac_reservation());
    assert_eq!(
        kind(&reply(&bench.send(&Client::new(1).reboot(ip(20))))),
        Mt::Nak
    );
    assert_eq!(
        reply(&bench.send(&Client::new(1).discover())).yiaddr(),
        ip(100)
    );
    // And the reserved client is refused any other address.
    assert_eq!(
        kind(&reply(&bench.send(&Client::new(7).reboot(ip(150))))),
        Mt::Nak
    );
}

fn bench_settings_with_mac_reservation() -> crate::dhcp::DhcpServerSettings {
    let mut settings = settings();
    settings.dhcp.reservations = vec![Reservation {
        owner: ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 7])),
        address: ip(20),
        name: None,
    }];
    settings
}

#[test]
fn a_lease_belongs_to_the_client_id_when_there_is_one() {
    let mut bench = Bench::new();
    // One machine, two interfaces (or a dhcpcd DUID shared across a NIC swap): the client
    // id decides.
    let (first, ack) = bench.dora(&Client::new(1).id(&duid(1)));
    assert_eq!(bound(&ack)[0].client_id, Some(duid(1)));
    let (moved, ack) = bench.dora(&Client::new(2).id(&duid(1)));
    assert_eq!(moved, first, "same client id, new MAC: same lease");
    // The old MAC's map entry goes before the new one comes.
    let gone = removed(&ack);
    assert_eq!(gone.len(), 1);
    assert_eq!(
        (gone[0].mac, gone[0].address),
        (MacAddr::new([2, 0, 0, 0, 0, 1]), first)
    );
    assert_eq!(bound(&ack)[0].mac, MacAddr::new([2, 0, 0, 0, 0, 2]));
    // Same MAC, different client id: a different client.
    let (other, _) = bench.dora(&Client::new(2).id(&duid(2)));
    assert_ne!(other, first);
    // Same MAC without a client id: yet another.
    let (plain, _) = bench.dora(&Client::new(2));
    assert!(plain != first && plain != other);

    let records = bench.handler.records();
    let by_id = records.iter().find(|r| r.address == first).unwrap();
    assert_eq!(by_id.client_id.as_deref(), Some(hex(&duid(1)).as_str()));
    assert_eq!(by_id.mac, "02:00:00:00:00:02", "the MAC it last came from");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_exhausted_pool_answers_nothing() {
    let mut settings = settings();
    settings.dhcp.pool = Some((ip(100), ip(101)));
    let mut bench = Bench::with(settings);
    bench.dora(&Client::new(1));
    bench.dora(&Client::new(2));
    for _ in 0..5 {
        assert_eq!(bench.send(&Client::new(3).discover()), Outcome::default());
    }
    let stats = bench.handler.stats();
    assert_eq!(stats.pool_exhausted, 5);
    assert_eq!(stats.pool_size, 2);
    // The holders still renew.
    assert_eq!(
        kind(&reply(&bench.send(&Client::new(1).renew(ip(100))))),
        Mt::Ack
    );
}

/// A restart: a new handler restored from the store the old one wrote.
fn restart(store: &Store, settings: crate::dhcp::DhcpServerSettings, now: u64) -> (Bench, Outcome) {
    let mut bench = Bench::with(settings);
    bench.now = now;
    let restored = bench.handler.restore(store.load().unwrap(), now);
    store.apply(&restored.store).unwrap();
    (bench, restored)
}

#[test]
fn a_restart_restores_leases_names_and_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("leases.redb")).unwrap();
    let mut bench = Bench::new();
    let laptop = Client::new(1).named("laptop");
    let phone = Client::new(2).id(&duid(2)).named("laptop");
    let gone = Client::new(3).named("gone");
    let mut addresses = Vec::new();
    for client in [&laptop, &phone, &gone] {
        let (address, ack) = bench.dora(client);
        store.apply(&ack.store).unwrap();
        addresses.push(address);
    }
    let release = bench.send(&gone.release(addresses[2]));
    store.apply(&release.store).unwrap();
    let before: Vec<_> = bench.handler.records();
    drop(bench);

    let (mut bench, restored) = restart(&store, settings(), T0 + 60);
    let announced = bound(&restored);
    assert_eq!(announced.len(), 2, "live leases only: {announced:?}");
    for record in before.iter().filter(|r| r.state == "bound") {
        assert!(announced.iter().any(|info| info.address == record.address
            && info.hostname == record.hostname
            && info.expires_unix == record.expires_unix));
    }
    // Same address offered to the same clients, including the one that released.
    for (client, address) in [&laptop, &phone, &gone].into_iter().zip(&addresses) {
        let offer = reply(&bench.send(&client.discover()));
        assert_eq!(offer.yiaddr(), *address);
    }
    // And a renewal is simply acknowledged.
    assert_eq!(
        kind(&reply(&bench.send(&laptop.renew(addresses[0])))),
        Mt::Ack
    );
}

#[test]
fn a_restart_drops_rows_the_config_no_longer_allows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("leases.redb")).unwrap();
    let mut bench = Bench::new();
    let (moved, ack) = bench.dora(&Client::new(1).named("printer"));
    store.apply(&ack.store).unwrap();
    let (kept, ack) = bench.dora(&Client::new(2).named("kept"));
    store.apply(&ack.store).unwrap();
    // Two rows for one address (a crash between evicting a past lease and its cleanup).
    store
        .apply(&[StoreOp::Put(
            ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 99])),
            crate::dhcp::store::StoredLease {
                address: kept,
                mac: MacAddr::new([2, 0, 0, 0, 0, 99]),
                client_id: None,
                hostname: None,
                expires: T0 - 10,
            },
        )])
        .unwrap();

    // Client 1 now has a reservation elsewhere, and its name is reserved for it.
    let mut settings = settings();
    settings.dhcp.reservations = vec![
        Reservation {
            owner: ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 1])),
            address: ip(30),
            name: None,
        },
        Reservation {
            owner: ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 5])),
            address: ip(31),
            name: Some("kept".parse().unwrap()),
        },
    ];
    let (mut bench, restored) = restart(&store, settings, T0 + 1);
    let announced = bound(&restored);
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0].address, kept);
    let renamed = announced[0].hostname.clone().unwrap();
    assert!(renamed.starts_with("kept-"), "{renamed}");
    let rows = store.load().unwrap().leases;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1.hostname.as_deref(), Some(renamed.as_str()));
    assert_eq!(
        reply(&bench.send(&Client::new(1).discover())).yiaddr(),
        ip(30)
    );
    assert_ne!(moved, ip(30));
}
