use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::*;

/// The smallest valid config: only the keys without defaults.
const MINIMAL: &str = r#"
[interfaces]
outside = "outside0"
inside = "inside0"

[inside]
address = "198.51.100.1/24"
"#;

/// `MINIMAL` plus `extra` (tables other than `[interfaces]` and `[inside]`).
fn with(extra: &str) -> String {
    format!("{MINIMAL}\n{extra}\n")
}

fn errors_of(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => errors.0,
    }
}

/// The single error `text` has; fails if there are none or several.
fn only_error(text: &str) -> ConfigError {
    let errors = errors_of(text);
    assert_eq!(
        errors.len(),
        1,
        "expected exactly one error, got {errors:#?}"
    );
    errors.into_iter().next().unwrap()
}

/// Asserts `text` has exactly one error, on `key`, whose problem contains `needle`.
fn assert_error(text: &str, key: &str, needle: &str) {
    let error = only_error(text);
    assert_eq!(error.key, key, "{error}");
    assert!(
        error.problem.contains(needle),
        "problem {:?} should contain {needle:?}",
        error.problem
    );
}

fn parse_ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got:\n{errors}"),
    }
}

fn rule(protocol: Protocol, port: u16) -> PortRule {
    PortRule { protocol, port }
}

// ---- defaults and whole files ----

#[test]
fn minimal_config_takes_every_default() {
    let config = parse_ok(MINIMAL);
    assert_eq!(
        config.interfaces,
        Interfaces {
            outside: "outside0".into(),
            inside: "inside0".into()
        }
    );
    assert_eq!(
        config.inside,
        Inside {
            address: Ipv4Addr::new(198, 51, 100, 1),
            prefix_len: 24
        }
    );
    assert_eq!(config.outside.address, OutsideAddress::Dhcp);
    assert_eq!(
        config.dataplane,
        Dataplane {
            bpf_pin_dir: PathBuf::from("/sys/fs/bpf/gateway"),
            xdp_mode: XdpMode::Auto,
            allow_ping: true,
            allow: vec![],
            default_policy: crate::dataplane::policy::Policy::Transparent,
        }
    );
    assert_eq!(
        config.control.socket,
        Path::new("/run/gateway/control.sock")
    );
    assert_eq!(
        config.metrics,
        Metrics {
            enabled: true,
            listen: "127.0.0.1:9101".parse().unwrap(),
        }
    );
    assert_eq!(config.state.dir, Path::new("/var/lib/gateway"));
    assert_eq!(config.log.level, "info");
    assert!(!config.log.queries, "query logging must be off by default");
    let services = &config.services;
    for (service, port) in [
        (services.dns, 53),
        (services.dhcp, 67),
        (services.socks, 9050),
        (services.http_proxy, 3128),
        (services.registry, 443),
        (services.mirror, 5000),
    ] {
        assert_eq!(
            service,
            Service {
                enabled: true,
                port
            }
        );
    }
    assert_eq!(config.http_proxy.connect_ports, [443]);
}

#[test]
fn example_config_shows_the_real_defaults() {
    let example = parse_ok(include_str!("../../../config/gateway.example.toml"));
    let defaults = parse_ok(MINIMAL);
    assert_eq!(example.outside, defaults.outside);
    assert_eq!(example.dataplane, defaults.dataplane);
    assert_eq!(example.control, defaults.control);
    assert_eq!(example.metrics, defaults.metrics);
    assert_eq!(example.state, defaults.state);
    assert_eq!(example.log, defaults.log);
    assert_eq!(example.services, defaults.services);
    assert_eq!(example.http_proxy, defaults.http_proxy);
    assert_eq!(example.tor, defaults.tor);
    assert_eq!(example.registry, defaults.registry);
    assert_eq!(example.dns.upstream, defaults.dns.upstream);
}

#[test]
fn lab_config() {
    let lab = parse_ok(include_str!("../../../config/lab.toml"));
    assert_eq!(lab.interfaces.outside, "outside0");
    assert_eq!(lab.interfaces.inside, "inside0");
    assert_eq!(lab.inside.cidr(), "198.51.100.1/24");
    assert_eq!(lab.outside.address, OutsideAddress::Dhcp);
    assert_eq!(lab.dns.upstream, super::DnsUpstream::Tor);
    assert_eq!(
        lab.tor.arti_config.as_deref(),
        Some(Path::new("/run/gateway-lab/default/arti.toml"))
    );
    assert_eq!(lab.dataplane.xdp_mode, XdpMode::Native);
    assert!(lab.dataplane.allow.is_empty());
    // The lab rewrites exactly this prefix for parallel labs.
    let prefix = Path::new("/run/gateway-lab/default");
    assert_eq!(lab.dataplane.bpf_pin_dir, prefix.join("bpf"));
    assert_eq!(lab.control.socket, prefix.join("control.sock"));
    assert_eq!(lab.state.dir, prefix.join("state"));
    // The gw namespace's own loopback: the integration tests scrape it there.
    assert_eq!(lab.metrics, Metrics::default());
}

