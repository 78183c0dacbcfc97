//! Walks a parsed TOML document through the schema, table by table. Rules between keys of one
//! table live here; rules between tables are in `validate`.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use toml::Table;

use super::error::{ConfigErrors, Errors};
use super::reader::{self, Field, Section};
use super::services::{Dhcp, Dns, HttpProxy, Uplink};
use super::types::{
    Config, Control, Dataplane, Inside, Interfaces, Log, Metrics, Outside, OutsideAddress, Service,
    Services, State, XdpMode, LOG_LEVELS,
};
use super::values::{self, broadcast, network, PortRule};
use super::{service_tables, validate};

/// The inside subnet needs room for the gateway and at least one client.
const INSIDE_PREFIXES: RangeInclusive<u8> = 8..=30;

/// An uplink may be a /31 point-to-point link (RFC 3021).
const OUTSIDE_PREFIXES: RangeInclusive<u8> = 8..=31;

/// Builds the config from a parsed document, or every problem found in it.
pub(crate) fn config(document: Table) -> Result<Config, ConfigErrors> {
    let mut errors = Errors::default();
    let mut root = Section::root(document);

    let interfaces = interfaces(root.table("interfaces", &mut errors), &mut errors);
    let inside = inside(root.table("inside", &mut errors), &mut errors);
    let (outside, uplink) = outside(root.table("outside", &mut errors), &mut errors);
    let (dataplane, allow) = dataplane(root.table("dataplane", &mut errors), &mut errors);
    let control = control(root.table("control", &mut errors), &mut errors);
    let metrics = metrics(root.table("metrics", &mut errors), &mut errors);
    let state = state(root.table("state", &mut errors), &mut errors);
    let log = log(root.table("log", &mut errors), &mut errors);
    let tor = service_tables::tor(root.table("tor", &mut errors), &mut errors);
    // A broken [tor] table already rejects the config; its default keeps the rest quiet.
    let tor_enabled = tor.as_ref().is_none_or(|tor| tor.enabled);
    let (services, dhcp, dns, http_proxy) = services(&mut root, tor_enabled, &mut errors);
    root.finish(&mut errors);

    if let (Some(inside), Some(outside)) = (&inside, &outside) {
        validate::subnets_disjoint(inside, outside, &mut errors);
    }
    let port_users: Vec<(String, PortRule)> = services
        .enabled_ports()
        .map(|(name, rule)| (format!("{name}.port"), rule))
        .chain(allow)
        .collect();
    validate::unique_ports(&port_users, &mut errors);
    if let (Some(inside), Some(dhcp)) = (&inside, &dhcp) {
        validate::dhcp_fits_inside(inside, dhcp, &mut errors);
    }
    if let (Some(outside), Some(dns), Some(http_proxy)) = (&outside, &dns, &http_proxy) {
        let direct_proxy =
            services.http_proxy.enabled && http_proxy.egress == super::services::Egress::Direct;
        validate::uplink_dns_has_servers(outside, dns, direct_proxy, &mut errors);
    }
    if let (Some(interfaces), Some(uplink)) = (&interfaces, &uplink) {
        validate::macvlan_name_free(interfaces, uplink, &mut errors);
    }
    if let (Some(inside), Some(metrics)) = (&inside, &metrics) {
        validate::metrics_port_free(inside, metrics, &services, &mut errors);
    }

    let (
        Some(interfaces),
        Some(inside),
        Some(outside),
        Some(dataplane),
        Some(control),
        Some(metrics),
        Some(state),
        Some(log),
        Some(dhcp),
        Some(dns),
        Some(uplink),
        Some(http_proxy),
        Some(tor),
        true,
    ) = (
        interfaces,
        inside,
        outside,
        dataplane,
        control,
        metrics,
        state,
        log,
        dhcp,
        dns,
        uplink,
        http_proxy,
        tor,
        errors.is_empty(),
    )
    else {
        if errors.is_empty() {
            // Every missing piece records its own error; this only guards that invariant.
            errors.push(
                "",
                "internal error: the config is incomplete but no error was recorded",
            );
        }
        return Err(errors.into_errors());
    };
    Ok(Config {
        interfaces,
        inside,
        outside,
        dataplane,
        control,
        metrics,
        state,
        log,
        services,
        dhcp,
        dns,
        uplink,
        http_proxy,
        tor,
    })
}

fn interfaces(mut section: Section, errors: &mut Errors) -> Option<Interfaces> {
    let outside = section.required(
        "outside",
        "the uplink NIC's name, like \"eth0\"",
        errors,
        |value| values::interface_name(&reader::string(value)?),
    );
    let inside = section.required(
        "inside",
        "the LAN NIC's name, like \"eth1\"",
        errors,
        |value| values::interface_name(&reader::string(value)?),
    );
    let distinct = match (&outside, &inside) {
        (Some(outside), Some(inside)) if outside == inside => {
            errors.push(
                &section.key("inside"),
                format!(
                    "{inside:?} is also {}; the inside and outside must be different NICs",
                    section.key("outside")
                ),
            );
            false
        }
        _ => true,
    };
    section.finish(errors);
    distinct.then_some(())?;
    Some(Interfaces {
        outside: outside?,
        inside: inside?,
    })
}

