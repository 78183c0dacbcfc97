//! Opening the store `[registry.storage]` chooses, for the registry or for one of the mirror's
//! upstreams: a directory on this host, or a part of the S3 bucket (`<prefix>/registry`,
//! `<prefix>/mirror/<upstream>`), which every gateway configured with the same bucket and
//! prefix shares.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::config::{S3Store, StorageChoice};
use super::storage::s3::{StorageTarget, UplinkBinding};
use super::storage::{FsStorage, Limits, S3Settings, S3Storage, Storage};
use crate::config::Config;

/// Which store.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// The private registry's.
    Registry,
    /// The mirror's cache of this upstream.
    Mirror(&'a str),
}

impl Part<'_> {
    fn name(&self) -> String {
        match self {
            Part::Registry => "registry".to_owned(),
            Part::Mirror(upstream) => format!("mirror/{upstream}"),
        }
    }
}

/// Opens `part`'s store with `limits`. `fs_dir` is where it is on the filesystem backend;
/// `uplink` is what the storage connector leaves from (the running agent's uplink; `None` for
/// the offline CLI, which leaves routing to the host).
pub fn open(
    cfg: &Config,
    part: Part<'_>,
    fs_dir: PathBuf,
    limits: Limits,
    uplink: Option<UplinkBinding>,
) -> Result<Arc<dyn Storage>> {
    match &cfg.registry.storage {
        StorageChoice::Filesystem => {
            let store = FsStorage::open(&fs_dir, limits)
                .with_context(|| format!("opening the store {}", fs_dir.display()))?;
            Ok(Arc::new(store))
        }
        StorageChoice::S3(s3) => {
            let settings = S3Settings {
                uplink,
                ..s3_settings(cfg, s3, part)?
            };
            let describe = format!("{}/{} ({})", s3.endpoint, s3.bucket, settings.prefix);
            let store = S3Storage::open(settings, limits)
                .with_context(|| format!("opening the {} store in {describe}", part.name()))?;
            Ok(Arc::new(store))
        }
    }
}

/// What `S3Storage` needs for `part`: the keys from the credentials file, the CA's PEM.
pub fn s3_settings(cfg: &Config, s3: &S3Store, part: Part<'_>) -> Result<S3Settings> {
    let line = crate::config::secret::read_private_line(
        &s3.credentials,
        "registry.storage.credentials",
        "ACCESS_KEY_ID:SECRET_ACCESS_KEY",
    )
    .map_err(anyhow::Error::msg)?;
    let (access, secret) = line.split_once(':').unwrap_or_default();
    let ca = match &s3.ca {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("registry.storage.ca: reading {}", path.display()))?,
        ),
        None => None,
    };
    let target = StorageTarget::parse(&s3.endpoint, s3.address)?;
    if let std::net::IpAddr::V4(v4) = target.address {
        if cfg.inside.contains(v4) {
            anyhow::bail!(
                "registry.storage: the store's address {v4} is on the inside LAN; the store is \
                 reached from the uplink side only, where inside hosts cannot reach it"
            );
        }
    }
    let name = part.name();
    let prefix = if s3.prefix.is_empty() {
        name.clone()
    } else {
        format!("{}/{name}", s3.prefix)
    };
    Ok(S3Settings {
        endpoint: s3.endpoint.clone(),
        bucket: s3.bucket.clone(),
        region: s3.region.clone(),
        access_key_id: access.to_owned(),
        secret_access_key: secret.to_owned(),
        prefix,
        ca,
        address: s3.address,
        uplink: None,
        cache: (s3.cache_size > 0).then(|| {
            let dir = cfg.state.dir.join("s3-cache").join(name.replace('/', "-"));
            (dir, s3.cache_size)
        }),
        spool: cfg.state.dir.join("s3-spool").join(name.replace('/', "-")),
    })
}

/// `check-config --probe-storage`: connects to the S3 store and lists the registry's part;
/// what it found, in a line.
pub fn probe(cfg: &Config) -> Result<String> {
    match &cfg.registry.storage {
        StorageChoice::Filesystem => {
            Ok("registry.storage: the filesystem, nothing to probe".into())
        }
        StorageChoice::S3(s3) => {
            let settings = s3_settings(cfg, s3, Part::Registry)?;
            // A spool of its own: the running agent's must not be emptied.
            let spool = std::env::temp_dir().join(format!("gateway-probe-{}", std::process::id()));
            let settings = S3Settings {
                spool: spool.clone(),
                cache: None,
                ..settings
            };
            let opened = S3Storage::open(settings, Limits::default());
            let _ = std::fs::remove_dir_all(&spool);
            let store = opened?;
            let repositories = store.repositories()?.len();
            Ok(format!(
                "registry.storage: {} answers ({repositories} repositories)",
                store.describe()
            ))
        }
    }
}
