//! Checks only the running host can answer, kept apart from parsing so `parse` stays pure.

use super::error::ConfigError;
use super::Config;

/// Checks that only the running host can answer: both interfaces exist in this network
/// namespace (errors keyed `interfaces.outside` / `interfaces.inside`), and the mirror's
/// credentials files are readable and root's alone (`mirror.upstreams[N].credentials`).
pub fn check_host(cfg: &Config) -> Vec<ConfigError> {
    let mut errors: Vec<ConfigError> = [
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
    .collect();
    if cfg.services.mirror.enabled {
        for (index, upstream) in cfg.mirror.upstreams.iter().enumerate() {
            let key = crate::mirror::service::credentials_key(index);
            if let Err(message) = crate::mirror::service::credentials(upstream, &key) {
                // The message starts with the key; the error carries it separately.
                let message = message
                    .strip_prefix(&format!("{key}: "))
                    .unwrap_or(&message)
                    .to_owned();
                errors.push(ConfigError::new(&key, message));
            }
        }
    }
    let stores_used = cfg.services.registry.enabled || cfg.services.mirror.enabled;
    if let (true, crate::registry::config::StorageChoice::S3(s3)) =
        (stores_used, &cfg.registry.storage)
    {
        let key = "registry.storage.credentials";
        if let Err(message) = crate::config::secret::read_private_line(
            &s3.credentials,
            key,
            "ACCESS_KEY_ID:SECRET_ACCESS_KEY",
        ) {
            let message = message
                .strip_prefix(&format!("{key}: "))
                .unwrap_or(&message)
                .to_owned();
            errors.push(ConfigError::new(key, message));
        }
    }
    errors
}