#[test]
fn full_config_with_every_key_set() {
    let config = parse_ok(
        r#"
[interfaces]
outside = "eth0"
inside = "br-lan.10"

[inside]
address = "10.20.0.254/16"

[outside]
address = "192.0.2.10/29"
gateway = "192.0.2.9"

[dataplane]
bpf_pin_dir = "/sys/fs/bpf/gw2"
xdp_mode = "skb"
allow_ping = false
allow = ["tcp/22", "udp/123"]

[control]
socket = "/run/gw2/control.sock"

[metrics]
enabled = false
listen = "[::1]:9200"

[state]
dir = "/srv/gateway"

[log]
level = "trace"
queries = true

[dns]
enabled = true
port = 5353

[dhcp]
enabled = false
port = 6767

[socks]
enabled = true
port = 1080

[http_proxy]
enabled = false
port = 8080

[registry]
enabled = true
port = 8443

[mirror]
enabled = true
port = 5001
"#,
    );
    assert_eq!(config.interfaces.inside, "br-lan.10");
    assert_eq!(config.inside.cidr(), "10.20.0.254/16");
    assert_eq!(
        config.outside.address,
        OutsideAddress::Static {
            address: Ipv4Addr::new(192, 0, 2, 10),
            prefix_len: 29,
            gateway: Some(Ipv4Addr::new(192, 0, 2, 9)),
        }
    );
    assert_eq!(config.dataplane.bpf_pin_dir, Path::new("/sys/fs/bpf/gw2"));
    assert_eq!(config.dataplane.xdp_mode, XdpMode::Skb);
    assert!(!config.dataplane.allow_ping);
    assert_eq!(
        config.dataplane.allow,
        vec![rule(Protocol::Tcp, 22), rule(Protocol::Udp, 123)]
    );
    assert_eq!(config.control.socket, Path::new("/run/gw2/control.sock"));
    assert_eq!(
        config.metrics,
        Metrics {
            enabled: false,
            listen: "[::1]:9200".parse().unwrap(),
        }
    );
    assert_eq!(config.state.dir, Path::new("/srv/gateway"));
    assert_eq!(
        config.log,
        Log {
            level: "trace".into(),
            queries: true
        }
    );
    assert_eq!(
        config.services.dhcp,
        Service {
            enabled: false,
            port: 6767
        }
    );
    assert_eq!(config.services.mirror, Service::on(5001));
}

#[test]
fn static_outside_without_gateway_is_allowed() {
    let config = parse_ok(&with("[outside]\naddress = \"192.0.2.2/24\""));
    assert_eq!(
        config.outside.address,
        OutsideAddress::Static {
            address: Ipv4Addr::new(192, 0, 2, 2),
            prefix_len: 24,
            gateway: None,
        }
    );
}

#[test]
fn point_to_point_outside_is_allowed() {
    let config = parse_ok(&with(
        "[outside]\naddress = \"192.0.2.0/31\"\ngateway = \"192.0.2.1\"",
    ));
    assert!(matches!(
        config.outside.address,
        OutsideAddress::Static { prefix_len: 31, .. }
    ));
}

// ---- open ports ----

#[test]
fn open_ports_lists_enabled_services_then_allow() {
    let config = parse_ok(&with(
        "[dataplane]\nallow = [\"tcp/22\", \"udp/5353\"]\n[socks]\nenabled = false\n[mirror]\nport = 5001",
    ));
    use Protocol::{Tcp, Udp};
    assert_eq!(
        config.open_ports(),
        vec![
            rule(Tcp, 53),
            rule(Udp, 53),
            rule(Udp, 67),
            rule(Tcp, 3128),
            rule(Tcp, 443),
            rule(Tcp, 5001),
            rule(Tcp, 22),
            rule(Udp, 5353),
        ]
    );
}

// ---- required keys ----

#[test]
fn missing_inside_interface() {
    assert_error(
        "[interfaces]\noutside = \"eth0\"\n[inside]\naddress = \"198.51.100.1/24\"",
        "interfaces.inside",
        "missing",
    );
}

#[test]
fn missing_interfaces_table_names_both_keys() {
    let errors = errors_of("[inside]\naddress = \"198.51.100.1/24\"");
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["interfaces.outside", "interfaces.inside"]);
    assert!(errors.iter().all(|e| e.problem.contains("required")));
}

#[test]
fn missing_inside_address() {
    assert_error(
        "[interfaces]\noutside = \"a\"\ninside = \"b\"",
        "inside.address",
        "required",
    );
}

#[test]
fn empty_file_names_every_required_key() {
    let keys: Vec<String> = errors_of("").into_iter().map(|e| e.key).collect();
    assert_eq!(
        keys,
        ["interfaces.outside", "interfaces.inside", "inside.address"]
    );
}

// ---- interfaces ----

fn interfaces(outside: &str, inside: &str) -> String {
    format!(
        "[interfaces]\noutside = {outside:?}\ninside = {inside:?}\n[inside]\naddress = \"198.51.100.1/24\""
    )
}

#[test]
fn interface_name_rules() {
    assert_error(&interfaces("", "eth1"), "interfaces.outside", "empty");
    assert_error(
        &interfaces("eth0", "a-very-long-name0"),
        "interfaces.inside",
        "at most 15",
    );
    for bad in ["eth/0", "eth:0", "eth 0", "eth\t0", "."] {
        let error = only_error(&interfaces(bad, "eth1"));
        assert_eq!(error.key, "interfaces.outside", "{bad:?}: {error}");
    }
    // Exactly 15 bytes is fine.
    parse_ok(&interfaces("abcdefghijklmno", "eth1"));
}

#[test]
fn same_interface_twice() {
    assert_error(
        &interfaces("eth0", "eth0"),
        "interfaces.inside",
        "different NICs",
    );
}

// ---- inside ----

fn inside(address: &str) -> String {
    format!("[interfaces]\noutside = \"eth0\"\ninside = \"eth1\"\n[inside]\naddress = {address:?}")
}

#[test]
fn inside_address_rules() {
    for (address, needle) in [
        ("198.51.100.1", "prefix length"),
        ("198.51.100/24", "prefix length"),
        ("198.51.100.1/", "prefix length"),
        ("198.51.100.1/+24", "prefix length"),
        ("198.51.100.1/33", "longer than 32"),
        ("not an address", "prefix length"),
        ("198.51.100.1/31", "/8 to /30"),
        ("10.0.0.1/7", "/8 to /30"),
        ("198.51.100.0/24", "network address"),
        ("198.51.100.255/24", "broadcast address of 198.51.100.0/24"),
        ("127.0.0.1/8", "loopback"),
        ("224.0.0.1/24", "multicast"),
        ("169.254.1.1/16", "link-local"),
        ("0.0.0.0/8", "unspecified"),
    ] {
        let error = only_error(&inside(address));
        assert_eq!(error.key, "inside.address", "{address}: {error}");
        assert!(
            error.problem.contains(needle),
            "{address}: {:?} should contain {needle:?}",
            error.problem
        );
    }
    parse_ok(&inside("198.51.100.1/30"));
    parse_ok(&inside("10.0.0.1/8"));
}

