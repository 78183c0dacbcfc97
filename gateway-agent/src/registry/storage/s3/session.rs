//! Upload sessions of the S3 backend, kept in the bucket so that a push survives a restart of
//! the agent and may go on through another gateway on the same bucket.
//!
//! The bytes go to a local spool file (the mirror reads a layer back while it is still
//! arriving, and sha512 is verified from it) and, in parts of [`PART`] bytes, into a multipart
//! upload of `data/<id>` while the client is still sending. What is left over at the end of a
//! request (fewer than [`PART`] bytes, which S3 will not take as a part) goes to a chunk
//! object. Each write of the session's state is a new object `state-<seq>`, created with
//! `If-None-Match: *`, so of two writers continuing from the same state one fails before it
//! has written anything: a writer creates the next state (claims the session) before it sends
//! a part. Nothing of an upload is visible before [`super::S3Storage`] writes the blob's
//! pointer, after the digest checked out.
//!
//! A session that every byte passed through knows its sha256 already. One loaded from the
//! bucket (after a restart, or started on another gateway) does not: its blob is read back
//! from the bucket and hashed before it is committed.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use object_store::multipart::PartId;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;

/// The multipart part size: above S3's 5 MiB minimum, small enough to keep little in memory.
pub const PART: usize = 8 << 20;
/// Parts in flight per upload.
pub const PARTS_IN_FLIGHT: usize = 4;

/// A session's state as the bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The repository it was started in.
    pub repo: String,
    /// Bytes received and stored: the parts' first, the chunks' after them.
    pub size: u64,
    /// The multipart upload of `data/<id>`, once started.
    pub multipart: Option<String>,
    /// The finished parts' ids (ETags), in order; each holds [`PART`] bytes.
    pub parts: Vec<String>,
    /// The chunk objects holding the bytes after the parts, in order.
    pub chunks: Vec<Chunk>,
    /// Being committed: no more writes.
    #[serde(default)]
    pub finishing: bool,
}

/// A chunk object: `chunk-<seq>` holds the blob's bytes `start..start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub seq: u64,
    pub start: u64,
    pub len: u64,
}

impl Chunk {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

impl Saved {
    /// Whether the parts and chunks account for `size` bytes exactly, with no gap, and the
    /// chunks for less than a part (a writer cuts a part as soon as it has one).
    pub fn is_consistent(&self) -> bool {
        let tail = self.parts.len() as u64 * PART as u64;
        if self.size.saturating_sub(tail) >= PART as u64 {
            return false;
        }
        let mut at = tail;
        for chunk in &self.chunks {
            if chunk.start > at || chunk.end() <= at {
                return false;
            }
            at = chunk.end();
        }
        at == self.size && (self.parts.is_empty() || self.multipart.is_some())
    }
}

/// One upload in progress, as this process holds it.
pub struct S3Session {
    /// The repository it was started in.
    pub repo: String,
    /// The local copy, `spool/<id>`, of the bytes from `base` on.
    pub spool_path: PathBuf,
    pub spool: File,
    /// Where the spool starts in the blob: 0, or the size a loaded session had.
    pub base: u64,
    pub size: u64,
    /// The running hash, when every byte passed through here.
    pub sha256: Option<Sha256>,
    /// Where its bytes go in the bucket.
    pub data_key: Path,
    /// The bytes after the last part handed on.
    pub pending: Vec<u8>,
    /// The multipart upload, once the blob outgrew one part.
    pub multipart: Option<String>,
    /// Finished parts, in order.
    pub parts: Vec<PartId>,
    /// Parts being sent, in order after `parts`.
    pub in_flight: VecDeque<JoinHandle<object_store::Result<PartId>>>,
    /// The chunk objects holding the start of `pending`.
    pub chunks: Vec<Chunk>,
    /// The newest state this session wrote or read.
    pub seq: u64,
    /// Whether the bucket holds any state of it (a session nobody was told of, a monolithic
    /// push or a mirror fetch that fits in one part, needs none).
    pub recorded: bool,
    /// Whether this process wrote that state for the request now running (a writer claims
    /// the session before it sends anything).
    pub claimed: bool,
    /// Bytes the newest state accounts for.
    pub saved: u64,
    /// Last appended to (uploads untouched for `upload_expiry` are removed).
    pub touched: Instant,
}

impl S3Session {
    /// A new, empty session spooling to `spool_path`.
    pub fn create(repo: &str, spool_path: PathBuf, data_key: Path) -> std::io::Result<Self> {
        let mut session = Self::resume(
            Saved {
                repo: repo.to_owned(),
                size: 0,
                multipart: None,
                parts: Vec::new(),
                chunks: Vec::new(),
                finishing: false,
            },
            0,
            Vec::new(),
            spool_path,
            data_key,
        )?;
        session.sha256 = Some(Sha256::new());
        session.recorded = false;
        // Its requests write on without claiming it: no one else knows of it yet.
        session.claimed = true;
        Ok(session)
    }

