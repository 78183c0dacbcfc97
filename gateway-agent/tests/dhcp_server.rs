//! The DHCP server against real clients (busybox udhcpc, ISC dhclient) on a veth pair between
//! two network namespaces each test makes for itself (the test kit's [`Netns`], named like a
//! lab's `gw` and `c1`, so `cargo xtask lab down --all` finds them after a crash). The server runs in a child process (this
//! test binary again, running the ignored `server_child` test inside the server namespace), so
//! a test can SIGKILL it and start it again on the same store.
//!
//! Traffic only ever flows between the two namespaces; the host's interfaces are not touched.

// Clippy's allow-*-in-tests covers #[test] functions only, not the setup helpers in this
// file; a test whose setup fails should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_agent::config::{Dhcp, Inside};
use gateway_agent::dhcp::{DhcpServer, DhcpServerSettings, DhcpStats, LeaseRecord};
use gateway_agent::lease_events::{LeaseEvent, LeaseSink};
use gateway_tests::{eventually, in_netns, skip_unless_root, wait_timeout, Background, Netns};

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SERVER_IF: &str = "srv0";
const CLIENT_IF: &str = "cli0";

// ---- the server process ----------------------------------------------------------------

const ENV_DIR: &str = "GATEWAY_DHCP_TEST_DIR";

/// Writes every lease event as a line: `bound|removed <address> <hostname or ->`.
struct FileSink(Mutex<std::fs::File>);

impl LeaseSink for FileSink {
    fn apply(&self, event: &LeaseEvent) {
        let (verb, info) = match event {
            LeaseEvent::Bound(info) => ("bound", info),
            LeaseEvent::Removed(info) => ("removed", info),
        };
        let line = format!(
            "{verb} {} {}\n",
            info.address,
            info.hostname.as_deref().unwrap_or("-")
        );
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // A test helper: a failed write shows up as a missing line.
        let _ = file.write_all(line.as_bytes());
    }
}

/// The server, run by the tests in the server namespace (`ip netns exec … --ignored`). Does
/// nothing when run directly.
#[test]
#[ignore = "the DHCP server process the other tests start"]
fn server_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("debug")
        .try_init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let events = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("events"))
            .unwrap();
        let sink: Arc<dyn LeaseSink> = Arc::new(FileSink(Mutex::new(events)));
        let settings = DhcpServerSettings {
            interface: SERVER_IF.into(),
            server_ip: SERVER,
            inside: Inside {
                address: SERVER,
                prefix_len: 24,
            },
            port: 67,
            client_port: 68,
            dhcp: Dhcp::default(),
            zone: "home.arpa".parse().expect("a domain name"),
            reserved_names: vec!["gateway".into()],
            store_path: dir.join("leases.redb"),
            log_queries: true,
        };
        let server = DhcpServer::start(settings, vec![sink]).await.unwrap();
        println!("READY");
        loop {
            let state = serde_json::to_vec(&(server.stats(), server.leases())).unwrap();
            std::fs::write(dir.join("state.tmp"), state).unwrap();
            std::fs::rename(dir.join("state.tmp"), dir.join("state")).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

// ---- tools ------------------------------------------------------------------------------

fn require_tool(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package {package} (cargo xtask deps)"
    );
}

// ---- the test world -----------------------------------------------------------------------

