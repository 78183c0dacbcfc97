//! The Tor client, the `tor` connector and the SOCKS server against a real (private) Tor
//! network: 3 authorities, 2 relays and 2 exits from Debian's `tor`, all on 127.0.0.1 inside a
//! network namespace this test creates (docs/TORLAB.md has the settings and why).
//!
//! Needs root (a network namespace), `tor`, `tor-gencert` and `dnsmasq`; takes about three minutes, so it is
//! ignored by default: `cargo test -p gateway-agent --test tor_private_net -- --ignored`.

// Clippy's allow-*-in-tests covers #[test] functions only, not the setup helpers in this
// file and in support/; a test whose setup fails should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_agent::egress::{Isolation, Upstream, UpstreamAnswer, UpstreamError};
use gateway_agent::socks::{SocksServer, SocksSettings};
use gateway_agent::tor::{Tor, TorSettings};
use gateway_agent::tor::{TorConnector, TorUpstream};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const AUTHORITIES: usize = 3;
const RELAYS: usize = 2;
const EXITS: usize = 2;

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("gwtor-{}-{}", std::process::id(), rand_suffix());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns(name);
        run(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]));
        ns
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0, program]);
        cmd
    }

    /// Moves the calling thread into the namespace (threads it creates inherit it).
    fn enter(&self) {
        let file = std::fs::File::open(format!("/run/netns/{}", self.0)).expect("netns file");
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The tor processes, killed on drop (before the namespace goes).
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn rand_suffix() -> u32 {
    gateway_agent::clock::since_epoch().subsec_nanos()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One node's identity.
struct Node {
    nick: String,
    dir: PathBuf,
    orport: u16,
    dirport: u16,
    rsa: String,
    ed: String,
    v3ident: Option<String>,
}

/// The RSA fingerprint (and writes `fingerprint-ed25519`).
fn fingerprints(dir: &Path) -> (String, String) {
    run(Command::new("tor").args([
        "--ignore-missing-torrc",
        "-f",
        "/dev/null",
        "--orport",
        "1",
        "--datadirectory",
        &dir.display().to_string(),
        "--list-fingerprint",
        "--quiet",
    ]));
    let second = |file: &str| {
        let text = std::fs::read_to_string(dir.join(file)).expect(file);
        text.split_whitespace().nth(1).expect(file).to_owned()
    };
    (second("fingerprint"), second("fingerprint-ed25519"))
}

fn authority_keys(dir: &Path, dirport: u16) -> String {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let mut child = Command::new("tor-gencert")
        .current_dir(&keys)
        .args([
            "--create-identity-key",
            "--passphrase-fd",
            "0",
            "-i",
            "authority_identity_key",
            "-s",
            "authority_signing_key",
            "-c",
            "authority_certificate",
            "-m",
            "12",
            "-a",
            &format!("127.0.0.1:{dirport}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tor-gencert");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "tor-gencert failed");
    let cert = std::fs::read_to_string(keys.join("authority_certificate")).unwrap();
    cert.lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .expect("fingerprint line")
        .trim()
        .to_owned()
}

fn torrc(node: &Node, all: &[Node], kind: &str, resolv: &Path) -> String {
    let mut t = String::new();
    let d = node.dir.display();
    let _ = writeln!(
        t,
        "TestingTorNetwork 1\nDataDirectory {d}\nNickname {}",
        node.nick
    );
    let _ = writeln!(
        t,
        "Log notice file {d}/notice.log\nSocksPort 0\nAddress 127.0.0.1"
    );
    let _ = writeln!(
        t,
        "ORPort 127.0.0.1:{}\nDirPort 127.0.0.1:{}",
        node.orport, node.dirport
    );
    let _ = writeln!(
        t,
        "AssumeReachable 1\nContactInfo test@example.org\nSandbox 0"
    );
    let _ = writeln!(
        t,
        "ShutdownWaitLength 0\nV3AuthNIntervalsValid 2\nPathsNeededToBuildCircuits 0.67"
    );
    let _ = writeln!(
        t,
        "TestingDirAuthVoteExit *\nTestingDirAuthVoteGuard *\nTestingDirAuthVoteHSDir *"
    );
    let _ = writeln!(t, "TestingMinExitFlagThreshold 0");
    let _ = writeln!(
        t,
        "ServerDNSResolvConfFile {}\nServerDNSDetectHijacking 0",
        resolv.display()
    );
    let _ = writeln!(t, "ServerDNSTestAddresses\nServerDNSAllowBrokenConfig 1");
    for a in all.iter().filter(|n| n.v3ident.is_some()) {
        let _ = writeln!(
            t,
            "DirAuthority {} orport={} no-v2 v3ident={} 127.0.0.1:{} {}",
            a.nick,
            a.orport,
            a.v3ident.as_deref().unwrap_or_default(),
            a.dirport,
            a.rsa
        );
    }
    match kind {
        "auth" => {
            t.push_str(
                "AuthoritativeDirectory 1\nV3AuthoritativeDirectory 1\nExitPolicy reject *:*\n",
            );
            for prefix in ["TestingV3AuthInitial", "V3Auth"] {
                let _ = writeln!(
                    t,
                    "{prefix}VotingInterval 20\n{prefix}VoteDelay 4\n{prefix}DistDelay 4"
                );
            }
        }
        "exit" => t.push_str(
            "ExitRelay 1\nRefuseUnknownExits 0\nExitPolicyRejectPrivate 0\nExitPolicy accept *:*\n",
        ),
        _ => t.push_str("ExitPolicy reject *:*\n"),
    }
    t
}

/// Builds the network's nodes in `root`: their keys and torrcs, and the arti config.
fn prepare_network(root: &Path) -> (Vec<PathBuf>, PathBuf) {
    let resolv = root.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let mut nodes = Vec::new();
    let kinds: Vec<&str> = std::iter::repeat_n("auth", AUTHORITIES)
        .chain(std::iter::repeat_n("relay", RELAYS))
        .chain(std::iter::repeat_n("exit", EXITS))
        .collect();
    for (i, kind) in kinds.iter().enumerate() {
        let nick = format!("{kind}{i}");
        let dir = root.join(&nick);
        std::fs::create_dir_all(&dir).unwrap();
        let (orport, dirport) = (5100 + i as u16, 7100 + i as u16);
        let v3ident = (*kind == "auth").then(|| authority_keys(&dir, dirport));
        let (rsa, ed) = fingerprints(&dir);
        nodes.push(Node {
            nick,
            dir,
            orport,
            dirport,
            rsa,
            ed,
            v3ident,
        });
    }
    let mut torrcs = Vec::new();
    for (node, kind) in nodes.iter().zip(&kinds) {
        let rc = node.dir.join("torrc");
        std::fs::write(&rc, torrc(node, &nodes, kind, &resolv)).unwrap();
        torrcs.push(rc);
    }
    let mut arti = String::from("[tor_network]\nauthorities = { v3idents = [");
    for a in nodes.iter().filter_map(|n| n.v3ident.as_ref()) {
        let _ = write!(arti, "\"{a}\", ");
    }
    arti.push_str("] }\nfallback_caches = [\n");
    for a in nodes.iter().filter(|n| n.v3ident.is_some()) {
        let _ = writeln!(
            arti,
            "  {{ rsa_identity = \"{}\", ed_identity = \"{}\", orports = [\"127.0.0.1:{}\"] }},",
            a.rsa, a.ed, a.orport
        );
    }
    arti.push_str(
        "]\n[path_rules]\nipv4_subnet_family_prefix = 33\nipv6_subnet_family_prefix = 129\n",
    );
    arti.push_str(
        "[address_filter]\nallow_local_addrs = true\nallow_resolving_local_addrs = true\n",
    );
    let path = root.join("arti.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(arti.as_bytes()).unwrap();
    (torrcs, path)
}

/// Starts the exits' resolver and every node in `ns`.
fn launch_network(root: &Path, ns: &Netns, torrcs: &[PathBuf]) -> Nodes {
    let mut children = Nodes(Vec::new());
    // The exits' resolver: names for the tests, NXDOMAIN for the rest (docs/TORLAB.md).
    let dnsmasq = ns
        .command("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--local=/#/",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--user=root",
            &format!("--pid-file={}", root.join("dnsmasq.pid").display()),
            "--host-record=origin.test,127.0.0.1",
            "--host-record=doc.test,192.0.2.77",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq");
    children.0.push(dnsmasq);
    for rc in torrcs {
        let child = ns
            .command("tor")
            .args(["-f", &rc.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tor");
        children.0.push(child);
    }
    children
}

/// A SOCKS5 CONNECT to `target`; the reply code and the stream.
async fn socks_connect(
    socks: SocketAddr,
    target: SocketAddr,
    auth: Option<(&str, &str)>,
) -> (u8, TcpStream) {
    let mut c = TcpStream::connect(socks).await.unwrap();
    let mut two = [0; 2];
    match auth {
        None => {
            c.write_all(&[5, 1, 0]).await.unwrap();
            c.read_exact(&mut two).await.unwrap();
        }
        Some((u, p)) => {
            c.write_all(&[5, 1, 2]).await.unwrap();
            c.read_exact(&mut two).await.unwrap();
            let mut msg = vec![1, u.len() as u8];
            msg.extend(u.as_bytes());
            msg.push(p.len() as u8);
            msg.extend(p.as_bytes());
            c.write_all(&msg).await.unwrap();
            c.read_exact(&mut two).await.unwrap();
        }
    }
    let SocketAddr::V4(v4) = target else {
        panic!("IPv4 target")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend(v4.ip().octets());
    req.extend(v4.port().to_be_bytes());
    c.write_all(&req).await.unwrap();
    let mut reply = [0; 10];
    c.read_exact(&mut reply).await.unwrap();
    (reply[1], c)
}

#[test]
#[ignore = "needs root, tor, tor-gencert and dnsmasq; about three minutes"]
fn socks_through_a_private_tor_network() {
    if unsafe { libc::geteuid() } != 0 || !have("tor") || !have("tor-gencert") || !have("dnsmasq") {
        eprintln!("skipped: needs root, tor, tor-gencert and dnsmasq");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ns = Netns::new();
    let (torrcs, arti_config) = prepare_network(root.path());
    let state_dir = root.path().join("agent");

    // The agent side runs on a thread inside the namespace, with its own runtime. It starts
    // before the network, which comes up when it asks: bootstrap must get there by itself.
    let (want_network, network_wanted) = std::sync::mpsc::channel();
    let mut nodes = None;
    let outcome = std::thread::scope(|scope| {
        let agent = scope.spawn(|| {
            ns.enter();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(agent_side(
                state_dir.clone(),
                arti_config.clone(),
                want_network,
            ))
        });
        if network_wanted.recv().is_ok() {
            nodes = Some(launch_network(root.path(), &ns, &torrcs));
        }
        agent.join()
    });
    drop(nodes);
    drop(ns);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn agent_side(
    state_dir: PathBuf,
    arti_config: PathBuf,
    want_network: std::sync::mpsc::Sender<()>,
) {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });

    let tor = Tor::start(TorSettings {
        network_up: None,
        state_dir,
        arti_config: Some(arti_config),
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let socks = SocksServer::start(
        SocksSettings::new(
            "127.0.0.1:0".parse().unwrap(),
            gateway_agent::config::Inside {
                address: std::net::Ipv4Addr::LOCALHOST,
                prefix_len: 8,
            },
        ),
        Arc::new(TorConnector::new(tor.clone())),
        Arc::new(tor.clone()),
    )
    .await
    .unwrap();

    // No network yet: bootstrap fails and retries; a failure code, never a stream.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (code, _) = socks_connect(socks.local_addr(), echo_addr, None).await;
    assert_eq!(code, 1, "general failure before bootstrap");
    let status = tor.status();
    assert!(!status.bootstrapped, "{status:?}");
    eprintln!("before the network: {status:?}");
    want_network.send(()).unwrap();

    // arti backs off inside one bootstrap attempt while nothing answers: recovery took about
    // 2.5 min here after a 5 s outage at start (a settled network: 15 s).
    let start = Instant::now();
    while !tor.is_ready() {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no bootstrap: {:?}",
            tor.status()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "bootstrapped after {:?}: {:?}",
        start.elapsed(),
        tor.status()
    );

    // An early consensus may have no exits yet (docs/TORLAB.md): retry for a while.
    let start = Instant::now();
    let mut stream = loop {
        let (code, stream) = socks_connect(socks.local_addr(), echo_addr, None).await;
        if code == 0 {
            break stream;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no stream: code {code}, {:?}",
            socks.stats()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    stream.write_all(b"through tor").await.unwrap();
    let mut back = [0; 11];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"through tor");

    let (code, mut other) =
        socks_connect(socks.local_addr(), echo_addr, Some(("alice", "x"))).await;
    assert_eq!(code, 0, "{:?}", socks.stats());
    other.write_all(b"x").await.unwrap();
    other.read_exact(&mut [0; 1]).await.unwrap();

    let status = tor.status();
    assert!(status.bootstrapped, "{status:?}");
    // The bare client and the one with credentials: two groups.
    assert_eq!(status.isolation_groups_created, 2, "{status:?}");

    // A name, resolved by the exit.
    let mut c = TcpStream::connect(socks.local_addr()).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    c.read_exact(&mut [0; 2]).await.unwrap();
    let mut req = vec![5, 1, 0, 3, 11];
    req.extend(b"origin.test");
    req.extend(echo_addr.port().to_be_bytes());
    c.write_all(&req).await.unwrap();
    let mut reply = [0; 10];
    c.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 0, "CONNECT by name");
    c.write_all(b"n").await.unwrap();
    c.read_exact(&mut [0; 1]).await.unwrap();

    // Tor's RESOLVE and RESOLVE_PTR through the SOCKS server.
    let mut c = TcpStream::connect(socks.local_addr()).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    c.read_exact(&mut [0; 2]).await.unwrap();
    let mut req = vec![5, 0xf0, 0, 3, 8];
    req.extend(b"doc.test");
    req.extend([0, 0]);
    c.write_all(&req).await.unwrap();
    let mut reply = [0; 10];
    c.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[..8], [5, 0, 0, 1, 192, 0, 2, 77], "RESOLVE");
    let mut c = TcpStream::connect(socks.local_addr()).await.unwrap();
    c.write_all(&[5, 1, 0]).await.unwrap();
    c.read_exact(&mut [0; 2]).await.unwrap();
    c.write_all(&[5, 0xf1, 0, 1, 192, 0, 2, 77, 0, 0])
        .await
        .unwrap();
    let mut reply = [0; 5 + 8 + 2];
    c.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[..5], [5, 0, 0, 3, 8], "RESOLVE_PTR");
    assert_eq!(&reply[5..13], b"doc.test");

    // DNS over Tor, as the DNS server asks it.
    let upstream = TorUpstream::new(Arc::new(tor.clone()));
    let name = Name::from_ascii("doc.test.").unwrap();
    let Ok(UpstreamAnswer::Records(records)) = upstream.lookup(&name, RecordType::A).await else {
        panic!("no A records for doc.test");
    };
    assert_eq!(records[0].data, RData::A(A("192.0.2.77".parse().unwrap())));
    let missing = Name::from_ascii("missing.test.").unwrap();
    assert_eq!(
        upstream.lookup(&missing, RecordType::A).await,
        Ok(UpstreamAnswer::NxDomain { soa: None })
    );
    let reverse = Name::from_ascii("77.2.0.192.in-addr.arpa.").unwrap();
    let Ok(UpstreamAnswer::Records(records)) = upstream.lookup(&reverse, RecordType::PTR).await
    else {
        panic!("no PTR records for 192.0.2.77");
    };
    assert_eq!(records.len(), 1);
    assert_eq!(
        upstream.lookup(&name, RecordType::MX).await,
        Err(UpstreamError::Unsupported(RecordType::MX))
    );
    let bare = Isolation::client("127.0.0.1".parse().unwrap());
    assert_eq!(tor.isolation_group(&bare), 1);
    socks.stop().await;
    tor.stop();
}
