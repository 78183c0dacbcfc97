//! Checks only the running host can answer, kept apart from parsing so `parse` stays pure.

use std::ffi::CString;

use super::error::ConfigError;
use super::Config;

/// Checks that only the running host can answer: both interfaces exist in this network namespace.
/// Errors are keyed `interfaces.outside` / `interfaces.inside`.
pub fn check_host(cfg: &Config) -> Vec<ConfigError> {
    [
        ("interfaces.outside", &cfg.interfaces.outside),
        ("interfaces.inside", &cfg.interfaces.inside),
    ]
    .into_iter()
    .filter(|(_, name)| interface_index(name).is_none())
    .map(|(key, name)| {
        ConfigError::new(
            key,
            format!("no interface named {name:?} on this host (in this network namespace)"),
        )
    })
    .collect()
}

/// The interface's index, or `None` if there is no such interface.
fn interface_index(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call; if_nametoindex
    // only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}
