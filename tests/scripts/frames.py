#!/usr/bin/env python3
"""Hand-made frames for the lab tests, sent on a raw packet socket (no tool in Debian's base
sends all of these): ARP requests (optionally waiting for the replies) and the IPv6 frames that
make a host speak (a neighbour solicitation, a router advertisement, an MLD query).

  frames.py arp IFACE SENDER_IP TARGET_IP [WAIT_SECONDS]
      prints one line "reply <ip> is-at <mac>" per ARP reply for TARGET_IP seen while waiting
  frames.py v6 IFACE TARGET_LINK_LOCAL
"""
import ipaddress
import select
import socket
import struct
import sys
import time

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD


def iface_mac(iface):
    with open(f"/sys/class/net/{iface}/address") as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


def eth(dst, src, ethertype, payload):
    return dst + src + struct.pack("!H", ethertype) + payload


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def icmp6(src, dst, body, hop_limit=255, router_alert=False):
    pseudo = src + dst + struct.pack("!I", len(body)) + b"\0\0\0\x3a"
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    next_header, ext = 58, b""
    if router_alert:
        # Hop-by-hop header: next 58, length 0, Router Alert (MLD), PadN.
        next_header, ext = 0, bytes([58, 0, 5, 2, 0, 0, 1, 0])
    payload = ext + body
    header = struct.pack("!IHBB", 0x60000000, len(payload), next_header, hop_limit)
    return header + src + dst + payload


def arp(iface, sender_ip, target_ip, wait):
    me = iface_mac(iface)
    spa = socket.inet_aton(sender_ip)
    tpa = socket.inet_aton(target_ip)
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + me + spa + b"\0" * 6 + tpa
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((iface, 0))
    sock.send(eth(b"\xff" * 6, me, ETH_P_ARP, body))
    deadline = time.time() + wait
    while time.time() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.time()))
        if not ready:
            break
        frame = sock.recv(2048)
        if len(frame) < 42:
            continue
        op = struct.unpack("!H", frame[20:22])[0]
        if op == 2 and frame[28:32] == tpa:
            print(f"reply {target_ip} is-at {frame[22:28].hex(':')}", flush=True)


def v6(iface, target_ll):
    me = iface_mac(iface)
    src = ipaddress.IPv6Address("fe80::1").packed
    target = ipaddress.IPv6Address(target_ll).packed
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
    sock.bind((iface, 0))
    # Neighbour solicitation for the target, to its solicited-node group.
    group = ipaddress.IPv6Address("ff02::1:ff00:0").packed[:13] + target[13:]
    ns = bytes([135, 0, 0, 0]) + b"\0" * 4 + target + bytes([1, 1]) + me
    sock.send(eth(b"\x33\x33" + group[12:], me, ETH_P_IPV6, icmp6(src, group, ns)))
    # Router advertisement with a SLAAC prefix, to all nodes.
    all_nodes = ipaddress.IPv6Address("ff02::1").packed
    prefix = bytes([3, 4, 64, 0xC0]) + struct.pack("!III", 86400, 14400, 0)
    prefix += ipaddress.IPv6Address("2001:db8:1::").packed
    ra = bytes([134, 0, 0, 0, 64, 0]) + struct.pack("!HII", 1800, 0, 0) + prefix
    sock.send(eth(b"\x33\x33\x00\x00\x00\x01", me, ETH_P_IPV6, icmp6(src, all_nodes, ra)))
    # MLDv1 general query, hop limit 1 with Router Alert.
    query = bytes([130, 0, 0, 0]) + struct.pack("!HH", 1000, 0) + b"\0" * 16
    frame = icmp6(src, all_nodes, query, hop_limit=1, router_alert=True)
    sock.send(eth(b"\x33\x33\x00\x00\x00\x01", me, ETH_P_IPV6, frame))


def main():
    if len(sys.argv) >= 5 and sys.argv[1] == "arp":
        wait = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
        arp(sys.argv[2], sys.argv[3], sys.argv[4], wait)
    elif len(sys.argv) == 4 and sys.argv[1] == "v6":
        v6(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
