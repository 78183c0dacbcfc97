//! The mirror as an entry of the service list: on the inside address (port 5000), TLS 1.3 with
//! a client certificate from the gateway CA (the registry's certificates), upstream requests
//! through the connector `mirror.egress` names (Tor by default). Without Tor and without the
//! explicit `direct` choice it does not start. Its view shows each upstream's cache and
//! answers `ls`, `du` and `gc` for the CLI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::admin as mirror_admin;
use super::api::Mirror;
use super::cache::{Cache, CacheStats};
use super::config::Upstream;
use super::lease::Leases;
use super::pulls::PullClock;
use super::server::{MirrorServer, ServerSettings};
use super::tags::TagClock;
use super::upstream::UpstreamClient;
use crate::config::{Config, Egress};
use crate::egress::{Connector, DirectConnector, DirectSettings};
use crate::http_proxy::upstream_tls;
use crate::metrics::{Exposition, Kind};
use crate::net::listener::{Clients, ListenerReader, ListenerStats};
use crate::registry::admin;
use crate::registry::names::{RepoName, Tag};
use crate::registry::storage::s3::UplinkBinding;
use crate::registry::storage::{Limits, Storage};
use crate::service::{self, inside_listen, BoxFuture, Entry, Handles, Running, ServiceView};

/// The mirror's entry in the service list.
pub const SERVICE: Entry = Entry {
    name: "mirror",
    start,
};

/// Connections served at once (pulls open several each).
const MAX_CONNECTIONS: usize = 512;
/// How long a `direct` stream may take to connect.
const DIRECT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A fetch interrupted by a crash leaves an upload session; it is never resumed.
const UPLOAD_EXPIRY: Duration = Duration::from_secs(3600);
/// Unreferenced blobs younger than this survive `mirror gc` (a pull stores its manifest
/// before its layers, so this is only for the rare blob fetched without one).
const GC_GRACE: Duration = Duration::from_secs(3600);

/// The cache directory `cfg` names (one store per upstream below it).
pub fn cache_dir(cfg: &Config) -> PathBuf {
    cfg.mirror
        .dir
        .clone()
        .unwrap_or_else(|| cfg.state.dir.join("mirror"))
}

/// The store limits the mirror uses.
pub fn limits(cfg: &Config) -> Limits {
    Limits {
        max_blob_bytes: cfg.mirror.max_blob_size,
        max_manifest_bytes: Limits::default().max_manifest_bytes,
        upload_expiry: UPLOAD_EXPIRY,
    }
}

