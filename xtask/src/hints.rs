//! What `cargo xtask run` suggests trying once the agent answers, built from the lab and the
//! agent config in use, so that each comment says what that config does (DNS over Tor or to
//! the uplink, transparent Tor or a drop, which proxies run).
//!
//! The defaults read here are the agent's (README, "Config reference"): `tor.enabled`,
//! `transparent.enabled`, `socks.enabled` and `http_proxy.enabled` default to true,
//! `dns.upstream` to `"tor"` with Tor and `"none"` without.

use std::path::Path;

/// The lab's side of the hints.
#[derive(Debug, Clone)]
pub struct LabSide<'a> {
    /// The gateway's namespace and the first client's.
    pub gw: &'a str,
    pub c1: &'a str,
    /// The origin web server on the lab's stand-in internet.
    pub origin_name: &'a str,
    pub origin_ip: &'a str,
    /// The agent binary and its config, for the CLI lines.
    pub agent: &'a Path,
    pub config: &'a Path,
}

fn get<'t>(cfg: &'t toml::Table, table: &str, key: &str) -> Option<&'t toml::Value> {
    cfg.get(table)?.as_table()?.get(key)
}

fn flag(cfg: &toml::Table, table: &str, key: &str, default: bool) -> bool {
    get(cfg, table, key)
        .and_then(toml::Value::as_bool)
        .unwrap_or(default)
}

fn text<'t>(cfg: &'t toml::Table, table: &str, key: &str, default: &'t str) -> &'t str {
    get(cfg, table, key)
        .and_then(toml::Value::as_str)
        .unwrap_or(default)
}

fn port(cfg: &toml::Table, table: &str, default: u16) -> u16 {
    get(cfg, table, "port")
        .and_then(toml::Value::as_integer)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(default)
}

/// Commands longer than this do not push the comments of the others to the right.
const ALIGN_AT_MOST: usize = 90;

