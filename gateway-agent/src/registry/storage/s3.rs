//! The S3 backend (`registry.storage.backend = "s3"`): the same store in a bucket that several
//! gateways may share, through the `object_store` crate.
//!
//! A blob is committed by one conditional put: its bytes go first to `data/<id>` (multipart
//! while the client is still sending, [`session`]), then its pointer `blobs/<alg>/<hex>` is
//! created with `If-None-Match: *`. Until that pointer exists nobody sees the blob; when two
//! gateways commit the same content at once one pointer wins and the loser deletes its copy.
//! Manifests are blobs too; a tag is one small object, replaced whole, so racing tag updates
//! leave one winner and both manifests. The key layout is in [`keys`].
//!
//! The [`Storage`] interface is synchronous (the API calls it on tokio's blocking pool): each
//! call runs its requests on this backend's own small runtime and waits.

mod blocking;
mod cache;
mod connector;
mod keys;
mod reader;
mod session;
mod uploads;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, PutMode, PutOptions, PutPayload,
    RetryConfig,
};
use serde::{Deserialize, Serialize};

use self::blocking::wait_on;
use self::cache::ReadCache;
pub use self::connector::{StorageConnector, StorageTarget, TargetError, UplinkBinding};
use self::keys::Keys;
use self::reader::ObjectReader;
use self::session::S3Session;
use super::layout::{is_id, random_id};
use super::{
    Blob, Limits, Manifest, Referrer, Result, Storage, StorageError, StoredBlob, UploadState,
};
use crate::registry::names::{Digest, RepoName, Tag};

/// A failing request is tried again for a few seconds (the store restarting, the uplink's
/// lease not there yet at start), not for object_store's default three minutes: a wrong CA or
/// an unreachable store should stop a start, or fail a pull, while someone is still looking.
const RETRY: RetryConfig = RetryConfig {
    backoff: BackoffConfig {
        init_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(5),
        base: 2.0,
    },
    max_retries: 6,
    retry_timeout: Duration::from_secs(30),
};

/// Where the bucket is and how to sign for it.
#[derive(Clone)]
pub struct S3Settings {
    /// `http://` or `https://` host and port (path-style requests).
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Key prefix inside the bucket (`""`: its root).
    pub prefix: String,
    /// PEM certificates to trust for an `https` endpoint, instead of the system's.
    pub ca: Option<Vec<u8>>,
    /// The store's address when the endpoint names a host (`registry.storage.address`).
    pub address: Option<std::net::IpAddr>,
    /// The uplink the connector leaves from (the agent's); `None`: the host routes.
    pub uplink: Option<UplinkBinding>,
    /// The local read cache's directory and bound (`None`: no cache).
    pub cache: Option<(PathBuf, u64)>,
    /// A local directory for upload spool files (emptied at open).
    pub spool: PathBuf,
}

impl std::fmt::Debug for S3Settings {
    // The secret stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A blob's pointer: which data object holds it, and its size.
#[derive(Debug, Serialize, Deserialize)]
struct Pointer {
    id: String,
    size: u64,
}

type Slot = Arc<Mutex<Option<S3Session>>>;

/// A store in an S3 bucket.
pub struct S3Storage {
    store: Arc<dyn ObjectStore>,
    /// The same store, for multipart uploads a session resumes by their id.
    multipart: Arc<dyn MultipartStore>,
    keys: Keys,
    // Dropped without waiting in `Drop` (the last reference may go in async code).
    runtime: Option<tokio::runtime::Runtime>,
    limits: Limits,
    spool: PathBuf,
    sessions: Mutex<HashMap<String, Slot>>,
    gc: RwLock<()>,
    /// Blob sizes read from pointers (a pointer never changes while it exists), so `du` and
    /// GC, which list every blob, do not read every pointer each time.
    sizes: Mutex<HashMap<Digest, u64>>,
    /// Hot blobs on this host's disk.
    cache: Option<Arc<ReadCache>>,
    /// For messages.
    describe: String,
}

fn io(error: impl std::fmt::Display) -> StorageError {
    StorageError::Io(anyhow!("the S3 store: {error}"))
}

/// `error` and every error under it (a TLS or connection failure is several levels down).
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let more = source.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        next = source.source();
    }
    text
}

/// Shuts its runtime down in the background when dropped (unless taken).
struct RuntimeGuard(Option<tokio::runtime::Runtime>);

impl RuntimeGuard {
    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(runtime) => runtime.handle().clone(),
            None => tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

fn not_found(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::NotFound { .. })
}