/// Opens each upstream's store under `dir` (on S3: through a connector leaving from `uplink`).
pub fn open_stores(
    cfg: &Config,
    dir: &Path,
    uplink: Option<UplinkBinding>,
) -> Result<BTreeMap<String, Arc<dyn Storage>>> {
    let mut stores = BTreeMap::new();
    for upstream in &cfg.mirror.upstreams {
        let store = crate::registry::store::open(
            cfg,
            crate::registry::store::Part::Mirror(&upstream.name),
            dir.join(&upstream.name),
            limits(cfg),
            uplink.clone(),
        )
        .with_context(|| {
            format!(
                "opening the mirror's cache (mirror.dir {}, upstream {:?})",
                dir.display(),
                upstream.name
            )
        })?;
        stores.insert(upstream.name.clone(), store);
    }
    Ok(stores)
}

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        let cfg = handles.cfg.clone();
        if !cfg.services.mirror.enabled {
            return Ok(None);
        }
        let connector = match cfg.mirror.egress {
            Egress::Tor => handles.tor_connector(),
            Egress::Direct => {
                tracing::warn!(
                    "mirror.egress = \"direct\": the mirror's upstream requests leave in clear \
                     from the uplink address, not through Tor"
                );
                let resolver = handles.uplink_resolver("mirror.egress = \"direct\"")?;
                let uplink = handles.uplink("the direct mirror")?;
                Some(Arc::new(DirectConnector::new(DirectSettings {
                    device: uplink.device.clone(),
                    uplink: uplink.status.clone(),
                    inside: cfg.inside,
                    allow_private: false,
                    resolver: Some(resolver),
                    connect_timeout: DIRECT_CONNECT_TIMEOUT,
                })) as Arc<dyn Connector>)
            }
        };
        let Some(connector) = connector else {
            tracing::warn!(
                "the mirror's egress is Tor and tor.enabled = false: not started \
                 (mirror.egress = \"direct\" is the explicit clearnet choice)"
            );
            return Ok(None);
        };
        let state = handles.state_dir()?;
        let acceptor = crate::registry::service::server_tls(&cfg, &state).await?;
        let mirror = Arc::new(build(&cfg, connector, handles.storage_uplink())?);
        let settings = ServerSettings {
            listen: inside_listen(&cfg, cfg.services.mirror.port),
            clients: Clients::Inside(cfg.inside),
            max_connections: MAX_CONNECTIONS,
        };
        let server = MirrorServer::start(settings, acceptor, mirror.clone())
            .await
            .context("starting the mirror")?;
        tracing::info!(
            "mirror on https://{} (cache {}; upstreams {}; default {})",
            server.local_addr(),
            cache_dir(&cfg).display(),
            cfg.mirror
                .upstreams
                .iter()
                .map(|u| format!("{} at {}", u.name, u.url.origin()))
                .collect::<Vec<_>>()
                .join(", "),
            cfg.mirror.default,
        );
        let (listener, handshake_failures) = server.reader();
        let view = Arc::new(MirrorView {
            mirror,
            max_bytes: cfg.mirror.max_size,
            listener,
            handshake_failures,
        });
        Ok(Some(Running::stopped_by(view, move || server.stop())))
    })
}

/// The mirror `cfg` describes, its upstream requests through `connector`, its S3 store (if
/// any) through a storage connector leaving from `uplink`.
pub fn build(
    cfg: &Config,
    connector: Arc<dyn Connector>,
    uplink: Option<UplinkBinding>,
) -> Result<Mirror> {
    let dir = cache_dir(cfg);
    let stores = open_stores(cfg, &dir, uplink)?;
    let mut caches = BTreeMap::new();
    for (index, upstream) in cfg.mirror.upstreams.iter().enumerate() {
        let client = UpstreamClient::new(
            upstream.clone(),
            connector.clone(),
            tls_for(upstream)?,
            credentials(upstream, &credentials_key(index)).map_err(anyhow::Error::msg)?,
        );
        let store = stores[&upstream.name].clone();
        let tags = TagClock::new(cfg.mirror.tag_ttl.as_duration());
        caches.insert(
            upstream.name.clone(),
            Arc::new(Cache::new(
                client,
                store,
                tags,
                pull_clock(&dir, &upstream.name),
            )),
        );
    }
    Ok(Mirror::new(
        caches,
        cfg.mirror.default.clone(),
        cfg.mirror.max_size,
    ))
}

/// The TLS client config for `upstream`: its `ca`, else the system roots.
pub fn tls_for(upstream: &Upstream) -> Result<Option<Arc<rustls::ClientConfig>>> {
    if let Some(ca) = &upstream.ca {
        return upstream_tls::client_config(ca)
            .map(Some)
            .with_context(|| format!("mirror.upstreams {:?}: ca", upstream.name));
    }
    match upstream_tls::client_config(Path::new(upstream_tls::SYSTEM_ROOTS)) {
        Ok(config) => Ok(Some(config)),
        Err(error) if upstream.url.tls => Err(error.context(format!(
            "mirror.upstreams {:?}: no system roots to check its TLS with (set `ca`)",
            upstream.name
        ))),
        Err(_) => Ok(None),
    }
}

