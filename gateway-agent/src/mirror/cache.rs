//! One upstream's cache: its client, its store (the private registry's [`Storage`], one
//! directory per upstream), the registry [`Api`] that serves what is cached, the tag clock and
//! the blob fetches in flight. This file brings manifests in: by digest once (they are
//! immutable), by tag after the TTL with a `HEAD` first; and shares a blob cached for one
//! repository with another of the same upstream once the upstream says that one has it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use http_body_util::{BodyExt, Limited};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, StatusCode};
use serde::Serialize;

use super::error::FetchError;
use super::flight::Flights;
use super::lease::Leases;
use super::pulls::PullClock;
use super::tags::TagClock;
use super::upstream::{UpstreamClient, UpstreamError, UpstreamStats};
use crate::registry::api::Api;
use crate::registry::manifest::{self, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::registry::names::{Digest, Reference, RepoName, Tag};
use crate::registry::storage::{self, Manifest, Storage};

/// What the mirror asks the upstream for, the same on `GET` and `HEAD`: a HEAD with another
/// `Accept` could name another digest than the GET would fetch.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// How long a tag's re-check may take before the cached tag is served anyway (Tor down can
/// mean a connect that fails only at its timeout; a cached tag should not wait for that).
const TAG_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The cache's counters.
#[derive(Default)]
pub struct Counters {
    pub manifest_fetches: AtomicU64,
    pub tag_checks: AtomicU64,
    pub blob_fetches: AtomicU64,
    pub blob_bytes_fetched: AtomicU64,
    pub blob_hits: AtomicU64,
    pub blob_mounts: AtomicU64,
    pub joined_fetches: AtomicU64,
    pub served_stale: AtomicU64,
    pub digest_mismatches: AtomicU64,
    pub unavailable: AtomicU64,
}

/// The counters, for status and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheStats {
    /// Manifests fetched from the upstream (GET).
    pub manifest_fetches: u64,
    /// Tags re-checked upstream (HEAD).
    pub tag_checks: u64,
    /// Blobs fetched from the upstream.
    pub blob_fetches: u64,
    /// Their bytes.
    pub blob_bytes_fetched: u64,
    /// Blob requests served from the cache.
    pub blob_hits: u64,
    /// Blobs cached for another repository, linked into the one asked for after the
    /// upstream confirmed it has them there (a `HEAD`), instead of fetched again.
    pub blob_mounts: u64,
    /// Blob requests that joined a fetch already in flight.
    pub joined_fetches: u64,
    /// Tags served from the cache because the upstream could not be asked.
    pub served_stale: u64,
    /// Fetches refused for content that did not match its digest.
    pub digest_mismatches: u64,
    /// Requests answered 503 (not cached, upstream unreachable).
    pub unavailable: u64,
    /// The upstream client's counters.
    pub upstream: UpstreamStats,
}

/// One upstream's cache.
pub struct Cache {
    pub(super) client: UpstreamClient,
    pub(super) store: Arc<dyn Storage>,
    pub(super) api: Arc<Api>,
    pub(super) tags: TagClock,
    pub(super) flights: Flights,
    pub(super) pulls: PullClock,
    /// The blobs fetches and responses are using, spared by eviction.
    pub(super) leases: Arc<Leases>,
    pub(super) counters: Counters,
    /// One manifest fetch per (repository, reference) at a time.
    manifest_locks: Mutex<HashMap<(RepoName, String), ManifestLock>>,
}

/// Held while a manifest is fetched.
type ManifestLock = Arc<tokio::sync::Mutex<()>>;