#[test]
fn inside_helpers() {
    let inside = Inside {
        address: Ipv4Addr::new(198, 51, 100, 1),
        prefix_len: 24,
    };
    assert_eq!(inside.network(), Ipv4Addr::new(198, 51, 100, 0));
    assert_eq!(inside.netmask(), Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!(inside.broadcast(), Ipv4Addr::new(198, 51, 100, 255));
    assert!(inside.contains(Ipv4Addr::new(198, 51, 100, 200)));
    assert!(!inside.contains(Ipv4Addr::new(198, 51, 101, 1)));
    assert_eq!(inside.cidr(), "198.51.100.1/24");
    assert_eq!(inside.subnet(), "198.51.100.0/24");

    let wide = Inside {
        address: Ipv4Addr::new(10, 1, 2, 3),
        prefix_len: 8,
    };
    assert_eq!(wide.netmask(), Ipv4Addr::new(255, 0, 0, 0));
    assert_eq!(wide.network(), Ipv4Addr::new(10, 0, 0, 0));
    assert!(wide.contains(Ipv4Addr::new(10, 255, 255, 254)));
}

// ---- outside ----

#[test]
fn static_outside_overlapping_inside() {
    // Same subnet, a wider subnet around it, and a narrower one inside it all overlap.
    for address in ["198.51.100.2/24", "198.51.0.1/16", "198.51.100.130/25"] {
        let error = only_error(&with(&format!("[outside]\naddress = {address:?}")));
        assert_eq!(error.key, "outside.address", "{error}");
        assert!(error
            .problem
            .contains("overlaps the inside subnet 198.51.100.0/24"));
    }
}

#[test]
fn outside_gateway_rules() {
    let outside = |gateway: &str| {
        with(&format!(
            "[outside]\naddress = \"192.0.2.2/24\"\ngateway = {gateway:?}"
        ))
    };
    assert_error(
        &outside("192.0.3.1"),
        "outside.gateway",
        "not in the outside subnet 192.0.2.0/24",
    );
    assert_error(&outside("192.0.2.2"), "outside.gateway", "itself");
    assert_error(&outside("192.0.2.0"), "outside.gateway", "network address");
    assert_error(
        &outside("192.0.2.255"),
        "outside.gateway",
        "broadcast address",
    );
    assert_error(
        &outside("192.0.2"),
        "outside.gateway",
        "not an IPv4 address",
    );
}

#[test]
fn gateway_with_dhcp() {
    assert_error(
        &with("[outside]\ngateway = \"192.0.2.1\""),
        "outside.gateway",
        "only allowed with a static",
    );
    assert_error(
        &with("[outside]\naddress = \"dhcp\"\ngateway = \"192.0.2.1\""),
        "outside.gateway",
        "only allowed with a static",
    );
}

#[test]
fn bad_outside_address() {
    assert_error(
        &with("[outside]\naddress = \"DHCP\""),
        "outside.address",
        "or \"dhcp\"",
    );
    assert_error(
        &with("[outside]\naddress = \"192.0.2.0/24\""),
        "outside.address",
        "network address",
    );
    assert_error(
        &with("[outside]\naddress = \"192.0.2.2/32\""),
        "outside.address",
        "/8 to /31",
    );
}

// ---- dataplane, control, state, log ----

#[test]
fn paths_must_be_absolute() {
    assert_error(
        &with("[dataplane]\nbpf_pin_dir = \"sys/fs/bpf\""),
        "dataplane.bpf_pin_dir",
        "absolute",
    );
    assert_error(
        &with("[control]\nsocket = \"control.sock\""),
        "control.socket",
        "absolute",
    );
    assert_error(&with("[state]\ndir = \"\""), "state.dir", "absolute");
    assert_error(
        &with("[state]\ndir = \"/var/\\u0000lib\""),
        "state.dir",
        "NUL",
    );
}

#[test]
fn control_socket_must_fit_sun_path() {
    let long = format!("/run/{}.sock", "x".repeat(120));
    assert_error(
        &with(&format!("[control]\nsocket = {long:?}")),
        "control.socket",
        "at most 107",
    );
}

#[test]
fn bad_xdp_mode() {
    assert_error(
        &with("[dataplane]\nxdp_mode = \"driver\""),
        "dataplane.xdp_mode",
        "\"auto\", \"native\" or \"skb\"",
    );
}

#[test]
fn bad_log_level() {
    assert_error(
        &with("[log]\nlevel = \"verbose\""),
        "log.level",
        "error, warn, info, debug, trace",
    );
}

#[test]
fn metrics_listen_takes_any_address() {
    for listen in [
        "0.0.0.0:9101",
        "198.51.100.1:9101",
        "192.0.2.7:80",
        "[::]:9101",
    ] {
        let config = parse_ok(&with(&format!("[metrics]\nlisten = {listen:?}")));
        assert_eq!(config.metrics.listen, listen.parse().unwrap());
        assert!(config.metrics.enabled);
    }
}

#[test]
fn metrics_errors_name_their_key() {
    for bad in [
        "127.0.0.1",
        "localhost:9101",
        "127.0.0.1:99999",
        "127.0.0.1:",
        "::1:9101",
    ] {
        assert_error(
            &with(&format!("[metrics]\nlisten = {bad:?}")),
            "metrics.listen",
            "not an address and port, like \"127.0.0.1:9101\"",
        );
    }
    assert_error(
        &with("[metrics]\nlisten = \"127.0.0.1:0\""),
        "metrics.listen",
        "port 0",
    );
    assert_error(
        &with("[metrics]\nlisten = 9101"),
        "metrics.listen",
        "expected a string, found an integer (9101)",
    );
    assert_error(
        &with("[metrics]\nenabled = \"no\""),
        "metrics.enabled",
        "expected a boolean",
    );
    assert_error(
        &with("[metrics]\nport = 9101"),
        "metrics.port",
        "unknown key (known here: enabled, listen)",
    );
}

#[test]
fn metrics_on_the_inside_address_must_not_take_a_service_port() {
    assert_error(
        &with("[metrics]\nlisten = \"198.51.100.1:3128\""),
        "metrics.listen",
        "already used by http_proxy.port",
    );
    assert_error(
        &with("[metrics]\nlisten = \"0.0.0.0:53\""),
        "metrics.listen",
        "already used by dns.port",
    );
    // Elsewhere, for a disabled service, or on a UDP-only port, there is nothing to clash with.
    parse_ok(&with("[metrics]\nlisten = \"127.0.0.1:53\""));
    parse_ok(&with(
        "[metrics]\nlisten = \"198.51.100.1:3128\"\n[http_proxy]\nenabled = false",
    ));
    parse_ok(&with("[metrics]\nlisten = \"198.51.100.1:67\""));
    parse_ok(&with(
        "[metrics]\nenabled = false\nlisten = \"198.51.100.1:53\"",
    ));
    // Opening the port to the inside is what dataplane.allow is for.
    let open = parse_ok(&with(
        "[metrics]\nlisten = \"198.51.100.1:9101\"\n[dataplane]\nallow = [\"tcp/9101\"]",
    ));
    assert_eq!(open.dataplane.allow, [rule(Protocol::Tcp, 9101)]);
}

#[test]
fn allow_entry_rules() {
    for (entry, needle) in [
        ("\"sctp/1\"", "unknown protocol \"sctp\""),
        ("\"TCP/22\"", "unknown protocol"),
        ("\"tcp/0\"", "port 0"),
        ("\"tcp/70000\"", "out of range"),
        ("\"udp/99999999999999999999\"", "out of range"),
        ("\"tcp/\"", "not a number"),
        ("\"tcp/+22\"", "not a number"),
        ("\"tcp22\"", "expected \"tcp/N\" or \"udp/N\""),
        (
            "22",
            "expected a string, found an integer (22), like \"tcp/22\"",
        ),
    ] {
        let error = only_error(&with(&format!(
            "[dataplane]\nallow = [\"tcp/22\", {entry}]"
        )));
        assert_eq!(error.key, "dataplane.allow[1]", "{entry}: {error}");
        assert!(
            error.problem.contains(needle),
            "{entry}: {:?} should contain {needle:?}",
            error.problem
        );
    }
    assert_error(
        &with("[dataplane]\nallow = \"tcp/22\""),
        "dataplane.allow",
        "expected an array",
    );
}

#[test]
fn port_rule_text() {
    assert_eq!("tcp/22".parse::<PortRule>(), Ok(rule(Protocol::Tcp, 22)));
    assert_eq!(
        "udp/65535".parse::<PortRule>(),
        Ok(rule(Protocol::Udp, 65535))
    );
    assert_eq!(rule(Protocol::Udp, 53).to_string(), "udp/53");
    assert_eq!(Protocol::Tcp.to_string(), "tcp");
    assert!("tcp/65536".parse::<PortRule>().is_err());
}

// ---- services and ports ----

#[test]
fn service_port_rules() {
    assert_error(&with("[dns]\nport = 0"), "dns.port", "port 0");
    assert_error(
        &with("[socks]\nport = 70000"),
        "socks.port",
        "out of range 1..=65535",
    );
    assert_error(&with("[mirror]\nport = -1"), "mirror.port", "out of range");
    assert_error(
        &with("[mirror]\nport = 50.0"),
        "mirror.port",
        "expected an integer, found a float",
    );
    assert_error(
        &with("[mirror]\nport = \"5000\""),
        "mirror.port",
        "expected an integer",
    );
}

#[test]
fn disabled_service_port_is_still_checked() {
    assert_error(
        &with("[registry]\nenabled = false\nport = 0"),
        "registry.port",
        "port 0",
    );
}

#[test]
fn port_used_by_two_services() {
    assert_error(
        &with("[socks]\nport = 3128"),
        "http_proxy.port",
        "tcp/3128 is already used by socks.port",
    );
}

#[test]
fn allow_entry_clashing_with_a_service() {
    assert_error(
        &with("[dataplane]\nallow = [\"tcp/22\", \"tcp/3128\"]"),
        "dataplane.allow[1]",
        "tcp/3128 is already used by http_proxy.port",
    );
    // dns opens udp as well as tcp.
    assert_error(
        &with("[dataplane]\nallow = [\"udp/53\"]"),
        "dataplane.allow[0]",
        "udp/53 is already used by dns.port",
    );
    assert_error(
        &with("[dataplane]\nallow = [\"tcp/22\", \"tcp/22\"]"),
        "dataplane.allow[1]",
        "tcp/22 is already used by dataplane.allow[0]",
    );
}

#[test]
fn same_port_on_other_protocol_or_disabled_service_is_fine() {
    // dhcp is udp only, so tcp/67 is free.
    parse_ok(&with("[dataplane]\nallow = [\"tcp/67\"]"));
    // A disabled service frees its port.
    parse_ok(&with(
        "[http_proxy]\nenabled = false\n[dataplane]\nallow = [\"tcp/3128\"]",
    ));
}

#[test]
fn moved_service_port_clashes_with_allow() {
    // dns on 5353 (tcp and udp) takes udp/5353 from dataplane.allow.
    assert_error(
        &with("[dns]\nport = 5353\n[dataplane]\nallow = [\"tcp/22\", \"udp/5353\"]"),
        "dataplane.allow[1]",
        "udp/5353 is already used by dns.port",
    );
}

// ---- types, unknown keys, syntax ----

#[test]
fn unknown_keys() {
    assert_error(
        &with("[socks]\nprot = 9050"),
        "socks.prot",
        "unknown key (known here: enabled, port)",
    );
    assert_error(&with("[firewall]\nopen = true"), "firewall", "unknown key");
    assert_error(&with("debug = true"), "inside.debug", "unknown key");
    assert_error(
        &with("[log]\n\"my key\" = 1"),
        "log.\"my key\"",
        "unknown key",
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    assert_error(
        &with("[dataplane]\nallow_ping = \"yes\""),
        "dataplane.allow_ping",
        "expected a boolean (true or false), found a string (\"yes\")",
    );
    assert_error(
        &with("[log]\nqueries = 1"),
        "log.queries",
        "expected a boolean",
    );
    assert_error(
        "[interfaces]\noutside = 1\ninside = \"eth1\"\n[inside]\naddress = \"198.51.100.1/24\"",
        "interfaces.outside",
        "expected a string, found an integer (1)",
    );
    assert_error(
        &format!("dns = 53\n{MINIMAL}"),
        "dns",
        "expected a table, found an integer (53)",
    );
}

#[test]
fn wrongly_typed_table_does_not_also_report_its_keys_missing() {
    assert_error(
        "interfaces = \"eth0\"\n[inside]\naddress = \"198.51.100.1/24\"",
        "interfaces",
        "expected a table",
    );
}

#[test]
fn syntax_error_has_position() {
    let error = only_error("[interfaces]\noutside = \"eth0\"\ninside = eth1\n");
    assert_eq!(error.key, "");
    assert!(
        error
            .problem
            .starts_with("TOML syntax error at line 3, column 10:"),
        "{error}"
    );
    assert!(!error.problem.contains('\n'), "one line: {error:?}");
    let duplicate = only_error(&format!("{MINIMAL}\n[inside]\naddress = \"10.0.0.1/8\""));
    assert!(duplicate.problem.contains("line 9"), "{duplicate}");
}

#[test]
fn all_errors_are_gathered_without_cascades() {
    let errors = errors_of(
        r#"
[interfaces]
outside = "eth0"

[inside]
address = "198.51.100.0/33"

[outside]
address = "198.51.100.2/24"   # would overlap, but inside.address is already wrong
gateway = "192.0.2.1"

[dataplane]
xdp_mode = "fast"
allow = ["tcp/3128"]

[dns]
port = 0
colour = "blue"
"#,
    );
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "interfaces.inside",
            "inside.address",
            "outside.gateway",
            "dataplane.xdp_mode",
            "dns.port",
            "dns.colour",
            "dataplane.allow[0]",
        ],
        "{errors:#?}"
    );
}

