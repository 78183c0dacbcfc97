//! The network-namespace lab: a modem with a stand-in internet (`up`), the gateway host (`gw`),
//! the inside LAN bridge (`lan`) and clients (`c1`, `c2`), all in namespaces so that nothing
//! touches the host's own interfaces. Documentation address ranges only.
//!
//! Everything a lab makes is derived from its prefix (namespace names, the state dir, the bpffs
//! mount), so [`Lab::down`] cleans up after a crash without any in-memory state, and labs with
//! different prefixes (parallel tests) never touch each other.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::deps;
use crate::lab_tor::{self, TorNodeStatus};
use crate::process;

/// Where every lab keeps its state: `<root>/default` or `<root>/<prefix>`.
pub const STATE_ROOT: &str = "/run/gateway-lab";
/// Namespace roles, in creation order.
pub const ROLES: [&str; 5] = ["up", "gw", "lan", "c1", "c2"];
/// Client roles and the DHCP client each runs (`cargo xtask run` starts them).
pub const CLIENTS: [(&str, DhcpClient); 2] =
    [("c1", DhcpClient::Dhclient), ("c2", DhcpClient::Udhcpc)];

/// A real DHCP client a lab client runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpClient {
    /// ISC dhclient (isc-dhcp-client).
    Dhclient,
    /// busybox udhcpc.
    Udhcpc,
}

/// The uplink LAN between modem and gateway.
pub const UPLINK_SUBNET: &str = "192.0.2.0/24";
/// The modem: uplink router, DHCP server and DNS resolver.
pub const MODEM_IP: &str = "192.0.2.1";
/// The modem's DHCP range: the gateway's uplink address comes from here.
pub const UPLINK_DHCP_RANGE: (&str, &str) = ("192.0.2.100", "192.0.2.199");
/// The stand-in internet behind the modem.
pub const INTERNET_SUBNET: &str = "203.0.113.0/24";
/// The HTTP origin.
pub const ORIGIN_IP: &str = "203.0.113.10";
/// The origin's name, resolvable at the modem.
pub const ORIGIN_NAME: &str = "origin.example.com";
/// The origin's URL.
pub const ORIGIN_URL: &str = "http://origin.example.com/";
/// A name the modem maps to 127.0.0.1: a public name that points somewhere the gateway must
/// never connect to for a client (tests of the `direct` egress policy).
pub const LOOPBACK_NAME: &str = "loopback.example.com";
/// The resolver's address on the stand-in internet (the same dnsmasq as the modem's).
pub const INTERNET_RESOLVER_IP: &str = "203.0.113.53";
/// The inside LAN.
pub const INSIDE_SUBNET: &str = "198.51.100.0/24";
/// The gateway's inside address.
pub const GATEWAY_INSIDE_IP: &str = "198.51.100.1";
/// The gateway's outside device (in `gw`).
pub const OUTSIDE_IF: &str = "outside0";
/// The gateway's inside device (in `gw`).
pub const INSIDE_IF: &str = "inside0";

/// The paths `config/lab.toml` uses; each lab's copy points them into its own state dir.
const TEMPLATE_STATE_DIR: &str = "/run/gateway-lab/default/";
/// How long `up` waits for dnsmasq and the origin to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// One lab, identified by its prefix ("" for the default lab).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lab {
    prefix: String,
}

/// What `lab status` reports; `lab status --json` is the lab's contract with scripts.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    /// Whether the lab is fully up (namespaces, bpffs, dnsmasq and origin alive).
    pub up: bool,
    /// The lab's prefix ("" for the default lab).
    pub prefix: String,
    pub gateway_inside_ip: String,
    /// The gateway's uplink address, once the agent's DHCP client has one.
    pub gateway_outside_ip: Option<String>,
    pub inside_subnet: String,
    pub uplink_subnet: String,
    pub internet_subnet: String,
    pub origin_url: String,
    pub origin_name: String,
    pub origin_ip: String,
    /// The resolver the modem hands out by DHCP.
    pub uplink_resolver_ip: String,
    pub internet_resolver_ip: String,
    pub inside_interface: String,
    pub outside_interface: String,
    pub bpf_pin_dir: String,
    pub control_socket: String,
    pub agent_config: String,
    pub agent_state_dir: String,
    pub state_dir: String,
    pub dnsmasq_log: String,
    pub dnsmasq_leases: String,
    pub origin_log: String,
    /// Role → namespace name.
    pub roles: BTreeMap<String, String>,
    /// Client namespace → the DHCP client it runs.
    pub clients: BTreeMap<String, DhcpClient>,
    /// The private Tor network has a fresh consensus listing every node (see `lab_tor`).
    pub tor_ready: bool,
    /// Why it is not ready, if it is not.
    pub tor_not_ready_because: Option<String>,
    /// The Tor network's nodes: role, address, ports, running, identities.
    pub tor_nodes: Vec<TorNodeStatus>,
    /// The onion service in front of the origin (`<56 chars>.onion`).
    pub onion_address: Option<String>,
    /// Its URL (`http://<onion address>/`).
    pub onion_url: Option<String>,
    /// It has stored its descriptor on enough HSDirs since it last started: clients find it.
    pub onion_published: bool,
    /// arti's settings for the lab's Tor network (authorities, fallbacks, path rules).
    pub arti_config: String,
    /// Existing namespace → IPv4 addresses (CIDR) on its interfaces other than `lo`.
    pub namespaces: BTreeMap<String, Vec<String>>,
}

