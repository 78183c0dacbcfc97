//! `lab status`: what is up, the addresses, the Tor network; `--json` is the contract with scripts.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::tor::{self, TorNodeStatus};
use crate::deps;

use super::clients::{DhcpClient, CLIENTS};
use super::layout::{
    Lab, GATEWAY_INSIDE_IP, INSIDE_IF, INSIDE_SUBNET, INTERNET_RESOLVER_IP, INTERNET_SUBNET,
    MODEM_IP, ORIGIN_IP, ORIGIN_NAME, ORIGIN_URL, OUTSIDE_IF, ROLES, UPLINK_SUBNET,
};
use super::topology::{ns_exists, ns_ipv4_addrs};

/// What `lab status` reports; `lab status --json` is the lab's contract with scripts.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    /// Whether the lab and this gateway slot are fully up (namespaces, bpffs, dnsmasq and
    /// origin alive).
    pub up: bool,
    /// The lab's prefix ("" for the default lab).
    pub prefix: String,
    /// The gateway slot this status describes (0: `gw`, `lan`, `c1`, `c2`).
    pub slot: u8,
    /// The gateway slots that exist in this lab.
    pub gateway_slots: Vec<u8>,
    /// This slot's port on the uplink bridge, in `up` (`gw<slot>`).
    pub uplink_port: String,
    pub gateway_inside_ip: String,
    /// The gateway's uplink address, once the agent's DHCP client has one.
    pub gateway_outside_ip: Option<String>,
    pub inside_subnet: String,
    pub uplink_subnet: String,
    pub internet_subnet: String,
    pub origin_url: String,
    /// The gateway's private registry (`https://<inside address>`; its certificate names the
    /// address, `registry.<zone>` and `mirror.<zone>`).
    pub registry_url: String,
    /// The gateway's registry mirror (`https://<inside address>:5000`).
    pub mirror_url: String,
    /// The agent's status page, on the `gw` namespace's loopback (`status_page.listen`).
    pub status_url: String,
    /// The lab's default upstream registry for the mirror (`host:port`; `?ns=hub.test`).
    pub upstream_registry: String,
    /// The second upstream (`?ns=other.test`).
    pub other_upstream_registry: String,
    /// Whether the upstream registries run (`lab up` starts them; tests on demand).
    pub upstream_running: bool,
    /// The default upstream's seeded images as `repository:tag`, as the mirror names them
    /// (empty before the upstream first started).
    pub upstream_images: Vec<String>,
    /// The second upstream's (asked for with `?ns=other.test`).
    pub other_upstream_images: Vec<String>,
    pub origin_name: String,
    pub origin_ip: String,
    /// nginx in `up` (`web_origin.rs`): its name (http on 80, https on 443), address, the CA
    /// its certificate is from, its access log, and whether it runs.
    pub web_origin_name: String,
    pub web_origin_ip: String,
    pub web_origin_ca: String,
    pub web_origin_log: String,
    pub web_origin_running: bool,
    /// The same files over https with a certificate from another CA.
    pub rogue_origin_name: String,
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
    /// This slot's files: the state dir for slot 0, `<state dir>/slot<N>` for slot N.
    pub gateway_dir: String,
    pub dnsmasq_log: String,
    pub dnsmasq_leases: String,
    pub origin_log: String,
    /// Role → namespace name (this slot's).
    pub roles: BTreeMap<String, String>,
    /// Client namespace → the DHCP client it runs.
    pub clients: BTreeMap<String, DhcpClient>,
    /// The private Tor network has a fresh consensus listing every node (see `lab::tor`).
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

impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.prefix.is_empty() {
            "default".to_string()
        } else {
            self.prefix.clone()
        };
        let slot = if self.slot == 0 {
            String::new()
        } else {
            format!(" slot {}", self.slot)
        };
        writeln!(
            f,
            "lab {name}{slot}: {}",
            if self.up { "up" } else { "down" }
        )?;
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
        writeln!(
            f,
            "  nginx         http(s)://{} = {} ({}; CA {})",
            self.web_origin_name,
            self.web_origin_ip,
            if self.web_origin_running {
                "running"
            } else {
                "not running"
            },
            self.web_origin_ca
        )?;
        writeln!(
            f,
            "  upstreams     {} and {} ({}; {} images) for the mirror {}",
            self.upstream_registry,
            self.other_upstream_registry,
            if self.upstream_running {
                "running"
            } else {
                "not running"
            },
            self.upstream_images.len() + self.other_upstream_images.len(),
            self.mirror_url
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
        if self.gateway_slots.iter().any(|&s| s != 0) {
            let slots: Vec<String> = self.gateway_slots.iter().map(u8::to_string).collect();
            writeln!(f, "  slots         {}", slots.join(" "))?;
        }
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

impl Lab {
    /// This slot's IPv4 addresses on the uplink subnet (its `gw` namespace's), without the
    /// prefix length: the agent's DHCP lease on its macvlan, and any static one a test added.
    pub fn uplink_addresses(&self) -> Vec<String> {
        ns_ipv4_addrs(&self.ns("gw"))
            .unwrap_or_default()
            .iter()
            .filter(|a| a.starts_with("192.0.2."))
            .filter_map(|a| a.split('/').next())
            .map(str::to_owned)
            .collect()
    }

    /// The `repository:tag`s seeded into the upstream `ns`.
    fn seeded_references(&self, ns: &str) -> Vec<String> {
        self.upstream_images()
            .into_iter()
            .filter(|image| image.upstream == ns)
            .map(|image| image.reference)
            .collect()
    }

    /// The lab's addresses, paths and namespaces, as seen from this slot.
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
        let tor = tor::status(self);
        Ok(LabStatus {
            up: self.is_up(),
            prefix: self.prefix.clone(),
            slot: self.slot,
            gateway_slots: self.slots(),
            uplink_port: self.uplink_port(),
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
            registry_url: format!("https://{GATEWAY_INSIDE_IP}"),
            mirror_url: format!("https://{GATEWAY_INSIDE_IP}:5000"),
            status_url: "https://127.0.0.1:8443/".to_owned(),
            upstream_registry: format!("{}:{}", super::UPSTREAM_HOST, super::REGISTRY_PORT),
            other_upstream_registry: format!("{}:{}", super::OTHER_HOST, super::REGISTRY_PORT),
            upstream_running: self.daemon_alive(format!("upstream/{}.pid", super::UPSTREAM_NS)),
            upstream_images: self.seeded_references(super::UPSTREAM_NS),
            other_upstream_images: self.seeded_references(super::OTHER_NS),
            origin_name: ORIGIN_NAME.into(),
            origin_ip: ORIGIN_IP.into(),
            web_origin_name: super::WEB_HOST.into(),
            web_origin_ip: super::WEB_IP.into(),
            web_origin_ca: path(self.web_ca()),
            web_origin_log: path(self.web_log()),
            web_origin_running: self.web_origin_running(),
            rogue_origin_name: super::ROGUE_HOST.into(),
            uplink_resolver_ip: MODEM_IP.into(),
            internet_resolver_ip: INTERNET_RESOLVER_IP.into(),
            inside_interface: INSIDE_IF.into(),
            outside_interface: OUTSIDE_IF.into(),
            bpf_pin_dir: path(self.bpf_dir()),
            control_socket: path(self.control_socket()),
            agent_config: path(self.agent_config()),
            agent_state_dir: path(self.agent_state_dir()),
            state_dir: path(self.state_dir()),
            gateway_dir: path(self.gateway_dir()),
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