// ---- errors and files ----

#[test]
fn error_display() {
    let errors = ConfigErrors(vec![
        ConfigError::new("", "TOML syntax error at line 1, column 1: boom"),
        ConfigError::new("dns.port", "port 0 is not a valid port"),
    ]);
    assert_eq!(
        errors.to_string(),
        "TOML syntax error at line 1, column 1: boom\ndns.port: port 0 is not a valid port"
    );
}

#[test]
fn load_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    assert_eq!(load(&path).unwrap(), parse_ok(MINIMAL));

    let missing = load(&dir.path().join("absent.toml")).unwrap_err();
    assert_eq!(missing.0.len(), 1);
    assert_eq!(missing.0[0].key, "");
    assert!(missing.0[0].problem.contains("cannot read"), "{missing}");
}

#[test]
fn check_host_finds_missing_interfaces() {
    let mut config = parse_ok(MINIMAL);
    config.interfaces.outside = "lo".into();
    config.interfaces.inside = "nosuchif0".into();
    assert_eq!(
        check_host(&config),
        vec![ConfigError::new(
            "interfaces.inside",
            "no interface named \"nosuchif0\" on this host (in this network namespace)"
        )]
    );
}

#[test]
fn dhcp_dns_and_uplink_keys() {
    let cfg = parse(&with(
        r#"
[outside]
macvlan_name = "up0"
macvlan_mode = "private"
mac = "02:11:22:33:44:55"
hostname = "gw"
[dhcp]
pool = "198.51.100.50-198.51.100.60"
lease_time = "2h"
search = ["home.arpa", "lab.example"]
rate_limit = 5
[[dhcp.reservations]]
mac = "02:00:00:00:00:aa"
address = "198.51.100.20"
name = "NAS"
[[dhcp.reservations]]
client_id = "ff:00:00:00:01"
address = "198.51.100.21"
[dns]
zone = "lan.example"
upstream = "uplink"
upstream_servers = ["192.0.2.1", "192.0.2.9:5353"]
default_ttl = "5m"
"#,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.uplink.macvlan_name, "up0");
    assert_eq!(cfg.uplink.macvlan_mode, super::MacvlanMode::Private);
    assert_eq!(
        cfg.uplink.mac,
        Some(MacAddr::new([2, 0x11, 0x22, 0x33, 0x44, 0x55]))
    );
    assert_eq!(cfg.uplink.hostname.as_deref(), Some("gw"));
    assert_eq!(cfg.dhcp.lease_secs, 7200);
    assert_eq!(
        cfg.dhcp.pool,
        Some((
            "198.51.100.50".parse().unwrap(),
            "198.51.100.60".parse().unwrap()
        ))
    );
    assert_eq!(
        cfg.dhcp.search_list(&"x".parse().unwrap()),
        ["home.arpa", "lab.example"]
    );
    assert_eq!(cfg.dhcp.reservations.len(), 2);
    assert_eq!(cfg.dhcp.reservations[0].name.as_deref(), Some("nas"));
    assert_eq!(
        cfg.dhcp.reservations[1].owner,
        super::ClientKey::ClientId(vec![0xff, 0, 0, 0, 1])
    );
    assert_eq!(cfg.dns.zone, "lan.example");
    assert_eq!(cfg.dns.upstream, super::DnsUpstream::Uplink);
    assert_eq!(cfg.dns.upstream_servers.len(), 2);
    assert_eq!(cfg.dns.default_ttl, 300);
}

#[test]
fn dhcp_dns_and_uplink_defaults() {
    let cfg = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.dns.upstream,
        super::DnsUpstream::Tor,
        "names go over Tor by default; clearnet only by choice"
    );
    assert!(cfg.tor.enabled);
    assert_eq!(cfg.tor.arti_config, None);
    assert!(cfg.services.socks.enabled);
    assert_eq!(cfg.dns.zone, "home.arpa");
    assert_eq!(
        cfg.dhcp.pool_range(&cfg.inside),
        (
            "198.51.100.100".parse().unwrap(),
            "198.51.100.199".parse().unwrap()
        )
    );
    assert_eq!(cfg.uplink.mac, None);
    assert!(!cfg.uplink.ipv6);
    assert_eq!(
        cfg.uplink.hostname, None,
        "no host name sent upstream by default"
    );
}

#[test]
fn dhcp_dns_and_uplink_errors() {
    let cases: &[(&str, &str, &str)] = &[
        ("[dhcp]\npool = \"198.51.100.10-198.51.100.5\"", "dhcp.pool", "ends before it starts"),
        ("[dhcp]\npool = \"198.51.100.1-198.51.100.5\"", "dhcp.pool", "gateway's own address"),
        ("[dhcp]\npool = \"198.51.100.10-198.51.101.5\"", "dhcp.pool", "not in the inside subnet"),
        ("[dhcp]\nlease_time = \"10s\"", "dhcp.lease_time", "too short"),
        ("[dhcp]\nlease_time = \"12x\"", "dhcp.lease_time", "not a number of seconds"),
        ("[dhcp]\nsearch = [\"a..b\"]", "dhcp.search[0]", "not a domain name"),
        ("[[dhcp.reservations]]\naddress = \"198.51.100.20\"", "dhcp.reservations[0]", "missing mac or client_id"),
        ("[[dhcp.reservations]]\nmac = \"02:00:00:00:00:01\"\nclient_id = \"01\"\naddress = \"198.51.100.20\"", "dhcp.reservations[0]", "not both"),
        ("[[dhcp.reservations]]\nmac = \"02:00:00:00:00:01\"\naddress = \"203.0.113.5\"", "dhcp.reservations[0].address", "not in the inside subnet"),
        ("[[dhcp.reservations]]\nmac = \"02:00:00:00:00:01\"\naddress = \"198.51.100.20\"\nname = \"gateway\"", "dhcp.reservations[0].name", "service names"),
        ("[[dhcp.reservations]]\nmac = \"02:00:00:00:00:01\"\naddress = \"198.51.100.20\"\n[[dhcp.reservations]]\nmac = \"02:00:00:00:00:02\"\naddress = \"198.51.100.20\"", "dhcp.reservations[1].address", "already reserved"),
        ("[[dhcp.reservations]]\nmac = \"02:00:00:00:00:01\"\naddress = \"198.51.100.20\"\nname = \"../etc\"", "dhcp.reservations[0].name", "not a host name label"),
        ("[tor]\nenabled = false\n[dns]\nupstream = \"tor\"", "dns.upstream", "needs tor.enabled"),
        ("[tor]\nenabled = false\n[socks]\nenabled = true", "socks.enabled", "needs tor.enabled"),
        ("[tor]\narti_config = \"arti.toml\"", "tor.arti_config", "not an absolute path"),
        ("[tor]\nenabled = \"yes\"", "tor.enabled", ""),
        ("[tor]\nbridges = 1", "tor.bridges", ""),
        ("[dns]\nupstream = \"google\"", "dns.upstream", "not an upstream"),
        ("[dns]\nupstream_servers = [\"resolver.example\"]", "dns.upstream_servers[0]", "not a DNS server address"),
        ("[dns]\nzone = \"-bad.arpa\"", "dns.zone", "not a domain name"),
        ("[outside]\naddress = \"192.0.2.2/24\"\n[dns]\nupstream = \"uplink\"", "dns.upstream_servers", "static outside.address"),
        ("[outside]\naddress = \"192.0.2.2/24\"\n[http_proxy]\negress = \"direct\"", "dns.upstream_servers", "http_proxy.egress = \"direct\" with a static"),
        ("[dns]\ndefault_ttl = 100\nmax_ttl = 10", "dns.default_ttl", "more than dns.max_ttl"),
        ("[dns]\ncache_size = 0", "dns.cache_size", "out of range"),
        ("[outside]\nmacvlan_name = \"inside0\"", "outside.macvlan_name", "one of the configured NICs"),
        ("[outside]\nmacvlan_mode = \"l2\"", "outside.macvlan_mode", "not a macvlan mode"),
        ("[outside]\nmac = \"01:00:5e:00:00:01\"", "outside.mac", "multicast"),
    ];
    for (extra, key, problem) in cases {
        assert_error(&with(extra), key, problem);
    }
}

// ---- [http_proxy] ----

#[test]
fn http_proxy_connect_ports() {
    let config = parse_ok(&with("[http_proxy]\nconnect_ports = [443, 8443]"));
    assert_eq!(config.http_proxy.connect_ports, [443, 8443]);
    let config = parse_ok(&with("[http_proxy]\nconnect_ports = []"));
    assert!(
        config.http_proxy.connect_ports.is_empty(),
        "[] turns CONNECT off"
    );
}

#[test]
fn http_proxy_connect_ports_errors_name_the_entry() {
    assert_error(
        &with("[http_proxy]\nconnect_ports = [443, 0]"),
        "http_proxy.connect_ports[1]",
        "",
    );
    assert_error(
        &with("[http_proxy]\nconnect_ports = [443, 70000]"),
        "http_proxy.connect_ports[1]",
        "",
    );
    assert_error(
        &with("[http_proxy]\nconnect_ports = [\"443\"]"),
        "http_proxy.connect_ports[0]",
        "",
    );
    assert_error(
        &with("[http_proxy]\nconnect_ports = [443, 443]"),
        "http_proxy.connect_ports[1]",
        "listed twice",
    );
    assert_error(
        &with("[http_proxy]\nconnect_ports = 443"),
        "http_proxy.connect_ports",
        "",
    );
}

#[test]
fn http_proxy_egress() {
    assert_eq!(parse_ok(MINIMAL).http_proxy.egress, super::Egress::Tor);
    let direct = parse_ok(&with(
        "[http_proxy]\negress = \"direct\"\nconnect_ports = [443, 8443]",
    ));
    assert_eq!(direct.http_proxy.egress, super::Egress::Direct);
    assert_eq!(direct.http_proxy.connect_ports, [443, 8443]);
    let both_bad = errors_of(&with(
        "[http_proxy]\negress = \"clearnet\"\nconnect_ports = [0]",
    ));
    let keys: Vec<&str> = both_bad.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["http_proxy.egress", "http_proxy.connect_ports[0]"],
        "{both_bad:?}"
    );
    assert_error(
        &with("[http_proxy]\negress = \"clearnet\""),
        "http_proxy.egress",
        "expected \"tor\" or \"direct\"",
    );
    assert_error(&with("[http_proxy]\negress = 1"), "http_proxy.egress", "");
}

