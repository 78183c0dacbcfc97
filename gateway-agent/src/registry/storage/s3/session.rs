//! Upload sessions of the S3 backend. The bytes go to a local spool file (the mirror reads a
//! layer back while it is still arriving, and sha512 is verified from it) and, once there are
//! more than [`PART`] of them, into a multipart upload of a `data/<id>` object while the client
//! is still sending. Nothing of it is visible before [`super::S3Storage`] writes the blob's
//! pointer, after the digest checked out.
//!
//! Sessions live in this process only: after a restart the client starts its push again
//! (`BLOB_UPLOAD_UNKNOWN`), and an abandoned multipart upload is aborted, or, after a crash,
//! left for the bucket's lifecycle rule (the README says how to set one).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use object_store::path::Path;
use object_store::WriteMultipart;
use sha2::{Digest as _, Sha256};

/// The multipart part size: above S3's 5 MiB minimum, small enough to keep little in memory.
pub const PART: usize = 8 << 20;
/// Parts in flight per upload.
pub const PARTS_IN_FLIGHT: usize = 4;

/// One upload in progress.
pub struct S3Session {
    /// The repository it was started in.
    pub repo: String,
    /// The local copy, `spool/<id>`.
    pub spool_path: PathBuf,
    pub spool: File,
    pub size: u64,
    pub sha256: Sha256,
    /// Where its bytes go in the bucket.
    pub data_key: Path,
    /// Bytes not yet handed to a multipart upload (at most [`PART`] of them).
    pub pending: Vec<u8>,
    /// Started once the blob outgrows one part.
    pub multipart: Option<WriteMultipart>,
    /// Last appended to (uploads untouched for `upload_expiry` are removed).
    pub touched: Instant,
}

impl S3Session {
    /// A new session spooling to `spool_path`.
    pub fn create(repo: &str, spool_path: PathBuf, data_key: Path) -> std::io::Result<Self> {
        let spool = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&spool_path)?;
        Ok(S3Session {
            repo: repo.to_owned(),
            spool_path,
            spool,
            size: 0,
            sha256: Sha256::new(),
            data_key,
            pending: Vec::new(),
            multipart: None,
            touched: Instant::now(),
        })
    }

    /// Spools and hashes `data`; what is now due for the bucket stays in `pending` for the
    /// caller to hand on.
    pub fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.spool.write_all(data)?;
        self.sha256.update(data);
        self.size += data.len() as u64;
        self.pending.extend_from_slice(data);
        self.touched = Instant::now();
        Ok(())
    }
}

impl Drop for S3Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spool_path);
    }
}