impl S3Storage {
    /// Connects to the bucket and lists its prefix once, so a wrong endpoint, bucket or key
    /// fails here, at start, with the store's own answer.
    pub fn open(settings: S3Settings, limits: Limits) -> anyhow::Result<S3Storage> {
        let describe = format!(
            "{}/{}",
            settings.endpoint.trim_end_matches('/'),
            settings.bucket
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-store")
            .enable_all()
            .build()
            .context("starting the S3 store's runtime")?;
        // A failed open may be in async code (a service's start): the runtime must go without
        // waiting for its threads there.
        let mut runtime = RuntimeGuard(Some(runtime));
        let handle = runtime.handle();
        // A streamed layer may take as long as its client: no limit on a whole request (the
        // connector limits connecting).
        let client = ClientOptions::new()
            .with_timeout_disabled()
            .with_allow_http(settings.endpoint.starts_with("http://"));
        let target = StorageTarget::parse(&settings.endpoint, settings.address)
            .map_err(anyhow::Error::msg)?;
        let connector = StorageConnector::new(target, settings.uplink.clone(), settings.ca.clone());
        let store = AmazonS3Builder::new()
            .with_endpoint(&settings.endpoint)
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key)
            .with_virtual_hosted_style_request(false)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_client_options(client)
            .with_http_connector(connector)
            .with_retry(RETRY)
            .build()
            .with_context(|| format!("configuring the S3 store {describe}"))?;
        let store = Arc::new(store);
        let multipart: Arc<dyn MultipartStore> = store.clone();
        let store: Arc<dyn ObjectStore> = store;
        std::fs::create_dir_all(&settings.spool)
            .with_context(|| format!("creating {}", settings.spool.display()))?;
        // Sessions live in the bucket: spool files are only a process's local copies.
        for entry in std::fs::read_dir(&settings.spool)
            .with_context(|| format!("reading {}", settings.spool.display()))?
        {
            let path = entry?.path();
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        let cache = match &settings.cache {
            Some((dir, bytes)) => Some(
                ReadCache::open(dir, *bytes)
                    .with_context(|| format!("opening the read cache {}", dir.display()))?,
            ),
            None => None,
        };
        let keys = Keys::new(&settings.prefix);
        let probe = store.clone();
        let root = keys.pointers();
        wait_on(&handle, async move {
            probe.list_with_delimiter(Some(&root)).await
        })
        .ok_or_else(|| anyhow!("the S3 store's runtime stopped"))?
        .map_err(|error| {
            anyhow!(
                "the S3 store {describe} refused a listing: {}",
                with_sources(&error)
            )
        })?;
        Ok(S3Storage {
            store,
            multipart,
            keys,
            runtime: runtime.0.take(),
            limits,
            spool: settings.spool,
            sessions: Mutex::new(HashMap::new()),
            gc: RwLock::new(()),
            sizes: Mutex::new(HashMap::new()),
            cache,
            describe,
        })
    }

    /// Where it is, for messages (`endpoint/bucket`).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match &self.runtime {
            Some(runtime) => runtime.handle().clone(),
            // Only between Drop's take and the end of Drop.
            None => tokio::runtime::Handle::current(),
        }
    }

    /// Runs the request `make` builds on the backend's runtime and waits for it.
    fn run<T, F>(&self, make: impl FnOnce(Arc<dyn ObjectStore>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = object_store::Result<T>> + Send + 'static,
    {
        wait_on(&self.handle(), make(self.store.clone()))
            .ok_or_else(|| io("its runtime stopped"))?
            .map_err(io)
    }

    fn get(&self, key: &Path) -> Result<Option<Bytes>> {
        let key = key.clone();
        self.run(|store| async move {
            match store.get(&key).await {
                Ok(result) => result.bytes().await.map(Some),
                Err(error) if not_found(&error) => Ok(None),
                Err(error) => Err(error),
            }
        })
    }

    fn exists(&self, key: &Path) -> Result<bool> {
        let key = key.clone();
        self.run(|store| async move {
            match store.head(&key).await {
                Ok(_) => Ok(true),
                Err(error) if not_found(&error) => Ok(false),
                Err(error) => Err(error),
            }
        })
    }

    fn put(&self, key: &Path, bytes: impl Into<Bytes>) -> Result<()> {
        let (key, payload) = (key.clone(), PutPayload::from(bytes.into()));
        self.run(|store| async move { store.put(&key, payload).await.map(|_| ()) })
    }

    /// Creates `key` unless it exists; whether this call created it.
    fn create(&self, key: &Path, bytes: impl Into<Bytes>) -> Result<bool> {
        let (key, payload) = (key.clone(), PutPayload::from(bytes.into()));
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.run(|store| async move {
            match store.put_opts(&key, payload, options).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(error) => Err(error),
            }
        })
    }

    /// Deletes `key`; whether it was there.
    fn remove(&self, key: &Path) -> Result<bool> {
        if !self.exists(key)? {
            return Ok(false);
        }
        let key = key.clone();
        self.run(|store| async move {
            match store.delete(&key).await {
                Ok(()) => Ok(true),
                Err(error) if not_found(&error) => Ok(false),
                Err(error) => Err(error),
            }
        })
    }

    fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        let prefix = prefix.clone();
        self.run(|store| async move { store.list(Some(&prefix)).try_collect::<Vec<_>>().await })
    }

    fn pointer(&self, digest: &Digest) -> Result<Option<Pointer>> {
        let Some(bytes) = self.get(&self.keys.pointer(digest))? else {
            return Ok(None);
        };
        let pointer: Pointer = serde_json::from_slice(&bytes)
            .map_err(|error| io(format!("the pointer of {digest} is unreadable: {error}")))?;
        if !is_id(&pointer.id) {
            return Err(io(format!("the pointer of {digest} names no data object")));
        }
        Ok(Some(pointer))
    }

    /// Rewrites `digest`'s pointer as it is, so its modification time (GC's grace period)
    /// starts again.
    fn renew(&self, digest: &Digest) -> Result<Option<Pointer>> {
        let Some(pointer) = self.pointer(digest)? else {
            return Ok(None);
        };
        let bytes = serde_json::to_vec(&pointer).map_err(io)?;
        self.put(&self.keys.pointer(digest), bytes)?;
        Ok(Some(pointer))
    }

    /// Commits `digest` as the data object `id` of `size` bytes (already written); when
    /// another commit got there first, its copy stays and `id` goes.
    fn commit(&self, digest: &Digest, id: &str, size: u64) -> Result<()> {
        let pointer = serde_json::to_vec(&Pointer {
            id: id.to_owned(),
            size,
        })
        .map_err(io)?;
        if !self.create(&self.keys.pointer(digest), pointer)? {
            self.remove(&self.keys.data(id))?;
            self.renew(digest)?;
        }
        Ok(())
    }

    /// Stores small `bytes` (a manifest) as the blob `digest`, unless it is there.
    fn put_small_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        if self.renew(digest)?.is_some() {
            return Ok(());
        }
        let id = random_id()?;
        self.put(&self.keys.data(&id), Bytes::copy_from_slice(bytes))?;
        self.commit(digest, &id, bytes.len() as u64)
    }

    /// Every key under `repositories/` that links `digest`.
    fn links_to(&self, digest: &Digest) -> Result<Vec<Path>> {
        let tail = format!("/_layers/{}/{}", digest.algorithm().name(), digest.hex());
        Ok(self
            .list(&self.keys.repositories())?
            .into_iter()
            .map(|meta| meta.location)
            .filter(|key| key.as_ref().ends_with(&tail))
            .collect())
    }

    /// Deletes data objects no pointer names that are older than the upload expiry: a crash
    /// between a data object's upload and its pointer, or between a sweep's two deletes.
    fn sweep_orphans(&self) -> Result<usize> {
        let cutoff = SystemTime::now() - self.limits.upload_expiry;
        let old: Vec<ObjectMeta> = self
            .list(&self.keys.all_data())?
            .into_iter()
            .filter(|meta| SystemTime::from(meta.last_modified) < cutoff)
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let mut named = BTreeSet::new();
        for meta in self.list(&self.keys.pointers())? {
            if let Some(digest) = Keys::digest_of(meta.location.as_ref()) {
                if let Some(pointer) = self.pointer(&digest)? {
                    named.insert(pointer.id);
                }
            }
        }
        let mut swept = 0;
        for meta in old {
            let id = meta.location.filename().unwrap_or_default().to_owned();
            if !named.contains(&id) && self.remove(&meta.location)? {
                swept += 1;
            }
        }
        Ok(swept)
    }
}

