//! The uplink against a real upstream: network namespaces made here with the test kit's
//! [`Netns`] (an "up" with a bridge and Debian's dnsmasq, a "gw" with the veth the macvlan goes
//! on, named like a lab's), and `Uplink::start` run inside the gw namespace. Nothing touches
//! the host's own interfaces.

// Clippy's allow-*-in-tests covers #[test] functions only, not the setup helpers in this
// file; a test whose setup fails should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway_agent::config::{MacAddr, MacvlanMode, OutsideAddress, Uplink as UplinkConfig};
use gateway_agent::uplink::{derive_mac, Uplink, UplinkSettings, UplinkStatus};
use gateway_tests::{host, skip_unless_root, Netns};
use serde_json::Value;

const MODEM: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PARENT: &str = "outside0";
const MACVLAN: &str = "gw-uplink";

/// The upstream namespace (bridge with the modem's 192.0.2.1, optionally dnsmasq on it) and
/// the gw namespace with `outside0`, the veth into that bridge.
struct World {
    dnsmasq: Option<Child>,
    dir: tempfile::TempDir,
    gw: Netns,
    upstream: Netns,
}

impl World {
    fn new(with_dnsmasq: bool) -> World {
        let names = Netns::lab();
        let upstream = Netns::new(&names, "up");
        let gw = Netns::new(&names, "gw");
        upstream.ip(&["link", "add", "br0", "type", "bridge"]);
        upstream.ip(&["addr", "add", "192.0.2.1/24", "dev", "br0"]);
        upstream.ip(&["link", "set", "br0", "up"]);
        upstream.ip(&[
            "link",
            "add",
            "vup",
            "type",
            "veth",
            "peer",
            "name",
            PARENT,
            "netns",
            gw.name(),
        ]);
        upstream.ip(&["link", "set", "vup", "master", "br0", "up"]);
        gw.ip(&["link", "set", PARENT, "up"]);
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut world = World {
            dnsmasq: None,
            dir,
            gw,
            upstream,
        };
        if with_dnsmasq {
            world.start_dnsmasq();
        }
        world
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.log")
    }