/// `user:password` from the credentials file of `upstream` (config key `key`, like
/// `mirror.upstreams[0].credentials`), which must be root's (the agent's user's) alone: not
/// readable or writable by group or others, owned by the agent's user. Errors name the key.
pub fn credentials(upstream: &Upstream, key: &str) -> Result<Option<String>, String> {
    let Some(path) = &upstream.credentials else {
        return Ok(None);
    };
    crate::config::secret::read_private_line(path, key, "user:password").map(Some)
}

/// The config key of `cfg`'s upstream number `index`'s credentials.
pub fn credentials_key(index: usize) -> String {
    format!("mirror.upstreams[{index}].credentials")
}

/// What `status --json` shows under `mirror`.
#[derive(Debug, Clone, Serialize)]
pub struct MirrorStatus {
    /// Each upstream's cache.
    pub upstreams: BTreeMap<String, CacheStats>,
    pub connections: ListenerStats,
    /// Handshakes that failed (no certificate, unknown CA, revoked, not TLS 1.3).
    pub handshake_failures: u64,
}

struct MirrorView {
    mirror: Arc<Mirror>,
    max_bytes: u64,
    listener: ListenerReader,
    handshake_failures: Arc<AtomicU64>,
}

impl MirrorView {
    fn snapshot(&self) -> MirrorStatus {
        MirrorStatus {
            upstreams: self
                .mirror
                .caches()
                .iter()
                .map(|(name, cache)| (name.clone(), cache.stats()))
                .collect(),
            connections: self.listener.stats(),
            handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
        }
    }
}

impl ServiceView for MirrorView {
    fn name(&self) -> &'static str {
        "mirror"
    }

    fn status(&self) -> Value {
        service::to_json(&self.snapshot())
    }

    fn summary(&self) -> Vec<String> {
        self.snapshot()
            .upstreams
            .iter()
            .map(|(name, s)| {
                format!(
                    "{name}: {} blobs fetched ({} MiB), {} served from the cache, {} joined; {} manifests fetched, {} tag checks",
                    s.blob_fetches,
                    s.blob_bytes_fetched >> 20,
                    s.blob_hits,
                    s.joined_fetches,
                    s.manifest_fetches,
                    s.tag_checks
                )
            })
            .collect()
    }

    fn metrics(&self, out: &mut Exposition) {
        metrics(out, &self.snapshot());
    }

    fn operations(&self) -> &'static [&'static str] {
        &["ls", "du", "gc", "purge", "evict"]
    }

    fn operate(&self, operation: &str, args: Value) -> BoxFuture<'_, Result<Value>> {
        let shelves = shelves_of(&self.mirror);
        let default = self.mirror.default_upstream().to_owned();
        let max = self.max_bytes;
        let operation = operation.to_owned();
        Box::pin(async move {
            let purged = (operation == "purge").then(|| args.clone());
            let value = tokio::task::spawn_blocking(move || {
                run(&shelves, &default, max, &operation, &args)
            })
            .await
            .context("the mirror operation")??;
            // A purged repository's tags are re-checked at the next pull.
            if let Some(args) = purged {
                if let Ok((ns, repo, _)) = purge_target(
                    &shelves_of(&self.mirror),
                    self.mirror.default_upstream(),
                    &args,
                ) {
                    if let Some(cache) = self.mirror.caches().get(&ns) {
                        cache.tags().forget_repo(&repo);
                    }
                }
            }
            Ok(value)
        })
    }
}

/// One upstream's store as the operations see it.
#[derive(Clone)]
pub struct StoredUpstream {
    pub name: String,
    pub store: Arc<dyn Storage>,
    pub pulls: PullClock,
    /// One-component names are `library/<name>` in its cache.
    pub library: bool,
    /// What its pulls are using (none without an agent).
    pub leases: Arc<Leases>,
}

fn shelves_of(mirror: &Mirror) -> Vec<StoredUpstream> {
    mirror
        .caches()
        .iter()
        .map(|(name, cache)| StoredUpstream {
            name: name.clone(),
            store: cache.store().clone(),
            pulls: cache.pulls().clone(),
            library: cache.library(),
            leases: cache.leases().clone(),
        })
        .collect()
}

