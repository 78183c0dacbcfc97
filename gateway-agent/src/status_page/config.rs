//! `[status_page]`: whether the operator's status page runs, where, and whose certificates may
//! act on it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::reader::{self, Section};
use crate::config::{values, Errors, Inside, Metrics, PortRule, Protocol, Transparent};

/// `[status_page]`: HTTPS with the gateway PKI's server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusPage {
    pub enabled: bool,
    /// A loopback address (anyone on the host may read; client certificates optional), or the
    /// gateway's inside address (only clients with an admin certificate complete the TLS
    /// handshake).
    pub listen: SocketAddr,
    /// Client certificate names (the CN `gateway-agent pki issue-client NAME` gives) allowed to
    /// act: set a policy, purge a cache entry, revoke a certificate.
    pub admins: Vec<String>,
}

impl Default for StatusPage {
    fn default() -> Self {
        StatusPage {
            enabled: true,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8443)),
            admins: Vec::new(),
        }
    }
}

impl StatusPage {
    /// Whether it listens on the inside address (then its port is opened to the inside and
    /// only admins get through the handshake).
    pub fn on_inside(&self, inside: &Inside) -> bool {
        self.enabled && self.listen.ip() == IpAddr::V4(inside.address)
    }

    /// The dataplane's open port for it, when it listens on the inside address.
    pub fn open_port(&self, inside: &Inside) -> Option<PortRule> {
        self.on_inside(inside).then_some(PortRule {
            protocol: Protocol::Tcp,
            port: self.listen.port(),
        })
    }

    /// Whether `name` (a verified client certificate's) may act.
    pub fn is_admin(&self, name: Option<&str>) -> bool {
        name.is_some_and(|name| self.admins.iter().any(|admin| admin == name))
    }
}

/// Reads `[status_page]`: `enabled`, `listen`, `admins`. Where it may listen is checked
/// against the other tables by [`listen_free`].
pub(crate) fn read(section: &mut Section, errors: &mut Errors) -> Option<StatusPage> {
    let defaults = StatusPage::default();
    let enabled = section.optional("enabled", defaults.enabled, errors, reader::boolean);
    let listen = section.optional("listen", defaults.listen, errors, |value| {
        values::listen_address(&reader::string(value)?)
    });
    let admins = section.optional("admins", defaults.admins, errors, |value| {
        reader::array(value)?
            .into_iter()
            .map(|item| {
                let name = reader::string(item)?;
                crate::pki::check_client_name(&name)?;
                Ok(name)
            })
            .collect()
    });
    Some(StatusPage {
        enabled: enabled?,
        listen: listen?,
        admins: admins?,
    })
}

/// The page listens on loopback or on the inside address, never on a port another service
/// uses there (checked at config time, not at bind time; the services' ports on the inside
/// address by `unique_ports`), and on the inside address only with admins,
/// since nobody else gets through its handshake.
pub(crate) fn listen_free(
    page: &StatusPage,
    inside: &Inside,
    metrics: &Metrics,
    transparent: &Transparent,
    errors: &mut Errors,
) {
    if !page.enabled {
        return;
    }
    let key = "status_page.listen";
    let listen = page.listen;
    let ip = listen.ip();
    if !ip.is_loopback() && ip != IpAddr::V4(inside.address) {
        errors.push(
            key,
            format!(
                "{listen}: the status page listens on a loopback address or on the inside \
                 address {} (inside.address), nowhere else",
                inside.address
            ),
        );
        return;
    }
    let port = listen.port();
    if ip != IpAddr::V4(inside.address) {
        if metrics.enabled && metrics.listen == listen {
            errors.push(key, format!("{listen} is metrics.listen already"));
        }
        if transparent.enabled && ip == IpAddr::V4(Ipv4Addr::LOCALHOST) && transparent.port == port
        {
            errors.push(
                key,
                format!("{listen} is the transparent listener's (transparent.port)"),
            );
        }
        return;
    }
    // On the inside address, its port is one of the port users `config::validate::unique_ports`
    // checks (every enabled service's, `dataplane.allow`); the metrics endpoint is not one.
    let metrics_ip = metrics.listen.ip();
    if metrics.enabled
        && metrics.listen.port() == port
        && (metrics_ip.is_unspecified() || metrics_ip == ip)
    {
        errors.push(key, format!("{listen} is where metrics.listen is too"));
    }
    if page.admins.is_empty() {
        errors.push(
            "status_page.admins",
            "empty, but status_page.listen is on the inside address, where only clients with \
             a certificate named here get through the TLS handshake; name at least one",
        );
    }
}