/// Two namespaces joined by a veth pair; the server side has the gateway's address.
struct World {
    // Field order is drop order: the server dies before its namespace and its files go.
    server: Option<Background>,
    client: Netns,
    server_ns: Netns,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let names = Netns::lab();
        let server_ns = Netns::new(&names, "gw");
        let client = Netns::new(&names, "c1");
        server_ns.ip(&[
            "link",
            "add",
            SERVER_IF,
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_IF,
            "netns",
            client.name(),
        ]);
        server_ns.ip(&["addr", "add", "198.51.100.1/24", "dev", SERVER_IF]);
        server_ns.ip(&["link", "set", SERVER_IF, "up"]);
        client.ip(&["link", "set", CLIENT_IF, "up"]);
        World {
            dir: tempfile::tempdir().unwrap(),
            server: None,
            client,
            server_ns,
        }
    }

    /// Starts the server process and waits until it has restored its leases and serves.
    fn start_server(&mut self) {
        // Both are the new process's to write: nothing read later may come from the last one.
        let _ = std::fs::remove_file(self.dir.path().join("events"));
        let _ = std::fs::remove_file(self.dir.path().join("state"));
        let mut child = self
            .server_ns
            .command(std::env::current_exe().unwrap().to_str().unwrap())
            .args(["--exact", "server_child", "--ignored", "--nocapture"])
            .env(ENV_DIR, self.dir.path())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("server.log"))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        self.server = Some(Background::from(child));
        let (ready, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("READY") {
                    let _ = ready.send(());
                }
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            panic!("the server did not start:\n{}", self.server_log());
        }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill();
        }
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("events"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The server's latest stats and lease table (written every 100 ms).
    fn state(&self) -> (DhcpStats, Vec<LeaseRecord>) {
        let mut state = None;
        assert!(eventually(Duration::from_secs(5), || {
            state = std::fs::read(self.dir.path().join("state"))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            state.is_some()
        }));
        state.unwrap()
    }

    /// Runs busybox udhcpc once (`-q`: quit when bound); returns its script's environment.
    fn udhcpc(&self, extra: &[&str]) -> BTreeMap<String, String> {
        require_tool("/usr/sbin/udhcpc", "udhcpc");
        let out = self.dir.path().join("udhcpc.env");
        let _ = std::fs::remove_file(&out);
        let script = self.script(
            "udhcpc.sh",
            &format!("[ \"$1\" = bound ] && env > {}\nexit 0\n", out.display()),
        );
        let mut args = vec![
            "-f", "-q", "-n", "-i", CLIENT_IF, "-t", "5", "-T", "2", "-A", "1", "-s",
        ];
        args.push(script.to_str().unwrap());
        args.extend_from_slice(extra);
        let child = self
            .client
            .command("udhcpc")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut process = Background::from(child);
        let status = wait_timeout(process.child(), Duration::from_secs(30))
            .is_some_and(|status| status.success());
        let mut stderr = String::new();
        if let Some(pipe) = process.child().stderr.as_mut() {
            let _ = std::io::Read::read_to_string(pipe, &mut stderr);
        }
        assert!(
            status,
            "udhcpc got no lease:\n{stderr}\nserver:\n{}",
            self.server_log()
        );
        read_env(&out)
    }

    /// Runs ISC dhclient until its script sees BOUND; returns that environment.
    fn dhclient(&self, config: &str) -> BTreeMap<String, String> {
        require_tool("/usr/sbin/dhclient", "isc-dhcp-client");
        let dir = self.dir.path();
        let out = dir.join("dhclient.env");
        let script = self.script(
            "dhclient.sh",
            &format!(
                "[ \"$reason\" = BOUND ] && env > {}.tmp && mv {0}.tmp {0}\nexit 0\n",
                out.display()
            ),
        );
        std::fs::write(dir.join("dhclient.conf"), config).unwrap();
        let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        let child = self
            .client
            .command("dhclient")
            .args(["-1", "-d", "-v", "-cf", &path("dhclient.conf")])
            .args([
                "-lf",
                &path("dhclient.leases"),
                "-pf",
                &path("dhclient.pid"),
            ])
            .args(["-sf", script.to_str().unwrap(), CLIENT_IF])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _dhclient = Background::from(child); // stays in the foreground; killed on drop
        assert!(
            eventually(Duration::from_secs(30), || out.exists()),
            "dhclient got no lease; server:\n{}",
            self.server_log()
        );
        read_env(&out)
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Runs `body` on a thread inside the client namespace (setns is per thread).
    fn in_client_ns<T: Send + 'static>(&self, body: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(self.client.name(), body)
    }
}

/// `KEY=VALUE` lines, quotes stripped.
fn read_env(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.trim_matches('\'').to_owned()))
        .collect()
}

fn in_pool(address: &str) -> bool {
    let address: Ipv4Addr = address.parse().unwrap();
    let last = address.octets()[3];
    address.octets()[..3] == [198, 51, 100] && (100..=199).contains(&last)
}

