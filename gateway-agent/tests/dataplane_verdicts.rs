//! The eBPF programs' verdicts over tables of crafted frames, run in the kernel with
//! BPF_PROG_TEST_RUN. Each row names the expected verdict and the drop counter it must bump.

// Clippy's allow-*-in-tests covers #[test] functions only, not the setup helpers in this
// file; a test whose setup fails should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::Ipv4Addr;

use aya::{
    maps::{Array, HashMap as AyaHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{SchedClassifier, SkLookup, TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use gateway_agent::{config, dataplane};
use gateway_common::{
    maps::{names, programs, ClientStats, DataplaneConfig, LeaseValue, MacKey},
    DropReason,
};
use gateway_tests::frames::*;
use gateway_tests::skip_unless_root;

const XDP_PASS: u32 = 2;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_UNSPEC: u32 = u32::MAX; // -1: hand on to the next program or the stack

const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const ORIGIN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const UPLINK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const UPLINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];

fn lab_like_config(allow_ping: bool) -> config::Config {
    config_with(allow_ping, false, false)
}

fn config_with(allow_ping: bool, accept_relayed: bool, steer: bool) -> config::Config {
    let text = format!(
        r#"
[interfaces]
outside = "outside0"
inside = "inside0"
[inside]
address = "198.51.100.1/24"
[dataplane]
allow_ping = {allow_ping}
allow = ["tcp/22"]
[dhcp]
accept_relayed = {accept_relayed}
[transparent]
enabled = {steer}
[dns]
steer = {steer}
"#
    );
    config::parse(&text).expect("the test config is valid")
}

/// A MAC with no lease.
const STRANGER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
/// An inside address leased to nobody.
const UNLEASED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);

/// Gives `mac` the lease of `ip`, as the agent's lease maps do on a DHCP ACK.
fn lease(ebpf: &mut Ebpf, mac: [u8; 6], ip: Ipv4Addr) {
    let mut leases: AyaHashMap<_, MacKey, LeaseValue> =
        ebpf.map_mut(names::LEASES).unwrap().try_into().unwrap();
    let value = LeaseValue {
        ipv4: u32::from_ne_bytes(ip.octets()),
        flags: 0,
        expires_unix: u64::MAX,
    };
    leases.insert(MacKey::new(mac), value, 0).unwrap();
}

/// The object loaded, configured (unless `cfg` is None) and both programs loaded.
fn load(cfg: Option<&config::Config>) -> Ebpf {
    let mut ebpf = dataplane::load_object().expect("load the eBPF object");
    if let Some(cfg) = cfg {
        dataplane::settings::write(&mut ebpf, cfg, UPLINK_MAC.into())
            .expect("fill CONFIG and OPEN_PORTS");
        lease(&mut ebpf, CLIENT_MAC, CLIENT);
    }
    let xdp: &mut Xdp = ebpf
        .program_mut(programs::INSIDE_INGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    xdp.load().expect("verifier accepts inside_ingress");
    let tc: &mut SchedClassifier = ebpf
        .program_mut(programs::OUTSIDE_EGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    tc.load().expect("verifier accepts outside_egress");
    let tc: &mut SchedClassifier = ebpf
        .program_mut(programs::OUTSIDE_INGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    tc.load().expect("verifier accepts outside_ingress");
    let tc: &mut SchedClassifier = ebpf
        .program_mut(programs::PARENT_INGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    tc.load().expect("verifier accepts parent_ingress");
    let tc: &mut SchedClassifier = ebpf
        .program_mut(programs::INSIDE_VLAN)
        .unwrap()
        .try_into()
        .unwrap();
    tc.load().expect("verifier accepts inside_vlan");
    let steer: &mut SkLookup = ebpf
        .program_mut(programs::INSIDE_STEER)
        .unwrap()
        .try_into()
        .unwrap();
    steer.load().expect("verifier accepts inside_steer");
    ebpf
}

fn drops(ebpf: &Ebpf) -> Vec<u64> {
    let map: PerCpuArray<_, u64> = ebpf.map(names::DROPS).unwrap().try_into().unwrap();
    DropReason::ALL
        .iter()
        .map(|r| map.get(&(*r as u32), 0).unwrap().iter().sum())
        .collect()
}

fn run_xdp(ebpf: &Ebpf, frame: &[u8]) -> u32 {
    let prog: &Xdp = ebpf
        .program(programs::INSIDE_INGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ..Default::default()
    })
    .expect("BPF_PROG_TEST_RUN")
    .return_value
}

fn run_tc(ebpf: &Ebpf, frame: &[u8]) -> u32 {
    run_classifier(ebpf, programs::OUTSIDE_EGRESS, frame)
}

fn run_outside_ingress(ebpf: &Ebpf, frame: &[u8]) -> u32 {
    run_classifier(ebpf, programs::OUTSIDE_INGRESS, frame)
}

fn run_parent_ingress(ebpf: &Ebpf, frame: &[u8]) -> u32 {
    run_classifier(ebpf, programs::PARENT_INGRESS, frame)
}

fn run_classifier(ebpf: &Ebpf, program: &str, frame: &[u8]) -> u32 {
    let prog: &SchedClassifier = ebpf.program(program).unwrap().try_into().unwrap();
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ..Default::default()
    })
    .expect("BPF_PROG_TEST_RUN")
    .return_value
}

/// Runs `frame` and checks the verdict and exactly which counter moved.
fn expect(
    ebpf: &Ebpf,
    run: fn(&Ebpf, &[u8]) -> u32,
    pass: u32,
    name: &str,
    frame: &[u8],
    want: Option<DropReason>,
) {
    let before = drops(ebpf);
    let verdict = run(ebpf, frame);
    let after = drops(ebpf);
    match want {
        None => assert_eq!(verdict, pass, "{name}: expected pass, got {verdict}"),
        Some(reason) => assert_ne!(verdict, pass, "{name}: expected a drop ({reason:?})"),
    }
    for reason in DropReason::ALL {
        let i = *reason as usize;
        let delta = after[i] - before[i];
        let expected = u64::from(want == Some(*reason));
        assert_eq!(
            delta,
            expected,
            "{name}: counter {} moved by {delta}, expected {expected}",
            reason.name()
        );
    }
}

fn ip(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> Ip {
    Ip::new(src, dst, protocol)
}

/// A client's DHCPDISCOVER-shaped message (no relay) with `chaddr`.
fn discover(chaddr: [u8; 6]) -> Vec<u8> {
    bootp(68, 67, 1, Ipv4Addr::UNSPECIFIED, chaddr)
}

/// An ARP request whose sender MAC is `sender_mac` in a frame from `frame_mac`.
fn arp_with_frame_source(sender_mac: [u8; 6], frame_mac: [u8; 6], sender_ip: Ipv4Addr) -> Vec<u8> {
    let mut frame = arp_request(sender_mac, sender_ip, GATEWAY);
    frame[6..12].copy_from_slice(&frame_mac);
    frame
}

#[test]
fn steering_passes_inside_tcp_to_other_hosts_and_dns_to_any() {
    if skip_unless_root("loads eBPF programs and runs them with BPF_PROG_TEST_RUN") {
        return;
    }
    let cfg = config_with(true, false, true);
    let ebpf = load(Some(&cfg));
    let other_client = Ipv4Addr::new(198, 51, 100, 12);
    use DropReason::*;
    let table: Vec<(&str, Vec<u8>, Option<DropReason>)> = vec![
        (
            "TCP to an outside address (to the transparent listener)",
            client_ipv4(Ip::new(CLIENT, ORIGIN, 6), &tcp_syn(40000, 80)),
            None,
        ),
        (
            "TCP to the uplink address (steered as well)",
            client_ipv4(Ip::new(CLIENT, UPLINK, 6), &tcp_syn(40000, 22)),
            None,
        ),
        (
            "TCP to another inside host",
            client_ipv4(Ip::new(CLIENT, other_client, 6), &tcp_syn(40000, 80)),
            Some(ForeignDestination),
        ),
        (
            "TCP to a closed gateway port",
            client_ipv4(Ip::new(CLIENT, GATEWAY, 6), &tcp_syn(40000, 8080)),
            Some(PortClosed),
        ),
        (
            "UDP to an outside address",
            client_ipv4(Ip::new(CLIENT, ORIGIN, 17), &udp(40000, 443)),
            Some(ForeignDestination),
        ),
        (
            "TCP to an outside address from a spoofed source",
            client_ipv4(Ip::new(UNLEASED, ORIGIN, 6), &tcp_syn(40000, 80)),
            Some(SpoofedSource),
        ),
        (
            "UDP DNS to an outside resolver (to the DNS server)",
            client_ipv4(Ip::new(CLIENT, ORIGIN, 17), &udp(40000, 53)),
            None,
        ),
        (
            "UDP DNS to another inside host (to the DNS server as well)",
            client_ipv4(Ip::new(CLIENT, other_client, 17), &udp(40000, 53)),
            None,
        ),
        (
            "TCP DNS to another inside host (to the DNS server as well)",
            client_ipv4(Ip::new(CLIENT, other_client, 6), &tcp_syn(40000, 53)),
            None,
        ),
        (
            "UDP DNS to an outside resolver from a spoofed source",
            client_ipv4(Ip::new(UNLEASED, ORIGIN, 17), &udp(40000, 53)),
            Some(SpoofedSource),
        ),
        (
            "UDP to port 5353 of an outside address",
            client_ipv4(Ip::new(CLIENT, ORIGIN, 17), &udp(40000, 5353)),
            Some(ForeignDestination),
        ),
    ];
    for (name, frame, want) in &table {
        expect(&ebpf, run_xdp, XDP_PASS, name, frame, *want);
    }
}

#[test]
fn relayed_dhcp_needs_accept_relayed_and_a_leased_relay() {
    if skip_unless_root("loads eBPF programs and runs them with BPF_PROG_TEST_RUN") {
        return;
    }
    let cfg = config_with(true, true, false);
    let ebpf = load(Some(&cfg));
    let relayed = |src: Ipv4Addr| {
        client_ipv4(
            Ip::new(src, GATEWAY, 17),
            &bootp(67, 67, 1, src, STRANGER_MAC),
        )
    };
    use DropReason::*;
    let table: Vec<(&str, Vec<u8>, Option<DropReason>)> = vec![
        ("a relay with a lease", relayed(CLIENT), None),
        (
            "a relay from an unleased address",
            relayed(UNLEASED),
            Some(SpoofedSource),
        ),
    ];
    for (name, frame, want) in &table {
        expect(&ebpf, run_xdp, XDP_PASS, name, frame, *want);
    }
}

#[test]
fn inside_ingress_verdicts() {
    if skip_unless_root("loads eBPF programs and runs them with BPF_PROG_TEST_RUN") {
        return;
    }
    let cfg = lab_like_config(true);
    let ebpf = load(Some(&cfg));
    let (tcp, udp_, icmp_) = (6, 17, 1);
    let mut truncated_total = client_ipv4(ip(CLIENT, GATEWAY, tcp), &tcp_syn(40000, 53));
    truncated_total.truncate(14 + 20 + 10); // the TCP header is cut, total length says 40
    let mut fragment_mf = ip(CLIENT, GATEWAY, udp_);
    fragment_mf.frag = 0x2000;
    let mut fragment_offset = ip(CLIENT, GATEWAY, udp_);
    fragment_offset.frag = 0x0010;
    let mut bad_version = ip(CLIENT, GATEWAY, tcp);
    bad_version.version_ihl = 0x65;
    let mut short_ihl = ip(CLIENT, GATEWAY, tcp);
    short_ihl.version_ihl = 0x44;
    let ipv4_to_gateway_dns = ipv4(ip(CLIENT, GATEWAY, udp_), &udp(40000, 53));
    let mut header_only = client_ipv4(ip(CLIENT, GATEWAY, tcp), &tcp_syn(1, 2));
    header_only.truncate(14);
    let mut short_tcp = ipv4(ip(CLIENT, GATEWAY, tcp), &tcp_syn(40000, 53)[..12]);
    // A consistent total length, so only the short TCP header is wrong.
    short_tcp[2..4].copy_from_slice(&(32u16).to_be_bytes());
    let short_tcp = ethernet(CLIENT_MAC, GATEWAY_MAC, ETH_P_IP, &short_tcp);

    use DropReason::*;
    let table: Vec<(&str, Vec<u8>, Option<DropReason>)> = vec![
        (
            "ARP request",
            arp_request(CLIENT_MAC, CLIENT, GATEWAY),
            None,
        ),
        (
            "DHCP discover from 0.0.0.0",
            client_ipv4(
                ip(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, udp_),
                &discover(CLIENT_MAC),
            ),
            None,
        ),
        (
            "DHCP renew unicast to the gateway",
            client_ipv4(ip(CLIENT, GATEWAY, udp_), &discover(CLIENT_MAC)),
            None,
        ),
        (
            "DHCP discover from a MAC without a lease",
            ethernet(
                STRANGER_MAC,
                [0xff; 6],
                ETH_P_IP,
                &ipv4(
                    ip(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, udp_),
                    &discover(STRANGER_MAC),
                ),
            ),
            None,
        ),
        (
            "DHCP discover with another MAC as chaddr (pool starvation)",
            client_ipv4(
                ip(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, udp_),
                &discover(STRANGER_MAC),
            ),
            Some(ChaddrMismatch),
        ),
        (
            "DHCP message cut before chaddr",
            client_ipv4(
                ip(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, udp_),
                &udp(68, 67),
            ),
            Some(Truncated),
        ),
        (
            "a client's request with giaddr set, relays off",
            client_ipv4(
                ip(CLIENT, GATEWAY, udp_),
                &bootp(68, 67, 1, CLIENT, CLIENT_MAC),
            ),
            Some(RelayRefused),
        ),
        (
            "TCP from an address not leased to the MAC",
            client_ipv4(ip(UNLEASED, GATEWAY, tcp), &tcp_syn(40000, 53)),
            Some(SpoofedSource),
        ),
        (
            "UDP DNS from an address not leased to the MAC",
            client_ipv4(ip(UNLEASED, GATEWAY, udp_), &udp(40000, 53)),
            Some(SpoofedSource),
        ),
        (
            "TCP from a MAC without a lease",
            ethernet(
                STRANGER_MAC,
                GATEWAY_MAC,
                ETH_P_IP,
                &ipv4(ip(CLIENT, GATEWAY, tcp), &tcp_syn(40000, 53)),
            ),
            Some(SpoofedSource),
        ),
        (
            "ping from 0.0.0.0",
            client_ipv4(ip(Ipv4Addr::UNSPECIFIED, GATEWAY, icmp_), &icmp(8)),
            Some(SpoofedSource),
        ),
        (
            "ARP probe from 0.0.0.0",
            arp_request(CLIENT_MAC, Ipv4Addr::UNSPECIFIED, CLIENT),
            None,
        ),
        (
            "ARP claiming another address",
            arp_request(CLIENT_MAC, UNLEASED, GATEWAY),
            Some(SpoofedArp),
        ),
        (
            "ARP claiming the gateway's address",
            arp_request(CLIENT_MAC, GATEWAY, CLIENT),
            Some(SpoofedArp),
        ),
        (
            "ARP whose sender MAC is not the frame's",
            arp_with_frame_source(STRANGER_MAC, CLIENT_MAC, CLIENT),
            Some(SpoofedArp),
        ),
        (
            "ARP from a MAC without a lease",
            arp_request(STRANGER_MAC, UNLEASED, GATEWAY),
            Some(SpoofedArp),
        ),
        (
            "DHCP request to a foreign server",
            client_ipv4(ip(CLIENT, ORIGIN, udp_), &udp(68, 67)),
            Some(ForeignDestination),
        ),
        (
            "DHCP server reply from a client",
            client_ipv4(ip(CLIENT, Ipv4Addr::BROADCAST, udp_), &udp(67, 68)),
            Some(DhcpServerReply),
        ),
        (
            "DHCP server reply unicast to a client",
            client_ipv4(ip(CLIENT, ORIGIN, udp_), &udp(67, 68)),
            Some(DhcpServerReply),
        ),
        (
            "relayed DHCP request while dhcp.accept_relayed is off",
            client_ipv4(
                ip(CLIENT, GATEWAY, udp_),
                &bootp(67, 67, 1, CLIENT, CLIENT_MAC),
            ),
            Some(RelayRefused),
        ),
        (
            "TCP to the gateway's DNS port",
            client_ipv4(ip(CLIENT, GATEWAY, tcp), &tcp_syn(40000, 53)),
            None,
        ),
        (
            "UDP to the gateway's DNS port",
            client_ipv4(ip(CLIENT, GATEWAY, udp_), &udp(40000, 53)),
            None,
        ),
        (
            "TCP to the SOCKS port",
            client_ipv4(ip(CLIENT, GATEWAY, tcp), &tcp_syn(40000, 9050)),
            None,
        ),
        (
            "TCP to an admin-allowed port (22)",
            client_ipv4(ip(CLIENT, GATEWAY, tcp), &tcp_syn(40000, 22)),
            None,
        ),
        (
            "TCP to a closed gateway port",
            client_ipv4(ip(CLIENT, GATEWAY, tcp), &tcp_syn(40000, 8080)),
            Some(PortClosed),
        ),
        (
            "UDP 22 is not TCP 22",
            client_ipv4(ip(CLIENT, GATEWAY, udp_), &udp(40000, 22)),
            Some(PortClosed),
        ),
        (
            "TCP to an outside address",
            client_ipv4(ip(CLIENT, ORIGIN, tcp), &tcp_syn(40000, 80)),
            Some(ForeignDestination),
        ),
        (
            "UDP DNS to an outside resolver",
            client_ipv4(ip(CLIENT, ORIGIN, udp_), &udp(40000, 53)),
            Some(ForeignDestination),
        ),
        (
            "ping the gateway",
            client_ipv4(ip(CLIENT, GATEWAY, icmp_), &icmp(8)),
            None,
        ),
        (
            "ping an outside address",
            client_ipv4(ip(CLIENT, ORIGIN, icmp_), &icmp(8)),
            Some(ForeignDestination),
        ),
        (
            "ICMP timestamp request to the gateway",
            client_ipv4(ip(CLIENT, GATEWAY, icmp_), &icmp(13)),
            Some(ProtocolNotAllowed),
        ),
        (
            "GRE to the gateway",
            client_ipv4(ip(CLIENT, GATEWAY, 47), &[0; 8]),
            Some(ProtocolNotAllowed),
        ),
        (
            "802.1Q tagged",
            vlan_tagged(0x8100, 10, &ipv4_to_gateway_dns),
            Some(VlanTagged),
        ),
        (
            "802.1ad tagged",
            vlan_tagged(0x88a8, 10, &ipv4_to_gateway_dns),
            Some(VlanTagged),
        ),
        ("IPv6", ipv6_udp(), Some(Ipv6)),
        (
            "LLDP (unknown ethertype)",
            ethernet(CLIENT_MAC, GATEWAY_MAC, 0x88cc, &[0; 46]),
            Some(UnknownEthertype),
        ),
        ("runt: Ethernet header only", header_only, Some(Truncated)),
        (
            "total length beyond the frame",
            truncated_total,
            Some(Truncated),
        ),
        ("TCP header cut short", short_tcp, Some(Truncated)),
        (
            "IP version 6 in an IPv4 frame",
            client_ipv4(bad_version, &tcp_syn(40000, 53)),
            Some(MalformedIpv4),
        ),
        (
            "IHL below 5",
            client_ipv4(short_ihl, &tcp_syn(40000, 53)),
            Some(MalformedIpv4),
        ),
        (
            "first fragment (MF)",
            client_ipv4(fragment_mf, &udp(40000, 53)),
            Some(Fragment),
        ),
        (
            "later fragment (offset)",
            client_ipv4(fragment_offset, &udp(40000, 53)),
            Some(Fragment),
        ),
    ];
    for (name, frame, want) in &table {
        expect(&ebpf, run_xdp, XDP_PASS, name, frame, *want);
    }
}

#[test]
fn ping_is_dropped_when_not_allowed() {
    if skip_unless_root("loads eBPF programs and runs them with BPF_PROG_TEST_RUN") {
        return;
    }
    let cfg = lab_like_config(false);
    let ebpf = load(Some(&cfg));
    expect(
        &ebpf,
        run_xdp,
        XDP_PASS,
        "ping the gateway, allow_ping = false",
        &client_ipv4(Ip::new(CLIENT, GATEWAY, 1), &icmp(8)),
        Some(DropReason::ProtocolNotAllowed),
    );
}

#[test]
fn unconfigured_dataplane_drops_everything() {
    if skip_unless_root("loads eBPF programs and runs them with BPF_PROG_TEST_RUN") {
        return;
    }
    let ebpf = load(None);
    let config: Array<_, DataplaneConfig> = ebpf.map(names::CONFIG).unwrap().try_into().unwrap();
    assert_eq!(config.get(&0, 0).unwrap(), DataplaneConfig::default());
    expect(
        &ebpf,
        run_xdp,
        XDP_PASS,
        "ARP before the agent configured the maps",
        &arp_request(CLIENT_MAC, CLIENT, GATEWAY),
        Some(DropReason::NotConfigured),
    );
}

#[test]
fn client_counters_follow_the_source_mac() {
    if skip_unless_root("loads eBPF programs and runs them with BPF_PROG_TEST_RUN") {
        return;
    }
    let cfg = lab_like_config(true);
    let ebpf = load(Some(&cfg));
    let allowed = client_ipv4(Ip::new(CLIENT, GATEWAY, 6), &tcp_syn(40000, 53));
    let dropped = client_ipv4(Ip::new(CLIENT, ORIGIN, 6), &tcp_syn(40000, 80));
    run_xdp(&ebpf, &allowed);
    run_xdp(&ebpf, &dropped);
    run_xdp(&ebpf, &dropped);
    let map: PerCpuHashMap<_, MacKey, ClientStats> =
        ebpf.map(names::CLIENT_STATS).unwrap().try_into().unwrap();
    let per_cpu = map.get(&MacKey::new(CLIENT_MAC), 0).expect("client entry");
    let packets: u64 = per_cpu.iter().map(|s| s.packets).sum();
    let bytes: u64 = per_cpu.iter().map(|s| s.bytes).sum();
    let dropped_count: u64 = per_cpu.iter().map(|s| s.dropped).sum();
    assert_eq!(packets, 3);
    assert_eq!(bytes, (allowed.len() + 2 * dropped.len()) as u64);
    assert_eq!(dropped_count, 2);
    let ip = per_cpu
        .iter()
        .find(|s| s.last_ipv4 != 0)
        .map(|s| Ipv4Addr::from(s.last_ipv4.to_ne_bytes()));
    assert_eq!(ip, Some(CLIENT));
}

#[test]
fn outside_egress_verdicts() {
    if skip_unless_root("loads eBPF programs and runs them with BPF_PROG_TEST_RUN") {
        return;
    }
    let cfg = lab_like_config(true);
    let ebpf = load(Some(&cfg));
    let uplink_mac = [0x02, 0, 0, 0, 0, 0x22];
    let modem_mac = [0x02, 0, 0, 0, 0, 0x33];
    let out = |src: Ipv4Addr| {
        ethernet(
            uplink_mac,
            modem_mac,
            ETH_P_IP,
            &ipv4(Ip::new(src, ORIGIN, 6), &tcp_syn(40000, 80)),
        )
    };
    let table: Vec<(&str, Vec<u8>, Option<DropReason>)> = vec![
        ("the gateway's own uplink traffic", out(UPLINK), None),
        (
            "a client's address leaving by the uplink",
            out(CLIENT),
            Some(DropReason::InsideSourceEgress),
        ),
        (
            "the gateway's inside address leaving by the uplink",
            out(GATEWAY),
            Some(DropReason::InsideSourceEgress),
        ),
        (
            "ARP for the modem from the uplink address",
            arp_request(uplink_mac, UPLINK, Ipv4Addr::new(192, 0, 2, 1)),
            None,
        ),
        (
            "ARP announcing an inside address on the uplink",
            arp_request(uplink_mac, GATEWAY, Ipv4Addr::new(192, 0, 2, 1)),
            Some(DropReason::InsideSourceEgress),
        ),
        ("IPv6 is not this program's business", ipv6_udp(), None),
    ];
    for (name, frame, want) in &table {
        expect(&ebpf, run_tc, TC_ACT_UNSPEC, name, frame, *want);
    }
    // The drop verdict is specifically SHOT.
    assert_eq!(run_tc(&ebpf, &out(CLIENT)), TC_ACT_SHOT);
}

#[test]
fn outside_ingress_verdicts() {
    if skip_unless_root("loads eBPF programs and runs them with BPF_PROG_TEST_RUN") {
        return;
    }
    let cfg = lab_like_config(true);
    let ebpf = load(Some(&cfg));
    let uplink_mac = UPLINK_MAC;
    let modem_mac = [0x02, 0, 0, 0, 0, 0x33];
    let inbound = |src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]| {
        ethernet(
            modem_mac,
            uplink_mac,
            ETH_P_IP,
            &ipv4(Ip::new(src, dst, protocol), l4),
        )
    };
    let modem = Ipv4Addr::new(192, 0, 2, 1);
    let mut ack = tcp_syn(80, 40000);
    ack[13] = 0x10;
    let mut syn_ack = tcp_syn(80, 40000);
    syn_ack[13] = 0x12;
    let mut ack_to_service = tcp_syn(40000, 9050);
    ack_to_service[13] = 0x10;
    let mut bootreply = udp(67, 68);
    bootreply[8] = 2;
    let mut bootrequest = udp(67, 68);
    bootrequest[8] = 1;
    // A UDP socket connected to a sender, and one only bound: the lookup must tell them apart.
    let local = Ipv4Addr::LOCALHOST;
    let peer = Ipv4Addr::new(127, 0, 0, 2);
    let connected = std::net::UdpSocket::bind((local, 0)).unwrap();
    connected.connect((peer, 5353)).unwrap();
    let connected_port = connected.local_addr().unwrap().port();
    let bound = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let bound_port = bound.local_addr().unwrap().port();
    let mut fragment = Ip::new(ORIGIN, UPLINK, 6);
    fragment.frag = 0x2000;
    let table: Vec<(&str, Vec<u8>, Option<DropReason>)> = vec![
        (
            "a segment of the agent's own connection",
            inbound(ORIGIN, UPLINK, 6, &ack),
            None,
        ),
        (
            "the SYN-ACK of the agent's own connect",
            inbound(ORIGIN, UPLINK, 6, &syn_ack),
            None,
        ),
        (
            "a SYN to the uplink address",
            inbound(modem, UPLINK, 6, &tcp_syn(40000, 22)),
            Some(DropReason::OutsideUnsolicited),
        ),
        (
            "a segment to a service port",
            inbound(modem, UPLINK, 6, &ack_to_service),
            Some(DropReason::OutsideUnsolicited),
        ),
        (
            "anything to the inside subnet",
            inbound(modem, CLIENT, 6, &ack),
            Some(DropReason::OutsideToInside),
        ),
        (
            "to the gateway's inside address",
            inbound(modem, GATEWAY, 6, &ack),
            Some(DropReason::OutsideToInside),
        ),
        (
            "a DHCP reply for the uplink client",
            inbound(modem, UPLINK, 17, &bootreply),
            None,
        ),
        (
            "a BOOTREQUEST to the client port",
            inbound(modem, UPLINK, 17, &bootrequest),
            Some(DropReason::OutsideUnsolicited),
        ),
        (
            "UDP to the client port from another port",
            inbound(modem, UPLINK, 17, &udp(40000, 68)),
            Some(DropReason::OutsideUnsolicited),
        ),
        (
            "UDP to a service port",
            inbound(modem, UPLINK, 17, &udp(40000, 53)),
            Some(DropReason::OutsideUnsolicited),
        ),
        (
            "a reply to a connected UDP socket",
            inbound(peer, local, 17, &udp(5353, connected_port)),
            None,
        ),
        (
            "the same port from another sender",
            inbound(
                Ipv4Addr::new(127, 0, 0, 3),
                local,
                17,
                &udp(5353, connected_port),
            ),
            Some(DropReason::OutsideUnsolicited),
        ),
        (
            "UDP to a socket that is only bound",
            inbound(peer, local, 17, &udp(5353, bound_port)),
            Some(DropReason::OutsideUnsolicited),
        ),
        (
            "an ICMP error (path MTU)",
            inbound(modem, UPLINK, 1, &icmp(3)),
            None,
        ),
        ("an echo reply", inbound(modem, UPLINK, 1, &icmp(0)), None),
        (
            "an echo request",
            inbound(modem, UPLINK, 1, &icmp(8)),
            Some(DropReason::OutsideUnsolicited),
        ),
        (
            "a fragment",
            ethernet(modem_mac, uplink_mac, ETH_P_IP, &ipv4(fragment, &ack)),
            Some(DropReason::Fragment),
        ),
        (
            "GRE",
            inbound(modem, UPLINK, 47, &[0; 8]),
            Some(DropReason::ProtocolNotAllowed),
        ),
        (
            "ARP from the modem",
            arp_request(modem_mac, modem, UPLINK),
            None,
        ),
        (
            "IPv6 while outside.ipv6 is off",
            ipv6_udp(),
            Some(DropReason::Ipv6),
        ),
    ];
    for (name, frame, want) in &table {
        expect(
            &ebpf,
            run_outside_ingress,
            TC_ACT_UNSPEC,
            name,
            frame,
            *want,
        );
    }
    // The parent NIC: the same rules, but UDP it cannot look up is left to the macvlan when
    // unicast to it, and dropped otherwise.
    let parent_mac = [0x52, 0x54, 0, 0, 0, 1];
    let udp_frame = |dst_mac: [u8; 6], dst: Ipv4Addr, dport: u16| {
        ethernet(
            modem_mac,
            dst_mac,
            ETH_P_IP,
            &ipv4(Ip::new(modem, dst, 17), &udp(5353, dport)),
        )
    };
    let parent_table: Vec<(&str, Vec<u8>, Option<DropReason>)> = vec![
        (
            "UDP unicast to the macvlan (its filter decides)",
            udp_frame(uplink_mac, UPLINK, 40000),
            None,
        ),
        (
            "UDP to the parent's own MAC",
            udp_frame(parent_mac, UPLINK, 40000),
            Some(DropReason::OutsideUnsolicited),
        ),
        (
            "broadcast UDP",
            udp_frame([0xff; 6], Ipv4Addr::BROADCAST, 137),
            Some(DropReason::OutsideUnsolicited),
        ),
        (
            "UDP to a service port, even unicast to the macvlan",
            udp_frame(uplink_mac, UPLINK, 53),
            Some(DropReason::OutsideUnsolicited),
        ),
        ("a DHCP reply", inbound(modem, UPLINK, 17, &bootreply), None),
        (
            "a SYN",
            inbound(modem, UPLINK, 6, &tcp_syn(40000, 22)),
            Some(DropReason::OutsideUnsolicited),
        ),
        (
            "anything to the inside subnet",
            inbound(modem, CLIENT, 6, &ack),
            Some(DropReason::OutsideToInside),
        ),
        (
            "a segment of the agent's own connection",
            inbound(ORIGIN, UPLINK, 6, &ack),
            None,
        ),
    ];
    for (name, frame, want) in &parent_table {
        expect(&ebpf, run_parent_ingress, TC_ACT_UNSPEC, name, frame, *want);
    }
    drop((connected, bound));
}

/// Gives `mac` its own policy, as `gateway-agent clients set` does.
fn set_policy(ebpf: &mut Ebpf, mac: [u8; 6], policy: u32) {
    let mut map: AyaHashMap<_, MacKey, u32> = ebpf
        .map_mut(names::CLIENT_POLICY)
        .unwrap()
        .try_into()
        .unwrap();
    map.insert(MacKey::new(mac), policy, 0).unwrap();
}

#[test]
fn client_policies() {
    if skip_unless_root("loads eBPF programs and runs them with BPF_PROG_TEST_RUN") {
        return;
    }
    use gateway_common::maps::policy;
    use DropReason::*;
    let cfg = config_with(true, false, true);
    let mut ebpf = load(Some(&cfg));
    let (tcp, udp_) = (6, 17);
    let to_origin = || client_ipv4(ip(CLIENT, ORIGIN, tcp), &tcp_syn(40000, 80));
    let dns_out = || client_ipv4(ip(CLIENT, ORIGIN, udp_), &udp(40000, 53));
    let dns_gw = || client_ipv4(ip(CLIENT, GATEWAY, udp_), &udp(40000, 53));
    let discover_ = || {
        client_ipv4(
            ip(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, udp_),
            &discover(CLIENT_MAC),
        )
    };
    let renew = || client_ipv4(ip(CLIENT, GATEWAY, udp_), &discover(CLIENT_MAC));
    let arp = || arp_request(CLIENT_MAC, CLIENT, GATEWAY);

    // transparent (the configured default here): everything the gateway offers.
    for (name, frame) in [("TCP out", to_origin()), ("DNS out", dns_out())] {
        expect(&ebpf, run_xdp, XDP_PASS, name, &frame, None);
    }

    set_policy(&mut ebpf, CLIENT_MAC, policy::PROXY_ONLY);
    let table: Vec<(&str, Vec<u8>, Option<DropReason>)> = vec![
        ("proxy-only: TCP to the origin", to_origin(), Some(Policy)),
        (
            "proxy-only: DNS to another resolver",
            dns_out(),
            Some(Policy),
        ),
        ("proxy-only: DNS to the gateway", dns_gw(), None),
        ("proxy-only: DHCP", discover_(), None),
    ];
    for (name, frame, want) in &table {
        expect(&ebpf, run_xdp, XDP_PASS, name, frame, *want);
    }

    set_policy(&mut ebpf, CLIENT_MAC, policy::BLOCKED);
    let table: Vec<(&str, Vec<u8>, Option<DropReason>)> = vec![
        ("blocked: DHCP discover", discover_(), None),
        ("blocked: DHCP renew", renew(), None),
        ("blocked: ARP", arp(), None),
        ("blocked: DNS to the gateway", dns_gw(), Some(Policy)),
        ("blocked: TCP to the origin", to_origin(), Some(Policy)),
        (
            "blocked: SSH to the gateway",
            client_ipv4(ip(CLIENT, GATEWAY, tcp), &tcp_syn(40000, 22)),
            Some(Policy),
        ),
    ];
    for (name, frame, want) in &table {
        expect(&ebpf, run_xdp, XDP_PASS, name, frame, *want);
    }

    // A default of proxy-only applies to clients without their own entry.
    let text = "[interfaces]\noutside = \"outside0\"\ninside = \"inside0\"\n[inside]\naddress = \"198.51.100.1/24\"\n[dataplane]\ndefault_policy = \"proxy-only\"\n[transparent]\nenabled = true\n";
    let cfg = config::parse(text).expect("valid");
    let ebpf = load(Some(&cfg));
    expect(
        &ebpf,
        run_xdp,
        XDP_PASS,
        "default proxy-only: TCP out",
        &to_origin(),
        Some(Policy),
    );
    expect(
        &ebpf,
        run_xdp,
        XDP_PASS,
        "default proxy-only: DNS to the gateway",
        &dns_gw(),
        None,
    );
}

/// Every record in the object's `EVENTS` ring, decoded, oldest first.
fn drain_events(ebpf: &mut Ebpf) -> Vec<dataplane::events::Decoded> {
    let mut ring = RingBuf::try_from(ebpf.map_mut(names::EVENTS).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.push(dataplane::events::decode(&item).expect("a record of this build"));
    }
    out
}

fn event_stat(ebpf: &Ebpf, index: u32) -> u64 {
    let map: PerCpuArray<_, u64> = ebpf.map(names::EVENT_STATS).unwrap().try_into().unwrap();
    map.get(&index, 0).unwrap().iter().sum()
}

#[test]
fn events_name_new_clients_spoofers_and_refusals_within_a_budget() {
    if skip_unless_root("loads eBPF programs and runs them with BPF_PROG_TEST_RUN") {
        return;
    }
    use gateway_common::event::{EventKind, EVENTS_PER_SECOND, EVENT_STAT_THINNED};
    let cfg = config_with(true, false, true);
    let mut ebpf = load(Some(&cfg));
    let allowed = client_ipv4(Ip::new(CLIENT, GATEWAY, 6), &tcp_syn(40000, 22));
    run_xdp(&ebpf, &allowed);
    run_xdp(&ebpf, &allowed);
    let seen = drain_events(&mut ebpf);
    assert_eq!(seen.len(), 1, "one new client, once: {seen:?}");
    assert_eq!(seen[0].kind, EventKind::NewClient);
    assert_eq!(seen[0].mac, CLIENT_MAC.into());
    assert_eq!(seen[0].ipv4, Some(CLIENT));

    // Spoofs: a source the MAC does not hold, an ARP sender MAC that is not the frame's, a
    // DHCP chaddr that is not the sender's. The claimed address is in the event.
    run_xdp(
        &ebpf,
        &client_ipv4(Ip::new(UNLEASED, ORIGIN, 6), &tcp_syn(40000, 80)),
    );
    run_xdp(
        &ebpf,
        &arp_with_frame_source(STRANGER_MAC, CLIENT_MAC, CLIENT),
    );
    run_xdp(
        &ebpf,
        &ethernet(
            CLIENT_MAC,
            [0xff; 6],
            ETH_P_IP,
            &ipv4(
                Ip::new(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 17),
                &discover(STRANGER_MAC),
            ),
        ),
    );
    let seen = drain_events(&mut ebpf);
    let got: Vec<_> = seen.iter().map(|e| (e.kind, e.reason, e.ipv4)).collect();
    assert_eq!(
        got,
        [
            (
                EventKind::Spoof,
                Some(DropReason::SpoofedSource),
                Some(UNLEASED)
            ),
            (EventKind::Spoof, Some(DropReason::SpoofedArp), None),
            (EventKind::Spoof, Some(DropReason::ChaddrMismatch), None),
        ],
        "{seen:?}"
    );

    // A refusal by policy names the client, not the destination.
    let mut policies: AyaHashMap<_, MacKey, u32> = ebpf
        .map_mut(names::CLIENT_POLICY)
        .unwrap()
        .try_into()
        .unwrap();
    policies
        .insert(
            MacKey::new(CLIENT_MAC),
            gateway_common::maps::policy::PROXY_ONLY,
            0,
        )
        .unwrap();
    run_xdp(
        &ebpf,
        &client_ipv4(Ip::new(CLIENT, ORIGIN, 6), &tcp_syn(40000, 80)),
    );
    let seen = drain_events(&mut ebpf);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].kind, seen[0].reason, seen[0].ipv4),
        (
            EventKind::PolicyDrop,
            Some(DropReason::Policy),
            Some(CLIENT)
        )
    );

    // A flood on one CPU: no more than the budget reaches the ring; the rest is counted.
    let spoofed = client_ipv4(Ip::new(UNLEASED, ORIGIN, 6), &tcp_syn(40000, 80));
    let xdp: &Xdp = ebpf
        .program(programs::INSIDE_INGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    let flood = 2 * EVENTS_PER_SECOND;
    xdp.test_run(TestRunOptions {
        data_in: Some(&spoofed),
        repeat: flood,
        ..Default::default()
    })
    .expect("BPF_PROG_TEST_RUN");
    let sent = drain_events(&mut ebpf).len() as u64;
    let thinned = event_stat(&ebpf, EVENT_STAT_THINNED);
    assert!(
        sent <= u64::from(EVENTS_PER_SECOND),
        "{sent} events in one second"
    );
    assert!(thinned > 0, "nothing was thinned");
    assert_eq!(
        sent + thinned,
        u64::from(flood),
        "every event sent or counted"
    );
}