#[cfg(test)]
impl S3Storage {
    /// Whether session `id` has started its multipart upload.
    fn session_has_multipart(&self, id: &str) -> bool {
        self.slot(id).is_some_and(|slot| {
            slot.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_some_and(|s| s.multipart.is_some())
        })
    }
}

impl Drop for S3Storage {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Storage for S3Storage {
    fn limits(&self) -> Limits {
        self.limits
    }

    fn blob_size(&self, repo: &RepoName, digest: &Digest, touch: bool) -> Result<Option<u64>> {
        if !self.exists(&self.keys.link(repo, digest))? {
            return Ok(None);
        }
        let pointer = if touch {
            self.renew(digest)?
        } else {
            self.pointer(digest)?
        };
        Ok(pointer.map(|p| p.size))
    }

    fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Blob>> {
        if !self.exists(&self.keys.link(repo, digest))? {
            return Ok(None);
        }
        // The link and the pointer are always asked of the bucket: the cache has bytes, not
        // the right to see them.
        let Some(pointer) = self.pointer(digest)? else {
            return Ok(None);
        };
        if let Some(file) = self
            .cache
            .as_ref()
            .and_then(|c| c.get(digest, pointer.size))
        {
            return Ok(Some(Blob {
                size: pointer.size,
                reader: Box::new(file),
            }));
        }
        let reader: Box<dyn super::ReadSeek> = Box::new(ObjectReader::new(
            self.store.clone(),
            self.handle(),
            self.keys.data(&pointer.id),
            pointer.size,
        ));
        let reader = match &self.cache {
            Some(cache) => cache.fill(digest, pointer.size, reader),
            None => reader,
        };
        Ok(Some(Blob {
            size: pointer.size,
            reader,
        }))
    }