// ---- the tests ----------------------------------------------------------------------------

#[test]
fn udhcpc_gets_a_lease_with_our_options() {
    if skip_unless_root("makes network namespaces and a raw DHCP socket") {
        return;
    }
    let mut world = World::new();
    world.start_server();
    let env = world.udhcpc(&["-x", "hostname:Evil_Name../../x"]);
    assert!(in_pool(&env["ip"]), "{env:?}");
    assert_eq!(env["subnet"], "255.255.255.0");
    assert_eq!(env["router"], "198.51.100.1");
    assert_eq!(env["dns"], "198.51.100.1");
    assert_eq!(env["serverid"], "198.51.100.1");
    assert_eq!(env["domain"], "home.arpa");
    assert_eq!(env["search"], "home.arpa");
    assert_eq!(env["lease"], "43200");
    // The OFFER and ACK were unicast to the new address through an ARP entry, not broadcast.
    assert!(
        !world.server_log().contains("no ARP entry"),
        "{}",
        world.server_log()
    );
    assert!(world.server_log().contains("DHCPREQUEST -> DHCPACK"));
    let ip = env["ip"].clone();
    assert!(
        eventually(Duration::from_secs(5), || world
            .events()
            .contains(&format!("bound {ip} evil-name"))),
        "{:?}",
        world.events()
    );

    // Again, asking for broadcast replies: the same lease.
    let again = world.udhcpc(&["-B", "-x", "hostname:Evil_Name../../x"]);
    assert_eq!(again["ip"], ip);
    assert!(eventually(Duration::from_secs(5), || world.state().0.acks >= 2));
    let (stats, leases) = world.state();
    assert!(stats.offers >= 2, "{stats:?}");
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0].state, "bound");
    assert_eq!(leases[0].hostname.as_deref(), Some("evil-name"));
}

#[test]
fn dhclient_gets_a_lease_with_our_options_and_fqdn() {
    if skip_unless_root("makes network namespaces and a raw DHCP socket") {
        return;
    }
    let mut world = World::new();
    world.start_server();
    let env = world.dhclient(
        "send host-name \"plain\";\n\
         send fqdn.fqdn \"Real-FQDN.example.org.\";\n\
         send fqdn.encoded on;\n\
         send fqdn.server-update on;\n\
         request subnet-mask, routers, domain-name-servers, domain-name, domain-search;\n",
    );
    let ip = env["new_ip_address"].clone();
    assert!(in_pool(&ip), "{env:?}");
    assert_eq!(env["new_subnet_mask"], "255.255.255.0");
    assert_eq!(env["new_routers"], "198.51.100.1");
    assert_eq!(env["new_domain_name_servers"], "198.51.100.1");
    assert_eq!(env["new_dhcp_server_identifier"], "198.51.100.1");
    assert_eq!(env["new_domain_name"], "home.arpa");
    assert!(env["new_domain_search"].contains("home.arpa"), "{env:?}");
    // Our option 81 answer: the name it got, in our zone, and that we update the zone.
    assert_eq!(env["new_fqdn_fqdn"], "real-fqdn.home.arpa");
    assert_eq!(env["new_fqdn_server_update"], "true");
    // Option 81 wins over option 12, and the zone is ours.
    assert!(
        eventually(Duration::from_secs(5), || world
            .events()
            .contains(&format!("bound {ip} real-fqdn"))),
        "{:?}",
        world.events()
    );
}