impl Lab {
    /// A lab with namespace names `<prefix>-<role>`; "" is the default lab (names `<role>`).
    /// The prefix is checked (at most 8 of `[a-z0-9]`) when the lab is used.
    pub fn new(prefix: &str) -> Lab {
        Lab {
            prefix: prefix.to_string(),
        }
    }

    /// The default lab, the one `cargo xtask lab up` makes.
    pub fn default_lab() -> Lab {
        Lab::new("")
    }

    /// The prefix ("" for the default lab).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace name of `role` ("up", "gw", "lan", "c1", "c2").
    pub fn ns(&self, role: &str) -> String {
        if self.prefix.is_empty() {
            role.to_string()
        } else {
            format!("{}-{role}", self.prefix)
        }
    }

    /// This lab's state dir: `/run/gateway-lab/default` or `/run/gateway-lab/<prefix>`.
    pub fn state_dir(&self) -> PathBuf {
        let name = if self.prefix.is_empty() {
            "default"
        } else {
            &self.prefix
        };
        Path::new(STATE_ROOT).join(name)
    }

    /// The bpffs mounted for this lab; the agent's pin dir.
    pub fn bpf_dir(&self) -> PathBuf {
        self.state_dir().join("bpf")
    }

    /// The agent's control socket in this lab.
    pub fn control_socket(&self) -> PathBuf {
        self.state_dir().join("control.sock")
    }

    /// The agent's state dir in this lab.
    pub fn agent_state_dir(&self) -> PathBuf {
        self.state_dir().join("state")
    }

    /// The agent config for this lab, written by [`Lab::up`] from `config/lab.toml`.
    pub fn agent_config(&self) -> PathBuf {
        self.state_dir().join("gateway.toml")
    }

    /// dnsmasq's log (queries and DHCP).
    pub fn dnsmasq_log(&self) -> PathBuf {
        self.state_dir().join("dnsmasq.log")
    }

    /// The origin's access log (shows client addresses).
    pub fn origin_log(&self) -> PathBuf {
        self.state_dir().join("origin.log")
    }

    fn label(&self) -> String {
        if self.prefix.is_empty() {
            "lab".to_string()
        } else {
            format!("lab {}", self.prefix)
        }
    }

    fn ns_names(&self) -> Vec<String> {
        ROLES.iter().map(|r| self.ns(r)).collect()
    }

    fn check_prefix(&self) -> Result<()> {
        if !valid_prefix(&self.prefix) {
            bail!(
                "invalid lab prefix {:?}: use at most 8 characters of [a-z0-9] (\"\" is the default lab)",
                self.prefix
            );
        }
        Ok(())
    }

    /// Builds the lab; does nothing if it is fully up, and rebuilds it if it is partially up.
    pub fn up(&self) -> Result<()> {
        self.check_prefix()?;
        deps::require_root("lab up")?;
        deps::ensure_lab_packages()?;
        if self.is_up() {
            // Re-render so that edits to config/lab.toml reach a lab that is already up.
            self.write_agent_config()?;
            // And bring the Tor network back if `lab tor stop` stopped it.
            lab_tor::setup(self)?;
            lab_tor::start(self)?;
            eprintln!(
                "{}: already up ({})",
                self.label(),
                self.state_dir().display()
            );
            return Ok(());
        }
        if self.has_traces() {
            eprintln!("{}: partially up; tearing down to rebuild", self.label());
            self.down()?;
        }
        if let Err(err) = self.build() {
            eprintln!("{}: setting up failed; cleaning up", self.label());
            if let Err(down_err) = self.down() {
                eprintln!("{}: cleaning up failed too: {down_err:#}", self.label());
            }
            return Err(err.context(format!("{} up", self.label())));
        }
        eprintln!("{}: up ({})", self.label(), self.state_dir().display());
        Ok(())
    }

    /// Whether everything the lab needs is present and its daemons are alive.
    pub fn is_up(&self) -> bool {
        valid_prefix(&self.prefix)
            && self.ns_names().iter().all(|ns| ns_exists(ns))
            && is_mounted_bpf(&self.bpf_dir())
            && self.agent_config().is_file()
            && self.daemon_alive("dnsmasq.pid")
            && self.daemon_alive("origin.pid")
    }

