//! The state machine against a fake clock and crafted server replies.

use super::*;
use crate::mac::MacAddr;

const MAC: MacAddr = MacAddr::new([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OTHER_SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const OFFERED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 150);
const LEASE_SECS: u32 = 120;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn client() -> Client {
    Client::new(
        Identity {
            mac: MAC,
            hostname: None,
        },
        42,
    )
}

/// The single message in `actions`.
fn only_send(actions: &[Action]) -> (Message, Destination) {
    let sends: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { message, to } => Some((message.clone(), *to)),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1, "expected one message in {actions:?}");
    sends.into_iter().next().unwrap()
}

fn msg_type(msg: &Message) -> MessageType {
    msg.opts().msg_type().expect("message type")
}

fn opt(msg: &Message, code: OptionCode) -> Option<&DhcpOption> {
    msg.opts().get(code)
}

/// A server reply to `req`, with the usual options.
fn reply(req: &Message, kind: MessageType, yiaddr: Ipv4Addr, server: Ipv4Addr) -> Message {
    let mut msg = Message::new_with_id(
        req.xid(),
        Ipv4Addr::UNSPECIFIED,
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &MAC.octets(),
    );
    msg.set_opcode(Opcode::BootReply);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(server));
    if kind != MessageType::Nak {
        opts.insert(DhcpOption::AddressLeaseTime(LEASE_SECS));
        opts.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        opts.insert(DhcpOption::Router(vec![SERVER]));
        opts.insert(DhcpOption::DomainNameServer(vec![SERVER]));
    }
    msg
}

/// DISCOVER at 0 s, OFFER and REQUEST at 1 s, ACK at 2 s: bound, lease counted from 1 s.
fn bound_client() -> (Client, Lease) {
    let mut c = client();
    let (discover, _) = only_send(&c.start(secs(0), None));
    let offer = reply(&discover, MessageType::Offer, OFFERED, SERVER);
    let (request, _) = only_send(&c.handle_packet(secs(1), &offer, SERVER));
    let ack = reply(&request, MessageType::Ack, OFFERED, SERVER);
    let actions = c.handle_packet(secs(2), &ack, SERVER);
    let [Action::Configure(lease)] = actions.as_slice() else {
        panic!("expected Configure, got {actions:?}");
    };
    (c, lease.clone())
}

