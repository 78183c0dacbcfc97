//! `[tor]`: whether the embedded Tor client runs, and an arti config to merge in.

use std::path::PathBuf;

use crate::config::reader::{self, Section};
use crate::config::{values, Errors};

/// `[tor]`: the embedded Tor client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tor {
    /// Run the Tor client (and with it, by default, the SOCKS server and DNS over Tor).
    pub enabled: bool,
    /// An arti TOML file merged into arti's defaults (a private network, say); its state and
    /// cache directories are always under `state.dir`.
    pub arti_config: Option<PathBuf>,
}

impl Default for Tor {
    fn default() -> Self {
        Tor {
            enabled: true,
            arti_config: None,
        }
    }
}

/// Reads `[tor]`: `enabled`, `arti_config`.
pub(crate) fn read(section: &mut Section, errors: &mut Errors) -> Option<Tor> {
    let d = Tor::default();
    let enabled = section.optional("enabled", d.enabled, errors, reader::boolean);
    let arti_config = section.optional("arti_config", d.arti_config, errors, |value| {
        values::absolute_path(&reader::string(value)?).map(Some)
    });
    Some(Tor {
        enabled: enabled?,
        arti_config: arti_config?,
    })
}