    /// Whether the pid in `pid_file` is alive and in this lab's `up` namespace (not a reused pid).
    pub(crate) fn daemon_alive(&self, pid_file: impl AsRef<Path>) -> bool {
        let Some(pid) = read_pid(&self.state_dir().join(pid_file)) else {
            return false;
        };
        if !pid_alive(pid) {
            return false;
        }
        let proc_ns = fs::metadata(format!("/proc/{pid}/ns/net"));
        let lab_ns = fs::metadata(ns_path(&self.ns("up")));
        match (proc_ns, lab_ns) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        }
    }

    /// Whether anything of this lab exists (a namespace, the state dir).
    fn has_traces(&self) -> bool {
        self.state_dir().exists() || self.ns_names().iter().any(|ns| ns_exists(ns))
    }

    fn build(&self) -> Result<()> {
        let state = self.state_dir();
        fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        // Render the config first: a broken template should fail before anything is built.
        self.write_agent_config()?;
        self.write_www()?;

        let bpf = self.bpf_dir();
        fs::create_dir_all(&bpf).with_context(|| format!("creating {}", bpf.display()))?;
        // `ip netns exec` remounts /sys, so pins under /sys/fs/bpf would not survive from one
        // exec to the next; a bpffs under /run is seen by all of them.
        process::run_command(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpf))
            .context("mounting the lab's bpffs")?;

        eprintln!(
            "{}: creating namespaces {}",
            self.label(),
            self.ns_names().join(" ")
        );
        self.build_namespaces()?;

        eprintln!(
            "{}: starting dnsmasq (modem {MODEM_IP}, DHCP/DNS) and the origin ({ORIGIN_IP})",
            self.label()
        );
        self.start_dnsmasq()?;
        self.start_origin()?;
        self.wait_ready()?;

        // Not waited for: the first usable consensus takes 10–50 s; `lab status` tells.
        lab_tor::setup(self)?;
        lab_tor::start(self)
    }

    /// Copies `config/lab.toml` with its paths pointed into this lab's state dir.
    fn write_agent_config(&self) -> Result<()> {
        let template_path = lab_config_template();
        let template = fs::read_to_string(&template_path).with_context(|| {
            format!(
                "reading the lab's agent config template {}",
                template_path.display()
            )
        })?;
        if !template.contains(TEMPLATE_STATE_DIR) {
            // Otherwise every lab's agent would share one pin dir and control socket.
            bail!(
                "{} does not use paths under {TEMPLATE_STATE_DIR}; the lab cannot give each lab its own",
                template_path.display()
            );
        }
        let own = format!("{}/", self.state_dir().display());
        let config = template.replace(TEMPLATE_STATE_DIR, &own);
        let path = self.agent_config();
        fs::write(&path, config).with_context(|| format!("writing {}", path.display()))
    }

    /// `ip netns exec` bind-mounts `/etc/netns/<ns>/resolv.conf` over `/etc/resolv.conf`. Each
    /// namespace gets the resolver it would have on a real network (the clients the gateway, the
    /// gateway and the modem the modem), so lookups never head for the host's own resolver, and
    /// a DHCP client hook that writes resolv.conf would write this file, not the host's.
    fn write_resolv_conf(&self, ns: &str) -> Result<()> {
        let role = ROLES
            .iter()
            .find(|role| self.ns(role) == ns)
            .copied()
            .unwrap_or("lan");
        let resolver = match role {
            "c1" | "c2" => GATEWAY_INSIDE_IP,
            "up" | "gw" => MODEM_IP,
            _ => "127.0.0.1",
        };
        let dir = Path::new("/etc/netns").join(ns);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join("resolv.conf");
        fs::write(&file, format!("nameserver {resolver}\n"))
            .with_context(|| format!("writing {}", file.display()))
    }

    fn write_www(&self) -> Result<()> {
        let www = self.state_dir().join("www");
        fs::create_dir_all(&www).with_context(|| format!("creating {}", www.display()))?;
        let index = www.join("index.html");
        fs::write(&index, "gateway lab origin\n")
            .with_context(|| format!("writing {}", index.display()))?;
        let bin = www.join("1m.bin");
        let mut random = File::open("/dev/urandom")
            .context("opening /dev/urandom")?
            .take(1 << 20);
        let mut out = File::create(&bin).with_context(|| format!("creating {}", bin.display()))?;
        io::copy(&mut random, &mut out).with_context(|| format!("writing {}", bin.display()))?;
        Ok(())
    }

    fn build_namespaces(&self) -> Result<()> {
        let up = self.ns("up");
        let gw = self.ns("gw");
        let lan = self.ns("lan");
        for ns in self.ns_names() {
            self.write_resolv_conf(&ns)?;
            process::run("ip", ["netns", "add", &ns])?;
            ip(&ns, &["link", "set", "lo", "up"])?;
        }

        // The modem: uplink bridge plus the stand-in internet. inet0 is a port-less bridge
        // because this kernel has no dummy driver; later namespaces (relays) can join it.
        ip(&up, &["link", "add", "br0", "type", "bridge"])?;
        ip(
            &up,
            &["addr", "add", &format!("{MODEM_IP}/24"), "dev", "br0"],
        )?;
        ip(&up, &["link", "set", "br0", "up"])?;
        ip(&up, &["link", "add", "inet0", "type", "bridge"])?;
        for addr in ["203.0.113.1", ORIGIN_IP, INTERNET_RESOLVER_IP] {
            ip(&up, &["addr", "add", &format!("{addr}/24"), "dev", "inet0"])?;
        }
        ip(&up, &["link", "set", "inet0", "up"])?;

        // The gateway's outside leg on the uplink bridge.
        ip(
            &up,
            &[
                "link", "add", "gw0", "type", "veth", "peer", "name", OUTSIDE_IF, "netns", &gw,
            ],
        )?;
        ip(&up, &["link", "set", "gw0", "master", "br0", "up"])?;
        // No address here: the agent makes its macvlan on outside0 and takes a DHCP lease from
        // the modem, as on a real uplink.
        ip(&gw, &["link", "set", OUTSIDE_IF, "up"])?;

        // The inside LAN bridge and the gateway's inside leg.
        ip(&lan, &["link", "add", "br0", "type", "bridge"])?;
        ip(&lan, &["link", "set", "br0", "up"])?;
        ip(
            &lan,
            &[
                "link", "add", "gw0", "type", "veth", "peer", "name", INSIDE_IF, "netns", &gw,
            ],
        )?;
        ip(&lan, &["link", "set", "gw0", "master", "br0", "up"])?;
        ip(
            &gw,
            &[
                "addr",
                "add",
                &format!("{GATEWAY_INSIDE_IP}/24"),
                "dev",
                INSIDE_IF,
            ],
        )?;
        ip(&gw, &["link", "set", INSIDE_IF, "up"])?;

        for (role, _) in CLIENTS {
            let client = self.ns(role);
            ip(
                &lan,
                &[
                    "link", "add", role, "type", "veth", "peer", "name", "eth0", "netns", &client,
                ],
            )?;
            ip(&lan, &["link", "set", role, "master", "br0", "up"])?;
            // No address: clients take theirs from the gateway's DHCP server.
            ip(&client, &["link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    fn start_dnsmasq(&self) -> Result<()> {
        let state = self.state_dir();
        let at = |name: &str| state.join(name).display().to_string();
        // Daemon mode: dnsmasq reports startup errors (e.g. a busy port) before its parent
        // exits, so a successful return means its sockets are bound.
        let args = [
            "--conf-file=/dev/null".to_string(),
            format!("--pid-file={}", at("dnsmasq.pid")),
            "--user=root".to_string(),
            "--group=root".to_string(),
            "--bind-interfaces".to_string(),
            "--interface=br0".to_string(),
            "--except-interface=lo".to_string(),
            format!("--listen-address={MODEM_IP}"),
            format!("--listen-address={INTERNET_RESOLVER_IP}"),
            "--dhcp-range=192.0.2.100,192.0.2.199,255.255.255.0,2m".to_string(),
            format!("--dhcp-option=option:router,{MODEM_IP}"),
            format!("--dhcp-option=option:dns-server,{MODEM_IP}"),
            "--dhcp-authoritative".to_string(),
            "--no-resolv".to_string(),
            "--no-hosts".to_string(),
            format!("--host-record={ORIGIN_NAME},{ORIGIN_IP}"),
            format!("--host-record={LOOPBACK_NAME},127.0.0.1"),
            // dnsmasq answers its own records with TTL 0 by default; real zones have TTLs, and
            // the gateway's cache honours them.
            "--local-ttl=300".to_string(),
            // Every other name is answered locally (NXDOMAIN): the lab has no real internet.
            "--local=/#/".to_string(),
            "--log-queries".to_string(),
            "--log-dhcp".to_string(),
            format!("--log-facility={}", at("dnsmasq.log")),
            format!("--dhcp-leasefile={}", at("dnsmasq.leases")),
        ];
        process::ns_run(&self.ns("up"), "dnsmasq", &args).context("starting dnsmasq")
    }

    fn start_origin(&self) -> Result<()> {
        let state = self.state_dir();
        let log_path = self.origin_log();
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .context("duplicating the origin log handle")?;
        let www = state.join("www");
        // Debian's python3 (a lab package) rather than whatever python3 comes first on PATH.
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.ns("up"),
            python,
            "-u",
            "-m",
            "http.server",
            "80",
        ])
        .args(["--bind", ORIGIN_IP, "--directory"])
        .arg(&www)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: a Ctrl-C meant for xtask must not stop the lab's origin.
        .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting `{}`", process::describe(&cmd)))?;
        // `ip netns exec` execs python3, so this is the origin's pid.
        let pid = child.id();
        let pid_file = state.join("origin.pid");
        fs::write(&pid_file, format!("{pid}\n"))
            .with_context(|| format!("writing {}", pid_file.display()))?;
        // Reap it when it dies (in long-lived callers such as tests), instead of leaving a zombie.
        thread::spawn(move || child.wait());
        Ok(())
    }

    /// Polls until dnsmasq resolves the origin's name and the origin accepts connections.
    fn wait_ready(&self) -> Result<()> {
        let up = self.ns("up");
        let deadline = Instant::now() + READY_TIMEOUT;
        let (mut dns_ok, mut origin_ok) = (false, false);
        while Instant::now() < deadline {
            if !dns_ok {
                dns_ok = process::ns_output(
                    &up,
                    "dig",
                    [
                        "+short",
                        "+time=1",
                        "+tries=1",
                        &format!("@{MODEM_IP}"),
                        ORIGIN_NAME,
                    ],
                )
                .is_ok_and(|out| out.trim() == ORIGIN_IP);
            }
            if !origin_ok {
                // A bare connect: http.server logs nothing for it, so the access log keeps
                // only real requests.
                origin_ok = process::ns_run_ok(
                    &up,
                    "bash",
                    ["-c", &format!("exec 3<>/dev/tcp/{ORIGIN_IP}/80")],
                );
            }
            if dns_ok && origin_ok {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        let mut problems = Vec::new();
        if !dns_ok {
            problems.push(format!(
                "dnsmasq does not resolve {ORIGIN_NAME} at {MODEM_IP} (log: {})",
                log_tail(&self.dnsmasq_log())
            ));
        }
        if !origin_ok {
            problems.push(format!(
                "the origin does not accept connections on {ORIGIN_IP}:80 (log: {})",
                log_tail(&self.origin_log())
            ));
        }
        bail!("after {READY_TIMEOUT:?}: {}", problems.join("; "))
    }

    /// Removes everything this lab made: stops every process in its namespaces (agents,
    /// tcpdumps and the lab's own daemons), deletes the namespaces, unmounts its bpffs and
    /// removes its state dir. Works from names alone, so also after a crash.
    /// Where `role`'s DHCP client records its events (see `xtask/lab/*-script.sh`).
    pub fn dhcp_log(&self, role: &str) -> PathBuf {
        self.state_dir().join(format!("{role}.dhcp-events"))
    }

    /// Starts a real DHCP client on `role`'s eth0 in the background; it keeps renewing until the
    /// lab goes down, sending `hostname` (option 12) if given. Returns once the client runs,
    /// not once it has a lease: read [`Lab::dhcp_log`] for that.
    pub fn start_dhcp_client(
        &self,
        role: &str,
        client: DhcpClient,
        hostname: Option<&str>,
    ) -> Result<()> {
        let ns = self.ns(role);
        let state = self.state_dir();
        let script = match client {
            DhcpClient::Dhclient => "dhclient-script.sh",
            DhcpClient::Udhcpc => "udhcpc-script.sh",
        };
        // dhclient gives its hook a fresh environment, so the log path travels in a wrapper.
        let hook = state.join(format!("{role}-dhcp-hook.sh"));
        fs::write(
            &hook,
            format!(
                "#!/bin/sh\nLAB_DHCP_LOG='{}' exec /bin/sh '{}' \"$@\"\n",
                self.dhcp_log(role).display(),
                lab_script(script).display()
            ),
        )
        .with_context(|| format!("writing {}", hook.display()))?;
        fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .with_context(|| format!("making {} executable", hook.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]);
        match client {
            DhcpClient::Dhclient => {
                let conf = state.join(format!("{role}.dhclient.conf"));
                let text = hostname
                    .map(|name| format!("send host-name \"{name}\";\n"))
                    .unwrap_or_default();
                fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
                // -nw: do not wait for a lease before going to the background.
                cmd.args(["dhclient", "-4", "-nw", "-cf"])
                    .arg(&conf)
                    .arg("-lf")
                    .arg(state.join(format!("{role}.dhclient.leases")))
                    .arg("-pf")
                    .arg(state.join(format!("{role}.dhclient.pid")))
                    .arg("-sf")
                    .arg(&hook)
                    .arg("eth0");
                process::run_command(&mut cmd).map(|_| ())
            }
            DhcpClient::Udhcpc => {
                // -b: go to the background if the first tries get no lease, and keep trying.
                cmd.args([
                    "udhcpc", "-b", "-i", "eth0", "-t", "5", "-T", "1", "-A", "1", "-s",
                ])
                .arg(&hook)
                .args(["-p"])
                .arg(state.join(format!("{role}.udhcpc.pid")));
                if let Some(name) = hostname {
                    cmd.args(["-x", &format!("hostname:{name}")]);
                }
                process::run_command(&mut cmd).map(|_| ())
            }
        }
    }

    pub fn down(&self) -> Result<()> {
        self.check_prefix()?;
        deps::require_root("lab down")?;
        let existing: Vec<String> = self
            .ns_names()
            .into_iter()
            .filter(|ns| ns_exists(ns))
            .collect();
        let state = self.state_dir();
        let resolv_left = self
            .ns_names()
            .iter()
            .any(|ns| Path::new("/etc/netns").join(ns).exists());
        if existing.is_empty() && !state.exists() && !resolv_left {
            eprintln!("{}: nothing to remove", self.label());
            return Ok(());
        }
        let mut errors: Vec<String> = Vec::new();

        let pids: BTreeSet<i32> = existing.iter().flat_map(|ns| ns_pids(ns)).collect();
        if !pids.is_empty() {
            eprintln!("{}: stopping {} process(es)", self.label(), pids.len());
            stop_processes(&pids);
        }
        for ns in &existing {
            if let Err(err) = process::run("ip", ["netns", "del", ns]) {
                errors.push(format!("{err:#}"));
            }
        }
        for ns in self.ns_names() {
            let dir = Path::new("/etc/netns").join(&ns);
            if dir.exists() {
                if let Err(err) = fs::remove_dir_all(&dir) {
                    errors.push(format!("removing {}: {err}", dir.display()));
                }
            }
        }
        if let Err(err) = unmount_all_under(&state) {
            errors.push(format!("{err:#}"));
        } else if state.exists() {
            if let Err(err) = fs::remove_dir_all(&state) {
                errors.push(format!("removing {}: {err}", state.display()));
            }
        }
        if !errors.is_empty() {
            bail!("{} down: {}", self.label(), errors.join("; "));
        }
        eprintln!("{}: down", self.label());
        Ok(())
    }

    /// The lab's addresses, paths and namespaces.
    pub fn status(&self) -> Result<LabStatus> {
        self.check_prefix()?;
        deps::require_root("lab status")?;
        let mut namespaces = BTreeMap::new();
        for ns in self.ns_names() {
            if ns_exists(&ns) {
                namespaces.insert(ns.clone(), ns_ipv4_addrs(&ns)?);
            }
        }
        let path = |p: PathBuf| p.display().to_string();
        let tor = lab_tor::status(self);
        Ok(LabStatus {
            up: self.is_up(),
            prefix: self.prefix.clone(),
            gateway_inside_ip: GATEWAY_INSIDE_IP.into(),
            gateway_outside_ip: namespaces
                .get(&self.ns("gw"))
                .and_then(|addrs: &Vec<String>| {
                    addrs
                        .iter()
                        .find(|a| a.starts_with("192.0.2."))
                        .and_then(|a| a.split('/').next())
                        .map(str::to_owned)
                }),
            inside_subnet: INSIDE_SUBNET.into(),
            uplink_subnet: UPLINK_SUBNET.into(),
            internet_subnet: INTERNET_SUBNET.into(),
            origin_url: ORIGIN_URL.into(),
            origin_name: ORIGIN_NAME.into(),
            origin_ip: ORIGIN_IP.into(),
            uplink_resolver_ip: MODEM_IP.into(),
            internet_resolver_ip: INTERNET_RESOLVER_IP.into(),
            inside_interface: INSIDE_IF.into(),
            outside_interface: OUTSIDE_IF.into(),
            bpf_pin_dir: path(self.bpf_dir()),
            control_socket: path(self.control_socket()),
            agent_config: path(self.agent_config()),
            agent_state_dir: path(self.agent_state_dir()),
            state_dir: path(self.state_dir()),
            dnsmasq_log: path(self.dnsmasq_log()),
            dnsmasq_leases: path(self.state_dir().join("dnsmasq.leases")),
            origin_log: path(self.origin_log()),
            roles: ROLES.iter().map(|r| (r.to_string(), self.ns(r))).collect(),
            clients: CLIENTS
                .iter()
                .map(|(role, client)| (self.ns(role), *client))
                .collect(),
            tor_ready: tor.ready,
            tor_not_ready_because: tor.not_ready_because,
            tor_nodes: tor.nodes,
            onion_url: tor.onion_address.as_ref().map(|a| format!("http://{a}/")),
            onion_address: tor.onion_address,
            onion_published: tor.onion_published,
            arti_config: path(tor.arti_config),
            namespaces,
        })
    }
}

impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.prefix.is_empty() {
            "default".to_string()
        } else {
            self.prefix.clone()
        };
        writeln!(f, "lab {name}: {}", if self.up { "up" } else { "down" })?;
        writeln!(
            f,
            "  inside        {} (gateway {} on {})",
            self.inside_subnet, self.gateway_inside_ip, self.inside_interface
        )?;
        writeln!(
            f,
            "  uplink        {} (modem and resolver {}, gateway on {})",
            self.uplink_subnet, self.uplink_resolver_ip, self.outside_interface
        )?;
        writeln!(
            f,
            "  origin        {} ({} = {})",
            self.origin_url, self.origin_name, self.origin_ip
        )?;
        let running = self.tor_nodes.iter().filter(|n| n.running).count();
        let tor = if self.tor_ready {
            "ready".to_string()
        } else {
            format!(
                "not ready ({})",
                self.tor_not_ready_because.as_deref().unwrap_or("?")
            )
        };
        writeln!(
            f,
            "  tor           {tor}; {running}/{} nodes run",
            self.tor_nodes.len()
        )?;
        if let Some(url) = &self.onion_url {
            let published = if self.onion_published {
                "published"
            } else {
                "not published yet"
            };
            writeln!(f, "  onion         {url} (the origin; {published})")?;
        }
        writeln!(f, "  arti config   {}", self.arti_config)?;
        writeln!(f, "  agent config  {}", self.agent_config)?;
        writeln!(f, "  bpf pin dir   {}", self.bpf_pin_dir)?;
        writeln!(f, "  control sock  {}", self.control_socket)?;
        writeln!(
            f,
            "  logs          {} {}",
            self.dnsmasq_log, self.origin_log
        )?;
        if self.namespaces.is_empty() {
            writeln!(f, "  namespaces    (none)")?;
        } else {
            writeln!(f, "  namespaces")?;
            for (ns, addrs) in &self.namespaces {
                let addrs = if addrs.is_empty() {
                    "-".to_string()
                } else {
                    addrs.join(" ")
                };
                writeln!(f, "    {ns:<12} {addrs}")?;
            }
        }
        Ok(())
    }
}