/// `struct bpf_sk_lookup` as BPF_PROG_TEST_RUN takes it (the context, no packet).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct SkLookupCtx {
    cookie: u64,
    family: u32,
    protocol: u32,
    remote_ip4: u32,
    remote_ip6: [u32; 4],
    remote_port: u32,
    local_ip4: u32,
    local_ip6: [u32; 4],
    local_port: u32,
    // The test run refuses a non-zero ingress_ifindex, so it always runs as 0; the test
    // config's inside_ifindex is 0 too (its interface does not exist here).
    ingress_ifindex: u32,
    _pad: u32,
}

/// `union bpf_attr`'s `test` member.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs `inside_steer` on a lookup for `protocol` to `local`:`port`: its verdict, and the
/// cookie of the socket it picked (0 for none). aya 0.14 has no test run for sk_lookup.
fn run_steer(ebpf: &Ebpf, protocol: u8, local: Ipv4Addr, port: u16) -> (u32, u64) {
    use std::os::fd::{AsFd, AsRawFd};
    let prog: &SkLookup = ebpf
        .program(programs::INSIDE_STEER)
        .unwrap()
        .try_into()
        .unwrap();
    let fd = prog.fd().unwrap().as_fd().as_raw_fd();
    let ctx_in = SkLookupCtx {
        family: libc::AF_INET as u32,
        protocol: u32::from(protocol),
        remote_ip4: u32::from_ne_bytes(CLIENT.octets()),
        remote_port: u32::from(40000u16.to_be()),
        local_ip4: u32::from_ne_bytes(local.octets()),
        local_port: u32::from(port),
        ..Default::default()
    };
    let mut ctx_out = SkLookupCtx::default();
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        repeat: 1,
        ctx_size_in: std::mem::size_of::<SkLookupCtx>() as u32,
        ctx_size_out: std::mem::size_of::<SkLookupCtx>() as u32,
        ctx_in: &ctx_in as *const SkLookupCtx as u64,
        ctx_out: &mut ctx_out as *mut SkLookupCtx as u64,
        ..Default::default()
    };
    // SAFETY: attr points at live buffers of the sizes it names.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            10, // BPF_PROG_TEST_RUN
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    assert_eq!(
        rc,
        0,
        "BPF_PROG_TEST_RUN: {}",
        std::io::Error::last_os_error()
    );
    (attr.retval, ctx_out.cookie)
}

