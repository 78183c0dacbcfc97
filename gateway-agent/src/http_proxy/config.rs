//! `[http_proxy]` beyond `enabled` and `port`: which ports CONNECT may reach and where requests
//! go out, with their defaults and their reader.

use crate::config::reader::{self, Section};
use crate::config::{values, Errors};
use crate::egress::{self, Egress};

/// `[http_proxy]` beyond enabled/port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProxy {
    /// Ports CONNECT may reach, each once. Only 443 by default, like Squid's `SSL_ports`: plain
    /// HTTP goes in absolute form, and a CONNECT to any port would make the proxy a general
    /// TCP relay (that is what SOCKS is for).
    pub connect_ports: Vec<u16>,
    /// Ports an absolute-form request (`GET http://host:port/…`) may reach, each once: 80 and
    /// 443 by default, so the proxy cannot be pointed at arbitrary services.
    pub ports: Vec<u16>,
    /// Where the proxy's requests go out.
    pub egress: Egress,
}

impl Default for HttpProxy {
    fn default() -> Self {
        HttpProxy {
            connect_ports: vec![443],
            ports: vec![80, 443],
            egress: Egress::Tor,
        }
    }
}

/// Reads the keys of `[http_proxy]` beyond enabled/port.
pub(crate) fn read(section: &mut Section, errors: &mut Errors) -> Option<HttpProxy> {
    let defaults = HttpProxy::default();
    let egress = section.optional("egress", defaults.egress, errors, |value| {
        egress::config::parse(&reader::string(value)?)
    });
    let connect_ports = port_list(section, "connect_ports", errors);
    let ports = port_list(section, "ports", errors);
    Some(HttpProxy {
        connect_ports: connect_ports?.unwrap_or(defaults.connect_ports),
        ports: ports?.unwrap_or(defaults.ports),
        egress: egress?,
    })
}

/// A list of distinct ports under `key` (`connect_ports`, `ports`): `None` when absent.
fn port_list(
    section: &mut Section,
    key: &'static str,
    errors: &mut Errors,
) -> Option<Option<Vec<u16>>> {
    let ports_key = section.key(key);
    let entries = section.optional(key, None, errors, |value| reader::array(value).map(Some))?;
    let Some(entries) = entries else {
        return Some(None);
    };
    let mut ports = Vec::new();
    let mut ok = true;
    for (i, entry) in entries.into_iter().enumerate() {
        let port = reader::integer(entry)
            .and_then(values::port)
            .and_then(|port| {
                if ports.contains(&port) {
                    Err(format!("{port} is listed twice"))
                } else {
                    Ok(port)
                }
            });
        match errors.check(&format!("{ports_key}[{i}]"), port) {
            Some(port) => ports.push(port),
            None => ok = false,
        }
    }
    ok.then_some(Some(ports))
}