    fn mount_blob(&self, from: &RepoName, to: &RepoName, digest: &Digest) -> Result<bool> {
        if self.blob_size(from, digest, true)?.is_none() {
            return Ok(false);
        }
        self.put(&self.keys.link(to, digest), Bytes::new())?;
        Ok(true)
    }

    fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.remove(&self.keys.link(repo, digest))
    }

    fn start_upload(&self, repo: &RepoName) -> Result<String> {
        self.start_session(repo)
    }

    fn upload_state(&self, repo: &RepoName, id: &str) -> Result<UploadState> {
        self.session_state(repo, id)
    }

    fn append_upload(
        &self,
        repo: &RepoName,
        id: &str,
        offset: Option<u64>,
        data: &[u8],
    ) -> Result<UploadState> {
        self.append_session(repo, id, offset, data)
    }

    fn finish_upload(&self, repo: &RepoName, id: &str, digest: &Digest) -> Result<u64> {
        self.finish_session(repo, id, digest)
    }

    fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        self.cancel_session(repo, id)
    }

    fn read_upload(&self, repo: &RepoName, id: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.read_session(repo, id, offset, buf)
    }

    fn expire_uploads(&self) -> Result<usize> {
        let expired = self.expire_sessions()?;
        let swept = self.sweep_orphans()?;
        if swept > 0 {
            tracing::info!("the S3 store: removed {swept} data object(s) no blob names");
        }
        Ok(expired)
    }

    fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &Manifest,
        tag: Option<&Tag>,
        subject: Option<(&Digest, &Referrer)>,
    ) -> Result<()> {
        self.put_small_blob(&manifest.digest, &manifest.bytes)?;
        self.put(
            &self.keys.manifest(repo, &manifest.digest),
            manifest.media_type.clone().into_bytes(),
        )?;
        if let Some((subject, referrer)) = subject {
            let json = serde_json::to_vec(referrer).context("encoding a referrer")?;
            self.put(&self.keys.referrer(repo, subject, &manifest.digest), json)?;
        }
        if let Some(tag) = tag {
            self.put(
                &self.keys.tag(repo, tag),
                manifest.digest.to_string().into_bytes(),
            )?;
        }
        Ok(())
    }

    fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Manifest>> {
        let Some(media_type) = self.get(&self.keys.manifest(repo, digest))? else {
            return Ok(None);
        };
        let Some(pointer) = self.pointer(digest)? else {
            return Ok(None);
        };
        let Some(bytes) = self.get(&self.keys.data(&pointer.id))? else {
            return Ok(None);
        };
        Ok(Some(Manifest {
            digest: digest.clone(),
            media_type: String::from_utf8_lossy(&media_type).into_owned(),
            bytes: bytes.to_vec(),
        }))
    }

    fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        Ok(self
            .get(&self.keys.tag(repo, tag))?
            .and_then(|bytes| String::from_utf8_lossy(&bytes).trim().parse().ok()))
    }

    fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let existed = self.remove(&self.keys.manifest(repo, digest))?;
        for tag in self.tags(repo)?.unwrap_or_default() {
            if self.tag(repo, &tag)?.as_ref() == Some(digest) {
                self.delete_tag(repo, &tag)?;
            }
        }
        let entry = format!("/{}-{}", digest.algorithm().name(), digest.hex());
        for meta in self.list(&self.keys.all_referrers(repo))? {
            if meta.location.as_ref().ends_with(&entry) {
                self.remove(&meta.location)?;
            }
        }
        Ok(existed)
    }

    fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        self.remove(&self.keys.tag(repo, tag))
    }

    fn tags(&self, repo: &RepoName) -> Result<Option<Vec<Tag>>> {
        let mut tags: Vec<Tag> = self
            .list(&self.keys.tags(repo))?
            .into_iter()
            .filter_map(|meta| meta.location.filename().and_then(|n| n.parse().ok()))
            .collect();
        if tags.is_empty() {
            let known = self.repositories()?.iter().any(|r| r == repo);
            if !known {
                return Ok(None);
            }
        }
        tags.sort();
        Ok(Some(tags))
    }

    fn repositories(&self) -> Result<Vec<RepoName>> {
        let repos: BTreeSet<RepoName> = self
            .list(&self.keys.repositories())?
            .into_iter()
            .filter_map(|meta| self.keys.repo_of(meta.location.as_ref()))
            .collect();
        Ok(repos.into_iter().collect())
    }

    fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Referrer>> {
        let mut out = Vec::new();
        for meta in self.list(&self.keys.referrers(repo, subject))? {
            let Some(bytes) = self.get(&meta.location)? else {
                continue;
            };
            match serde_json::from_slice::<Referrer>(&bytes) {
                // A referrer whose manifest was deleted since is not listed.
                Ok(referrer) => {
                    let still_there = match referrer.digest.parse::<Digest>() {
                        Ok(digest) => self.exists(&self.keys.manifest(repo, &digest))?,
                        Err(_) => false,
                    };
                    if still_there {
                        out.push(referrer);
                    }
                }
                Err(error) => tracing::warn!(%error, "unreadable referrer entry {}", meta.location),
            }
        }
        Ok(out)
    }

    fn manifests(&self, repo: &RepoName) -> Result<Vec<Digest>> {
        Ok(self
            .list(&self.keys.manifests(repo))?
            .into_iter()
            .filter_map(|meta| Keys::digest_of(meta.location.as_ref()))
            .collect())
    }

    fn stored_blobs(&self) -> Result<Vec<StoredBlob>> {
        let mut out = Vec::new();
        for meta in self.list(&self.keys.pointers())? {
            let Some(digest) = Keys::digest_of(meta.location.as_ref()) else {
                continue;
            };
            let known = self
                .sizes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&digest)
                .copied();
            let size = match known {
                Some(size) => size,
                None => {
                    // Swept by someone else meanwhile: not there.
                    let Some(pointer) = self.pointer(&digest)? else {
                        continue;
                    };
                    self.sizes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(digest.clone(), pointer.size);
                    pointer.size
                }
            };
            out.push(StoredBlob {
                digest,
                size,
                touched: SystemTime::from(meta.last_modified),
            });
        }
        Ok(out)
    }

    fn remove_blob(&self, digest: &Digest) -> Result<()> {
        self.sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(digest);
        if let Some(cache) = &self.cache {
            cache.forget(digest);
        }
        for link in self.links_to(digest)? {
            self.remove(&link)?;
        }
        let pointer = self.pointer(digest)?;
        self.remove(&self.keys.pointer(digest))?;
        if let Some(pointer) = pointer {
            self.remove(&self.keys.data(&pointer.id))?;
        }
        Ok(())
    }

    fn remove_blob_untouched(&self, digest: &Digest, touched: SystemTime) -> Result<bool> {
        // Another gateway may have renewed it (a HEAD, a mount, a manifest that needs it)
        // since the listing: then it stays. What remains is the moment between this check and
        // the delete (docs/ARCHITECTURE.md).
        let key = self.keys.pointer(digest);
        let meta = self.run(|store| async move {
            match store.head(&key).await {
                Ok(meta) => Ok(Some(meta)),
                Err(error) if not_found(&error) => Ok(None),
                Err(error) => Err(error),
            }
        })?;
        match meta {
            None => Ok(false),
            // A HEAD's time has whole seconds, a listing's may have milliseconds: renewed
            // means clearly later (GC's grace period is far longer than that second).
            Some(meta)
                if SystemTime::from(meta.last_modified) > touched + Duration::from_secs(1) =>
            {
                Ok(false)
            }
            Some(_) => {
                self.remove_blob(digest)?;
                Ok(true)
            }
        }
    }

    fn gc_lock(&self) -> &RwLock<()> {
        &self.gc
    }
}

#[cfg(test)]
mod tests;