fn socket_cookie(fd: &impl std::os::fd::AsRawFd) -> u64 {
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: a u64 out-parameter of the size given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_COOKIE");
    cookie
}

#[test]
fn steering_picks_the_slot_socket_and_never_falls_through() {
    if skip_unless_root("loads eBPF programs and runs them with BPF_PROG_TEST_RUN") {
        return;
    }
    use gateway_common::maps::steer;
    const SK_DROP: u32 = 0;
    const SK_PASS: u32 = 1;
    let cfg = config_with(true, false, true);
    let mut ebpf = load(Some(&cfg));
    let (tcp, udp_) = (6, 17);
    let resolver = Ipv4Addr::new(203, 0, 113, 53);
    let passes = |ebpf: &Ebpf, protocol, dst, port| {
        let (verdict, cookie) = run_steer(ebpf, protocol, dst, port);
        assert_eq!(
            (verdict, cookie),
            (SK_PASS, 0),
            "{dst}:{port} takes the normal lookup"
        );
    };
    let drops = |ebpf: &Ebpf, protocol, dst, port, why: &str| {
        let (verdict, _) = run_steer(ebpf, protocol, dst, port);
        assert_eq!(verdict, SK_DROP, "{why}");
    };
    // The gateway's own address and DHCP take the normal lookup; steered traffic with empty
    // slots (start-up, a crash, a stop) is dropped, never handed to a host socket.
    passes(&ebpf, tcp, GATEWAY, 22);
    passes(&ebpf, udp_, Ipv4Addr::BROADCAST, 67);
    drops(&ebpf, tcp, ORIGIN, 80, "TCP with an empty transparent slot");
    drops(&ebpf, udp_, resolver, 53, "UDP DNS with an empty slot");
    drops(&ebpf, tcp, resolver, 53, "TCP DNS with an empty slot");
    drops(&ebpf, udp_, ORIGIN, 443, "other UDP to any host");

    // With the sockets in their slots, each lookup lands on its own socket.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dns_tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dns_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    {
        let mut slots: aya::maps::SockMap<_> = ebpf
            .map_mut(names::STEER_SOCKETS)
            .unwrap()
            .try_into()
            .unwrap();
        slots.set(steer::TCP, &listener, 0).unwrap();
        slots.set(steer::DNS_TCP, &dns_tcp, 0).unwrap();
        slots.set(steer::DNS_UDP, &dns_udp, 0).unwrap();
    }
    let picked = |ebpf: &Ebpf, protocol, dst, port| {
        let (verdict, cookie) = run_steer(ebpf, protocol, dst, port);
        assert_eq!(verdict, SK_PASS, "{dst}:{port}");
        cookie
    };
    assert_eq!(picked(&ebpf, tcp, ORIGIN, 80), socket_cookie(&listener));
    assert_eq!(picked(&ebpf, tcp, UPLINK, 2222), socket_cookie(&listener));
    assert_eq!(picked(&ebpf, udp_, resolver, 53), socket_cookie(&dns_udp));
    assert_eq!(picked(&ebpf, tcp, resolver, 53), socket_cookie(&dns_tcp));
    drops(
        &ebpf,
        udp_,
        ORIGIN,
        443,
        "other UDP, with every slot filled",
    );
    passes(&ebpf, tcp, GATEWAY, 22);

    // A socket of the wrong protocol in a slot is refused by the kernel: a drop, not a pass.
    {
        let mut slots: aya::maps::SockMap<_> = ebpf
            .map_mut(names::STEER_SOCKETS)
            .unwrap()
            .try_into()
            .unwrap();
        slots.set(steer::DNS_UDP, &dns_tcp, 0).unwrap();
    }
    drops(
        &ebpf,
        udp_,
        resolver,
        53,
        "UDP lookup redirected to a TCP socket",
    );
    // A closed socket leaves its slot: the lookup is dropped again.
    drop(listener);
    drops(&ebpf, tcp, ORIGIN, 80, "TCP after the listener closed");
}
