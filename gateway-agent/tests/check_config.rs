//! `gateway-agent check-config FILE` over a table of bad configs, through the real binary: each
//! must exit non-zero and name the offending key on stderr as `FILE: KEY: PROBLEM`.

// Clippy's allow-*-in-tests covers #[test] functions only, not the setup helpers in this
// file; a test whose setup fails should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Valid apart from the interfaces, which need not exist: tests that get past parsing swap in
/// real ones where they need to.
const INTERFACES: &str = "[interfaces]\noutside = \"outside0\"\ninside = \"inside0\"\n";
const INSIDE: &str = "[inside]\naddress = \"198.51.100.1/24\"\n";

/// The usual interfaces and inside address, then `extra`.
fn base(extra: &str) -> String {
    format!("{INTERFACES}\n{INSIDE}\n{extra}\n")
}

fn check_config(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway-agent"))
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run gateway-agent check-config")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write test config");
    path
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The bad configs: (case, config text, what stderr must contain after `FILE: `).
fn bad_configs() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "missing_inside_interface",
            format!("[interfaces]\noutside = \"outside0\"\n{INSIDE}"),
            "interfaces.inside: ",
        ),
        (
            "missing_interfaces_table",
            INSIDE.to_owned(),
            "interfaces.outside: ",
        ),
        (
            "interface_name_too_long",
            format!(
                "[interfaces]\noutside = \"outside0\"\ninside = \"inside0123456789\"\n{INSIDE}"
            ),
            "interfaces.inside: ",
        ),
        (
            "same_interface_twice",
            format!("[interfaces]\noutside = \"eth0\"\ninside = \"eth0\"\n{INSIDE}"),
            "interfaces.inside: ",
        ),
        (
            "bad_cidr",
            format!("{INTERFACES}[inside]\naddress = \"198.51.100.1\"\n"),
            "inside.address: ",
        ),
        (
            "prefix_31",
            format!("{INTERFACES}[inside]\naddress = \"198.51.100.1/31\"\n"),
            "inside.address: ",
        ),
        (
            "inside_is_network_address",
            format!("{INTERFACES}[inside]\naddress = \"198.51.100.0/24\"\n"),
            "inside.address: ",
        ),
        (
            "static_outside_overlaps_inside",
            base("[outside]\naddress = \"198.51.100.2/24\""),
            "outside.address: ",
        ),
        (
            "gateway_outside_static_subnet",
            base("[outside]\naddress = \"192.0.2.2/24\"\ngateway = \"192.0.3.1\""),
            "outside.gateway: ",
        ),
        (
            "gateway_with_dhcp",
            base("[outside]\ngateway = \"192.0.2.1\""),
            "outside.gateway: ",
        ),
        (
            "bad_xdp_mode",
            base("[dataplane]\nxdp_mode = \"fast\""),
            "dataplane.xdp_mode: ",
        ),
        (
            "allow_sctp",
            base("[dataplane]\nallow = [\"sctp/1\"]"),
            "dataplane.allow[0]: ",
        ),
        ("service_port_0", base("[dns]\nport = 0"), "dns.port: "),
        (
            "allow_port_0",
            base("[dataplane]\nallow = [\"tcp/0\"]"),
            "dataplane.allow[0]: ",
        ),
        (
            "service_port_70000",
            base("[mirror]\nport = 70000"),
            "mirror.port: ",
        ),
        (
            "allow_port_70000",
            base("[dataplane]\nallow = [\"udp/70000\"]"),
            "dataplane.allow[0]: ",
        ),
        (
            "port_used_by_two_services",
            base("[socks]\nport = 3128"),
            "http_proxy.port: tcp/3128 is already used by socks.port",
        ),
        (
            "allow_port_used_by_service",
            base("[dataplane]\nallow = [\"tcp/22\", \"tcp/3128\"]"),
            "dataplane.allow[1]: tcp/3128 is already used by http_proxy.port",
        ),
        (
            "metrics_listen_without_port",
            base("[metrics]\nlisten = \"127.0.0.1\""),
            "metrics.listen: \"127.0.0.1\" is not an address and port",
        ),
        (
            "unknown_key",
            base("[dns]\nprot = 53"),
            "dns.prot: unknown key",
        ),
        (
            "unknown_table",
            base("[firewall]\nopen = true"),
            "firewall: unknown key",
        ),
        (
            "wrong_type",
            base("[dataplane]\nallow_ping = \"yes\""),
            "dataplane.allow_ping: expected a boolean",
        ),
        (
            "relative_state_dir",
            base("[state]\ndir = \"state\""),
            "state.dir: ",
        ),
        (
            "toml_syntax_error",
            format!("{INTERFACES}[inside]\naddress = 198.51.100.1/24\n"),
            "TOML syntax error at line 5",
        ),
        (
            "unknown_interface",
            format!("[interfaces]\noutside = \"nosuchif0\"\ninside = \"lo\"\n{INSIDE}"),
            "interfaces.outside: no interface named \"nosuchif0\"",
        ),
    ]
}

