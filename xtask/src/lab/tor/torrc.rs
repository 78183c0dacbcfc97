//! What the nodes and clients are told: every torrc (chutney-style test-network settings), the
//! authorities' voting schedule and consensus parameters, and arti's config for the agent.

use std::fmt::Write as _;
use std::fs::{self};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::keys::{read_all_keys, NodeKeys};
use super::nodes::{
    arti_config_path, data_dir, node_log, pid_file_rel, Node, Role, ONION_HOST, OR_PORT,
};
use super::onion::{onion_dir, onion_log};
use crate::lab::layout::{Lab, ORIGIN_IP};

/// Voting interval and vote/distribution delays of the authorities, in seconds.
const VOTING_INTERVAL: u32 = 20;
/// The onion-service time period, in minutes, published as the consensus parameter
/// `hsdir_interval`. C tor on a `TestingTorNetwork` ignores that parameter and makes the period one
/// shared-random run (24 voting intervals: 8 minutes here); arti reads the parameter (default one
/// day). Unless both agree they derive different blinded keys and HSDir rings, and arti's
/// descriptor fetches get 404 from every HSDir.
const HSDIR_INTERVAL_MIN: u32 = 24 * VOTING_INTERVAL / 60;
// arti accepts 5..=14400 minutes, and the run must be whole minutes.
const _: () = assert!((24 * VOTING_INTERVAL).is_multiple_of(60) && HSDIR_INTERVAL_MIN >= 5);
const VOTE_DELAY: u32 = 4;
const DIST_DELAY: u32 = 4;

/// One `DirAuthority` line per authority, for every torrc of this network (C-tor clients too).
pub fn dir_authority_lines(keys: &[(Node, NodeKeys)]) -> Vec<String> {
    keys.iter()
        .filter_map(|(node, k)| {
            let v3 = k.v3ident.as_deref()?;
            Some(format!(
                "DirAuthority {} orport={OR_PORT} no-v2 v3ident={v3} {} {}",
                node.nick,
                node.dir_addr(),
                k.rsa_identity
            ))
        })
        .collect()
}

/// The files a node's torrc names.
#[derive(Debug, Clone)]
pub struct NodePaths {
    pub data: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
    pub onion: PathBuf,
    pub onion_log: PathBuf,
}

impl NodePaths {
    pub(crate) fn of(lab: &Lab, nick: &str) -> NodePaths {
        NodePaths {
            data: data_dir(lab, nick),
            pid: lab.state_dir().join(pid_file_rel(nick)),
            log: node_log(lab, nick),
            onion: onion_dir(lab),
            onion_log: onion_log(lab),
        }
    }
}

/// Settings every node and client of the network shares.
pub(crate) fn common_lines(out: &mut String, authorities: &[String]) {
    out.push_str("TestingTorNetwork 1\n");
    for line in authorities {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(
        "PathsNeededToBuildCircuits 0.67\n\
         Sandbox 0\n\
         NumCPUs 1\n\
         SafeLogging 0\n",
    );
}

/// A node's torrc.
pub fn render_torrc(
    node: &Node,
    paths: &NodePaths,
    authorities: &[String],
    resolv: &Path,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# {} ({:?}) of the lab's private Tor network; written by xtask.",
        node.nick, node.role
    );
    common_lines(&mut t, authorities);
    let _ = writeln!(t, "Nickname {}", node.nick);
    let _ = writeln!(t, "DataDirectory {}", paths.data.display());
    let _ = writeln!(t, "PidFile {}", paths.pid.display());
    let _ = writeln!(t, "Log notice file {}", paths.log.display());
    t.push_str(
        "RunAsDaemon 1\n\
         ShutdownWaitLength 0\n\
         SocksPort 0\n\
         TestingDirAuthVoteExit *\n\
         TestingDirAuthVoteGuard *\n\
         TestingDirAuthVoteHSDir *\n\
         TestingMinExitFlagThreshold 0\n\
         V3AuthNIntervalsValid 2\n\
         AssumeReachable 1\n",
    );
    let _ = writeln!(t, "Address {}", node.address);
    let _ = writeln!(t, "ORPort {}", node.or_addr());
    let _ = writeln!(t, "DirPort {}", node.dir_addr());
    let _ = writeln!(t, "OutboundBindAddress {}", node.address);
    match node.role {
        Role::Authority => {
            t.push_str("AuthoritativeDirectory 1\nV3AuthoritativeDirectory 1\n");
            for prefix in ["TestingV3AuthInitial", "V3Auth"] {
                let _ = writeln!(t, "{prefix}VotingInterval {VOTING_INTERVAL}");
                let _ = writeln!(t, "{prefix}VoteDelay {VOTE_DELAY}");
                let _ = writeln!(t, "{prefix}DistDelay {DIST_DELAY}");
            }
            let _ = writeln!(t, "ConsensusParams hsdir_interval={HSDIR_INTERVAL_MIN}");
            t.push_str("ExitRelay 0\nExitPolicy reject *:*\n");
        }
        Role::Relay => t.push_str("ExitRelay 0\nExitPolicy reject *:*\n"),
        Role::Exit => {
            // A policy of private addresses only would publish a reject-all microdescriptor.
            t.push_str(
                "ExitRelay 1\n\
                 RefuseUnknownExits 0\n\
                 ExitPolicyRejectPrivate 0\n\
                 ExitPolicy accept *:*\n",
            );
            let _ = writeln!(t, "ServerDNSResolvConfFile {}", resolv.display());
            t.push_str(
                "ServerDNSDetectHijacking 0\n\
                 ServerDNSTestAddresses\n\
                 ServerDNSAllowBrokenConfig 1\n",
            );
        }
    }
    if node.nick == ONION_HOST {
        // Descriptor uploads are logged at info level only: a log of its own says when the
        // service can be found.
        let _ = writeln!(t, "Log [rend]info file {}", paths.onion_log.display());
        let _ = writeln!(t, "HiddenServiceDir {}", paths.onion.display());
        let _ = writeln!(t, "HiddenServicePort 80 {ORIGIN_IP}:80");
    }
    t
}

