//! What `gateway-agent run` shows while it starts: each service once its sockets are bound,
//! the uplink's lease, Tor's bootstrap, then the addresses clients should use.
//!
//! Two styles. On a terminal (stderr a TTY, not under journald) a live view: short lines, a
//! progress bar for Tor's bootstrap redrawn in place at the bottom, and log lines of `warn`
//! and above printed over it. Anywhere else (journald, a file, a pipe) the same lines are plain
//! `info` log lines with no escape codes, and Tor's progress is the Tor module's own log lines.
//! Nothing here names a client or a destination: no per-query or per-connection output.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::config::DnsUpstream;
use crate::tor::{Tor, TorStatus};
use crate::uplink::UplinkStatus;

/// The target of the status lines in the log (the lines style).
pub const TARGET: &str = "gateway_agent::console";

/// How the status is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Redrawn lines and a progress bar on a terminal.
    Live,
    /// Plain log lines.
    Lines,
}

impl Style {
    /// [`Style::Live`] when stderr is a terminal and systemd's journal is not where it goes
    /// (`JOURNAL_STREAM` unset) and `plain` was not asked for; else [`Style::Lines`].
    pub fn detect(plain: bool) -> Style {
        let journal = std::env::var_os("JOURNAL_STREAM").is_some();
        if plain || journal || !std::io::stderr().is_terminal() {
            Style::Lines
        } else {
            Style::Live
        }
    }
}

/// The status printer, shared by the agent (its lines) and the log subscriber (whose lines go
/// over the bar in the live style).
pub struct Console {
    style: Style,
    /// The progress bar shown at the bottom (live style only).
    bar: Mutex<Option<String>>,
}

impl Console {
    /// A console in `style`.
    pub fn new(style: Style) -> Arc<Console> {
        Arc::new(Console {
            style,
            bar: Mutex::new(None),
        })
    }

    /// Its style.
    pub fn style(&self) -> Style {
        self.style
    }

    /// Prints one status line.
    pub fn say(&self, line: &str) {
        match self.style {
            Style::Live => self.write_over_bar(format!("{line}\n").as_bytes()),
            Style::Lines => tracing::info!(target: TARGET, "{line}"),
        }
    }

    /// Shows `bar` at the bottom (live style), or removes it (`None`).
    pub fn set_bar(&self, bar: Option<String>) {
        if self.style != Style::Live {
            return;
        }
        let mut shown = lock(&self.bar);
        if *shown == bar {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b"\r\x1b[2K");
        if let Some(bar) = &bar {
            let _ = err.write_all(bar.as_bytes());
        }
        let _ = err.flush();
        *shown = bar;
    }

    /// Writes `bytes` (whole lines) to stderr: in the live style above the bar, which is
    /// drawn again under them.
    fn write_over_bar(&self, bytes: &[u8]) {
        let shown = lock(&self.bar);
        let mut err = std::io::stderr().lock();
        if shown.is_some() {
            let _ = err.write_all(b"\r\x1b[2K");
        }
        let _ = err.write_all(bytes);
        if let Some(bar) = shown.as_ref() {
            let _ = err.write_all(bar.as_bytes());
        }
        let _ = err.flush();
    }

    /// A writer for the log subscriber: stderr, keeping the bar at the bottom.
    pub fn log_writer(self: &Arc<Self>) -> LogWriter {
        LogWriter(self.clone())
    }
}

