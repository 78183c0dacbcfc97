//! Where the registry keeps what it serves, behind one small interface so an object-store
//! backend can follow without touching the API: blobs by digest (visible only in the
//! repositories that link them), upload sessions, manifests, tags and referrers.
//!
//! The interface is synchronous: the filesystem backend does blocking I/O, and the API calls it
//! on tokio's blocking pool. Every method takes names and digests already checked against the
//! grammar ([`super::names`]), so a backend may use them as path components or object keys.

pub mod fs;
mod layout;
pub mod s3;
mod upload;

use std::io::{Read, Seek};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::names::{Digest, RepoName, Tag};

pub use fs::FsStorage;
pub use s3::{S3Settings, S3Storage};

/// What can go wrong in the store that a client must hear about (everything else is
/// [`StorageError::Io`], a 500).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The content does not hash to the digest it was given under.
    #[error("the content's digest is {actual}, not {expected}")]
    DigestInvalid { expected: Digest, actual: Digest },
    /// A blob, upload, manifest or size over the configured limit.
    #[error("{what} is over the limit of {limit} bytes")]
    TooLarge { what: &'static str, limit: u64 },
    /// No such upload session (or not in this repository, or expired).
    #[error("no such upload")]
    UploadUnknown,
    /// Another writer (another gateway on a shared store) continued the upload meanwhile.
    #[error("another gateway wrote to this upload meanwhile; start the push again")]
    UploadConflict,
    /// A chunk that does not start where the upload ends.
    #[error("the chunk starts at {given}, the upload is {have} bytes long")]
    RangeInvalid { given: u64, have: u64 },
    /// Anything else (disk full, permissions): the client gets a 500.
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

impl From<std::io::Error> for StorageError {
    fn from(error: std::io::Error) -> Self {
        StorageError::Io(error.into())
    }
}

/// A store result.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// An open blob: its size and a reader positioned at its start.
pub struct Blob {
    /// Its length in bytes.
    pub size: u64,
    /// Its bytes.
    pub reader: Box<dyn ReadSeek>,
}

/// A reader that can skip (for `Range`).
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// A stored manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Its digest (sha256 unless it was pushed by a sha512 digest).
    pub digest: Digest,
    /// The media type it was pushed with (its `Content-Type`).
    pub media_type: String,
    /// Its exact bytes.
    pub bytes: Vec<u8>,
}

/// One entry of the referrers list: a manifest whose `subject` is another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Referrer {
    /// The referring manifest's digest.
    pub digest: String,
    /// Its media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its `artifactType`, else its config's media type.
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Its annotations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// An upload session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadState {
    /// Bytes received so far.
    pub size: u64,
}

/// A blob as GC sees it.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
    /// When it was last written, mounted or asked about (the grace period counts from here).
    pub touched: SystemTime,
}

/// The sizes the store enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest blob (and upload session) accepted.
    pub max_blob_bytes: u64,
    /// Largest manifest accepted.
    pub max_manifest_bytes: u64,
    /// Upload sessions untouched for this long are removed.
    pub upload_expiry: Duration,
}

impl Default for Limits {
    /// 10 GiB blobs, 4 MiB manifests (what distribution accepts), uploads expire after a day.
    fn default() -> Self {
        Limits {
            max_blob_bytes: 10 << 30,
            max_manifest_bytes: 4 << 20,
            upload_expiry: Duration::from_secs(24 * 3600),
        }
    }
}