#[test]
fn dora() {
    let mut c = client();
    let actions = c.start(secs(0), None);
    let (discover, to) = only_send(&actions);
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(c.state(), State::Selecting);
    assert_eq!(discover.opcode(), Opcode::BootRequest);
    assert_eq!(msg_type(&discover), MessageType::Discover);
    assert!(
        discover.flags().broadcast(),
        "unconfigured: replies must be broadcast"
    );
    assert_eq!(discover.chaddr(), MAC.octets());
    assert_eq!(discover.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        opt(&discover, OptionCode::ClientIdentifier),
        Some(&DhcpOption::ClientIdentifier(vec![
            1, 2, 0x11, 0x22, 0x33, 0x44, 0x55
        ]))
    );
    assert_eq!(
        opt(&discover, OptionCode::ParameterRequestList),
        Some(&DhcpOption::ParameterRequestList(
            REQUESTED_OPTIONS.to_vec()
        ))
    );
    let codes: Vec<u8> = REQUESTED_OPTIONS.iter().map(|c| u8::from(*c)).collect();
    assert_eq!(codes, [1, 3, 6, 51, 54, 58, 59]);
    assert!(
        opt(&discover, OptionCode::Hostname).is_none(),
        "no host name by default"
    );
    assert!(opt(&discover, OptionCode::RequestedIpAddress).is_none());

    let offer = reply(&discover, MessageType::Offer, OFFERED, SERVER);
    let (request, to) = only_send(&c.handle_packet(secs(1), &offer, SERVER));
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(c.state(), State::Requesting);
    assert_eq!(msg_type(&request), MessageType::Request);
    assert_eq!(
        request.xid(),
        discover.xid(),
        "REQUEST keeps the offer's xid"
    );
    assert!(request.flags().broadcast());
    assert_eq!(request.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        opt(&request, OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(OFFERED))
    );
    assert_eq!(
        opt(&request, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );

    let ack = reply(&request, MessageType::Ack, OFFERED, SERVER);
    let actions = c.handle_packet(secs(2), &ack, SERVER);
    let expected = Lease {
        address: OFFERED,
        prefix_len: 24,
        router: Some(SERVER),
        dns_servers: vec![SERVER],
        server: SERVER,
        lease_time: secs(120),
        t1: secs(60),
        t2: secs(105),
        obtained_at: secs(1),
    };
    assert_eq!(actions, vec![Action::Configure(expected.clone())]);
    assert_eq!(c.state(), State::Bound);
    assert_eq!(c.lease(), Some(&expected));
    assert_eq!(
        c.next_deadline(),
        Some(secs(61)),
        "renew at T1 from the REQUEST"
    );
}

#[test]
fn hostname_only_when_configured() {
    let mut c = Client::new(
        Identity {
            mac: MAC,
            hostname: Some("gw".into()),
        },
        1,
    );
    let (discover, _) = only_send(&c.start(secs(0), None));
    assert_eq!(
        opt(&discover, OptionCode::Hostname),
        Some(&DhcpOption::Hostname("gw".into()))
    );
}

#[test]
fn renews_at_t1_by_unicast() {
    let (mut c, lease) = bound_client();
    assert!(c.handle_timeout(secs(60)).is_empty(), "nothing before T1");
    assert_eq!(c.state(), State::Bound);

    let actions = c.handle_timeout(secs(61));
    let (request, to) = only_send(&actions);
    assert_eq!(c.state(), State::Renewing);
    assert_eq!(to, Destination::Unicast(SERVER));
    assert_eq!(msg_type(&request), MessageType::Request);
    assert_eq!(request.ciaddr(), OFFERED);
    assert!(!request.flags().broadcast());
    assert!(opt(&request, OptionCode::RequestedIpAddress).is_none());
    assert!(opt(&request, OptionCode::ServerIdentifier).is_none());

    let ack = reply(&request, MessageType::Ack, OFFERED, SERVER);
    let actions = c.handle_packet(secs(62), &ack, SERVER);
    let renewed = Lease {
        obtained_at: secs(61),
        ..lease
    };
    assert_eq!(
        actions,
        vec![Action::Configure(renewed)],
        "no Deconfigure on renewal"
    );
    assert_eq!(c.state(), State::Bound);
    assert_eq!(c.next_deadline(), Some(secs(121)));
}

#[test]
fn rebinds_at_t2_by_broadcast_then_expires() {
    let (mut c, lease) = bound_client();
    let (renew, _) = only_send(&c.handle_timeout(secs(61)));
    // T2 is at 106 s: half of the 45 s left is below the 60 s floor, so the next try is at T2.
    assert_eq!(c.next_deadline(), Some(lease.rebind_at()));
    let actions = c.handle_timeout(lease.rebind_at());
    let (rebind, to) = only_send(&actions);
    assert_eq!(c.state(), State::Rebinding);
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(rebind.ciaddr(), OFFERED);
    assert!(
        !rebind.flags().broadcast(),
        "the server can unicast to ciaddr"
    );
    assert_ne!(rebind.xid(), renew.xid(), "a new exchange");
    assert!(opt(&rebind, OptionCode::ServerIdentifier).is_none());
    assert_eq!(c.next_deadline(), Some(lease.expires_at()));

    // Nobody answers: the lease ends, the address goes, and discovery starts over asking for it.
    let actions = c.handle_timeout(lease.expires_at());
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(actions[0], Action::Deconfigure(lease.clone()));
    let (discover, _) = only_send(&actions);
    assert_eq!(msg_type(&discover), MessageType::Discover);
    assert_eq!(
        opt(&discover, OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(OFFERED))
    );
    assert_eq!(c.state(), State::Selecting);
    assert!(c.lease().is_none());
}

#[test]
fn rebinding_accepts_any_server() {
    let (mut c, lease) = bound_client();
    only_send(&c.handle_timeout(secs(61)));
    let (rebind, _) = only_send(&c.handle_timeout(lease.rebind_at()));
    let ack = reply(&rebind, MessageType::Ack, OFFERED, OTHER_SERVER);
    let actions = c.handle_packet(secs(107), &ack, OTHER_SERVER);
    assert!(matches!(actions.as_slice(), [Action::Configure(l)] if l.server == OTHER_SERVER));
    assert_eq!(c.state(), State::Bound);
}

#[test]
fn renewal_with_a_new_address_replaces_the_old() {
    let (mut c, lease) = bound_client();
    let (renew, _) = only_send(&c.handle_timeout(secs(61)));
    let other = Ipv4Addr::new(192, 0, 2, 151);
    let ack = reply(&renew, MessageType::Ack, other, SERVER);
    let actions = c.handle_packet(secs(62), &ack, SERVER);
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[0], Action::Deconfigure(lease));
    assert!(matches!(&actions[1], Action::Configure(l) if l.address == other));
}

