//! Checks only the running host can answer, kept apart from parsing so `parse` stays pure.

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
    .filter(|(_, name)| crate::net::interface::index(name).is_none())
    .map(|(key, name)| {
        ConfigError::new(
            key,
            format!("no interface named {name:?} on this host (in this network namespace)"),
        )
    })
    .collect()
}