/// The hint text for `lab` running the agent with `cfg` (the agent config's TOML).
pub fn run_hints(lab: &LabSide<'_>, cfg: &toml::Table) -> String {
    let LabSide {
        gw,
        c1,
        origin_name: origin,
        origin_ip,
        ..
    } = lab;
    let tor = flag(cfg, "tor", "enabled", true);
    let inside = text(cfg, "inside", "address", "198.51.100.1/24");
    let inside = inside.split('/').next().unwrap_or(inside);
    let zone = text(cfg, "dns", "zone", "home.arpa").trim_end_matches('.');
    let dns = flag(cfg, "dns", "enabled", true);
    let upstream = text(cfg, "dns", "upstream", if tor { "tor" } else { "none" });
    let transparent = tor && flag(cfg, "transparent", "enabled", true);
    let socks = tor && flag(cfg, "socks", "enabled", true);
    let proxy_direct = text(cfg, "http_proxy", "egress", "tor") == "direct";
    let proxy = flag(cfg, "http_proxy", "enabled", true) && (tor || proxy_direct);

    let mut lines: Vec<(String, String)> = Vec::new();
    let mut try_in = |ns: &str, command: String, what: &str| {
        lines.push((format!("ip netns exec {ns} {command}"), what.to_owned()));
    };
    try_in(
        c1,
        "ip -4 addr show eth0".into(),
        "a lease from the gateway",
    );
    if dns {
        try_in(
            c1,
            format!("dig +short c2.{zone}"),
            "the other client, by name",
        );
        let how = match upstream {
            "tor" => "resolved by a Tor exit (dns.upstream = \"tor\"); SERVFAIL until Tor is up",
            "uplink" => {
                "forwarded in clear text to the uplink's resolvers (dns.upstream = \"uplink\")"
            }
            _ => "SERVFAIL: non-local names are not forwarded (dns.upstream = \"none\")",
        };
        try_in(c1, format!("dig +short {origin}"), how);
    }
    if transparent {
        try_in(
            c1,
            format!("curl -m20 http://{origin}/"),
            "through Tor with no proxy settings (transparent)",
        );
    } else {
        try_in(
            c1,
            format!("curl -m3 http://{origin_ip}/"),
            "dropped: the inside never reaches the outside (transparent is off)",
        );
    }
    if socks {
        let port = port(cfg, "socks", 9050);
        try_in(
            c1,
            format!("curl -m20 --socks5-hostname {inside}:{port} http://{origin}/"),
            "through Tor by SOCKS",
        );
    }
    if proxy {
        let port = port(cfg, "http_proxy", 3128);
        let how = if proxy_direct {
            "the HTTP proxy, in clear text from the uplink (http_proxy.egress = \"direct\")"
        } else {
            "the HTTP proxy, through Tor"
        };
        try_in(
            c1,
            format!("curl -m20 -x http://{inside}:{port} http://{origin}/"),
            how,
        );
    }
    let cli = format!("{} --config {}", lab.agent.display(), lab.config.display());
    try_in(
        gw,
        format!("{cli} status"),
        "uplink, Tor, clients, drops, caches",
    );
    try_in(gw, format!("{cli} leases"), "");
    try_in(gw, format!("{cli} maps drops"), "");

    // Comments line up after the client commands; the long CLI lines keep theirs close.
    let width = lines
        .iter()
        .map(|(c, _)| c.len())
        .filter(|len| *len <= ALIGN_AT_MOST)
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "\nThe gateway runs in namespace `{gw}`; c1 (dhclient) and c2 (udhcpc) are taking \
         leases.\nTry from another shell:\n"
    );
    for (command, what) in lines {
        if what.is_empty() {
            out.push_str(&format!("  {command}\n"));
        } else {
            out.push_str(&format!("  {command:<width$}  # {what}\n"));
        }
    }
    out.push_str("Stop with Ctrl-C; `cargo xtask lab down` removes the lab.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side() -> LabSide<'static> {
        LabSide {
            gw: "gw",
            c1: "c1",
            origin_name: "origin.test",
            origin_ip: "203.0.113.80",
            agent: Path::new("/t/gateway-agent"),
            config: Path::new("/run/gw.toml"),
        }
    }

    fn lab_toml(extra: &str) -> toml::Table {
        // `extra`'s keys go into the lab's tables of the same name.
        let mut table: toml::Table = include_str!("../../config/lab.toml").parse().unwrap();
        let extra: toml::Table = extra.parse().unwrap();
        for (key, value) in extra {
            match (table.get_mut(&key), value) {
                (Some(toml::Value::Table(mine)), toml::Value::Table(theirs)) => mine.extend(theirs),
                (_, value) => {
                    table.insert(key, value);
                }
            }
        }
        table
    }

    #[test]
    fn the_lab_config_gets_tor_hints() {
        let hints = run_hints(&side(), &lab_toml(""));
        assert!(
            hints.contains("dig +short origin.test")
                && hints.contains("# resolved by a Tor exit (dns.upstream = \"tor\")"),
            "{hints}"
        );
        assert!(!hints.contains("forwarded to the uplink"), "{hints}");
        assert!(hints.contains("curl -m20 http://origin.test/"), "{hints}");
        assert!(
            hints.contains("--socks5-hostname 198.51.100.1:9050"),
            "{hints}"
        );
        assert!(hints.contains("-x http://198.51.100.1:3128"), "{hints}");
        assert!(hints.contains("dig +short c2.home.arpa"), "{hints}");
        assert!(
            hints.contains("ip netns exec gw /t/gateway-agent --config /run/gw.toml status"),
            "{hints}"
        );
    }

    #[test]
    fn hints_follow_the_config() {
        let hints = run_hints(&side(), &lab_toml("[dns]\nupstream = \"uplink\"\n"));
        assert!(
            hints.contains("forwarded in clear text to the uplink's resolvers"),
            "{hints}"
        );
        let hints = run_hints(
            &side(),
            &lab_toml("[tor]\nenabled = false\n[dns]\nupstream = \"none\"\n"),
        );
        assert!(hints.contains("SERVFAIL: non-local names"), "{hints}");
        assert!(
            hints.contains("curl -m3 http://203.0.113.80/") && hints.contains("# dropped"),
            "{hints}"
        );
        assert!(
            !hints.contains("socks5") && !hints.contains("-x http://"),
            "{hints}"
        );
        let hints = run_hints(
            &side(),
            &lab_toml("[tor]\nenabled = false\n[http_proxy]\negress = \"direct\"\n"),
        );
        assert!(hints.contains("http_proxy.egress = \"direct\""), "{hints}");
    }
}
