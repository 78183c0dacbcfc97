//! Walks a parsed TOML document through the schema, table by table. Rules between keys of one
//! table live here; rules between tables are in `validate`.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use toml::Table;

use super::error::{ConfigErrors, Errors};
use super::reader::{self, Field, Section};
use super::types::{
    Config, Control, Dataplane, Inside, Interfaces, Log, Outside, OutsideAddress, PortRule,
    Service, Services, State,
};
use super::{validate, values};

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
    let outside = outside(root.table("outside", &mut errors), &mut errors);
    let (dataplane, allow) = dataplane(root.table("dataplane", &mut errors), &mut errors);
    let control = control(root.table("control", &mut errors), &mut errors);
    let state = state(root.table("state", &mut errors), &mut errors);
    let log = log(root.table("log", &mut errors), &mut errors);
    let services = services(&mut root, &mut errors);
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

    let (
        Some(interfaces),
        Some(inside),
        Some(outside),
        Some(dataplane),
        Some(control),
        Some(state),
        Some(log),
        true,
    ) = (
        interfaces,
        inside,
        outside,
        dataplane,
        control,
        state,
        log,
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
        state,
        log,
        services,
        dhcp: Default::default(),
        dns: Default::default(),
        uplink: Default::default(),
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

fn outside(mut section: Section, errors: &mut Errors) -> Option<Outside> {
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
    section.finish(errors);

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
                errors.check(
                    &gateway_key,
                    values::static_gateway(address, prefix_len, gateway),
                )?;
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
        values::xdp_mode(&reader::string(value)?)
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
        values::log_level(&reader::string(value)?)
    });
    let queries = section.optional("queries", defaults.queries, errors, reader::boolean);
    section.finish(errors);
    Some(Log {
        level: level?,
        queries: queries?,
    })
}

/// The service tables. Always returns a value: an invalid service comes back disabled, which only
/// keeps it out of the port rule, since its errors already reject the config.
fn services(root: &mut Section, errors: &mut Errors) -> Services {
    let defaults = Services::default();
    Services {
        dns: service(root, "dns", defaults.dns, errors),
        dhcp: service(root, "dhcp", defaults.dhcp, errors),
        socks: service(root, "socks", defaults.socks, errors),
        http_proxy: service(root, "http_proxy", defaults.http_proxy, errors),
        registry: service(root, "registry", defaults.registry, errors),
        mirror: service(root, "mirror", defaults.mirror, errors),
    }
}

fn service(
    root: &mut Section,
    name: &'static str,
    default: Service,
    errors: &mut Errors,
) -> Service {
    let mut section = root.table(name, errors);
    let enabled = section.optional("enabled", default.enabled, errors, reader::boolean);
    let port = section.optional("port", default.port, errors, |value| {
        values::port(reader::integer(value)?)
    });
    let broken = section.is_broken();
    section.finish(errors);
    match (enabled, port, broken) {
        (Some(enabled), Some(port), false) => Service { enabled, port },
        _ => Service {
            enabled: false,
            port: default.port,
        },
    }
}