/// The stores `cfg` names, opened directly (the CLI without an agent).
pub fn open_shelves(cfg: &Config) -> Result<Vec<StoredUpstream>> {
    let dir = cache_dir(cfg);
    let stores = open_stores(cfg, &dir, None)?;
    Ok(cfg
        .mirror
        .upstreams
        .iter()
        .map(|upstream| StoredUpstream {
            name: upstream.name.clone(),
            store: stores[&upstream.name].clone(),
            pulls: pull_clock(&dir, &upstream.name),
            library: upstream.library,
            // No agent, no pull in progress.
            leases: Arc::new(Leases::new(Duration::ZERO)),
        })
        .collect())
}

fn pull_clock(dir: &Path, name: &str) -> PullClock {
    PullClock::new(dir.join(format!("{name}.pulls")))
}

/// `purge`'s target from its args (`{"image": "repo[:tag]", "ns": "upstream"}`): the upstream,
/// the repository as its cache names it, the tag.
fn purge_target(
    shelves: &[StoredUpstream],
    default: &str,
    args: &Value,
) -> Result<(String, RepoName, Option<Tag>)> {
    let image = args["image"]
        .as_str()
        .context("purge needs {\"image\": \"repository[:tag]\"}")?;
    let ns = args["ns"].as_str().unwrap_or(default).to_owned();
    let shelf = shelves
        .iter()
        .find(|shelf| shelf.name == ns)
        .with_context(|| format!("the mirror has no upstream {ns:?}"))?;
    let (repo, tag) = mirror_admin::parse_image(image).map_err(anyhow::Error::msg)?;
    let repo = if shelf.library && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo
    };
    let repo: RepoName = repo.parse().map_err(anyhow::Error::msg)?;
    let tag = tag
        .map(|tag| tag.parse::<Tag>())
        .transpose()
        .map_err(anyhow::Error::msg)?;
    Ok((ns, repo, tag))
}

/// Runs `operation` on the upstreams' stores: `ls`, `du`, `gc` on each (by upstream name),
/// `purge` of one image, `evict` down to `max` bytes. For the control socket and for the CLI
/// when no agent runs.
pub fn run(
    shelves: &[StoredUpstream],
    default: &str,
    max: u64,
    operation: &str,
    args: &Value,
) -> Result<Value> {
    match operation {
        "purge" => {
            let (ns, repo, tag) = purge_target(shelves, default, args)?;
            let shelf = shelves
                .iter()
                .find(|shelf| shelf.name == ns)
                .with_context(|| format!("the mirror has no upstream {ns:?}"))?;
            let purged = mirror_admin::purge(
                &*shelf.store,
                &shelf.pulls,
                &shelf.leases,
                &repo,
                tag.as_ref(),
            )?;
            let mut value = service::to_json(&purged);
            value["upstream"] = Value::String(ns);
            value["repository"] = Value::String(repo.to_string());
            return Ok(value);
        }
        "evict" => {
            let view: Vec<mirror_admin::Shelf<'_>> = shelves
                .iter()
                .map(|shelf| mirror_admin::Shelf {
                    name: &shelf.name,
                    store: &*shelf.store,
                    pulls: &shelf.pulls,
                    leases: &shelf.leases,
                })
                .collect();
            return Ok(service::to_json(&mirror_admin::evict(&view, max)?));
        }
        _ => {}
    }
    let mut out = serde_json::Map::new();
    for shelf in shelves {
        let store = &*shelf.store;
        let value = match operation {
            "ls" => service::to_json(&admin::ls(store)?),
            "du" => service::to_json(&admin::du(store)?),
            "gc" => service::to_json(&admin::gc(store, GC_GRACE)?),
            other => bail!("the mirror has no operation {other:?}"),
        };
        out.insert(shelf.name.clone(), value);
    }
    Ok(Value::Object(out))
}

/// A counter family: its name, its help, and how to read it from a cache's stats.
type Family = (&'static str, &'static str, fn(&CacheStats) -> u64);