#[test]
fn tor_table() {
    let off = parse_ok(&with("[tor]\nenabled = false"));
    assert!(!off.tor.enabled);
    assert_eq!(
        off.dns.upstream,
        super::DnsUpstream::None,
        "no Tor: nothing forwarded by default"
    );
    assert!(!off.services.socks.enabled, "no Tor: no SOCKS by default");
    let uplink = parse_ok(&with(
        "[tor]\nenabled = false\n[dns]\nupstream = \"uplink\"",
    ));
    assert_eq!(uplink.dns.upstream, super::DnsUpstream::Uplink);
    let custom = parse_ok(&with(
        "[tor]\narti_config = \"/etc/gateway/arti.toml\"\n[dns]\nupstream = \"none\"\n[socks]\nport = 9150",
    ));
    assert_eq!(
        custom.tor.arti_config.as_deref(),
        Some(Path::new("/etc/gateway/arti.toml"))
    );
    assert_eq!(custom.dns.upstream, super::DnsUpstream::None);
    assert_eq!(custom.services.socks, Service::on(9150));
}

#[test]
fn registry_access_entries_are_read_and_checked() {
    let config = parse_ok(&with(
        "[[registry.access]]\nclient = \"ci\"\npush = [\"team/\", \"\"]",
    ));
    assert_eq!(
        config.registry.access,
        [crate::config::Access {
            client: "ci".into(),
            push: vec!["team/".into(), "".into()],
        }]
    );
    assert_error(
        &with("[[registry.access]]\nclient = \"CI\"\npush = []"),
        "registry.access[0].client",
        "is not a client name",
    );
    assert_error(
        &with("[[registry.access]]\nclient = \"ci\"\npush = [\"../x\"]"),
        "registry.access[0].push[0]",
        "not a repository name prefix",
    );
    assert_error(
        &with("[[registry.access]]\nclient = \"ci\""),
        "registry.access[0].push",
        "missing",
    );
    assert_error(
        &with("[registry]\nmax_blob_size = 0"),
        "registry.max_blob_size",
        "out of range",
    );
}

