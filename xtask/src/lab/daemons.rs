//! The lab's own daemons in `up`: the modem (dnsmasq: DHCP and DNS) and the origin web server,
//! and the files they and the agent read (the rendered agent config, resolv.conf, the web root).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process;

use super::layout::{
    lab_config_template, Lab, GATEWAY_INSIDE_IP, INTERNET_RESOLVER_IP, LAB_WIDE_FILES,
    LOOPBACK_NAME, MODEM_IP, ORIGIN_IP, ORIGIN_NAME, TEMPLATE_STATE_DIR,
};
use super::topology::ns_path;
use crate::process::{log_tail, pid_alive, read_pid};

/// How long `up` waits for dnsmasq and the origin to answer.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// `template` (config/lab.toml) with every path under [`TEMPLATE_STATE_DIR`] moved into
/// `gateway_dir`, except the [`LAB_WIDE_FILES`], which move into `lab_dir`.
pub(crate) fn render_agent_config(template: &str, lab_dir: &Path, gateway_dir: &Path) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find(TEMPLATE_STATE_DIR) {
        out.push_str(&rest[..at]);
        rest = &rest[at + TEMPLATE_STATE_DIR.len()..];
        let lab_wide = LAB_WIDE_FILES.iter().any(|file| {
            rest.strip_prefix(file)
                .is_some_and(|after| !after.starts_with(|c: char| c.is_alphanumeric() || c == '.'))
        });
        let dir = if lab_wide { lab_dir } else { gateway_dir };
        out.push_str(&format!("{}/", dir.display()));
    }
    out.push_str(rest);
    out
}

impl Lab {
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

    /// Renders `config/lab.toml` for this slot: its paths pointed into the slot's gateway dir,
    /// the lab-wide files (`arti.toml`) into the lab's state dir.
    pub(crate) fn render_agent_config(&self) -> Result<String> {
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
        Ok(render_agent_config(
            &template,
            &self.state_dir(),
            &self.gateway_dir(),
        ))
    }

    /// Writes [`Lab::agent_config`] from `config/lab.toml`.
    pub(crate) fn write_agent_config(&self) -> Result<()> {
        let config = self.render_agent_config()?;
        let path = self.agent_config();
        fs::write(&path, config).with_context(|| format!("writing {}", path.display()))
    }

    /// `ip netns exec` bind-mounts `/etc/netns/<ns>/resolv.conf` over `/etc/resolv.conf`. Each
    /// namespace gets the resolver it would have on a real network (the clients the gateway, the
    /// gateway and the modem the modem), so lookups never head for the host's own resolver, and
    /// a DHCP client hook that writes resolv.conf would write this file, not the host's.
    pub(crate) fn write_resolv_conf(&self, ns: &str, role: &str) -> Result<()> {
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

    pub(crate) fn write_www(&self) -> Result<()> {
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

    pub(crate) fn start_dnsmasq(&self) -> Result<()> {
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
            // The upstream registries (started on demand, see upstream.rs).
            format!(
                "--host-record={},{}",
                super::upstream::HOST_RECORDS[0].0,
                super::upstream::HOST_RECORDS[0].1
            ),
            format!(
                "--host-record={},{}",
                super::upstream::HOST_RECORDS[1].0,
                super::upstream::HOST_RECORDS[1].1
            ),
            format!(
                "--host-record={},{}",
                super::upstream::HOST_RECORDS[2].0,
                super::upstream::HOST_RECORDS[2].1
            ),
            // nginx (web_origin.rs), under its own name and an impostor's.
            format!(
                "--host-record={},{}",
                super::web_origin::HOST_RECORDS[0].0,
                super::web_origin::HOST_RECORDS[0].1
            ),
            format!(
                "--host-record={},{}",
                super::web_origin::HOST_RECORDS[1].0,
                super::web_origin::HOST_RECORDS[1].1
            ),
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

    pub(crate) fn start_origin(&self) -> Result<()> {
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
    pub(crate) fn wait_ready(&self) -> Result<()> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_slot_renders_its_own_agent_config() {
        let template = "arti_config = \"/run/gateway-lab/default/arti.toml\"\n\
                        bpf_pin_dir = \"/run/gateway-lab/default/bpf\"\n\
                        socket = \"/run/gateway-lab/default/control.sock\"\n\
                        other = \"/run/gateway-lab/default/arti.toml.d\"\n";
        let default = Lab::default_lab().with_slot(2);
        let text = render_agent_config(template, &default.state_dir(), &default.gateway_dir());
        assert_eq!(
            text,
            "arti_config = \"/run/gateway-lab/default/arti.toml\"\n\
             bpf_pin_dir = \"/run/gateway-lab/default/slot2/bpf\"\n\
             socket = \"/run/gateway-lab/default/slot2/control.sock\"\n\
             other = \"/run/gateway-lab/default/slot2/arti.toml.d\"\n"
        );
        let lab = Lab::new("t9");
        let text = render_agent_config(template, &lab.state_dir(), &lab.gateway_dir());
        assert!(text.contains("\"/run/gateway-lab/t9/arti.toml\""), "{text}");
        assert!(text.contains("\"/run/gateway-lab/t9/bpf\""), "{text}");
        // The committed template renders with per-slot paths only.
        let template = fs::read_to_string(lab_config_template()).expect("config/lab.toml");
        let slot = lab.with_slot(1);
        let text = render_agent_config(&template, &slot.state_dir(), &slot.gateway_dir());
        assert!(!text.contains(TEMPLATE_STATE_DIR), "{text}");
        for path in [
            slot.bpf_dir(),
            slot.control_socket(),
            slot.agent_state_dir(),
        ] {
            assert!(text.contains(&format!("\"{}\"", path.display())), "{text}");
        }
        assert!(text.contains("\"/run/gateway-lab/t9/arti.toml\""), "{text}");
    }
}