/// Prints `status` for people (stdout).
pub fn print_human(status: &LabStatus) {
    print!("{status}");
}

/// Takes down every lab: each state dir under /run/gateway-lab and every namespace named like a
/// lab's (`<role>` or `<prefix>-<role>`).
pub fn down_all() -> Result<()> {
    deps::require_root("lab down --all")?;
    let mut prefixes = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(STATE_ROOT) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "default" {
                prefixes.insert(String::new());
            } else if valid_prefix(&name) {
                prefixes.insert(name);
            }
        }
    }
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(prefix) = lab_prefix_of_ns(&name) {
                prefixes.insert(prefix);
            }
        }
    }
    if prefixes.is_empty() {
        eprintln!("lab: no labs to remove");
        return Ok(());
    }
    let errors: Vec<String> = prefixes
        .iter()
        .filter_map(|p| Lab::new(p).down().err().map(|e| format!("{e:#}")))
        .collect();
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// A script the lab's DHCP clients run, from `xtask/lab/`.
pub fn lab_script(name: &str) -> PathBuf {
    crate::build::workspace_root()
        .join("xtask")
        .join("lab")
        .join(name)
}

/// The committed agent config for the lab, in the workspace root.
fn lab_config_template() -> PathBuf {
    crate::build::workspace_root()
        .join("config")
        .join("lab.toml")
}