fn inside(mut section: Section, errors: &mut Errors) -> Option<Inside> {
    let inside = section.required(
        "address",
        "the gateway's LAN address with the LAN's prefix length, like \"198.51.100.1/24\"",
        errors,
        |value| {
            let (address, prefix_len) = values::cidr(&reader::string(value)?)?;
            values::host_address(address, prefix_len, INSIDE_PREFIXES)?;
            Ok(Inside {
                address,
                prefix_len,
            })
        },
    );
    section.finish(errors);
    inside
}

fn outside(mut section: Section, errors: &mut Errors) -> (Option<Outside>, Option<Uplink>) {
    // `None` is DHCP.
    let address = section.optional("address", None, errors, |value| {
        let text = reader::string(value)?;
        if text == "dhcp" {
            return Ok(None);
        }
        let (address, prefix_len) =
            values::cidr(&text).map_err(|problem| format!("{problem}, or \"dhcp\""))?;
        values::host_address(address, prefix_len, OUTSIDE_PREFIXES)?;
        Ok(Some((address, prefix_len)))
    });
    let gateway_key = section.key("gateway");
    let gateway = section.field("gateway", errors, |value| {
        values::ipv4(&reader::string(value)?)
    });
    let uplink = service_tables::uplink(&mut section, errors);
    section.finish(errors);
    (
        outside_address(address, gateway, gateway_key, errors),
        uplink,
    )
}

fn outside_address(
    address: Option<Option<(Ipv4Addr, u8)>>,
    gateway: Field<Ipv4Addr>,
    gateway_key: String,
    errors: &mut Errors,
) -> Option<Outside> {
    let gateway: Option<Ipv4Addr> = match gateway {
        Field::Absent => None,
        Field::Invalid => return None,
        Field::Valid(gateway) => Some(gateway),
    };
    let address = match address? {
        None => {
            if gateway.is_some() {
                errors.push(
                    &gateway_key,
                    "only allowed with a static outside.address; with \"dhcp\" the default router comes from the DHCP lease",
                );
                return None;
            }
            OutsideAddress::Dhcp
        }
        Some((address, prefix_len)) => {
            if let Some(gateway) = gateway {
                errors.check(&gateway_key, static_gateway(address, prefix_len, gateway))?;
            }
            OutsideAddress::Static {
                address,
                prefix_len,
                gateway,
            }
        }
    };
    Some(Outside { address })
}

/// The dataplane table, and the `allow` entries that are valid, each with its key.
fn dataplane(
    mut section: Section,
    errors: &mut Errors,
) -> (Option<Dataplane>, Vec<(String, PortRule)>) {
    let defaults = Dataplane::default();
    let bpf_pin_dir = section.optional("bpf_pin_dir", defaults.bpf_pin_dir, errors, |value| {
        values::absolute_path(&reader::string(value)?)
    });
    let xdp_mode = section.optional("xdp_mode", defaults.xdp_mode, errors, |value| {
        xdp_mode(&reader::string(value)?)
    });
    let allow_ping = section.optional("allow_ping", defaults.allow_ping, errors, reader::boolean);
    let allow_key = section.key("allow");
    let entries = section.optional("allow", Vec::new(), errors, reader::array);
    section.finish(errors);

    let mut all_valid = entries.is_some();
    let mut allow = Vec::new();
    for (i, entry) in entries.unwrap_or_default().into_iter().enumerate() {
        let key = format!("{allow_key}[{i}]");
        let rule = reader::string(entry)
            .map_err(|problem| format!("{problem}, like \"tcp/22\""))
            .and_then(|text| text.parse::<PortRule>());
        match errors.check(&key, rule) {
            Some(rule) => allow.push((key, rule)),
            None => all_valid = false,
        }
    }

    let dataplane = match (bpf_pin_dir, xdp_mode, allow_ping, all_valid) {
        (Some(bpf_pin_dir), Some(xdp_mode), Some(allow_ping), true) => Some(Dataplane {
            bpf_pin_dir,
            xdp_mode,
            allow_ping,
            allow: allow.iter().map(|(_, rule)| *rule).collect(),
        }),
        _ => None,
    };
    (dataplane, allow)
}

fn control(mut section: Section, errors: &mut Errors) -> Option<Control> {
    let socket = section.optional("socket", Control::default().socket, errors, |value| {
        values::socket_path(&reader::string(value)?)
    });
    section.finish(errors);
    Some(Control { socket: socket? })
}