#[test]
fn the_mirror_defaults_to_docker_hub() {
    let config = parse_ok(MINIMAL);
    let mirror = &config.mirror;
    assert_eq!(mirror.default, "docker.io");
    assert_eq!(mirror.egress, crate::egress::Egress::Tor);
    let hub = mirror.upstream("docker.io").expect("docker.io");
    assert_eq!(hub.url.origin(), "https://registry-1.docker.io:443");
    assert!(hub.library);
    assert_eq!(
        hub.realm.as_ref().map(|r| r.to_string()).as_deref(),
        Some("https://auth.docker.io:443/token")
    );
}

#[test]
fn mirror_upstreams_are_read_and_checked() {
    let config = parse_ok(&with(
        "[mirror]\ntag_ttl = \"30s\"\ndefault = \"hub.test\"\n\
         [[mirror.upstreams]]\nname = \"hub.test\"\nurl = \"https://registry.hub.test:5000\"\n\
         realm = \"https://auth.hub.test/token\"\ncredentials = \"/etc/gateway/hub.cred\"\n\
         [[mirror.upstreams]]\nname = \"ghcr.example\"\nurl = \"https://ghcr.example\"\n",
    ));
    let mirror = &config.mirror;
    assert_eq!(mirror.tag_ttl, 30);
    assert_eq!(mirror.default, "hub.test");
    assert_eq!(mirror.upstreams.len(), 2);
    let hub = mirror.upstream("hub.test").unwrap();
    assert_eq!((hub.url.port, hub.library), (5000, false));
    assert_eq!(mirror.upstream("ghcr.example").unwrap().realm, None);

    let upstream = |extra: &str| with(&format!("[[mirror.upstreams]]\nname = \"a.test\"\n{extra}"));
    assert_error(
        &upstream("url = \"ftp://a.test\""),
        "mirror.upstreams[0].url",
        "http:// or https://",
    );
    assert_error(&upstream(""), "mirror.upstreams[0].url", "missing");
    // Basic credentials need no realm, but TLS.
    let basic = parse_ok(&upstream(
        "url = \"https://a.test\"\ncredentials = \"/etc/x\"",
    ));
    assert_eq!(
        basic.mirror.upstreams[0].credentials.as_deref(),
        Some(std::path::Path::new("/etc/x"))
    );
    assert_error(
        &upstream("url = \"http://a.test\"\ncredentials = \"/etc/x\""),
        "mirror.upstreams[0].credentials",
        "clear text to http://a.test:80",
    );
    assert_error(
        &upstream(
            "url = \"https://a.test\"\nrealm = \"http://auth.a.test/t\"\ncredentials = \"/etc/x\"",
        ),
        "mirror.upstreams[0].credentials",
        "clear text to http://auth.a.test:80",
    );
    assert_error(
        &with("[[mirror.upstreams]]\nname = \"A/b\"\nurl = \"https://a.test\""),
        "mirror.upstreams[0].name",
        "not a registry name",
    );
    assert_error(
        &with("[mirror]\ndefault = \"b.test\"\n[[mirror.upstreams]]\nname = \"a.test\"\nurl = \"https://a.test\""),
        "mirror.default",
        "not an upstream",
    );
    assert_error(
        &with("[[mirror.upstreams]]\nname = \"a.test\"\nurl = \"https://a.test\"\n[[mirror.upstreams]]\nname = \"a.test\"\nurl = \"https://b.test\""),
        "mirror.upstreams[1].name",
        "named twice",
    );
    assert_error(
        &with("[[mirror.upstreams]]\nname = \"a.test\"\nurl = \"https://a.test\"\n[[mirror.upstreams]]\nname = \"b.test\"\nurl = \"https://b.test\""),
        "mirror.default",
        "missing",
    );
    assert_error(
        &with("[mirror]\negress = \"clearnet\""),
        "mirror.egress",
        "not an egress",
    );
    assert_error(
        &with("[mirror]\ncolour = 1"),
        "mirror.colour",
        "unknown key",
    );
}