/// A torrc for a C-tor client of this lab's network, with its SOCKS port on
/// `127.0.0.1:<socks_port>` and its data and log in `data_dir`; run it in `up` (in the
/// foreground: `tor -f <file>`). The network's keys must exist ([`setup`]).
pub fn client_torrc(lab: &Lab, data_dir: &Path, socks_port: u16) -> Result<String> {
    let keys = read_all_keys(lab)?;
    let mut t = String::from("# A C-tor client of the lab's private Tor network.\n");
    common_lines(&mut t, &dir_authority_lines(&keys));
    let _ = writeln!(t, "DataDirectory {}", data_dir.display());
    let _ = writeln!(
        t,
        "Log notice file {}",
        data_dir.join("notice.log").display()
    );
    let _ = writeln!(t, "SocksPort 127.0.0.1:{socks_port}");
    Ok(t)
}

/// The arti `TorClientConfig` keys for this network (see docs/TORLAB.md): its authorities, each as
/// a fallback cache, one subnet family per address, and local addresses allowed.
pub fn render_arti_config(keys: &[(Node, NodeKeys)]) -> String {
    let quoted = |s: &str| format!("\"{s}\"");
    let v3idents: Vec<String> = keys
        .iter()
        .filter_map(|(_, k)| k.v3ident.as_deref().map(quoted))
        .collect();
    let mut t = String::from(
        "# The lab's private Tor network, for arti's TorClientConfig; written by xtask.\n\
         [tor_network]\n",
    );
    let _ = writeln!(
        t,
        "authorities = {{ v3idents = [{}] }}",
        v3idents.join(", ")
    );
    t.push_str("fallback_caches = [\n");
    for (node, k) in keys.iter().filter(|(n, _)| n.role == Role::Authority) {
        let _ = writeln!(
            t,
            "    {{ rsa_identity = {}, ed_identity = {}, orports = [{}] }},",
            quoted(&k.rsa_identity),
            quoted(&k.ed_identity),
            quoted(&node.or_addr())
        );
    }
    t.push_str(
        "]\n\n\
         # Every relay is on 203.0.113.0/24: without this they would all be one family.\n\
         [path_rules]\n\
         ipv4_subnet_family_prefix = 33\n\
         ipv6_subnet_family_prefix = 129\n\n\
         [address_filter]\n\
         allow_local_addrs = true\n\
         allow_resolving_local_addrs = true\n\n\
         # Onion-service time periods last 8 minutes here, not a day: a descriptor fetch that\n\
         # came before the service published (or before it rotated) must not lock the HSDirs\n\
         # out for the default 15 minutes.\n\
         [circuit_timing]\n\
         hs_dir_requery_interval = \"5 sec\"\n",
    );
    t
}