#[test]
fn nak_while_requesting_restarts_discovery() {
    let mut c = client();
    let (discover, _) = only_send(&c.start(secs(0), None));
    let offer = reply(&discover, MessageType::Offer, OFFERED, SERVER);
    let (request, _) = only_send(&c.handle_packet(secs(1), &offer, SERVER));
    let nak = reply(&request, MessageType::Nak, Ipv4Addr::UNSPECIFIED, SERVER);
    let (again, _) = only_send(&c.handle_packet(secs(2), &nak, SERVER));
    assert_eq!(msg_type(&again), MessageType::Discover);
    assert_eq!(c.state(), State::Selecting);
    assert_ne!(again.xid(), discover.xid());
    assert!(opt(&again, OptionCode::RequestedIpAddress).is_none());
}

#[test]
fn nak_while_renewing_drops_the_lease() {
    let (mut c, lease) = bound_client();
    let (renew, _) = only_send(&c.handle_timeout(secs(61)));
    let nak = reply(&renew, MessageType::Nak, Ipv4Addr::UNSPECIFIED, SERVER);
    let actions = c.handle_packet(secs(62), &nak, SERVER);
    assert_eq!(actions[0], Action::Deconfigure(lease));
    let (discover, _) = only_send(&actions);
    assert_eq!(msg_type(&discover), MessageType::Discover);
    assert!(
        opt(&discover, OptionCode::RequestedIpAddress).is_none(),
        "a refused address is not asked for again"
    );
    assert!(c.lease().is_none());
}

#[test]
fn repeated_naks_pause_before_discovering() {
    let mut c = client();
    let (mut discover, _) = only_send(&c.start(secs(0), None));
    let mut now = secs(0);
    for round in 0..3u32 {
        let offer = reply(&discover, MessageType::Offer, OFFERED, SERVER);
        let (request, _) = only_send(&c.handle_packet(now, &offer, SERVER));
        let nak = reply(&request, MessageType::Nak, Ipv4Addr::UNSPECIFIED, SERVER);
        let actions = c.handle_packet(now, &nak, SERVER);
        if round == 0 {
            discover = only_send(&actions).0;
            continue;
        }
        assert!(actions.is_empty(), "round {round}: {actions:?}");
        assert_eq!(c.state(), State::Init);
        let pause = secs(4 << (round - 1));
        assert_eq!(c.next_deadline(), Some(now + pause));
        assert!(c.handle_timeout(now + pause - secs(1)).is_empty());
        now += pause;
        discover = only_send(&c.handle_timeout(now)).0;
        assert_eq!(c.state(), State::Selecting);
    }
}

#[test]
fn nak_from_another_server_is_ignored_while_requesting() {
    let mut c = client();
    let (discover, _) = only_send(&c.start(secs(0), None));
    let offer = reply(&discover, MessageType::Offer, OFFERED, SERVER);
    let (request, _) = only_send(&c.handle_packet(secs(1), &offer, SERVER));
    let nak = reply(
        &request,
        MessageType::Nak,
        Ipv4Addr::UNSPECIFIED,
        OTHER_SERVER,
    );
    assert!(c.handle_packet(secs(2), &nak, OTHER_SERVER).is_empty());
    let ack = reply(&request, MessageType::Ack, OFFERED, OTHER_SERVER);
    assert!(c.handle_packet(secs(2), &ack, OTHER_SERVER).is_empty());
    assert_eq!(c.state(), State::Requesting);
}

