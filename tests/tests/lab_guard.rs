//! The leases bind each inside MAC to one address: IPv4 from any other source (another address
//! on a leased client, a client that never took a lease) and ARP claiming an address the MAC
//! does not hold are dropped at the inside NIC and counted.

use gateway_tests::{lab, Agent, DhcpClient, TestLab};

fn ping(lab: &TestLab, role: &str, source: &str) -> bool {
    lab.exec(
        role,
        "ping",
        &["-c1", "-W1", "-I", source, lab::GATEWAY_INSIDE_IP],
    )
    .status
    .success()
}

#[test]
fn clients_are_held_to_their_leases() {
    let lab = TestLab::up();
    let cfg = lab.config_without_tor("guard.toml");
    let _agent = Agent::start(&lab, &cfg);
    let lease = lab.dhcp("c1", DhcpClient::Dhclient, None);
    let c1_ip = lease["ip"].clone();

    // From its lease, c1 reaches the gateway (and learns its MAC, so the spoofed packets
    // below go out without an ARP request first).
    assert!(ping(&lab, "c1", &c1_ip), "c1 cannot ping from its lease");

    // Another address on the same MAC.
    lab.exec_ok(
        "c1",
        "ip",
        &["addr", "add", "198.51.100.77/24", "dev", "eth0"],
    );
    let spoofed = lab.drops(&cfg, "spoofed_source");
    assert!(
        !ping(&lab, "c1", "198.51.100.77"),
        "a source the MAC does not hold got an answer"
    );
    assert!(
        lab.drops(&cfg, "spoofed_source") > spoofed,
        "the spoofed source was not counted"
    );
    assert!(ping(&lab, "c1", &c1_ip), "c1's own lease still works");

    // A client that never took a lease, with an address of its own choosing: its ARP claims
    // an address its MAC does not hold, and nothing it sends gets through.
    lab.exec_ok(
        "c2",
        "ip",
        &["addr", "add", "198.51.100.78/24", "dev", "eth0"],
    );
    let arp = lab.drops(&cfg, "spoofed_arp");
    assert!(
        !ping(&lab, "c2", "198.51.100.78"),
        "a client without a lease reached the gateway"
    );
    assert!(
        lab.drops(&cfg, "spoofed_arp") > arp,
        "the unleased client's ARP was not counted"
    );

    // ARP claiming the gateway's own address, from a leased client.
    let arp = lab.drops(&cfg, "spoofed_arp");
    lab.frames("c1", &["arp", "eth0", lab::GATEWAY_INSIDE_IP, &c1_ip, "0"]);
    assert!(
        lab.drops(&cfg, "spoofed_arp") > arp,
        "an ARP claim for the gateway's address was not counted"
    );
}