/// "" (the default lab) or 1–8 characters of `[a-z0-9]`; never "default" (the default state dir).
fn valid_prefix(prefix: &str) -> bool {
    prefix.is_empty()
        || (prefix.len() <= 8
            && prefix != "default"
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// The lab prefix a namespace name belongs to, if it is named like a lab's.
fn lab_prefix_of_ns(name: &str) -> Option<String> {
    if ROLES.contains(&name) {
        return Some(String::new());
    }
    let (prefix, role) = name.split_once('-')?;
    (ROLES.contains(&role) && !prefix.is_empty() && valid_prefix(prefix))
        .then(|| prefix.to_string())
}

fn ns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

fn ns_exists(ns: &str) -> bool {
    ns_path(ns).exists()
}

/// `ip -n <ns> <args…>`.
pub(crate) fn ip(ns: &str, args: &[&str]) -> Result<()> {
    process::run("ip", ["-n", ns].iter().chain(args))
}

/// Processes whose network namespace is `ns` (never ourselves).
fn ns_pids(ns: &str) -> Vec<i32> {
    let own = i32::try_from(std::process::id()).unwrap_or(-1);
    process::output("ip", ["netns", "pids", ns])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .filter(|&p| p > 1 && p != own)
                .collect()
        })
        .unwrap_or_default()
}