#[test]
fn the_status_page_defaults_to_loopback_without_admins() {
    let config = parse_ok(MINIMAL);
    assert_eq!(config.status_page, crate::config::StatusPage::default());
    assert_eq!(config.status_page.listen.to_string(), "127.0.0.1:8443");
    assert!(!config.open_ports().contains(&rule(Protocol::Tcp, 8443)));
}

#[test]
fn the_status_page_on_the_inside_opens_its_port_for_admins_only() {
    let config = parse_ok(&with(
        "[status_page]\nlisten = \"198.51.100.1:8443\"\nadmins = [\"admin\"]",
    ));
    assert!(config.open_ports().contains(&rule(Protocol::Tcp, 8443)));
    assert!(config.status_page.is_admin(Some("admin")));
    assert!(!config.status_page.is_admin(Some("laptop")));
    assert!(!config.status_page.is_admin(None));
    let error = only_error(&with("[status_page]\nlisten = \"198.51.100.1:8443\""));
    assert_eq!(error.key, "status_page.admins");
}

#[test]
fn the_status_page_never_takes_a_service_port_or_another_address() {
    for (listen, key, problem) in [
        ("198.51.100.1:443", "status_page.listen", "registry.port"),
        ("198.51.100.1:3128", "status_page.listen", "http_proxy.port"),
        ("127.0.0.1:9101", "status_page.listen", "metrics.listen"),
        ("127.0.0.1:9040", "status_page.listen", "transparent.port"),
        (
            "192.0.2.5:8443",
            "status_page.listen",
            "loopback address or on the inside",
        ),
    ] {
        let text = with(&format!(
            "[status_page]\nlisten = \"{listen}\"\nadmins = [\"admin\"]"
        ));
        let error = only_error(&text);
        assert_eq!(error.key, key, "{listen}: {error:?}");
        assert!(error.problem.contains(problem), "{listen}: {error:?}");
    }
    let error = only_error(&with("[status_page]\nadmins = [\"Not A Name\"]"));
    assert_eq!(error.key, "status_page.admins");
}