fn metrics(mut section: Section, errors: &mut Errors) -> Option<Metrics> {
    let defaults = Metrics::default();
    let enabled = section.optional("enabled", defaults.enabled, errors, reader::boolean);
    let listen = section.optional("listen", defaults.listen, errors, |value| {
        values::listen_address(&reader::string(value)?)
    });
    section.finish(errors);
    Some(Metrics {
        enabled: enabled?,
        listen: listen?,
    })
}

fn state(mut section: Section, errors: &mut Errors) -> Option<State> {
    let dir = section.optional("dir", State::default().dir, errors, |value| {
        values::absolute_path(&reader::string(value)?)
    });
    section.finish(errors);
    Some(State { dir: dir? })
}

fn log(mut section: Section, errors: &mut Errors) -> Option<Log> {
    let defaults = Log::default();
    let level = section.optional("level", defaults.level, errors, |value| {
        log_level(&reader::string(value)?)
    });
    let queries = section.optional("queries", defaults.queries, errors, reader::boolean);
    section.finish(errors);
    Some(Log {
        level: level?,
        queries: queries?,
    })
}

/// The service tables. The services always come back: an invalid service comes back disabled,
/// which only keeps it out of the port rule, since its errors already reject the config.
/// SOCKS only goes over Tor: it is on by default with Tor, and an error without it.
fn services(
    root: &mut Section,
    tor_enabled: bool,
    errors: &mut Errors,
) -> (Services, Option<Dhcp>, Option<Dns>, Option<HttpProxy>) {
    let defaults = Services::default();
    let (dns_service, dns) = service(root, "dns", defaults.dns, errors, |section, errors| {
        service_tables::dns(section, tor_enabled, errors)
    });
    let (dhcp_service, dhcp) = service(root, "dhcp", defaults.dhcp, errors, service_tables::dhcp);
    let plain = |section: &mut Section, errors: &mut Errors| {
        let _ = (section, errors);
        Some(())
    };
    let (http_proxy_service, http_proxy) = service(
        root,
        "http_proxy",
        defaults.http_proxy,
        errors,
        service_tables::http_proxy,
    );
    let services = Services {
        dns: dns_service,
        dhcp: dhcp_service,
        socks: service(
            root,
            "socks",
            Service {
                enabled: tor_enabled && defaults.socks.enabled,
                ..defaults.socks
            },
            errors,
            plain,
        )
        .0,
        http_proxy: http_proxy_service,
        registry: service(root, "registry", defaults.registry, errors, plain).0,
        mirror: service(root, "mirror", defaults.mirror, errors, plain).0,
    };
    if services.socks.enabled && !tor_enabled {
        errors.push("socks.enabled", "the SOCKS server needs tor.enabled = true");
    }
    (services, dhcp, dns, http_proxy)
}

/// One service table: `enabled`, `port`, then the service's own keys read by `extra`.
fn service<T>(
    root: &mut Section,
    name: &'static str,
    default: Service,
    errors: &mut Errors,
    extra: impl FnOnce(&mut Section, &mut Errors) -> Option<T>,
) -> (Service, Option<T>) {
    let mut section = root.table(name, errors);
    let enabled = section.optional("enabled", default.enabled, errors, reader::boolean);
    let port = section.optional("port", default.port, errors, |value| {
        values::port(reader::integer(value)?)
    });
    let settings = extra(&mut section, errors);
    let broken = section.is_broken();
    section.finish(errors);
    let service = match (enabled, port, broken) {
        (Some(enabled), Some(port), false) => Service { enabled, port },
        _ => Service {
            enabled: false,
            port: default.port,
        },
    };
    (service, settings)
}

/// The default router of a static outside address: another host on that subnet.
fn static_gateway(address: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> Result<(), String> {
    let subnet = format!("{}/{prefix_len}", network(address, prefix_len));
    if network(gateway, prefix_len) != network(address, prefix_len) {
        return Err(format!(
            "{gateway} is not in the outside subnet {subnet} (outside.address); the default router must be on that subnet"
        ));
    }
    if gateway == address {
        return Err(format!(
            "{gateway} is outside.address itself; the default router is another host on {subnet}"
        ));
    }
    values::unicast(gateway)?;
    if prefix_len <= 30 && gateway == network(address, prefix_len) {
        return Err(format!("{gateway} is the network address of {subnet}"));
    }
    if prefix_len <= 30 && gateway == broadcast(address, prefix_len) {
        return Err(format!("{gateway} is the broadcast address of {subnet}"));
    }
    Ok(())
}

/// `auto`, `native` or `skb`.
fn xdp_mode(text: &str) -> Result<XdpMode, String> {
    [XdpMode::Auto, XdpMode::Native, XdpMode::Skb]
        .into_iter()
        .find(|mode| mode.as_str() == text)
        .ok_or_else(|| {
            format!("{text:?} is not an XDP mode; expected \"auto\", \"native\" or \"skb\"")
        })
}

/// One of [`LOG_LEVELS`].
fn log_level(text: &str) -> Result<String, String> {
    if LOG_LEVELS.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a log level; expected one of: {}",
            LOG_LEVELS.join(", ")
        ))
    }
}