    fn start_dnsmasq(&mut self) {
        let dir = self.dir.path();
        let arg = |flag: &str, file: &str| format!("{flag}={}", dir.join(file).display());
        let child = Command::new("ip")
            .args(["netns", "exec", self.upstream.name(), "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                // DHCP only: the modem's DNS is not what is under test.
                "--port=0",
                "--interface=br0",
                "--bind-interfaces",
                "--dhcp-range=192.0.2.100,192.0.2.199,2m",
                "--dhcp-option=3,192.0.2.1",
                "--dhcp-option=6,192.0.2.1",
                "--log-dhcp",
                "--user=root",
                "--group=root",
            ])
            .arg(arg("--log-facility", "dnsmasq.log"))
            .arg(arg("--dhcp-leasefile", "dnsmasq.leases"))
            .arg(arg("--pid-file", "dnsmasq.pid"))
            .stdin(Stdio::null())
            .spawn()
            .expect("starting dnsmasq (package dnsmasq-base)");
        self.dnsmasq = Some(child);
        wait_until(Duration::from_secs(10), "dnsmasq to start", || {
            log_text(&self.log_path()).contains("DHCP, IP range")
        });
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The namespaces go when their fields drop, after this.
    }
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn count_lines(path: &Path, needle: &str) -> usize {
    log_text(path)
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `body` on a current-thread runtime in a thread that has entered `netns`: setns
/// changes only the calling thread, and every socket the uplink opens from it lives there.
fn in_netns<F, Fut, T>(netns: &str, body: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    gateway_tests::in_netns(netns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(body())
    })
}

async fn wait_for_status(
    uplink: &Uplink,
    limit: Duration,
    what: &str,
    done: impl Fn(&UplinkStatus) -> bool,
) -> UplinkStatus {
    let mut watch = uplink.status_watch();
    let outcome = tokio::time::timeout(limit, watch.wait_for(|s| done(s)))
        .await
        .map(|found| found.map(|status| status.clone()));
    match outcome {
        Ok(Ok(status)) => status,
        Ok(Err(_)) => panic!("the uplink's status channel closed while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}; status {:?}", uplink.status()),
    }
}

/// The one link `name` in `ns`, with details.
fn link(ns: &Netns, name: &str) -> Value {
    ns.ip_json(&["-d", "link", "show", "dev", name])
        .into_iter()
        .next()
        .expect("the link exists")
}

/// The IPv4 addresses on `dev`, as `a.b.c.d/len`.
fn ipv4_addresses(ns: &Netns, dev: &str) -> Vec<String> {
    ns.ip_json(&["-4", "addr", "show", "dev", dev])
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
        .collect()
}

/// Default routes as (gateway, device).
fn default_routes(ns: &Netns) -> Vec<(String, String)> {
    ns.ip_json(&["-4", "route", "show", "default"])
        .iter()
        .map(|r| {
            (
                r["gateway"].as_str().unwrap_or("").to_owned(),
                r["dev"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn settings(state_dir: PathBuf, address: OutsideAddress, uplink: UplinkConfig) -> UplinkSettings {
    UplinkSettings {
        parent: PARENT.to_owned(),
        address,
        uplink,
        state_dir,
    }
}

#[test]
fn dhcp_lease_renewal_crash_release_and_reuse() {
    if skip_unless_root("makes network namespaces, a macvlan and routes") {
        return;
    }
    let world = World::new(true);
    let gw = world.gw.handle();
    let log = world.log_path();
    let state_dir = world.dir.path().join("state");
    let parent_mac: MacAddr = link(&world.gw, PARENT)["address"]
        .as_str()
        .expect("outside0 has a MAC")
        .parse()
        .expect("ip prints a MAC");
    // Made here, found by the start: the MAC is keyed by it.
    let mac_key = gateway_agent::uplink::mac_key::load_or_create(&state_dir).expect("MAC key");
    let expected_mac = derive_mac(&mac_key, &parent_mac).to_string();

    in_netns(world.gw.name(), move || async move {
        let cfg = UplinkConfig {
            macvlan_name: MACVLAN.to_owned(),
            ..UplinkConfig::default()
        };
        let uplink = Uplink::start(settings(
            state_dir.clone(),
            OutsideAddress::Dhcp,
            cfg.clone(),
        ))
        .await
        .expect("Uplink::start");
        assert_eq!(uplink.device(), MACVLAN);

        // The macvlan: on outside0, bridge mode, the derived MAC, IPv6 off.
        let first = link(&gw, MACVLAN);
        assert_eq!(first["linkinfo"]["info_kind"], "macvlan", "{first}");
        assert_eq!(first["linkinfo"]["info_data"]["mode"], "bridge", "{first}");
        assert_eq!(first["link"], PARENT, "{first}");
        assert_eq!(first["address"], expected_mac.as_str());
        assert_eq!(uplink.status().mac, expected_mac);
        // This thread is in the gw namespace, so /proc/sys/net is the gw's.
        let disabled =
            std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{MACVLAN}/disable_ipv6"))
                .expect("reading disable_ipv6");
        assert_eq!(disabled.trim(), "1");
        assert!(gw
            .ip_json(&["-6", "addr", "show", "dev", MACVLAN])
            .iter()
            .all(|l| { l["addr_info"].as_array().is_none_or(|a| a.is_empty()) }));

        // DORA through the macvlan: an address from the range, the default route, DNS.
        let bound = wait_for_status(&uplink, Duration::from_secs(30), "a lease", |s| {
            s.state == "bound"
        })
        .await;
        let address = bound.address.expect("a bound lease has an address");
        let last = address.octets()[3];
        assert!(
            address.octets()[..3] == [192, 0, 2] && (100..=199).contains(&last),
            "{address} is not from the range"
        );
        assert_eq!(bound.prefix_len, Some(24));
        assert_eq!(bound.router, Some(MODEM));
        assert_eq!(bound.server, Some(MODEM));
        assert!(bound.lease_expires_unix.is_some());
        assert_eq!(ipv4_addresses(&gw, MACVLAN), vec![format!("{address}/24")]);
        let with_lifetime = gw.ip_json(&["-4", "addr", "show", "dev", MACVLAN]);
        let valid = with_lifetime[0]["addr_info"][0]["valid_life_time"]
            .as_u64()
            .expect("valid_life_time");
        assert!(
            valid <= 120,
            "the address lives as long as the lease, not {valid} s"
        );
        assert_eq!(
            default_routes(&gw),
            vec![(MODEM.to_string(), MACVLAN.to_owned())]
        );
        let mut dns = uplink.dns_servers();
        let servers = dns
            .wait_for(|d| !d.is_empty())
            .await
            .expect("dns channel open")
            .clone();
        assert_eq!(servers, vec![MODEM]);
        host(
            "ip",
            &[
                "netns",
                "exec",
                gw.name(),
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                "192.0.2.1",
            ],
        )
        .unwrap();

        // Renewal at T1 (60 s of the 2-minute lease), seen by dnsmasq.
        let renewed = wait_for_status(&uplink, Duration::from_secs(90), "a renewal", |s| {
            s.renewals >= 1
        })
        .await;
        assert_eq!(renewed.address, Some(address));
        assert_eq!(renewed.state, "bound");
        let acks = count_lines(&log, &format!("DHCPACK(br0) {address} "));
        assert!(acks >= 2, "dnsmasq saw no renewal:\n{}", log_text(&log));

        // A crash (the handle dropped, no release) leaves the macvlan and the address, which
        // the kernel keeps only until the lease runs out. The next start reuses the macvlan
        // and confirms the lease with INIT-REBOOT: a REQUEST, no DISCOVER.
        drop(uplink);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(ipv4_addresses(&gw, MACVLAN), vec![format!("{address}/24")]);
        let discovers = count_lines(&log, "DHCPDISCOVER(br0) ");
        let acks = count_lines(&log, &format!("DHCPACK(br0) {address} "));
        let uplink = Uplink::start(settings(
            state_dir.clone(),
            OutsideAddress::Dhcp,
            cfg.clone(),
        ))
        .await
        .expect("Uplink::start after a crash");
        let second = link(&gw, MACVLAN);
        assert_eq!(
            second["ifindex"], first["ifindex"],
            "reused, not re-created"
        );
        assert_eq!(second["address"], first["address"], "the same MAC");
        let rebooted = wait_for_status(&uplink, Duration::from_secs(30), "INIT-REBOOT", |s| {
            s.state == "bound"
        })
        .await;
        assert_eq!(rebooted.address, Some(address), "the same lease");
        assert_eq!(
            count_lines(&log, &format!("DHCPACK(br0) {address} ")),
            acks + 1
        );
        assert_eq!(
            count_lines(&log, "DHCPDISCOVER(br0) "),
            discovers,
            "INIT-REBOOT, not discovery:\n{}",
            log_text(&log)
        );
        assert_eq!(
            default_routes(&gw),
            vec![(MODEM.to_string(), MACVLAN.to_owned())]
        );

        // Clean stop: DHCPRELEASE, the address and route go, the macvlan stays.
        uplink.stop().await;
        let released = format!("DHCPRELEASE(br0) {address} ");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !log_text(&log).contains(&released) {
            assert!(
                Instant::now() < deadline,
                "no DHCPRELEASE:\n{}",
                log_text(&log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ipv4_addresses(&gw, MACVLAN).is_empty());
        assert!(default_routes(&gw).is_empty());
        assert_eq!(
            link(&gw, MACVLAN)["ifindex"],
            first["ifindex"],
            "the macvlan stays"
        );

        // After a release the next start discovers again, and gets the same address back.
        let uplink = Uplink::start(settings(state_dir, OutsideAddress::Dhcp, cfg))
            .await
            .expect("Uplink::start after a release");
        let third = link(&gw, MACVLAN);
        assert_eq!(third["ifindex"], first["ifindex"], "reused, not re-created");
        assert_eq!(third["address"], first["address"], "the same MAC");
        let again = wait_for_status(&uplink, Duration::from_secs(30), "a new lease", |s| {
            s.state == "bound"
        })
        .await;
        assert_eq!(again.address, Some(address), "the same address");
        assert!(count_lines(&log, "DHCPDISCOVER(br0) ") > discovers);
        uplink.stop().await;
        assert!(ipv4_addresses(&gw, MACVLAN).is_empty());
    });
    drop(world);
}

#[test]
fn static_address_mode_change_and_name_clash() {
    if skip_unless_root("makes network namespaces, a macvlan and routes") {
        return;
    }
    let world = World::new(false);
    let gw = world.gw.handle();
    let state_dir = world.dir.path().join("state");
    gw.ip(&["link", "add", "clash0", "type", "bridge"]);

    in_netns(world.gw.name(), move || async move {
        // Something else under the macvlan's name is an error naming the key.
        let clash = UplinkConfig {
            macvlan_name: "clash0".to_owned(),
            ..UplinkConfig::default()
        };
        let err = Uplink::start(settings(state_dir.clone(), OutsideAddress::Dhcp, clash))
            .await
            .err()
            .expect("a bridge is not a macvlan");
        assert!(
            format!("{err:#}").contains("outside.macvlan_name"),
            "{err:#}"
        );

        let mut missing = settings(
            state_dir.clone(),
            OutsideAddress::Dhcp,
            UplinkConfig::default(),
        );
        missing.parent = "nosuchnic".to_owned();
        let err = Uplink::start(missing).await.err().expect("no such parent");
        assert!(format!("{err:#}").contains("interfaces.outside"), "{err:#}");

        // Static, private mode, a configured MAC.
        let mac = MacAddr::new([0x02, 0, 0x5e, 0, 0x53, 0x42]);
        let cfg = UplinkConfig {
            macvlan_name: MACVLAN.to_owned(),
            macvlan_mode: MacvlanMode::Private,
            mac: Some(mac),
            ..UplinkConfig::default()
        };
        let fixed = OutsideAddress::Static {
            address: Ipv4Addr::new(192, 0, 2, 50),
            prefix_len: 24,
            gateway: Some(MODEM),
        };
        let uplink = Uplink::start(settings(state_dir.clone(), fixed, cfg.clone()))
            .await
            .expect("static Uplink::start");
        let made = link(&gw, MACVLAN);
        assert_eq!(made["linkinfo"]["info_data"]["mode"], "private", "{made}");
        assert_eq!(made["address"], mac.to_string().as_str());
        let status = uplink.status();
        assert_eq!(status.state, "static");
        assert_eq!(status.address, Some(Ipv4Addr::new(192, 0, 2, 50)));
        assert!(uplink.dns_servers().borrow().is_empty());
        assert_eq!(
            ipv4_addresses(&gw, MACVLAN),
            vec!["192.0.2.50/24".to_owned()]
        );
        let valid = gw.ip_json(&["-4", "addr", "show", "dev", MACVLAN])[0]["addr_info"][0]
            ["valid_life_time"]
            .as_u64()
            .expect("valid_life_time");
        assert_eq!(valid, u64::from(u32::MAX), "a static address is permanent");
        assert_eq!(
            default_routes(&gw),
            vec![(MODEM.to_string(), MACVLAN.to_owned())]
        );
        host(
            "ip",
            &[
                "netns",
                "exec",
                gw.name(),
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                "192.0.2.1",
            ],
        )
        .unwrap();
        uplink.stop().await;
        assert!(ipv4_addresses(&gw, MACVLAN).is_empty());
        assert!(default_routes(&gw).is_empty());

        // Restarted in bridge mode with a stale address in place: the same device, its mode
        // changed, the stale address replaced.
        gw.ip(&["addr", "add", "192.0.2.77/24", "dev", MACVLAN]);
        let bridge = UplinkConfig {
            macvlan_mode: MacvlanMode::Bridge,
            ..cfg
        };
        let uplink = Uplink::start(settings(state_dir, fixed, bridge))
            .await
            .expect("restart in bridge mode");
        let changed = link(&gw, MACVLAN);
        assert_eq!(changed["ifindex"], made["ifindex"]);
        assert_eq!(
            changed["linkinfo"]["info_data"]["mode"], "bridge",
            "{changed}"
        );
        assert_eq!(
            ipv4_addresses(&gw, MACVLAN),
            vec!["192.0.2.50/24".to_owned()]
        );
        uplink.stop().await;
    });
    drop(world);
}
