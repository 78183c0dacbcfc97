//! `[metrics]`: whether the Prometheus endpoint runs, and where.

use std::net::{Ipv4Addr, SocketAddr};

use crate::config::reader::{self, Section};
use crate::config::{values, Errors};

/// `[metrics]`: the Prometheus endpoint. Aggregate counters only: no client addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    pub enabled: bool,
    /// Where `GET /metrics` is served; loopback by default, so only the host can read it.
    pub listen: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            enabled: true,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9101)),
        }
    }
}

/// Reads `[metrics]`: `enabled`, `listen`. That it takes no service's port is a rule across
/// tables, in `config::validate`.
pub(crate) fn read(section: &mut Section, errors: &mut Errors) -> Option<Metrics> {
    let defaults = Metrics::default();
    let enabled = section.optional("enabled", defaults.enabled, errors, reader::boolean);
    let listen = section.optional("listen", defaults.listen, errors, |value| {
        values::listen_address(&reader::string(value)?)
    });
    Some(Metrics {
        enabled: enabled?,
        listen: listen?,
    })
}