/// Log output through a [`Console`] (see [`Console::log_writer`]).
pub struct LogWriter(Arc<Console>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter writes each event whole, so the bar is never split by one.
        self.0.write_over_bar(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Width of a service's name column.
const NAME: usize = 13;

/// `dns          started on 198.51.100.1:53 (udp, tcp)`.
pub fn started_line(name: &str, listen: Option<&str>) -> String {
    match listen {
        Some(listen) => format!("{name:<NAME$}started on {listen}"),
        None => format!("{name:<NAME$}started"),
    }
}

/// Where a service of the list listens, from the config (what it has bound once its start
/// returned).
pub fn listen_of(cfg: &Config, name: &str) -> Option<String> {
    let inside = cfg.inside.address;
    let s = &cfg.services;
    Some(match name {
        "uplink" => format!("{} on {}", cfg.uplink.macvlan_name, cfg.interfaces.outside),
        "dataplane" => format!("{} (XDP) and the uplink (TC)", cfg.interfaces.inside),
        "dns" => format!("{inside}:{} (udp, tcp)", s.dns.port),
        "dhcp" => format!("udp/{} on {}", s.dhcp.port, cfg.interfaces.inside),
        "socks" => format!("{inside}:{}", s.socks.port),
        "http_proxy" => format!("{inside}:{}", s.http_proxy.port),
        "transparent" => format!("127.0.0.1:{} (steered inside TCP)", cfg.transparent.port),
        "registry" => format!("{inside}:{} (TLS)", s.registry.port),
        "mirror" => format!("{inside}:{} (TLS)", s.mirror.port),
        "status_page" => format!("{} (TLS)", cfg.status_page.listen),
        "control" => cfg.control.socket.display().to_string(),
        "metrics" => cfg.metrics.listen.to_string(),
        _ => return None,
    })
}

/// `uplink       192.0.2.150/24 via 192.0.2.1 (bound), lease 11h 59m left`, or `None` while
/// it has no address.
pub fn uplink_line(uplink: &UplinkStatus, now_unix: u64) -> Option<String> {
    let address = uplink.address?;
    let prefix = uplink
        .prefix_len
        .map(|p| format!("/{p}"))
        .unwrap_or_default();
    let router = uplink
        .router
        .map(|r| format!(" via {r}"))
        .unwrap_or_default();
    let lease = match uplink.lease_expires_unix {
        Some(expires) => format!(
            ", lease {} left",
            duration_words(expires.saturating_sub(now_unix))
        ),
        None => String::new(),
    };
    Some(format!(
        "{:<NAME$}{address}{prefix}{router} ({}){lease}",
        "uplink", uplink.state
    ))
}

/// `2d 3h`, `11h 59m`, `4m 10s`, `9s`: two units at most.
pub fn duration_words(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `tor          [#######·············]  35% loading directory` (arti's words shortened).
pub fn tor_bar(tor: &TorStatus) -> String {
    const WIDTH: usize = 20;
    let percent = usize::from(tor.percent.min(100));
    let filled = percent * WIDTH / 100;
    let progress: String = tor.progress.chars().take(50).collect();
    format!(
        "{:<NAME$}[{}{}] {percent:>3}% {progress}",
        "tor",
        "#".repeat(filled),
        "·".repeat(WIDTH - filled)
    )
}

/// The lines that say what clients should use, from the config and the services that run.
pub fn client_addresses(cfg: &Config, running: &[&str]) -> Vec<String> {
    let runs = |name: &str| running.contains(&name);
    let inside = cfg.inside.address;
    let s = &cfg.services;
    let zone = cfg.dns.zone.to_string();
    let zone = zone.trim_end_matches('.');
    let mut out = vec!["Clients use:".to_owned()];
    let mut add = |what: &str, how: String| out.push(format!("  {what:<12} {how}"));
    if runs("dhcp") {
        let (first, last) = cfg.dhcp.pool_range(&cfg.inside);
        add(
            "DHCP",
            format!(
                "on {} ({}, pool {first}-{last}): router and DNS {inside}",
                cfg.interfaces.inside,
                cfg.inside.subnet()
            ),
        );
    }
    if runs("dns") {
        let upstream = match cfg.dns.upstream {
            DnsUpstream::Tor => "other names through Tor exits",
            DnsUpstream::Uplink => "other names in clear text to the uplink's resolvers",
            DnsUpstream::None => "other names get SERVFAIL (dns.upstream = \"none\")",
        };
        let port = if s.dns.port == 53 {
            String::new()
        } else {
            format!(" port {}", s.dns.port)
        };
        add(
            "DNS",
            format!("{inside}{port}: names in {zone}, {upstream}"),
        );
    }
    if runs("transparent") {
        add(
            "no proxy",
            "TCP from the inside to any host goes through Tor, no settings needed".to_owned(),
        );
    }
    if runs("socks") {
        add(
            "SOCKS5",
            format!(
                "socks5h://{inside}:{} (names resolved at the exit)",
                s.socks.port
            ),
        );
    }
    if runs("http_proxy") {
        let egress = match cfg.http_proxy.egress {
            crate::egress::Egress::Direct => "clear text from the uplink address",
            crate::egress::Egress::Tor => "through Tor",
        };
        add(
            "HTTP proxy",
            format!("http://{inside}:{} ({egress})", s.http_proxy.port),
        );
    }
    let url = |name: &str, port: u16| {
        if port == 443 {
            format!("https://{name}.{zone}")
        } else {
            format!("https://{name}.{zone}:{port}")
        }
    };
    if runs("registry") {
        add(
            "registry",
            format!(
                "{} (a client certificate: `gateway-agent pki issue-client NAME --out DIR`)",
                url("registry", s.registry.port)
            ),
        );
    }
    if runs("mirror") {
        add(
            "mirror",
            format!(
                "{} (pull only, same certificates)",
                url("mirror", s.mirror.port)
            ),
        );
    }
    if runs("status_page") {
        add(
            "status page",
            format!("https://{}/", cfg.status_page.listen),
        );
    }
    if runs("metrics") {
        add("metrics", format!("http://{}/metrics", cfg.metrics.listen));
    }
    out
}

/// Follows the uplink and Tor after start: the lease when it comes or changes, Tor's bootstrap
/// (a bar in the live style, then one line when it is done), and Tor losing or regaining its
/// network. Runs until aborted.
pub async fn follow(
    console: Arc<Console>,
    uplink: Option<watch::Receiver<UplinkStatus>>,
    tor: Option<Tor>,
) {
    let mut shown_uplink: Option<(Option<std::net::Ipv4Addr>, String)> = None;
    let mut bootstrapped = false;
    let mut reachable = true;
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if let Some(uplink) = &uplink {
            let status = uplink.borrow().clone();
            let key = (status.address, status.state.clone());
            // A renewal changes the expiry only: not worth a line.
            if shown_uplink.as_ref() != Some(&key) {
                let line = uplink_line(&status, crate::clock::unix_now()).unwrap_or_else(|| {
                    format!("{:<NAME$}no address yet ({})", "uplink", status.state)
                });
                console.say(&line);
                shown_uplink = Some(key);
            }
        }
        let Some(tor) = &tor else { continue };
        let status = tor.status();
        if !bootstrapped {
            if status.bootstrapped {
                console.set_bar(None);
                console.say(&format!(
                    "{:<NAME$}bootstrapped in {}: SOCKS, DNS and the proxy reach the Tor network",
                    "tor",
                    duration_words(started.elapsed().as_secs())
                ));
                bootstrapped = true;
            } else {
                console.set_bar(Some(tor_bar(&status)));
            }
        } else if status.reachable != reachable {
            console.say(&if status.reachable {
                format!("{:<NAME$}reaches its network again", "tor")
            } else {
                format!(
                    "{:<NAME$}cannot reach its network: streams and lookups are refused",
                    "tor"
                )
            });
        }
        reachable = status.reachable;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_config() -> Config {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/lab.toml");
        let text = std::fs::read_to_string(path).unwrap();
        crate::config::parse(&text).unwrap()
    }

    #[test]
    fn the_bar_fills_with_the_percentage() {
        let tor = TorStatus {
            percent: 35,
            progress: "loading directory".into(),
            ..TorStatus::default()
        };
        assert_eq!(
            tor_bar(&tor),
            "tor          [#######·············]  35% loading directory"
        );
        let done = TorStatus {
            percent: 100,
            ..TorStatus::default()
        };
        assert!(tor_bar(&done).contains("[####################] 100%"));
    }

    #[test]
    fn the_uplink_line_shows_address_router_and_lease_left() {
        let uplink = UplinkStatus {
            state: "bound".into(),
            address: Some("192.0.2.150".parse().unwrap()),
            prefix_len: Some(24),
            router: Some("192.0.2.1".parse().unwrap()),
            lease_expires_unix: Some(1000 + 43_170),
            ..UplinkStatus::default()
        };
        assert_eq!(
            uplink_line(&uplink, 1000).as_deref(),
            Some("uplink       192.0.2.150/24 via 192.0.2.1 (bound), lease 11h 59m left")
        );
        assert_eq!(uplink_line(&UplinkStatus::default(), 0), None);
        assert_eq!(duration_words(59), "59s");
        assert_eq!(duration_words(3 * 86_400 + 7200), "3d 2h");
    }

    #[test]
    fn client_addresses_follow_the_config_and_what_runs() {
        let cfg = lab_config();
        let all = [
            "dhcp",
            "dns",
            "socks",
            "http_proxy",
            "transparent",
            "registry",
            "mirror",
            "status_page",
            "metrics",
        ];
        let text = client_addresses(&cfg, &all).join("\n");
        for expected in [
            "DNS          198.51.100.1: names in home.arpa, other names through Tor exits",
            "SOCKS5       socks5h://198.51.100.1:9050",
            "HTTP proxy   http://198.51.100.1:3128 (through Tor)",
            "registry     https://registry.home.arpa (",
            "mirror       https://mirror.home.arpa:5000",
            "status page  https://127.0.0.1:8443/",
            "pool 198.51.100.100-198.51.100.199",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        // A service that did not start is not offered.
        let text = client_addresses(&cfg, &["dhcp", "dns"]).join("\n");
        assert!(
            !text.contains("SOCKS5") && !text.contains("registry"),
            "{text}"
        );
        assert_eq!(
            started_line("dns", listen_of(&cfg, "dns").as_deref()),
            "dns          started on 198.51.100.1:53 (udp, tcp)"
        );
    }
}
