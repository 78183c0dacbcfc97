//! `[transparent]`: the transparent Tor listener inside TCP is steered to.

use crate::config::reader::{self, Section};
use crate::config::{values, Errors};

/// `[transparent]`: inside TCP to any host but the gateway goes through Tor without proxy
/// settings. On by default with Tor; an error without it (it never goes direct).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transparent {
    pub enabled: bool,
    /// Its port on 127.0.0.1 (never on the inside address: only steered traffic reaches it).
    pub port: u16,
}

/// Tor's own `TransPort` default.
pub const DEFAULT_PORT: u16 = 9040;

/// Reads `[transparent]`: `enabled` (default: `tor_enabled`), `port`.
pub(crate) fn read(
    section: &mut Section,
    tor_enabled: bool,
    errors: &mut Errors,
) -> Option<Transparent> {
    let enabled = section.optional("enabled", tor_enabled, errors, reader::boolean);
    let port = section.optional("port", DEFAULT_PORT, errors, |value| {
        values::port(reader::integer(value)?)
    });
    let enabled = enabled?;
    if enabled && !tor_enabled {
        errors.push(
            &section.key("enabled"),
            "the transparent listener only goes through Tor: it needs tor.enabled = true",
        );
        return None;
    }
    Some(Transparent {
        enabled,
        port: port?,
    })
}
