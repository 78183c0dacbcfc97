//! The inside DNS server on loopback, asked by real `dig`, forwarding to a real upstream:
//! Debian's dnsmasq, authoritative for `example.com` on its own port, its query log showing
//! what reached it. Every test has its own server, its own dnsmasq and its own ports, so they
//! run in parallel; dnsmasq is killed when its test ends. Traffic stays on 127.0.0.1.

// Clippy's allow-*-in-tests covers #[test] functions only, not the setup helpers in this
// file; a test whose setup fails should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_agent::config::{Dns, Inside};
use gateway_agent::dns::{DnsServer, DnsServerSettings, LocalZone, UplinkUpstream, SERVICE_NAMES};
use gateway_agent::egress::Upstream;
use gateway_agent::lease_events::{LeaseEvent, LeaseInfo, LeaseSink};
use gateway_agent::mac::MacAddr;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::sync::watch;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// Loopback as the inside subnet, so the ACL admits the test's clients.
const LOOPBACK_INSIDE: Inside = Inside {
    address: GATEWAY,
    prefix_len: 8,
};

/// A dnsmasq on 127.0.0.1 and a free port, authoritative for example.com (so its negative
/// answers carry an SOA), killed on drop.
struct Dnsmasq {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    fn start() -> Dnsmasq {
        let big_txt = vec!["y".repeat(250); 8].join(",");
        let mut records = vec![
            "--host-record=origin.example.com,203.0.113.10".to_owned(),
            "--host-record=evil.example.com,10.0.0.1".to_owned(),
            "--host-record=mixed.example.com,203.0.113.11".to_owned(),
            "--host-record=mixed.example.com,192.168.1.1".to_owned(),
            format!("--txt-record=big.example.com,{big_txt}"),
        ];
        // 100 addresses for one name: about 1.7 kB, more than the 1232 bytes of EDNS we
        // advertise upstream, so the forwarder itself has to fall back to TCP.
        records.extend((1..=100).map(|i| format!("--host-record=many.example.com,203.0.113.{i}")));

        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir for dnsmasq");
            let log = dir.path().join("dnsmasq.log");
            let port = free_port();
            let child = Command::new("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--pid-file=",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    &format!("--port={port}"),
                    // Auth mode answers with AA and puts the SOA in negative answers; dnsmasq
                    // only uses it for queries to an auth-server address.
                    "--auth-server=ns.example.com,127.0.0.1",
                    "--auth-zone=example.com",
                    "--auth-ttl=300",
                    "--auth-soa=1,hostmaster.example.com,1200,180,1209600",
                    "--local-ttl=300",
                    "--log-queries",
                    &format!("--log-facility={}", log.display()),
                ])
                .args(&records)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn dnsmasq (Debian package dnsmasq-base)");
            let mut dnsmasq = Dnsmasq {
                child,
                port,
                log,
                _dir: dir,
            };
            if dnsmasq.wait_ready() {
                return dnsmasq;
            }
            // Lost the port to someone else between probing and binding (dropping it kills
            // what is left): try another.
        }
        panic!("dnsmasq did not come up");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Asks it something until it answers, or it dies.
    fn wait_ready(&mut self) -> bool {
        let probe = Message::query()
            .add_query(hickory_proto::op::Query::query(
                Name::from_ascii("ready.example.com.").expect("name"),
                RecordType::A,
            ))
            .to_vec()
            .expect("encode probe");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("probe socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let _ = socket.send_to(&probe, self.addr());
            let mut buf = [0u8; 512];
            if socket.recv_from(&mut buf).is_ok() {
                return true;
            }
        }
        false
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many queries for `name` (any type, UDP or TCP) dnsmasq has logged.
    fn queries_for(&self, name: &str) -> usize {
        let needle = format!("] {name} from ");
        self.log()
            .lines()
            .filter(|l| (l.contains(": query[") || l.contains(": auth[")) && l.contains(&needle))
            .count()
    }

    /// Waits until dnsmasq has logged a query for `name` (its log is written asynchronously).
    async fn wait_logged(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.queries_for(name) == 0 {
            assert!(Instant::now() < deadline, "dnsmasq never logged {name}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket");
        let port = udp.local_addr().expect("probe address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn dns_settings(rate_limit: u32) -> Dns {
    Dns {
        rate_limit,
        ..Dns::default()
    }
}

async fn server_with(
    inside: Inside,
    dns: Dns,
    upstream: Option<Arc<dyn Upstream>>,
) -> (DnsServer, Arc<LocalZone>) {
    let zone = Arc::new(
        LocalZone::new(
            &dns.zone,
            inside,
            GATEWAY,
            &SERVICE_NAMES,
            &[],
            dns.local_ttl,
        )
        .expect("local zone"),
    );
    let settings = DnsServerSettings {
        listen: GATEWAY,
        port: 0,
        inside,
        dns,
        gateway_ip: GATEWAY,
        log_queries: true,
        answered: None,
    };
    let server = DnsServer::start(settings, zone.clone(), upstream)
        .await
        .expect("start the DNS server");
    (server, zone)
}

fn uplink_to(dnsmasq: &Dnsmasq) -> Arc<dyn Upstream> {
    let (tx, rx) = watch::channel(vec![dnsmasq.addr()]);
    // The sender may go: the receiver keeps the last list.
    drop(tx);
    Arc::new(UplinkUpstream::new(rx, None, Duration::from_secs(2)))
}

/// What `dig` printed, picked apart.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answers: Vec<String>,
    authority: Vec<String>,
    raw: String,
}

impl Dig {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The TTL of the first answer.
    fn ttl(&self) -> u32 {
        self.answers
            .first()
            .and_then(|a| a.split_whitespace().nth(1))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no TTL in {}", self.raw))
    }

    /// The data of every answer (the last field).
    fn data(&self) -> Vec<String> {
        self.answers
            .iter()
            .filter_map(|a| a.split_whitespace().last().map(str::to_owned))
            .collect()
    }
}

async fn dig(server: &DnsServer, args: &[&str]) -> Dig {
    let addr = server.local_addr();
    let output = tokio::process::Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+tries=1", "+time=3"])
        .args(args)
        .output()
        .await
        .expect("run dig (Debian package bind9-dnsutils)");
    let raw = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = raw
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_owned();
    let flags = raw
        .split(";; flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let section = |title: &str| -> Vec<String> {
        raw.split(title)
            .nth(1)
            .map(|s| {
                s.lines()
                    .skip(1)
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    Dig {
        status,
        flags,
        answers: section(";; ANSWER SECTION:"),
        authority: section(";; AUTHORITY SECTION:"),
        raw,
    }
}

fn lease(address: [u8; 4], hostname: &str) -> LeaseInfo {
    LeaseInfo {
        address: Ipv4Addr::from(address),
        mac: MacAddr::new([2, 0, 0, 0, 0, address[3]]),
        client_id: None,
        hostname: Some(hostname.to_owned()),
        expires_unix: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_names_leases_and_ptr() {
    let (server, zone) = server_with(LOOPBACK_INSIDE, dns_settings(0), None).await;

    let r = dig(&server, &["registry.home.arpa", "A"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert!(
        r.has_flag("aa"),
        "local answers are authoritative: {}",
        r.raw
    );
    assert_eq!(r.data(), ["127.0.0.1"]);

    zone.apply(&LeaseEvent::Bound(lease([127, 0, 0, 100], "laptop")));
    let r = dig(&server, &["LapTop.Home.Arpa", "A"]).await;
    assert_eq!(r.data(), ["127.0.0.100"], "{}", r.raw);
    let r = dig(&server, &["-x", "127.0.0.100"]).await;
    assert_eq!(r.data(), ["laptop.home.arpa."], "{}", r.raw);
    let r = dig(&server, &["-x", "127.0.0.1"]).await;
    assert_eq!(r.data(), ["gateway.home.arpa."], "{}", r.raw);

    zone.apply(&LeaseEvent::Removed(lease([127, 0, 0, 100], "laptop")));
    let r = dig(&server, &["laptop.home.arpa", "A"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{}", r.raw);
    assert!(r.has_flag("aa"));
    assert!(
        r.authority.iter().any(|l| l.contains("SOA")),
        "NXDOMAIN carries the zone's SOA: {}",
        r.raw
    );
    let r = dig(&server, &["gateway.home.arpa", "AAAA"]).await;
    assert_eq!(
        (r.status.as_str(), r.answers.len()),
        ("NOERROR", 0),
        "{}",
        r.raw
    );

    let r = dig(&server, &["+tcp", "mirror.home.arpa", "A"]).await;
    assert_eq!(r.data(), ["127.0.0.1"], "TCP too: {}", r.raw);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_answers_are_cached() {
    let dnsmasq = Dnsmasq::start();
    let (server, _zone) =
        server_with(LOOPBACK_INSIDE, dns_settings(0), Some(uplink_to(&dnsmasq))).await;

    let first = dig(&server, &["origin.example.com", "A"]).await;
    assert_eq!(first.status, "NOERROR", "{}", first.raw);
    assert_eq!(first.data(), ["203.0.113.10"]);
    assert!(
        first.has_flag("ra") && !first.has_flag("aa"),
        "{}",
        first.raw
    );
    assert_eq!(first.ttl(), 300);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = dig(&server, &["ORIGIN.example.com", "A"]).await;
    assert_eq!(second.data(), ["203.0.113.10"]);
    assert!(
        second.ttl() < 300,
        "the cached TTL counts down: {}",
        second.raw
    );

    // NXDOMAIN is cached by the SOA dnsmasq sends (RFC 2308).
    let nx = dig(&server, &["nx.example.com", "A"]).await;
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.raw);
    assert!(nx.authority.iter().any(|l| l.contains("SOA")), "{}", nx.raw);
    let nx = dig(&server, &["nx.example.com", "A"]).await;
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.raw);

    dnsmasq.wait_logged("nx.example.com").await;
    // Give dnsmasq a moment to log a second query, if one had gone out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        dnsmasq.queries_for("origin.example.com"),
        1,
        "{}",
        dnsmasq.log()
    );
    assert_eq!(
        dnsmasq.queries_for("nx.example.com"),
        1,
        "{}",
        dnsmasq.log()
    );

    let stats = server.stats();
    assert_eq!(stats.forwarded, 2, "{stats:?}");
    assert_eq!(stats.cache_hits, 2, "{stats:?}");
    assert_eq!(stats.cache_entries, 2, "{stats:?}");
    assert_eq!(stats.upstream.as_deref(), Some("uplink"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_answers_are_dropped() {
    let dnsmasq = Dnsmasq::start();
    let (server, _zone) =
        server_with(LOOPBACK_INSIDE, dns_settings(0), Some(uplink_to(&dnsmasq))).await;

    let evil = dig(&server, &["evil.example.com", "A"]).await;
    assert_eq!(evil.status, "REFUSED", "{}", evil.raw);
    assert!(evil.answers.is_empty(), "{}", evil.raw);

    let mixed = dig(&server, &["mixed.example.com", "A"]).await;
    assert_eq!(mixed.status, "NOERROR", "{}", mixed.raw);
    assert_eq!(mixed.data(), ["203.0.113.11"], "{}", mixed.raw);

    let stats = server.stats();
    assert_eq!(
        (stats.rebinding_dropped, stats.rebinding_refused),
        (2, 1),
        "{stats:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_forwarded_names_stay_inside() {
    let dnsmasq = Dnsmasq::start();
    let (server, _zone) =
        server_with(LOOPBACK_INSIDE, dns_settings(0), Some(uplink_to(&dnsmasq))).await;

    for (args, status) in [
        (vec!["printer.local", "A"], "NXDOMAIN"),
        (vec!["thing.invalid", "A"], "NXDOMAIN"),
        (vec!["x.test", "A"], "NXDOMAIN"),
        (vec!["secret.onion", "A"], "NXDOMAIN"),
        (vec!["stranger.home.arpa", "A"], "NXDOMAIN"),
        (vec!["-x", "192.168.1.1"], "NXDOMAIN"),
        (vec!["-x", "10.1.2.3"], "NXDOMAIN"),
        (vec!["-x", "172.20.0.1"], "NXDOMAIN"),
        (vec!["-x", "169.254.1.1"], "NXDOMAIN"),
        (vec!["-x", "100.64.0.1"], "NXDOMAIN"),
        (vec!["-x", "fd00::1"], "NXDOMAIN"),
        (vec!["-x", "127.0.0.77"], "NXDOMAIN"),
        (vec!["localhost", "A"], "NOERROR"),
    ] {
        let r = dig(&server, &args).await;
        assert_eq!(r.status, status, "{args:?}: {}", r.raw);
    }
    // A documentation range's reverse zone is public: it is forwarded. Once dnsmasq has
    // logged it, it would have logged any of the above too.
    dig(&server, &["-x", "203.0.113.10"]).await;
    dnsmasq.wait_logged("10.113.0.203.in-addr.arpa").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = dnsmasq.log();
    for leaked in [
        ".local",
        ".invalid",
        ".test",
        ".onion",
        ".home.arpa",
        ".168.192.in-addr.arpa",
        ".10.in-addr.arpa",
        ".20.172.in-addr.arpa",
        ".254.169.in-addr.arpa",
        ".64.100.in-addr.arpa",
        ".ip6.arpa",
        ".127.in-addr.arpa",
        "localhost",
    ] {
        assert!(
            !log.lines().any(|l| l.contains(&format!("{leaked} from"))),
            "{leaked} reached the upstream:\n{log}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upstream_means_servfail() {
    let (server, _zone) = server_with(LOOPBACK_INSIDE, dns_settings(0), None).await;
    let r = dig(&server, &["origin.example.com", "A"]).await;
    assert_eq!(r.status, "SERVFAIL", "{}", r.raw);
    assert!(!r.has_flag("ra"), "no recursion on offer: {}", r.raw);
    let r = dig(&server, &["gateway.home.arpa", "A"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert_eq!(server.stats().servfail, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_and_tcp_fallback() {
    let dnsmasq = Dnsmasq::start();
    let (server, _zone) =
        server_with(LOOPBACK_INSIDE, dns_settings(0), Some(uplink_to(&dnsmasq))).await;

    // Over UDP with a 512-byte buffer: truncated, TC set.
    let small = dig(
        &server,
        &["+bufsize=512", "+notcp", "+ignore", "many.example.com", "A"],
    )
    .await;
    assert_eq!(small.status, "NOERROR", "{}", small.raw);
    assert!(small.has_flag("tc"), "{}", small.raw);
    assert!(small.answers.len() < 100, "{}", small.raw);
    assert!(
        small.raw.contains("udp: 512"),
        "our EDNS echoes the client's size: {}",
        small.raw
    );

    // Without EDNS the limit is 512 (RFC 1035).
    let plain = dig(
        &server,
        &["+noedns", "+notcp", "+ignore", "many.example.com", "A"],
    )
    .await;
    assert!(plain.has_flag("tc"), "{}", plain.raw);
    assert!(plain.raw.contains("MSG SIZE  rcvd: "), "{}", plain.raw);

    // Over TCP: everything.
    let tcp = dig(&server, &["+tcp", "many.example.com", "A"]).await;
    assert_eq!(tcp.answers.len(), 100, "{}", tcp.raw);
    assert!(!tcp.has_flag("tc"));

    // dig's own fallback: UDP, TC, then TCP.
    let auto = dig(&server, &["many.example.com", "A"]).await;
    assert_eq!(auto.answers.len(), 100, "{}", auto.raw);

    // A single large record.
    let txt = dig(
        &server,
        &[
            "+bufsize=512",
            "+notcp",
            "+ignore",
            "big.example.com",
            "TXT",
        ],
    )
    .await;
    assert!(txt.has_flag("tc"), "{}", txt.raw);
    let txt = dig(&server, &["+tcp", "big.example.com", "TXT"]).await;
    assert_eq!(txt.answers.len(), 1, "{}", txt.raw);
    assert_eq!(
        txt.answers[0].matches(&"y".repeat(250)).count(),
        8,
        "{}",
        txt.raw
    );

    // The forwarder fetched both over TCP itself (dnsmasq truncated its UDP replies), once.
    dnsmasq.wait_logged("big.example.com").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        dnsmasq.queries_for("many.example.com"),
        2,
        "UDP, then TCP: {}",
        dnsmasq.log()
    );
    assert_eq!(
        dnsmasq.queries_for("big.example.com"),
        2,
        "{}",
        dnsmasq.log()
    );
    assert!(server.stats().truncated >= 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_are_refused() {
    let elsewhere = Inside {
        address: Ipv4Addr::new(198, 51, 100, 1),
        prefix_len: 24,
    };
    let (server, _zone) = server_with(elsewhere, dns_settings(0), None).await;
    let r = dig(&server, &["gateway.home.arpa", "A"]).await;
    assert_eq!(r.status, "REFUSED", "{}", r.raw);
    assert!(r.answers.is_empty());
    let r = dig(&server, &["+tcp", "gateway.home.arpa", "A"]).await;
    assert_eq!(r.status, "REFUSED", "{}", r.raw);
    assert_eq!(server.stats().refused_acl, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_rate_limited() {
    let (server, _zone) = server_with(LOOPBACK_INSIDE, dns_settings(5), None).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("client socket");
    socket.connect(server.local_addr()).await.expect("connect");
    let mut refused = 0;
    let mut answered = 0;
    for _ in 0..30 {
        let query = Message::query()
            .add_query(hickory_proto::op::Query::query(
                Name::from_ascii("gateway.home.arpa.").expect("name"),
                RecordType::A,
            ))
            .to_vec()
            .expect("encode");
        socket.send(&query).await.expect("send");
        let mut buf = [0u8; 512];
        let len = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .expect("an answer, refused or not")
            .expect("recv");
        let reply = Message::from_vec(&buf[..len]).expect("decode");
        match reply.metadata.response_code {
            ResponseCode::Refused => refused += 1,
            ResponseCode::NoError => answered += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(answered >= 5, "the burst is served: {answered}");
    assert!(refused >= 20, "the rest is refused: {refused}");
    assert_eq!(server.stats().rate_limited, refused);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplink_servers_can_change_at_run_time() {
    let dnsmasq = Dnsmasq::start();
    let (tx, rx) = watch::channel(Vec::new());
    // SO_BINDTODEVICE needs CAP_NET_RAW; as root, pin the forwarder to lo as the agent pins it
    // to the outside interface.
    // SAFETY: geteuid has no preconditions.
    let device = (unsafe { libc::geteuid() } == 0).then(|| "lo".to_owned());
    let upstream: Arc<dyn Upstream> =
        Arc::new(UplinkUpstream::new(rx, device, Duration::from_secs(2)));
    let (server, _zone) = server_with(LOOPBACK_INSIDE, dns_settings(0), Some(upstream)).await;

    let r = dig(&server, &["origin.example.com", "A"]).await;
    assert_eq!(r.status, "SERVFAIL", "no servers known yet: {}", r.raw);

    tx.send(vec![dnsmasq.addr()])
        .expect("update the server list");
    let r = dig(&server, &["origin.example.com", "A"]).await;
    assert_eq!(r.data(), ["203.0.113.10"], "{}", r.raw);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_is_bounded_while_a_client_holds_a_tcp_connection() {
    use tokio::io::AsyncWriteExt;
    let (server, _zone) = server_with(LOOPBACK_INSIDE, dns_settings(0), None).await;
    let addr = server.local_addr();
    // A length prefix and no message: the server waits for the rest (its idle timeout is 10 s).
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    idle.write_all(&[0, 40])
        .await
        .expect("write the length prefix");
    let stopped = tokio::time::timeout(Duration::from_secs(8), server.stop()).await;
    assert!(stopped.is_ok(), "stop did not return within its bound");
    tokio::net::UdpSocket::bind(addr)
        .await
        .expect("the UDP port is free again");
    tokio::net::TcpListener::bind(addr)
        .await
        .expect("the TCP port is free again");
}