#[test]
fn after_kill_9_every_lease_is_back() {
    if skip_unless_root("makes network namespaces and a raw DHCP socket") {
        return;
    }
    let mut world = World::new();
    world.start_server();
    // Two clients from one interface, told apart by their client identifiers.
    let first = world.udhcpc(&["-x", "0x3d:ff00000001", "-x", "hostname:first"]);
    let keeper = world.udhcpc(&["-x", "0x3d:ff00000002", "-x", "hostname:keeper"]);
    assert_ne!(first["ip"], keeper["ip"]);

    world.kill_server();
    world.start_server();
    // Announced to the sinks before serving: names back in DNS.
    let events = world.events();
    for (env, name) in [(&first, "first"), (&keeper, "keeper")] {
        assert!(
            events.contains(&format!("bound {} {name}", env["ip"])),
            "{events:?}"
        );
    }
    // The second client asks first this time: without the restored lease of the first it
    // would get the lowest address.
    let keeper_again = world.udhcpc(&["-x", "0x3d:ff00000002", "-x", "hostname:keeper"]);
    assert_eq!(keeper_again["ip"], keeper["ip"]);
    let first_again = world.udhcpc(&["-x", "0x3d:ff00000001", "-x", "hostname:first"]);
    assert_eq!(first_again["ip"], first["ip"]);
}

/// A DHCP message from `mac` with the broadcast flag set (the test's client has no address to
/// receive unicast on).
fn client_message(
    mac: [u8; 6],
    kind: dhcproto::v4::MessageType,
    requested: Option<Ipv4Addr>,
) -> Vec<u8> {
    use dhcproto::{v4, Encodable, Encoder};
    let mut msg = v4::Message::default();
    msg.set_flags(v4::Flags::default().set_broadcast())
        .set_chaddr(&mac)
        .set_xid(u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]));
    msg.opts_mut().insert(v4::DhcpOption::MessageType(kind));
    if let Some(ip) = requested {
        msg.opts_mut()
            .insert(v4::DhcpOption::RequestedIpAddress(ip));
        msg.opts_mut()
            .insert(v4::DhcpOption::ServerIdentifier(SERVER));
    }
    let mut buf = Vec::new();
    msg.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

