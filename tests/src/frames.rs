//! Crafted Ethernet frames for the BPF_PROG_TEST_RUN tables. Checksums are left zero: the
//! programs never read them.

use std::net::Ipv4Addr;

/// A client's MAC.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
/// The gateway's inside MAC.
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// An Ethernet header followed by `payload`.
pub fn ethernet(src: [u8; 6], dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Options for an IPv4 header.
#[derive(Clone, Copy)]
pub struct Ip {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Flags and fragment offset field, host order.
    pub frag: u16,
    /// Version and IHL byte.
    pub version_ihl: u8,
}

impl Ip {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> Self {
        Ip {
            src,
            dst,
            protocol,
            frag: 0x4000, // DF, like most stacks
            version_ihl: 0x45,
        }
    }
}

/// An IPv4 packet with `l4` as payload (total length set to match).
pub fn ipv4(ip: Ip, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut p = vec![ip.version_ihl, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1]); // id
    p.extend_from_slice(&ip.frag.to_be_bytes());
    p.extend_from_slice(&[64, ip.protocol, 0, 0]);
    p.extend_from_slice(&ip.src.octets());
    p.extend_from_slice(&ip.dst.octets());
    p.extend_from_slice(l4);
    p
}

/// A UDP header and a small payload.
pub fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let payload = b"hello";
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A UDP datagram carrying a minimal BOOTP message (`op`, `giaddr`, `chaddr`, magic cookie).
pub fn bootp(sport: u16, dport: u16, op: u8, giaddr: Ipv4Addr, chaddr: [u8; 6]) -> Vec<u8> {
    let mut b = vec![op, 1, 6, 0];
    b.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]); // xid
    b.extend_from_slice(&[0; 4]); // secs, flags
    b.extend_from_slice(&[0; 12]); // ciaddr, yiaddr, siaddr
    b.extend_from_slice(&giaddr.octets());
    b.extend_from_slice(&chaddr);
    b.extend_from_slice(&[0; 10 + 64 + 128]); // chaddr padding, sname, file
    b.extend_from_slice(&[99, 130, 83, 99, 255]); // magic cookie, end
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + b.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(&b);
    u
}

/// A TCP SYN header.
pub fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]); // seq, ack
    t.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]); // offset 5, SYN, window
    t
}

/// An ICMP message of `icmp_type`.
pub fn icmp(icmp_type: u8) -> Vec<u8> {
    vec![icmp_type, 0, 0, 0, 0, 1, 0, 1, b'p', b'i', b'n', b'g']
}

/// A whole frame from the client carrying an IPv4 packet.
pub fn client_ipv4(ip: Ip, l4: &[u8]) -> Vec<u8> {
    ethernet(CLIENT_MAC, GATEWAY_MAC, ETH_P_IP, &ipv4(ip, l4))
}

/// An ARP request from `sender_mac`/`sender_ip` for `target_ip`.
pub fn arp_request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&sender_mac);
    a.extend_from_slice(&sender_ip.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target_ip.octets());
    ethernet(sender_mac, [0xff; 6], ETH_P_ARP, &a)
}

/// A frame with an 802.1Q (or 802.1ad) tag in front of an IPv4 packet.
pub fn vlan_tagged(tpid: u16, vid: u16, inner: &[u8]) -> Vec<u8> {
    let mut payload = vid.to_be_bytes().to_vec();
    payload.extend_from_slice(&ETH_P_IP.to_be_bytes());
    payload.extend_from_slice(inner);
    ethernet(CLIENT_MAC, GATEWAY_MAC, tpid, &payload)
}

/// A minimal IPv6 header (next header UDP) with a UDP payload.
pub fn ipv6_udp() -> Vec<u8> {
    let l4 = udp(5353, 5353);
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11]);
    p.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfb]);
    p.extend_from_slice(&l4);
    ethernet(CLIENT_MAC, [0x33, 0x33, 0, 0, 0, 0xfb], ETH_P_IPV6, &p)
}