#[test]
fn bad_configs_fail_and_name_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for (case, text, expected) in bad_configs() {
        let path = write(dir.path(), case, &text);
        let output = check_config(&path);
        let stderr = stderr(&output);
        let file = path.display();
        if output.status.success() {
            failures.push(format!("{case}: exited 0; stderr:\n{stderr}"));
        } else if !stderr.contains(&format!("{file}: {expected}")) {
            failures.push(format!(
                "{case}: stderr lacks {:?}:\n{stderr}",
                format!("{file}: {expected}")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn missing_file_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = check_config(&dir.path().join("absent.toml"));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot read"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn every_error_is_reported_on_its_own_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        dir.path(),
        "many",
        &base("[dns]\nport = 0\n[log]\nlevel = \"loud\"\n[dataplane]\nxdp_mode = \"fast\""),
    );
    let output = check_config(&path);
    assert!(!output.status.success());
    let stderr = stderr(&output);
    for key in ["dataplane.xdp_mode", "log.level", "dns.port"] {
        let line = format!("{}: {key}: ", path.display());
        assert!(
            stderr.lines().any(|l| l.starts_with(&line)),
            "no line for {key}:\n{stderr}"
        );
    }
}

/// A network interface of this host other than `lo`, if there is one.
fn other_interface() -> Option<String> {
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name != "lo" && name.len() <= 15)
        .min()
}

#[test]
fn good_config_passes_host_checks_it_can() {
    let dir = tempfile::tempdir().expect("temp dir");
    // check-config only looks interfaces up; nothing is touched on the host.
    let inside = other_interface().unwrap_or_else(|| "nosuchif1".to_owned());
    let text = format!("[interfaces]\noutside = \"lo\"\ninside = {inside:?}\n{INSIDE}");
    let path = write(dir.path(), "good", &text);
    let output = check_config(&path);
    let stderr = stderr(&output);
    if inside == "nosuchif1" {
        // No second interface here: the only error must be that one.
        assert!(!output.status.success());
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains("interfaces.inside: no interface named \"nosuchif1\""));
    } else {
        assert!(output.status.success(), "{stderr}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!("{}: OK", path.display())),
            "{stdout}"
        );
    }
}

#[test]
fn shipped_configs_only_lack_their_interfaces_here() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    for name in ["gateway.example.toml", "lab.toml"] {
        let path = root.join(name);
        let output = check_config(&path);
        if output.status.success() {
            // Run where the interfaces exist, e.g. in the lab's gw namespace.
            continue;
        }
        let stderr = stderr(&output);
        for line in stderr.lines() {
            assert!(
                line.contains(": interfaces.outside: no interface named")
                    || line.contains(": interfaces.inside: no interface named"),
                "{name}: unexpected error: {line}"
            );
        }
    }
}

#[test]
fn a_mirror_credentials_file_others_can_read_is_refused_by_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = dir.path().join("private.credentials");
    std::fs::write(&credentials, "ci:secret\n").expect("write credentials");
    let text = base(&format!(
        "[[mirror.upstreams]]\nname = \"private.test\"\nurl = \"https://registry.private.test\"\n\
         credentials = {:?}\n",
        credentials.display().to_string()
    ));
    let path = write(dir.path(), "credentials", &text);
    let line = format!("{}: mirror.upstreams[0].credentials: ", path.display());
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = check_config(&path);
    let stderr = stderr(&output);
    assert!(!output.status.success());
    let named = stderr.lines().find(|l| l.starts_with(&line));
    assert!(
        named.is_some_and(|l| l.contains("chmod 600") && !l.contains("secret")),
        "{stderr}"
    );
    // Made private, only the (absent) interfaces are left.
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let stderr = self::stderr(&check_config(&path));
    assert!(!stderr.contains("mirror.upstreams"), "{stderr}");
}