#[test]
fn init_reboot_confirms_the_remembered_address() {
    let mut c = client();
    let remembered = Remembered {
        address: OFFERED,
        reboot: true,
    };
    let (request, to) = only_send(&c.start(secs(0), Some(remembered)));
    assert_eq!(c.state(), State::Rebooting);
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(msg_type(&request), MessageType::Request);
    assert_eq!(request.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(request.flags().broadcast());
    assert_eq!(
        opt(&request, OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(OFFERED))
    );
    assert!(opt(&request, OptionCode::ServerIdentifier).is_none());

    let ack = reply(&request, MessageType::Ack, OFFERED, SERVER);
    let actions = c.handle_packet(secs(1), &ack, SERVER);
    assert!(matches!(actions.as_slice(), [Action::Configure(l)] if l.address == OFFERED));
    assert_eq!(c.state(), State::Bound);
}

#[test]
fn init_reboot_nak_and_silence_fall_back_to_discovery() {
    let remembered = Remembered {
        address: OFFERED,
        reboot: true,
    };
    let mut c = client();
    let (request, _) = only_send(&c.start(secs(0), Some(remembered)));
    let nak = reply(&request, MessageType::Nak, Ipv4Addr::UNSPECIFIED, SERVER);
    let (discover, _) = only_send(&c.handle_packet(secs(1), &nak, SERVER));
    assert_eq!(msg_type(&discover), MessageType::Discover);
    assert!(opt(&discover, OptionCode::RequestedIpAddress).is_none());

    // A non-authoritative server that does not know the lease says nothing.
    let mut c = client();
    only_send(&c.start(secs(0), Some(remembered)));
    let mut sent = 1;
    let discover = loop {
        let now = c.next_deadline().expect("a retransmission timer");
        let (msg, _) = only_send(&c.handle_timeout(now));
        if msg_type(&msg) == MessageType::Discover {
            break msg;
        }
        sent += 1;
    };
    assert_eq!(sent, MAX_REBOOT_REQUESTS);
    assert_eq!(
        opt(&discover, OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(OFFERED)),
        "still worth asking for"
    );
}

#[test]
fn released_address_is_only_a_hint() {
    let mut c = client();
    let remembered = Remembered {
        address: OFFERED,
        reboot: false,
    };
    let (discover, _) = only_send(&c.start(secs(0), Some(remembered)));
    assert_eq!(msg_type(&discover), MessageType::Discover);
    assert_eq!(
        opt(&discover, OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(OFFERED))
    );
}

#[test]
fn retransmission_schedule_stays_in_bounds() {
    for seed in 1..50u64 {
        let mut c = Client::new(
            Identity {
                mac: MAC,
                hostname: None,
            },
            seed,
        );
        let (first, _) = only_send(&c.start(secs(0), None));
        let mut last = Duration::ZERO;
        for attempt in 0..8u32 {
            let deadline = c.next_deadline().expect("retransmission timer");
            let base = (4u64 << attempt).min(64);
            let interval = deadline - last;
            assert!(
                interval >= secs(base - 1) && interval <= secs(base + 1),
                "seed {seed} attempt {attempt}: {interval:?} not within {base}±1 s"
            );
            let (again, _) = only_send(&c.handle_timeout(deadline));
            assert_eq!(again.xid(), first.xid(), "retransmissions keep the xid");
            assert_eq!(
                u64::from(again.secs()),
                deadline.as_secs(),
                "secs since start"
            );
            last = deadline;
        }
    }
}

#[test]
fn requesting_gives_up_after_four_requests() {
    let mut c = client();
    let (discover, _) = only_send(&c.start(secs(0), None));
    let offer = reply(&discover, MessageType::Offer, OFFERED, SERVER);
    only_send(&c.handle_packet(secs(1), &offer, SERVER));
    for _ in 1..MAX_REQUESTS {
        let now = c.next_deadline().unwrap();
        let (msg, _) = only_send(&c.handle_timeout(now));
        assert_eq!(msg_type(&msg), MessageType::Request);
    }
    let now = c.next_deadline().unwrap();
    let (msg, _) = only_send(&c.handle_timeout(now));
    assert_eq!(msg_type(&msg), MessageType::Discover);
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn renewing_retransmits_at_half_the_time_left_but_not_before_60s() {
    let mut c = client();
    let (discover, _) = only_send(&c.start(secs(0), None));
    let mut offer = reply(&discover, MessageType::Offer, OFFERED, SERVER);
    offer.opts_mut().insert(DhcpOption::AddressLeaseTime(3600));
    let (request, _) = only_send(&c.handle_packet(secs(0), &offer, SERVER));
    let mut ack = reply(&request, MessageType::Ack, OFFERED, SERVER);
    ack.opts_mut().insert(DhcpOption::AddressLeaseTime(3600));
    c.handle_packet(secs(0), &ack, SERVER);
    // T1 1800, T2 3150: the first retransmission is (3150 - 1800) / 2 = 675 s later.
    only_send(&c.handle_timeout(secs(1800)));
    assert_eq!(c.next_deadline(), Some(secs(2475)));
    only_send(&c.handle_timeout(secs(2475)));
    assert_eq!(
        c.next_deadline(),
        Some(secs(2475 + 337) + Duration::from_millis(500))
    );
    only_send(&c.handle_timeout(secs(3100)));
    assert_eq!(c.next_deadline(), Some(secs(3150)), "capped at T2");
    only_send(&c.handle_timeout(secs(3150)));
    assert_eq!(c.state(), State::Rebinding);
    // (3600 - 3150) / 2 = 225 s.
    assert_eq!(c.next_deadline(), Some(secs(3375)));
}

#[test]
fn foreign_and_malformed_replies_are_ignored() {
    let mut c = client();
    let (discover, _) = only_send(&c.start(secs(0), None));
    let good = reply(&discover, MessageType::Offer, OFFERED, SERVER);

    let mut wrong_xid = good.clone();
    wrong_xid.set_xid(discover.xid().wrapping_add(1));
    let mut wrong_chaddr = good.clone();
    wrong_chaddr.set_chaddr(&[0x02, 0, 0, 0, 0, 1]);
    let mut request_op = good.clone();
    request_op.set_opcode(Opcode::BootRequest);
    let mut long_chaddr = good.clone();
    long_chaddr.set_chaddr(&[0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0, 0, 0, 0]);
    let mut no_server_id = good.clone();
    no_server_id.opts_mut().remove(OptionCode::ServerIdentifier);
    let mut zero_yiaddr = good.clone();
    zero_yiaddr.set_yiaddr(Ipv4Addr::UNSPECIFIED);
    let mut broadcast_yiaddr = good.clone();
    broadcast_yiaddr.set_yiaddr(Ipv4Addr::BROADCAST);
    let mut no_type = good.clone();
    no_type.opts_mut().remove(OptionCode::MessageType);
    let ack_in_selecting = reply(&discover, MessageType::Ack, OFFERED, SERVER);
    let mut wrong_htype = good.clone();
    wrong_htype.set_htype(HType::ExperimentalEth);

    for (name, msg) in [
        ("wrong xid", wrong_xid),
        ("wrong chaddr", wrong_chaddr),
        ("BOOTREQUEST", request_op),
        ("chaddr of another length", long_chaddr),
        ("no server identifier", no_server_id),
        ("yiaddr 0.0.0.0", zero_yiaddr),
        ("yiaddr broadcast", broadcast_yiaddr),
        ("no message type", no_type),
        ("ACK while selecting", ack_in_selecting),
        ("not Ethernet", wrong_htype),
    ] {
        assert!(c.handle_packet(secs(1), &msg, SERVER).is_empty(), "{name}");
        assert_eq!(c.state(), State::Selecting, "{name}");
    }

    // An ACK without a lease time is unusable.
    let (request, _) = only_send(&c.handle_packet(secs(1), &good, SERVER));
    let mut no_lease_time = reply(&request, MessageType::Ack, OFFERED, SERVER);
    no_lease_time
        .opts_mut()
        .remove(OptionCode::AddressLeaseTime);
    assert!(c.handle_packet(secs(2), &no_lease_time, SERVER).is_empty());
    let mut bad_mask = reply(&request, MessageType::Ack, OFFERED, SERVER);
    bad_mask
        .opts_mut()
        .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
    assert!(c.handle_packet(secs(2), &bad_mask, SERVER).is_empty());
    assert_eq!(c.state(), State::Requesting);

    // Once bound, even a well-formed duplicate of the ACK changes nothing.
    let ack = reply(&request, MessageType::Ack, OFFERED, SERVER);
    assert_eq!(c.handle_packet(secs(2), &ack, SERVER).len(), 1);
    assert!(c.handle_packet(secs(3), &ack, SERVER).is_empty());
}

#[test]
fn release_sends_release_and_deconfigures() {
    let (mut c, lease) = bound_client();
    let actions = c.release(secs(10));
    assert_eq!(actions.len(), 2);
    let (release, to) = only_send(&actions);
    assert_eq!(to, Destination::Unicast(SERVER));
    assert_eq!(msg_type(&release), MessageType::Release);
    assert_eq!(release.ciaddr(), OFFERED);
    assert_eq!(
        opt(&release, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(&release, OptionCode::ClientIdentifier),
        Some(&DhcpOption::ClientIdentifier(
            Identity {
                mac: MAC,
                hostname: None
            }
            .client_id()
        ))
    );
    assert_eq!(actions[1], Action::Deconfigure(lease));
    assert_eq!(c.state(), State::Stopped);
    assert_eq!(c.next_deadline(), None);
    assert!(c.handle_timeout(secs(1000)).is_empty());

    let mut c = client();
    c.start(secs(0), None);
    assert!(
        c.release(secs(1)).is_empty(),
        "nothing to release while selecting"
    );
    assert_eq!(c.state(), State::Stopped);
}

#[test]
fn timers_are_sanitised() {
    assert_eq!(timers(100, None, None), (secs(50), secs(87)));
    assert_eq!(timers(100, Some(30), Some(60)), (secs(30), secs(60)));
    assert_eq!(
        timers(100, Some(70), Some(60)),
        (secs(50), secs(87)),
        "T1 > T2"
    );
    assert_eq!(
        timers(100, Some(30), Some(200)),
        (secs(50), secs(87)),
        "T2 > lease"
    );
    assert_eq!(timers(100, Some(20), None), (secs(20), secs(87)));
    let infinite = secs(u64::from(u32::MAX));
    assert_eq!(timers(u32::MAX, Some(1), Some(2)), (infinite, infinite));
}

#[test]
fn masks() {
    assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
    assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
    assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 0, 255)), None);
    assert_eq!(prefix_of(Ipv4Addr::UNSPECIFIED), None);
    assert_eq!(classful_prefix(Ipv4Addr::new(10, 1, 2, 3)), 8);
    assert_eq!(classful_prefix(Ipv4Addr::new(192, 0, 2, 3)), 24);
}

#[test]
fn infinite_lease_is_never_renewed() {
    let mut c = client();
    let (discover, _) = only_send(&c.start(secs(0), None));
    let offer = reply(&discover, MessageType::Offer, OFFERED, SERVER);
    let (request, _) = only_send(&c.handle_packet(secs(0), &offer, SERVER));
    let mut ack = reply(&request, MessageType::Ack, OFFERED, SERVER);
    ack.opts_mut()
        .insert(DhcpOption::AddressLeaseTime(u32::MAX));
    let actions = c.handle_packet(secs(0), &ack, SERVER);
    assert!(matches!(actions.as_slice(), [Action::Configure(l)] if l.is_infinite()));
    assert!(c.handle_timeout(secs(10 * 365 * 86_400)).is_empty());
}