/// Sends every message back to back, then collects replies for `wait`: xid → (type, yiaddr).
fn burst(
    socket: &UdpSocket,
    messages: &[Vec<u8>],
    wait: Duration,
) -> BTreeMap<u32, (dhcproto::v4::MessageType, Ipv4Addr)> {
    use dhcproto::{v4, Decodable, Decoder};
    for message in messages {
        socket
            .send_to(message, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))
            .unwrap();
    }
    let deadline = Instant::now() + wait;
    let mut replies = BTreeMap::new();
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline && replies.len() < messages.len() {
        let Ok((len, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Ok(msg) = v4::Message::decode(&mut Decoder::new(&buf[..len])) else {
            continue;
        };
        if let Some(v4::DhcpOption::MessageType(kind)) = msg.opts().get(v4::OptionCode::MessageType)
        {
            replies.insert(msg.xid(), (*kind, msg.yiaddr()));
        }
    }
    replies
}

#[test]
fn a_burst_of_clients_is_served_and_every_ack_survives_kill_9() {
    if skip_unless_root("makes network namespaces and a raw DHCP socket") {
        return;
    }
    use dhcproto::v4::MessageType;
    const CLIENTS: u8 = 40;
    let mut world = World::new();
    world.start_server();
    // The client has no address: the limited broadcast needs a route to the link.
    world
        .client
        .ip(&["route", "add", "255.255.255.255/32", "dev", CLIENT_IF]);
    let macs: Vec<[u8; 6]> = (1..=CLIENTS).map(|i| [0x02, 0, 0, 0, 0x42, i]).collect();
    let acked = world.in_client_ns(move || {
        let socket = UdpSocket::bind("0.0.0.0:68").unwrap();
        socket.set_broadcast(true).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // All DISCOVERs at once, then all REQUESTs at once: the server gets queues, not a trickle.
        let discovers: Vec<_> = macs
            .iter()
            .map(|mac| client_message(*mac, MessageType::Discover, None))
            .collect();
        let offers = burst(&socket, &discovers, Duration::from_secs(10));
        let requests: Vec<_> = macs
            .iter()
            .filter_map(|mac| {
                let xid = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
                let (kind, offered) = offers.get(&xid)?;
                (*kind == MessageType::Offer)
                    .then(|| client_message(*mac, MessageType::Request, Some(*offered)))
            })
            .collect();
        assert_eq!(requests.len(), macs.len(), "offers: {offers:?}");
        let acks = burst(&socket, &requests, Duration::from_secs(10));
        assert!(
            acks.values().all(|(kind, _)| *kind == MessageType::Ack),
            "{acks:?}"
        );
        acks.values().map(|(_, ip)| *ip).collect::<Vec<_>>()
    });
    assert_eq!(acked.len(), usize::from(CLIENTS));
    let distinct: std::collections::BTreeSet<_> = acked.iter().collect();
    assert_eq!(distinct.len(), acked.len(), "an address was given twice");

    world.kill_server();
    world.start_server();
    let (_, leases) = world.state();
    for ip in &acked {
        assert!(
            leases.iter().any(|l| l.address == *ip),
            "{ip} was ACKed but is gone after kill -9"
        );
    }
}

#[test]
fn garbage_and_rogue_replies_do_not_stop_the_server() {
    if skip_unless_root("makes network namespaces and a raw DHCP socket") {
        return;
    }
    let mut world = World::new();
    world.start_server();
    world
        .client
        .ip(&["addr", "add", "198.51.100.50/24", "dev", CLIENT_IF]);
    let sent = world.in_client_ns(|| {
        let socket = UdpSocket::bind("198.51.100.50:68").unwrap();
        socket.set_broadcast(true).unwrap();
        let target = SocketAddrV4::new(SERVER, 67);
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut sent = 0;
        for round in 0..300usize {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = [0, 1, 100, 239, 240, 300, 576, 1400][round % 8];
            let mut packet: Vec<u8> = (0..len).map(|i| (state >> (i % 56)) as u8).collect();
            if len >= 240 {
                // Mostly-valid headers get further into the decoder.
                packet[..4].copy_from_slice(&[if round % 3 == 0 { 2 } else { 1 }, 1, 6, 0]);
                packet[236..240].copy_from_slice(&[99, 130, 83, 99]);
            }
            if socket.send_to(&packet, target).is_ok() {
                sent += 1;
            }
            // Paced, so the socket buffer does not overflow and every packet is counted.
            std::thread::sleep(Duration::from_millis(2));
        }
        sent
    });
    assert_eq!(sent, 300);
    assert!(
        eventually(Duration::from_secs(5), || world.state().0.received >= sent),
        "{:?}",
        world.state().0
    );
    let (stats, _) = world.state();
    assert!(
        stats.malformed > 0 && stats.server_reply_dropped > 0,
        "{stats:?}"
    );
    assert_eq!(stats.internal_errors, 0);

    // Still serving.
    let env = world.udhcpc(&[]);
    assert!(in_pool(&env["ip"]));
}

#[test]
fn stop_releases_the_store_and_a_second_server_is_refused_meanwhile() {
    if skip_unless_root("makes network namespaces and a raw DHCP socket") {
        return;
    }
    let world = World::new();
    let store = world.dir.path().join("leases.redb");
    let settings = move || DhcpServerSettings {
        interface: SERVER_IF.into(),
        server_ip: SERVER,
        inside: Inside {
            address: SERVER,
            prefix_len: 24,
        },
        port: 6767,
        client_port: 6868,
        dhcp: Dhcp::default(),
        zone: "home.arpa".parse().expect("a domain name"),
        reserved_names: Vec::new(),
        store_path: store.clone(),
        log_queries: false,
    };
    // The runtime is built on the thread in the server namespace, so the server's socket
    // lives there.
    in_netns(world.server_ns.name(), move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let server = DhcpServer::start(settings(), Vec::new()).await.unwrap();
            assert!(server.leases().is_empty());
            assert_eq!(server.stats().pool_size, 100);
            let Err(error) = DhcpServer::start(settings(), Vec::new()).await else {
                panic!("two servers on one store");
            };
            assert!(format!("{error:#}").contains("lease store"), "{error:#}");
            // Stopping is bounded (the service task gives up after 5 s): never a hang.
            let stopped =
                tokio::time::timeout(std::time::Duration::from_secs(8), server.stop()).await;
            assert!(stopped.is_ok(), "stop did not return within its bound");
            let again = DhcpServer::start(settings(), Vec::new()).await.unwrap();
            again.stop().await;
        });
    });
}