    /// A session loaded from its state `seq`, with `tail` the bytes its chunks hold after
    /// its parts.
    pub fn resume(
        saved: Saved,
        seq: u64,
        tail: Vec<u8>,
        spool_path: PathBuf,
        data_key: Path,
    ) -> std::io::Result<Self> {
        let spool = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&spool_path)?;
        Ok(S3Session {
            repo: saved.repo,
            spool_path,
            spool,
            base: saved.size,
            size: saved.size,
            sha256: None,
            data_key,
            pending: tail,
            multipart: saved.multipart,
            parts: saved
                .parts
                .into_iter()
                .map(|content_id| PartId { content_id })
                .collect(),
            in_flight: VecDeque::new(),
            chunks: saved.chunks,
            seq,
            recorded: true,
            claimed: false,
            saved: saved.size,
            touched: Instant::now(),
        })
    }

    /// Spools and hashes `data`; what is due for the bucket stays in `pending` for the caller
    /// to hand on.
    pub fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.spool.write_all(data)?;
        if let Some(sha256) = &mut self.sha256 {
            sha256.update(data);
        }
        self.size += data.len() as u64;
        self.pending.extend_from_slice(data);
        self.touched = Instant::now();
        Ok(())
    }

    /// The number of the next state it writes.
    pub fn next_seq(&self) -> u64 {
        if self.recorded {
            self.seq + 1
        } else {
            0
        }
    }

    /// Where `pending` starts in the blob.
    pub fn tail_start(&self) -> u64 {
        (self.parts.len() + self.in_flight.len()) as u64 * PART as u64
    }

    /// The state to write once the parts in flight are done: what is stored, with the chunks
    /// that still hold bytes after the parts (the others are returned, for deleting).
    pub fn next_state(&mut self, finishing: bool) -> (Saved, Vec<Chunk>) {
        debug_assert!(self.in_flight.is_empty());
        let tail = self.tail_start();
        let (keep, gone): (Vec<Chunk>, Vec<Chunk>) =
            self.chunks.iter().partition(|chunk| chunk.end() > tail);
        self.chunks = keep;
        let size = self
            .chunks
            .last()
            .map_or(tail, |chunk| chunk.end().max(tail));
        let saved = Saved {
            repo: self.repo.clone(),
            size,
            multipart: self.multipart.clone(),
            parts: self.parts.iter().map(|p| p.content_id.clone()).collect(),
            chunks: self.chunks.clone(),
            finishing,
        };
        (saved, gone)
    }
}

impl Drop for S3Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spool_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(parts: usize, chunks: &[(u64, u64)], size: u64) -> Saved {
        Saved {
            repo: "r".into(),
            size,
            multipart: (parts > 0).then(|| "m".into()),
            parts: (0..parts).map(|i| i.to_string()).collect(),
            chunks: chunks
                .iter()
                .enumerate()
                .map(|(i, &(start, len))| Chunk {
                    seq: i as u64,
                    start,
                    len,
                })
                .collect(),
            finishing: false,
        }
    }

    #[test]
    fn a_state_must_account_for_every_byte_once() {
        let part = PART as u64;
        assert!(saved(0, &[], 0).is_consistent());
        assert!(saved(0, &[(0, 5), (5, 7)], 12).is_consistent());
        // A chunk may start inside the last part (its front went into the part).
        assert!(saved(1, &[(part - 3, 10)], part + 7).is_consistent());
        assert!(saved(2, &[], 2 * part).is_consistent());
        // A gap, a size that is not the end, a chunk wholly inside the parts.
        assert!(!saved(0, &[(1, 5)], 6).is_consistent());
        assert!(!saved(0, &[(0, 5)], 6).is_consistent());
        assert!(!saved(1, &[(0, 5)], part).is_consistent());
        // Chunks holding a whole part's worth (a loader would keep it all in memory).
        assert!(!saved(0, &[(0, part)], part).is_consistent());
        // Parts with no multipart upload to hold them.
        let mut orphan = saved(1, &[], part);
        orphan.multipart = None;
        assert!(!orphan.is_consistent());
    }
}