/// SIGTERM, a short bounded wait, then SIGKILL for what is left.
pub(crate) fn stop_processes(pids: &BTreeSet<i32>) {
    signal_all(pids, libc::SIGTERM);
    if wait_dead(pids, Duration::from_secs(3)) {
        return;
    }
    signal_all(pids, libc::SIGKILL);
    wait_dead(pids, Duration::from_secs(2));
}

fn signal_all(pids: &BTreeSet<i32>, signal: libc::c_int) {
    for &pid in pids {
        // SAFETY: kill has no memory-safety preconditions; a vanished pid just yields ESRCH.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Waits until none of `pids` is alive; false if some still are at the deadline.
fn wait_dead(pids: &BTreeSet<i32>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pids.iter().any(|&p| pid_alive(p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Alive and not a zombie (a zombie holds no sockets; its parent just has not reaped it).
fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ") ".
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

pub(crate) fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// IPv4 addresses (CIDR) on the interfaces of `ns`, except `lo`.
fn ns_ipv4_addrs(ns: &str) -> Result<Vec<String>> {
    let out = process::output("ip", ["-n", ns, "-j", "addr"])?;
    parse_ipv4_addrs(&out).with_context(|| format!("parsing `ip -n {ns} -j addr`"))
}

fn parse_ipv4_addrs(json: &str) -> Result<Vec<String>> {
    let links: Vec<serde_json::Value> = serde_json::from_str(json)?;
    let mut addrs = Vec::new();
    for link in &links {
        if link.get("ifname").and_then(|n| n.as_str()) == Some("lo") {
            continue;
        }
        let infos = link.get("addr_info").and_then(|a| a.as_array());
        for info in infos.into_iter().flatten() {
            if info.get("family").and_then(|f| f.as_str()) != Some("inet") {
                continue;
            }
            let local = info.get("local").and_then(|l| l.as_str());
            let len = info.get("prefixlen").and_then(|p| p.as_u64());
            if let (Some(local), Some(len)) = (local, len) {
                addrs.push(format!("{local}/{len}"));
            }
        }
    }
    Ok(addrs)
}

/// Mount points from /proc/self/mountinfo as (mount point, fs type), in mount order.
fn mounts() -> Vec<(PathBuf, String)> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?;
            Some((PathBuf::from(unescape_mountinfo(point)), fstype.to_string()))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(&[b'\\', a, b, c]) = bytes.get(i..i + 4) {
            // Escapes encode bytes, so the first digit is at most 3.
            if (b'0'..=b'3').contains(&a) && [b, c].iter().all(|d| (b'0'..=b'7').contains(d)) {
                out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_mounted_bpf(dir: &Path) -> bool {
    mounts().iter().any(|(p, t)| p == dir && t == "bpf")
}

/// Unmounts everything mounted at or below `dir`, newest first, including stacked mounts.
fn unmount_all_under(dir: &Path) -> Result<()> {
    for _ in 0..10 {
        let under: Vec<PathBuf> = mounts()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p.starts_with(dir))
            .collect();
        let Some(last) = under.last() else {
            return Ok(());
        };
        if process::run("umount", [last]).is_err() {
            // Busy (an fd still open in a dying process): detach it now, it goes when freed.
            process::run("umount", ["-l".as_ref(), last.as_os_str()])
                .with_context(|| format!("unmounting {}", last.display()))?;
        }
    }
    bail!("{} still has mounts after 10 unmounts", dir.display())
}

/// The last lines of a log, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
            if tail.is_empty() {
                format!("{} is empty", path.display())
            } else {
                tail
            }
        }
        Err(err) => format!("{}: {err}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_prefix() {
        let lab = Lab::default_lab();
        assert_eq!(lab.ns("gw"), "gw");
        assert_eq!(lab.state_dir(), PathBuf::from("/run/gateway-lab/default"));
        let lab = Lab::new("t1234a");
        assert_eq!(lab.ns("c1"), "t1234a-c1");
        assert_eq!(lab.state_dir(), PathBuf::from("/run/gateway-lab/t1234a"));
        assert_eq!(
            lab.agent_config(),
            PathBuf::from("/run/gateway-lab/t1234a/gateway.toml")
        );
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix(""));
        assert!(valid_prefix("t1234a"));
        assert!(valid_prefix("abcdefgh"));
        assert!(!valid_prefix("abcdefghi"));
        assert!(!valid_prefix("a-b"));
        assert!(!valid_prefix("A"));
        assert!(!valid_prefix("default"));
        assert!(!valid_prefix("../x"));
        assert!(Lab::new("../x").check_prefix().is_err());
    }

    #[test]
    fn namespace_names_map_back_to_labs() {
        assert_eq!(lab_prefix_of_ns("gw"), Some(String::new()));
        assert_eq!(lab_prefix_of_ns("t12-c2"), Some("t12".to_string()));
        assert_eq!(lab_prefix_of_ns("t12-c9"), None);
        assert_eq!(lab_prefix_of_ns("other"), None);
        assert_eq!(lab_prefix_of_ns("-gw"), None);
        assert_eq!(lab_prefix_of_ns("a-b-gw"), None);
    }

    #[test]
    fn parses_ip_json() {
        let json = r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
            {"ifname":"br0","addr_info":[{"family":"inet","local":"192.0.2.1","prefixlen":24},
             {"family":"inet6","local":"fe80::1","prefixlen":64}]}]"#;
        assert_eq!(parse_ipv4_addrs(json).unwrap(), vec!["192.0.2.1/24"]);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }
}