/// A registry's storage.
pub trait Storage: Send + Sync + 'static {
    /// The limits it enforces.
    fn limits(&self) -> Limits;

    // Blobs.

    /// The size of `digest` if `repo` links it. `touch` renews its grace period (a client
    /// that asks whether a blob exists is about to reference it).
    fn blob_size(&self, repo: &RepoName, digest: &Digest, touch: bool) -> Result<Option<u64>>;
    /// `digest`'s bytes, if `repo` links it.
    fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Blob>>;
    /// Links `digest` into `to` if `from` links it (cross-repository mount); whether it did.
    fn mount_blob(&self, from: &RepoName, to: &RepoName, digest: &Digest) -> Result<bool>;
    /// Unlinks `digest` from `repo` (the content stays until GC); whether it was linked.
    fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    // Uploads.

    /// A new upload session in `repo`; its id.
    fn start_upload(&self, repo: &RepoName) -> Result<String>;
    /// The session's state.
    fn upload_state(&self, repo: &RepoName, id: &str) -> Result<UploadState>;
    /// Appends `data` at `offset` (which must be the current size, when given).
    fn append_upload(
        &self,
        repo: &RepoName,
        id: &str,
        offset: Option<u64>,
        data: &[u8],
    ) -> Result<UploadState>;
    /// Makes what the session received durable before the client is told (the end of a
    /// PATCH); its state. A store that writes as it receives has nothing more to do.
    fn save_upload(&self, repo: &RepoName, id: &str) -> Result<UploadState> {
        self.upload_state(repo, id)
    }
    /// Verifies the session's content against `digest`, commits the blob and links it into
    /// `repo`; the session is gone afterwards either way (on the filesystem, but for an I/O
    /// error).
    fn finish_upload(&self, repo: &RepoName, id: &str, digest: &Digest) -> Result<u64>;
    /// Drops the session and its data.
    fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()>;
    /// Reads the session's data at `offset` into `buf` while it is still being written (the
    /// mirror streams a layer to its clients as it arrives); how many bytes.
    fn read_upload(&self, repo: &RepoName, id: &str, offset: u64, buf: &mut [u8]) -> Result<usize>;
    /// Removes sessions untouched for longer than the expiry; how many.
    fn expire_uploads(&self) -> Result<usize>;

    // Manifests and tags.

    /// Stores `bytes` (already parsed and checked) as `digest` in `repo`, tags it if `tag`,
    /// and lists it as a referrer of `subject`.
    fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &Manifest,
        tag: Option<&Tag>,
        subject: Option<(&Digest, &Referrer)>,
    ) -> Result<()>;
    /// The manifest `digest` in `repo`.
    fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Manifest>>;
    /// What `tag` points at in `repo`.
    fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>>;
    /// Removes manifest `digest` from `repo`, with the tags that point at it; whether it was
    /// there.
    fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;
    /// Removes `tag` from `repo`; whether it was there.
    fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool>;
    /// `repo`'s tags, sorted; `None`: no such repository.
    fn tags(&self, repo: &RepoName) -> Result<Option<Vec<Tag>>>;
    /// Every repository, sorted.
    fn repositories(&self) -> Result<Vec<RepoName>>;
    /// The manifests in `repo` whose subject is `subject`.
    fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Referrer>>;
    /// Every manifest digest `repo` holds.
    fn manifests(&self, repo: &RepoName) -> Result<Vec<Digest>>;

    // Garbage collection.

    /// Every stored blob (manifests included).
    fn stored_blobs(&self) -> Result<Vec<StoredBlob>>;
    /// Deletes `digest`'s content and every link to it.
    fn remove_blob(&self, digest: &Digest) -> Result<()>;
    /// [`Storage::remove_blob`] unless the blob was renewed after `touched` (what
    /// [`Storage::stored_blobs`] said): whether it went. A store other processes write to (S3,
    /// shared by several gateways) checks again right before deleting; one only this process
    /// writes needs not, since its GC lock already keeps renewals out of the sweep.
    fn remove_blob_untouched(&self, digest: &Digest, touched: SystemTime) -> Result<bool> {
        let _ = touched;
        self.remove_blob(digest)?;
        Ok(true)
    }
    /// Held shared by what renews a blob (a commit, a mount, a HEAD) and by a manifest push
    /// between checking its references and storing itself; exclusively by GC's sweep, so a
    /// sweep never sees half of either. (Backends do not take it themselves: the API does.)
    fn gc_lock(&self) -> &std::sync::RwLock<()>;
}
