//! Walks a parsed TOML document table by table. Each table's reader lives with its owner (the
//! service module's `config.rs`, or `common` for the tables no one service owns); this file
//! only composes them, then runs the rules across tables (`validate`).

use toml::Table;

use super::common::{self, Service, Services};
use super::error::{ConfigErrors, Errors};
use super::reader::Section;
use super::values::PortRule;
use super::{validate, Config};
use crate::{
    control, dataplane, dhcp, dns, http_proxy, metrics, mirror, registry, status_page, tor, uplink,
};

/// Builds the config from a parsed document, or every problem found in it.
pub(crate) fn config(document: Table) -> Result<Config, ConfigErrors> {
    let mut errors = Errors::default();
    match read(document, &mut errors) {
        Some(config) if errors.is_empty() => Ok(config),
        _ => {
            if errors.is_empty() {
                // Every missing piece records its own error; this only guards that invariant.
                errors.push(
                    "",
                    "internal error: the config is incomplete but no error was recorded",
                );
            }
            Err(errors.into_errors())
        }
    }
}

/// Reads every table into `errors`; `None` if any is unusable.
pub(crate) fn read(document: Table, errors: &mut Errors) -> Option<Config> {
    let mut root = Section::root(document);

    let interfaces = table(&mut root, "interfaces", errors, common::interfaces);
    let inside = table(&mut root, "inside", errors, common::inside);
    let (outside, uplink) = table(&mut root, "outside", errors, uplink::config::read);
    let (dataplane, allow) = table(&mut root, "dataplane", errors, dataplane::config::read);
    let control = table(&mut root, "control", errors, control::config::read);
    let metrics = table(&mut root, "metrics", errors, metrics::config::read);
    let status_page = table(&mut root, "status_page", errors, status_page::config::read);
    let state = table(&mut root, "state", errors, common::state);
    let log = table(&mut root, "log", errors, common::log);
    let tor = table(&mut root, "tor", errors, tor::config::read);
    // A broken [tor] table already rejects the config; its default keeps the rest quiet.
    let tor_enabled = tor.as_ref().is_none_or(|tor| tor.enabled);
    let transparent = table(&mut root, "transparent", errors, |section, errors| {
        crate::transparent::config::read(section, tor_enabled, errors)
    });

    let defaults = Services::default();
    let (dns_service, dns) = service(&mut root, "dns", defaults.dns, errors, |section, errors| {
        dns::config::read(section, tor_enabled, errors)
    });
    let (dhcp_service, dhcp) =
        service(&mut root, "dhcp", defaults.dhcp, errors, dhcp::config::read);
    let (http_proxy_service, http_proxy) = service(
        &mut root,
        "http_proxy",
        defaults.http_proxy,
        errors,
        http_proxy::config::read,
    );
    let (registry_service, registry) = service(
        &mut root,
        "registry",
        defaults.registry,
        errors,
        registry::config::read,
    );
    let (mirror_service, mirror) = service(
        &mut root,
        "mirror",
        defaults.mirror,
        errors,
        mirror::config::read,
    );
    // SOCKS only goes over Tor: on by default with Tor, an error without it.
    let socks_default = Service {
        enabled: tor_enabled && defaults.socks.enabled,
        ..defaults.socks
    };
    let services = Services {
        dns: dns_service,
        dhcp: dhcp_service,
        socks: service(&mut root, "socks", socks_default, errors, no_keys).0,
        http_proxy: http_proxy_service,
        registry: registry_service,
        mirror: mirror_service,
    };
    validate::socks_needs_tor(&services, tor_enabled, errors);
    root.finish(errors);

    if let (Some(inside), Some(outside)) = (&inside, &outside) {
        validate::subnets_disjoint(inside, outside, errors);
    }
    let page_port = match (&status_page, &inside) {
        (Some(page), Some(inside)) => page.open_port(inside),
        _ => None,
    };
    let port_users: Vec<(String, PortRule)> = services
        .enabled_ports()
        .map(|(name, rule)| (format!("{name}.port"), rule))
        .chain(page_port.map(|rule| ("status_page.listen".to_owned(), rule)))
        .chain(allow)
        .collect();
    validate::unique_ports(&port_users, errors);
    let mut dns = dns;
    if let (Some(inside), Some(outside), Some(dns)) = (&inside, &outside, &mut dns) {
        validate::onion_range_free(inside, outside, dns, errors);
    }
    if let (Some(inside), Some(dhcp)) = (&inside, &dhcp) {
        validate::dhcp_fits_inside(inside, dhcp, errors);
    }
    if let (Some(outside), Some(dns), Some(http_proxy)) = (&outside, &dns, &http_proxy) {
        let direct_proxy =
            services.http_proxy.enabled && http_proxy.egress == crate::egress::Egress::Direct;
        validate::uplink_dns_has_servers(outside, dns, direct_proxy, errors);
    }
    if let (Some(interfaces), Some(uplink)) = (&interfaces, &uplink) {
        validate::macvlan_name_free(interfaces, uplink, errors);
    }
    if let (Some(inside), Some(metrics)) = (&inside, &metrics) {
        validate::metrics_port_free(inside, metrics, &services, errors);
    }
    if let (Some(page), Some(inside), Some(metrics), Some(transparent)) =
        (&status_page, &inside, &metrics, &transparent)
    {
        status_page::config::listen_free(page, inside, metrics, transparent, errors);
    }

    Some(Config {
        interfaces: interfaces?,
        inside: inside?,
        outside: outside?,
        dataplane: dataplane?,
        control: control?,
        metrics: metrics?,
        state: state?,
        log: log?,
        services,
        dhcp: dhcp?,
        dns: dns?,
        uplink: uplink?,
        http_proxy: http_proxy?,
        tor: tor?,
        transparent: transparent?,
        registry: registry?,
        mirror: mirror?,
        status_page: status_page?,
    })
}

/// The table `name` read by `read`; whatever keys it did not ask for are unknown.
fn table<T>(
    root: &mut Section,
    name: &'static str,
    errors: &mut Errors,
    read: impl FnOnce(&mut Section, &mut Errors) -> T,
) -> T {
    let mut section = root.table(name, errors);
    let value = read(&mut section, errors);
    section.finish(errors);
    value
}

/// One service table: `enabled`, `port`, then the service's own keys read by `extra`.
fn service<T>(
    root: &mut Section,
    name: &'static str,
    default: Service,
    errors: &mut Errors,
    extra: impl FnOnce(&mut Section, &mut Errors) -> Option<T>,
) -> (Service, Option<T>) {
    table(root, name, errors, |section, errors| {
        let service = common::service(section, default, errors);
        (service, extra(section, errors))
    })
}

/// The reader of a service table with no keys beyond `enabled` and `port`.
fn no_keys(_: &mut Section, _: &mut Errors) -> Option<()> {
    Some(())
}