/// Writes `<lab state dir>/arti.toml` (atomically) and returns its path.
pub fn write_arti_config(lab: &Lab) -> Result<PathBuf> {
    let keys = read_all_keys(lab)?;
    let path = arti_config_path(lab);
    let tmp = path.with_extension("toml.tmp");
    fs::write(&tmp, render_arti_config(&keys))
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::tor::nodes::NODES;

    fn fake_keys() -> Vec<(Node, NodeKeys)> {
        NODES
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    *n,
                    NodeKeys {
                        rsa_identity: format!("{i:040X}"),
                        ed_identity: format!("ed{i}"),
                        v3ident: (n.role == Role::Authority).then(|| format!("{:040X}", 100 + i)),
                    },
                )
            })
            .collect()
    }

    fn paths(nick: &str) -> NodePaths {
        let lab = Lab::new("t1");
        NodePaths::of(&lab, nick)
    }

    #[test]
    fn torrc_per_role() {
        let auths = dir_authority_lines(&fake_keys());
        assert_eq!(auths.len(), 3);
        assert_eq!(
            auths[0],
            format!(
                "DirAuthority auth1 orport=5000 no-v2 v3ident={:040X} 203.0.113.21:7000 {:040X}",
                100, 0
            )
        );
        let resolv = Path::new("/r/resolv.conf");
        let lines = |nick: &str| {
            let node = NODES.iter().find(|n| n.nick == nick).unwrap();
            render_torrc(node, &paths(nick), &auths, resolv)
        };
        let auth = lines("auth2");
        for want in [
            "TestingTorNetwork 1",
            "Nickname auth2",
            "Address 203.0.113.22",
            "ORPort 203.0.113.22:5000",
            "DirPort 203.0.113.22:7000",
            "OutboundBindAddress 203.0.113.22",
            "V3AuthoritativeDirectory 1",
            "V3AuthVotingInterval 20",
            "ConsensusParams hsdir_interval=8",
            "TestingV3AuthInitialDistDelay 4",
            "ExitPolicy reject *:*",
            "PidFile /run/gateway-lab/t1/tor/auth2/tor.pid",
            "DataDirectory /run/gateway-lab/t1/tor/auth2/data",
        ] {
            assert!(auth.lines().any(|l| l == want), "{want} missing:\n{auth}");
        }
        assert_eq!(auth.matches("DirAuthority ").count(), 3);

        let exit = lines("exit3");
        let policies: Vec<&str> = exit
            .lines()
            .filter(|l| l.starts_with("ExitPolicy "))
            .collect();
        assert_eq!(policies.last(), Some(&"ExitPolicy accept *:*"));
        for want in [
            "ExitRelay 1",
            "RefuseUnknownExits 0",
            "ExitPolicyRejectPrivate 0",
            "ServerDNSResolvConfFile /r/resolv.conf",
            "ServerDNSDetectHijacking 0",
            "ServerDNSTestAddresses",
            "ServerDNSAllowBrokenConfig 1",
        ] {
            assert!(exit.lines().any(|l| l == want), "{want} missing:\n{exit}");
        }
        assert!(!exit.contains("AuthoritativeDirectory"));
        assert!(!exit.contains("HiddenService"));

        let onion = lines(ONION_HOST);
        assert!(onion.contains("HiddenServiceDir /run/gateway-lab/t1/tor/relay1/onion\n"));
        assert!(onion.contains("HiddenServicePort 80 203.0.113.10:80\n"));
        assert!(onion.contains("Log [rend]info file /run/gateway-lab/t1/tor/relay1/onion.log\n"));
        assert!(onion.contains("ExitRelay 0\n"));
        assert!(!exit.contains("onion.log"));
    }

    #[test]
    fn arti_config_has_the_torlab_form() {
        let text = render_arti_config(&fake_keys());
        let value: toml::Value = toml::from_str(&text).expect("arti.toml is TOML");
        let net = &value["tor_network"];
        let v3: Vec<&str> = net["authorities"]["v3idents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(v3, [100, 101, 102].map(|i| format!("{i:040X}")));
        let fallbacks = net["fallback_caches"].as_array().unwrap();
        assert_eq!(fallbacks.len(), 3);
        assert_eq!(
            fallbacks[1]["rsa_identity"].as_str(),
            Some(&*format!("{:040X}", 1))
        );
        assert_eq!(fallbacks[1]["ed_identity"].as_str(), Some("ed1"));
        assert_eq!(
            fallbacks[1]["orports"].as_array().unwrap()[0].as_str(),
            Some("203.0.113.22:5000")
        );
        assert_eq!(
            value["path_rules"]["ipv4_subnet_family_prefix"].as_integer(),
            Some(33)
        );
        assert_eq!(
            value["path_rules"]["ipv6_subnet_family_prefix"].as_integer(),
            Some(129)
        );
        assert_eq!(
            value["address_filter"]["allow_local_addrs"].as_bool(),
            Some(true)
        );
        assert_eq!(
            value["address_filter"]["allow_resolving_local_addrs"].as_bool(),
            Some(true)
        );
        assert_eq!(
            value["circuit_timing"]["hs_dir_requery_interval"].as_str(),
            Some("5 sec")
        );
    }

    #[test]
    fn arti_config_sits_where_the_lab_config_template_points() {
        // config/lab.toml names this path; each lab's copy is rewritten into its state dir.
        assert_eq!(
            arti_config_path(&Lab::default_lab()),
            PathBuf::from("/run/gateway-lab/default/arti.toml")
        );
        assert_eq!(
            arti_config_path(&Lab::new("t1")),
            PathBuf::from("/run/gateway-lab/t1/arti.toml")
        );
    }
}
