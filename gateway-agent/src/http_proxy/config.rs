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
    /// Where the proxy's requests go out.
    pub egress: Egress,
}

impl Default for HttpProxy {
    fn default() -> Self {
        HttpProxy {
            connect_ports: vec![443],
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
    let connect_ports = connect_ports(section, errors);
    Some(HttpProxy {
        connect_ports: connect_ports?.unwrap_or(defaults.connect_ports),
        egress: egress?,
    })
}

/// `http_proxy.connect_ports`: `None` when absent.
fn connect_ports(section: &mut Section, errors: &mut Errors) -> Option<Option<Vec<u16>>> {
    let ports_key = section.key("connect_ports");
    let entries = section.optional("connect_ports", None, errors, |value| {
        reader::array(value).map(Some)
    })?;
    let Some(entries) = entries else {
        return Some(None);
    };
    let mut connect_ports = Vec::new();
    let mut ok = true;
    for (i, entry) in entries.into_iter().enumerate() {
        let port = reader::integer(entry)
            .and_then(values::port)
            .and_then(|port| {
                if connect_ports.contains(&port) {
                    Err(format!("{port} is listed twice"))
                } else {
                    Ok(port)
                }
            });
        match errors.check(&format!("{ports_key}[{i}]"), port) {
            Some(port) => connect_ports.push(port),
            None => ok = false,
        }
    }
    ok.then_some(Some(connect_ports))
}