fn metrics(out: &mut Exposition, s: &MirrorStatus) {
    let families: [Family; 6] = [
        (
            "gateway_mirror_blob_fetches_total",
            "Blobs fetched from an upstream.",
            |c| c.blob_fetches,
        ),
        (
            "gateway_mirror_blob_fetched_bytes_total",
            "Blob bytes fetched from an upstream.",
            |c| c.blob_bytes_fetched,
        ),
        (
            "gateway_mirror_blob_hits_total",
            "Blob requests served from the cache.",
            |c| c.blob_hits,
        ),
        (
            "gateway_mirror_manifest_fetches_total",
            "Manifests fetched from an upstream.",
            |c| c.manifest_fetches,
        ),
        (
            "gateway_mirror_tag_checks_total",
            "Tags re-checked upstream with HEAD.",
            |c| c.tag_checks,
        ),
        (
            "gateway_mirror_unavailable_total",
            "Requests answered 503: not cached, upstream unreachable.",
            |c| c.unavailable,
        ),
    ];
    for (name, help, read) in families {
        let mut family = out.family(name, Kind::Counter, help);
        for (upstream, stats) in &s.upstreams {
            family.sample(&[("upstream", upstream)], read(stats));
        }
    }
    out.family(
        "gateway_mirror_rejected_total",
        Kind::Counter,
        "Mirror connections turned away, by reason.",
    )
    .sample(&[("reason", "tls_handshake")], s.handshake_failures)
    .sample(&[("reason", "not_inside")], s.connections.not_inside)
    .sample(&[("reason", "busy")], s.connections.busy);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_families_carry_each_upstream() {
        let hub = CacheStats {
            blob_fetches: 3,
            blob_bytes_fetched: 4096,
            blob_hits: 5,
            unavailable: 1,
            ..CacheStats::default()
        };
        let status = MirrorStatus {
            upstreams: [
                ("hub.test".to_owned(), hub),
                ("other.test".to_owned(), CacheStats::default()),
            ]
            .into_iter()
            .collect(),
            connections: ListenerStats::default(),
            handshake_failures: 2,
        };
        let mut out = Exposition::default();
        metrics(&mut out, &status);
        let page = out.finish();
        for line in [
            "gateway_mirror_blob_fetches_total{upstream=\"hub.test\"} 3",
            "gateway_mirror_blob_fetches_total{upstream=\"other.test\"} 0",
            "gateway_mirror_blob_fetched_bytes_total{upstream=\"hub.test\"} 4096",
            "gateway_mirror_blob_hits_total{upstream=\"hub.test\"} 5",
            "gateway_mirror_unavailable_total{upstream=\"hub.test\"} 1",
            "gateway_mirror_rejected_total{reason=\"tls_handshake\"} 2",
        ] {
            assert!(page.lines().any(|l| l == line), "{line} not in:\n{page}");
        }
    }

    #[test]
    fn credentials_must_be_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.cred");
        std::fs::write(&path, "ci:secret\n").unwrap();
        let mut upstream = crate::mirror::config::Mirror::default().upstreams[0].clone();
        upstream.credentials = Some(path.clone());
        let key = credentials_key(1);
        for mode in [0o644, 0o604, 0o640, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let error = credentials(&upstream, &key).unwrap_err();
            assert!(
                error.starts_with("mirror.upstreams[1].credentials: "),
                "{error}"
            );
            assert!(error.contains("chmod 600"), "{error}");
            assert!(!error.contains("secret"), "{error}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            credentials(&upstream, &key).unwrap().as_deref(),
            Some("ci:secret")
        );
        std::fs::write(&path, "no colon\n").unwrap();
        assert!(credentials(&upstream, &key)
            .unwrap_err()
            .contains("user:password"));
        upstream.credentials = Some(dir.path().join("missing"));
        assert!(credentials(&upstream, &key)
            .unwrap_err()
            .starts_with("mirror.upstreams[1].credentials: "));
    }
}