#[test]
fn registry_storage_is_read_and_checked() {
    use crate::registry::config::StorageChoice;
    assert_eq!(
        parse_ok(&with("")).registry.storage,
        StorageChoice::Filesystem
    );
    let config = parse_ok(&with(
        "[registry.storage]\nbackend = \"s3\"\nendpoint = \"https://nas.example:8333/\"\n\
         bucket = \"gateway\"\ncredentials = \"/etc/gateway/s3\"\nprefix = \"/site-a/\"\n\
         address = \"192.0.2.2\"\ncache_size = 0\n",
    ));
    let StorageChoice::S3(s3) = &config.registry.storage else {
        panic!("not s3: {:?}", config.registry.storage);
    };
    assert_eq!(s3.endpoint, "https://nas.example:8333");
    assert_eq!(
        (s3.bucket.as_str(), s3.region.as_str()),
        ("gateway", "us-east-1")
    );
    assert_eq!(s3.prefix, "site-a");
    assert_eq!(s3.ca, None);
    assert_eq!(s3.address, Some("192.0.2.2".parse().unwrap()));
    assert_eq!(s3.cache_size, 0);
    let s3 = |extra: &str| with(&format!("[registry.storage]\nbackend = \"s3\"\n{extra}"));
    let complete = "bucket = \"gateway\"\ncredentials = \"/etc/gateway/s3\"\n";
    assert_error(
        &with("[registry.storage]\nbackend = \"nfs\"\n"),
        "registry.storage.backend",
        "\"filesystem\" or \"s3\"",
    );
    assert_error(&s3(complete), "registry.storage.endpoint", "requires it");
    // A name is never looked up: it needs its address, and an IP endpoint's must agree.
    assert_error(
        &s3(&format!("endpoint = \"https://nas.example\"\n{complete}")),
        "registry.storage.address",
        "never looks the store up",
    );
    assert_error(
        &s3(&format!(
            "endpoint = \"http://192.0.2.2:8333\"\naddress = \"192.0.2.3\"\n{complete}"
        )),
        "registry.storage.address",
        "not the endpoint's own address",
    );
    assert_error(
        &s3(&format!(
            "endpoint = \"http://192.0.2.2:8333\"\naddress = \"nas\"\n{complete}"
        )),
        "registry.storage.address",
        "not an IP address",
    );
    assert_error(
        &s3(&format!(
            "endpoint = \"http://192.0.2.2:8333\"\ncache_size = -1\n{complete}"
        )),
        "registry.storage.cache_size",
        "negative",
    );
    assert_error(
        &s3(&format!("endpoint = \"ftp://nas\"\n{complete}")),
        "registry.storage.endpoint",
        "http:// or https://",
    );
    assert_error(
        &s3(&format!("endpoint = \"http://key:secret@nas\"\n{complete}")),
        "registry.storage.endpoint",
        "no path, credentials",
    );
    assert_error(
        &s3("endpoint = \"http://192.0.2.2:8333\"\nbucket = \"Gateway_1\"\ncredentials = \"/etc/s3\"\n"),
        "registry.storage.bucket",
        "not a bucket name",
    );
    assert_error(
        &s3(&format!(
            "endpoint = \"http://192.0.2.2\"\n{complete}prefix = \"a/../b\"\n"
        )),
        "registry.storage.prefix",
        "not a key prefix",
    );
    assert_error(
        &s3("endpoint = \"http://192.0.2.2\"\nbucket = \"gateway\"\ncredentials = \"s3.cred\"\n"),
        "registry.storage.credentials",
        "absolute",
    );
}