impl Cache {
    /// A cache over `store`, filled through `client`, its pull times in `pulls`.
    pub fn new(
        client: UpstreamClient,
        store: Arc<dyn Storage>,
        tags: TagClock,
        pulls: PullClock,
    ) -> Self {
        let api = Arc::new(Api::new(
            store.clone(),
            Arc::new(crate::registry::config::Registry::default()),
        ));
        Cache {
            client,
            store,
            api,
            tags,
            flights: Flights::default(),
            pulls,
            leases: Arc::new(Leases::default()),
            counters: Counters::default(),
            manifest_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The same cache with another pull window (how long a blob stays in use after its
    /// last request; [`super::lease::PULL_WINDOW`] unless set).
    pub fn with_pull_window(mut self, window: std::time::Duration) -> Self {
        self.leases = Arc::new(Leases::new(window));
        self
    }

    /// What its fetches and responses are using.
    pub fn leases(&self) -> &Arc<Leases> {
        &self.leases
    }

    /// The counters now.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CacheStats {
            manifest_fetches: get(&c.manifest_fetches),
            tag_checks: get(&c.tag_checks),
            blob_fetches: get(&c.blob_fetches),
            blob_bytes_fetched: get(&c.blob_bytes_fetched),
            blob_hits: get(&c.blob_hits),
            blob_mounts: get(&c.blob_mounts),
            joined_fetches: get(&c.joined_fetches),
            served_stale: get(&c.served_stale),
            digest_mismatches: get(&c.digest_mismatches),
            unavailable: get(&c.unavailable),
            upstream: self.client.stats(),
        }
    }

    /// The store it fills.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// When its images were last pulled.
    pub fn pulls(&self) -> &PullClock {
        &self.pulls
    }

    /// Whether its one-component names are `library/<name>` (Docker Hub's official images).
    pub fn library(&self) -> bool {
        self.client.config().library
    }

    /// Its tag clock.
    pub fn tags(&self) -> &TagClock {
        &self.tags
    }

    /// The pull scope of `repo` (what the token must allow).
    pub(super) fn scope(repo: &RepoName) -> String {
        format!("repository:{repo}:pull")
    }

    /// Runs `f` on the store on the blocking pool.
    pub(super) async fn store_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Storage) -> storage::Result<T> + Send + 'static,
    ) -> Result<T, FetchError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|error| FetchError::Store(error.to_string()))?
            .map_err(|error| match error {
                storage::StorageError::DigestInvalid { .. } => {
                    FetchError::DigestMismatch(error.to_string())
                }
                other => FetchError::Store(format!("{other:#}")),
            })
    }

    /// Makes `digest`, cached for another repository of this upstream, `repo`'s too if the
    /// upstream answers a `HEAD` of it in `repo` (with `repo`'s pull scope) with `200`: a
    /// base layer many images share is fetched once, and only ever served for a repository
    /// the upstream lets this mirror pull it from. Whether it was linked; on any other answer
    /// (or none) nothing is, and the request goes the usual way (a fetch, or its error).
    pub async fn share_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, FetchError> {
        let (r, d) = (repo.clone(), digest.clone());
        let from = self
            .store_call(move |s| {
                if s.blob_size(&r, &d, false)?.is_some() {
                    return Ok(None);
                }
                for other in s.repositories()? {
                    if other != r && s.blob_size(&other, &d, false)?.is_some() {
                        return Ok(Some(other));
                    }
                }
                Ok(None)
            })
            .await?;
        let Some(from) = from else {
            return Ok(false);
        };
        let path = format!("/v2/{repo}/blobs/{digest}");
        let asked = self
            .client
            .registry_request(Method::HEAD, &path, None, &Cache::scope(repo))
            .await;
        match asked {
            Ok(response) if response.status() == StatusCode::OK => {}
            Ok(_) | Err(_) => return Ok(false),
        }
        let (r, d) = (repo.clone(), digest.clone());
        let mounted = self
            .store_call(move |s| {
                // A mount renews the blob: the sweep must not run between its check and it.
                let _shared = s.gc_lock().read().unwrap_or_else(PoisonError::into_inner);
                s.mount_blob(&from, &r, &d)
            })
            .await?;
        if mounted {
            self.counters.blob_mounts.fetch_add(1, Ordering::Relaxed);
        }
        Ok(mounted)
    }

    /// Makes `repo`'s manifest `reference` present and, for a tag, current enough: cached
    /// manifests by digest are served as they are; a tag older than the TTL is checked with a
    /// `HEAD` and fetched again only if its digest moved. While the upstream cannot be asked,
    /// a cached tag is served as it is.
    pub async fn ensure_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(), FetchError> {
        let lock = {
            let mut locks = self
                .manifest_locks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks
                .entry((repo.clone(), reference.to_string()))
                .or_default()
                .clone()
        };
        let _one_at_a_time = lock.lock().await;
        match reference {
            Reference::Digest(digest) => {
                let (r, d) = (repo.clone(), digest.clone());
                if self
                    .store_call(move |s| s.manifest(&r, &d))
                    .await?
                    .is_some()
                {
                    return Ok(());
                }
                self.fetch_manifest(repo, reference, None).await
            }
            Reference::Tag(tag) => self.ensure_tag(repo, tag).await,
        }
    }

    async fn ensure_tag(&self, repo: &RepoName, tag: &Tag) -> Result<(), FetchError> {
        let (r, t) = (repo.clone(), tag.clone());
        let cached = self
            .store_call(move |s| {
                let Some(digest) = s.tag(&r, &t)? else {
                    return Ok(None);
                };
                Ok(s.manifest(&r, &digest)?.map(|_| digest))
            })
            .await?;
        let Some(cached) = cached else {
            return self
                .fetch_manifest(repo, &Reference::Tag(tag.clone()), None)
                .await;
        };
        if self.tags.is_fresh(repo, tag, Instant::now()) {
            return Ok(());
        }
        self.counters.tag_checks.fetch_add(1, Ordering::Relaxed);
        let path = format!("/v2/{repo}/manifests/{tag}");
        let head = tokio::time::timeout(
            TAG_CHECK_TIMEOUT,
            self.client
                .registry_request(Method::HEAD, &path, Some(ACCEPT), &Cache::scope(repo)),
        )
        .await
        .unwrap_or_else(|_| {
            Err(self.client.unreachable(format!(
                "no answer to the tag check within {TAG_CHECK_TIMEOUT:?}"
            )))
        });
        let response = match head {
            Ok(response) => response,
            Err(error) => {
                // Offline: the cached tag is what there is.
                tracing::warn!("mirror: serving {repo}:{tag} from the cache: {error}");
                self.counters.served_stale.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(FetchError::Upstream(UpstreamError::Status {
                    upstream: self.client.config().name.clone(),
                    status: StatusCode::NOT_FOUND,
                    detail: format!(" for {repo}:{tag}"),
                }))
            }
            status => {
                tracing::warn!(
                    "mirror: serving {repo}:{tag} from the cache: the upstream answered {status}"
                );
                self.counters.served_stale.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        let named = response
            .headers()
            .get("docker-content-digest")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<Digest>().ok());
        match named {
            Some(digest) if digest == cached => {
                self.tags.confirmed(repo, tag, Instant::now());
                Ok(())
            }
            Some(digest) => {
                // Moved: to a manifest already here (tagged back), or a new one.
                let (r, t, d) = (repo.clone(), tag.clone(), digest.clone());
                let retagged = self
                    .store_call(move |s| {
                        let Some(manifest) = s.manifest(&r, &d)? else {
                            return Ok(false);
                        };
                        s.put_manifest(&r, &manifest, Some(&t), None)?;
                        Ok(true)
                    })
                    .await?;
                if retagged {
                    self.tags.confirmed(repo, tag, Instant::now());
                    return Ok(());
                }
                self.fetch_manifest(repo, &Reference::Tag(tag.clone()), Some(digest))
                    .await
            }
            None => {
                self.fetch_manifest(repo, &Reference::Tag(tag.clone()), None)
                    .await
            }
        }
    }

    /// GETs `reference` from the upstream, checks its digest (the one asked for, the one the
    /// upstream names, or `expected` from a HEAD) and that it reads as a manifest, and stores
    /// it (tagged, for a tag).
    async fn fetch_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        expected: Option<Digest>,
    ) -> Result<(), FetchError> {
        self.counters
            .manifest_fetches
            .fetch_add(1, Ordering::Relaxed);
        let path = format!("/v2/{repo}/manifests/{reference}");
        let response = self
            .client
            .registry_request(Method::GET, &path, Some(ACCEPT), &Cache::scope(repo))
            .await?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(FetchError::Upstream(UpstreamError::Status {
                upstream: self.client.config().name.clone(),
                status,
                detail: format!(" for the manifest {repo}:{reference}"),
            }));
        }
        let headers = response.headers().clone();
        let limit = self.store.limits().max_manifest_bytes;
        let bytes = Limited::new(
            response.into_body(),
            usize::try_from(limit).unwrap_or(usize::MAX),
        )
        .collect()
        .await
        .map_err(|error| {
            FetchError::Upstream(self.client.unreachable(format!(
                "reading the manifest {repo}:{reference} (at most {limit} bytes): {error}"
            )))
        })?
        .to_bytes()
        .to_vec();
        let named = headers
            .get("docker-content-digest")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<Digest>().ok());
        let wanted = match reference {
            Reference::Digest(digest) => Some(digest.clone()),
            Reference::Tag(_) => expected.or(named),
        };
        let digest = match wanted {
            Some(wanted) => {
                let actual = Digest::of(wanted.algorithm(), &bytes);
                if actual != wanted {
                    self.counters
                        .digest_mismatches
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(FetchError::DigestMismatch(format!(
                        "the upstream's manifest {repo}:{reference} hashes to {actual}, not {wanted}"
                    )));
                }
                actual
            }
            None => Digest::sha256_of(&bytes),
        };
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let parsed = manifest::parse(content_type.as_deref(), &bytes).map_err(|error| {
            FetchError::Upstream(self.client.invalid(format!(
                "a manifest for {repo}:{reference} that does not read: {error}"
            )))
        })?;
        if ![OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST]
            .contains(&parsed.media_type.as_str())
        {
            return Err(FetchError::Upstream(self.client.invalid(format!(
                "a manifest of the unsupported type {}",
                parsed.media_type
            ))));
        }
        let manifest = Manifest {
            digest,
            media_type: parsed.media_type,
            bytes,
        };
        let tag = match reference {
            Reference::Tag(tag) => Some(tag.clone()),
            Reference::Digest(_) => None,
        };
        let (r, t) = (repo.clone(), tag.clone());
        self.store_call(move |s| {
            let _shared = s.gc_lock().read().unwrap_or_else(PoisonError::into_inner);
            s.put_manifest(&r, &manifest, t.as_ref(), None)
        })
        .await?;
        if let Some(tag) = tag {
            self.tags.confirmed(repo, &tag, Instant::now());
        }
        Ok(())
    }
}
