//! The local read cache of the S3 backend: hot blobs kept on this gateway's disk, bounded,
//! least recently used out first, so a pull on the LAN does not wait on the object store.
//!
//! A blob gets in by being read: the first whole, front-to-back read of it from the bucket is
//! copied into a spool file as the client receives it (written and hashed by a thread of the
//! fill's own, so the pull never waits for the disk or the hash), and only when the last byte
//! is in and the digest checks out is it fsynced and renamed into place. A client that stops early or
//! asks for a range leaves nothing behind, so the cache never holds half a blob, and a crash
//! leaves at most a spool file, removed at the next start.
//!
//! The cache holds bytes only. Whether a repository may see a blob is still asked of the bucket
//! on every pull (its link and pointer), so a blob another gateway deleted or collected is
//! never served from here.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use crate::registry::names::Digest;
use crate::registry::storage::layout::random_id;
use crate::registry::storage::upload::Hasher;
use crate::registry::storage::ReadSeek;

/// Chunks a fill may fall behind the pull before it is given up (the API reads up to 1 MiB
/// at a time).
const FILL_QUEUE: usize = 32;

/// Spool files start with this; never a cached blob's name.
const SPOOL: &str = ".fill-";

/// The cache of one store.
pub struct ReadCache {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Cached blobs: size and last use (a counter, bigger is newer).
    entries: HashMap<String, (u64, u64)>,
    total: u64,
    clock: u64,
    /// Blobs being filled now (one fill each).
    filling: HashMap<String, ()>,
}

impl ReadCache {
    /// The cache in `dir` (made if missing), at most `max_bytes`. Keeps what an earlier run
    /// cached, oldest-modified first out, and removes spool files left by a crash.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Arc<ReadCache>> {
        fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata()?;
            if name.starts_with(SPOOL) || !meta.is_file() || !is_key(&name) {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            found.push((modified, name, meta.len()));
        }
        found.sort();
        let mut state = State::default();
        for (_, name, size) in found {
            state.clock += 1;
            state.total += size;
            state.entries.insert(name, (size, state.clock));
        }
        let cache = Arc::new(ReadCache {
            dir: dir.to_owned(),
            max_bytes,
            state: Mutex::new(state),
        });
        cache.evict(&mut cache.lock());
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached bytes of `digest`, if whole and `size` long.
    pub fn get(&self, digest: &Digest, size: u64) -> Option<File> {
        let key = key(digest);
        let mut state = self.lock();
        state.clock += 1;
        let clock = state.clock;
        let entry = state.entries.get_mut(&key)?;
        if entry.0 != size {
            return None;
        }
        entry.1 = clock;
        drop(state);
        match File::open(self.dir.join(&key)) {
            Ok(file) => Some(file),
            Err(_) => {
                // Removed behind our back: forget it.
                self.forget(digest);
                None
            }
        }
    }

    /// `source` (the blob from the bucket, at its start), copying it into the cache as it is
    /// read, when it fits and nobody fills it already; else `source` as it is.
    pub fn fill(
        self: &Arc<Self>,
        digest: &Digest,
        size: u64,
        source: Box<dyn ReadSeek>,
    ) -> Box<dyn ReadSeek> {
        let key = key(digest);
        if size > self.max_bytes {
            return source;
        }
        {
            let mut state = self.lock();
            if state.entries.contains_key(&key) || state.filling.contains_key(&key) {
                return source;
            }
            state.filling.insert(key.clone(), ());
        }
        let spool = random_id().map(|id| self.dir.join(format!("{SPOOL}{id}")));
        let created = spool.and_then(|spool| File::create(&spool).map(|file| (spool, file)));
        let (spool, file) = match created {
            Ok(created) => created,
            Err(error) => {
                tracing::warn!(
                    "the S3 read cache: a spool file in {}: {error}",
                    self.dir.display()
                );
                self.lock().filling.remove(&key);
                return source;
            }
        };
        let fill = Fill {
            key,
            digest: digest.clone(),
            size,
            spool,
            file,
            hasher: Hasher::new(digest.algorithm()),
            written: 0,
        };
        let (sender, chunks) = mpsc::sync_channel(FILL_QUEUE);
        let abandoned = Arc::new(AtomicBool::new(false));
        let cache = self.clone();
        let gave_up = abandoned.clone();
        let spawned = thread::Builder::new()
            .name("s3-cache-fill".into())
            .spawn(move || cache.write_fill(fill, chunks, &gave_up));
        if let Err(error) = spawned {
            tracing::warn!("the S3 read cache: starting a fill: {error}");
            return source;
        }
        Box::new(Filling {
            source,
            sender: Some(sender),
            sent: 0,
            size,
            abandoned,
        })
    }

    /// The fill's own thread: writes and hashes what the reader passes on, off the pull's
    /// path, and puts the blob in place when all of it came and the digest matches.
    fn write_fill(&self, mut fill: Fill, chunks: Receiver<Vec<u8>>, abandoned: &AtomicBool) {
        let mut ok = true;
        for chunk in chunks {
            if abandoned.load(Ordering::Relaxed) {
                ok = false;
                break;
            }
            if let Err(error) = fill.file.write_all(&chunk) {
                // A full disk costs the cache, never the pull.
                tracing::warn!("the S3 read cache: writing {}: {error}", fill.key);
                ok = false;
                break;
            }
            fill.hasher.update(&chunk);
            fill.written += chunk.len() as u64;
        }
        let whole = ok && !abandoned.load(Ordering::Relaxed) && fill.written == fill.size;
        let verified = whole && {
            let hasher = std::mem::replace(&mut fill.hasher, Hasher::new(fill.digest.algorithm()));
            hasher.finish() == fill.digest
        };
        if verified {
            if let Err(error) = self.commit(&fill) {
                tracing::warn!("the S3 read cache: keeping {}: {error}", fill.key);
                let _ = fs::remove_file(&fill.spool);
            }
        } else {
            if whole {
                tracing::warn!(
                    "the S3 read cache: {} read from the store does not match its digest; \
                     not cached",
                    fill.key
                );
            }
            let _ = fs::remove_file(&fill.spool);
        }
        self.lock().filling.remove(&fill.key);
    }

    /// Waits until no fill is in progress.
    #[cfg(test)]
    pub fn settle(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.lock().filling.is_empty() {
            assert!(std::time::Instant::now() < deadline, "a fill never ended");
            thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Drops `digest` from the cache (it was deleted from the store).
    pub fn forget(&self, digest: &Digest) {
        let key = key(digest);
        let mut state = self.lock();
        if let Some((size, _)) = state.entries.remove(&key) {
            state.total -= size;
            let _ = fs::remove_file(self.dir.join(&key));
        }
    }

    /// The bytes cached now.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.lock().total
    }

    /// Puts a finished fill in place and evicts down to the bound.
    fn commit(&self, fill: &Fill) -> io::Result<()> {
        fill.file.sync_all()?;
        fs::rename(&fill.spool, self.dir.join(&fill.key))?;
        let mut state = self.lock();
        state.clock += 1;
        let clock = state.clock;
        state.total += fill.size;
        state.entries.insert(fill.key.clone(), (fill.size, clock));
        self.evict(&mut state);
        Ok(())
    }

    /// Least recently used out until the total fits. A reader with the file open keeps it.
    fn evict(&self, state: &mut State) {
        while state.total > self.max_bytes {
            let Some(oldest) = state
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone())
            else {
                return;
            };
            if let Some((size, _)) = state.entries.remove(&oldest) {
                state.total -= size;
                let _ = fs::remove_file(self.dir.join(&oldest));
            }
        }
    }
}

/// The file name of `digest`'s blob.
fn key(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm().name(), digest.hex())
}

/// Whether `name` is one [`key`] makes.
fn is_key(name: &str) -> bool {
    let Some((algorithm, hex)) = name.split_once('-') else {
        return false;
    };
    ["sha256", "sha512"].contains(&algorithm)
        && !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One blob on its way into the cache.
struct Fill {
    key: String,
    digest: Digest,
    size: u64,
    spool: PathBuf,
    file: File,
    hasher: Hasher,
    written: u64,
}

/// The bucket's reader, passing a copy of what it reads to the fill's thread until the fill
/// ends. It never waits for that thread: a fill that falls behind is given up.
struct Filling {
    source: Box<dyn ReadSeek>,
    /// `None` once all was sent or the fill was given up.
    sender: Option<SyncSender<Vec<u8>>>,
    sent: u64,
    size: u64,
    abandoned: Arc<AtomicBool>,
}

impl Filling {
    fn give_up(&mut self) {
        if self.sender.take().is_some() {
            self.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

impl Read for Filling {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.source.read(buf) {
            Ok(n) => n,
            Err(error) => {
                self.give_up();
                return Err(error);
            }
        };
        if let Some(sender) = &self.sender {
            if n == 0 || sender.try_send(buf[..n].to_vec()).is_err() {
                self.give_up();
            } else {
                self.sent += n as u64;
                if self.sent == self.size {
                    // All of it: closing the channel tells the thread to check and commit.
                    self.sender = None;
                } else if self.sent > self.size {
                    self.give_up();
                }
            }
        }
        Ok(n)
    }
}

impl Seek for Filling {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        // A range is not the whole blob front to back: no fill (a seek to where the fill is
        // already keeps it, as the API's seek to 0 before a whole read does).
        let to = self.source.seek(position)?;
        if to != self.sent {
            self.give_up();
        }
        Ok(to)
    }
}

impl Drop for Filling {
    fn drop(&mut self) {
        self.give_up();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn blob(n: usize, seed: u8) -> (Digest, Vec<u8>) {
        let bytes: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        (Digest::sha256_of(&bytes), bytes)
    }

    fn read_all(mut reader: impl Read) -> Vec<u8> {
        let mut out = Vec::new();
        // Small reads, as a client's stream would.
        let mut buf = [0u8; 700];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_whole_read_fills_and_the_next_is_served_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ReadCache::open(dir.path(), 1 << 20).unwrap();
        let (digest, bytes) = blob(5000, 1);
        assert!(cache.get(&digest, 5000).is_none());
        let reader = cache.fill(&digest, 5000, Box::new(Cursor::new(bytes.clone())));
        assert_eq!(read_all(reader), bytes);
        cache.settle();
        assert_eq!(cache.bytes(), 5000);
        let cached = cache.get(&digest, 5000).expect("cached after a whole read");
        assert_eq!(read_all(cached), bytes);
        assert!(cache.get(&digest, 4999).is_none(), "another size is not it");
        // Kept across a restart.
        drop(cache);
        let cache = ReadCache::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(read_all(cache.get(&digest, 5000).unwrap()), bytes);
    }

    #[test]
    fn partial_ranged_or_wrong_reads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ReadCache::open(dir.path(), 1 << 20).unwrap();
        let (digest, bytes) = blob(5000, 2);

        let mut early = cache.fill(&digest, 5000, Box::new(Cursor::new(bytes.clone())));
        let mut buf = [0u8; 1000];
        early.read_exact(&mut buf).unwrap();
        drop(early);
        cache.settle();
        assert!(
            cache.get(&digest, 5000).is_none(),
            "a client that stopped early"
        );

        let mut ranged = cache.fill(&digest, 5000, Box::new(Cursor::new(bytes.clone())));
        ranged.seek(SeekFrom::Start(100)).unwrap();
        assert_eq!(read_all(ranged), bytes[100..]);
        cache.settle();
        assert!(cache.get(&digest, 5000).is_none(), "a range");

        let mut wrong = bytes.clone();
        wrong[10] ^= 1;
        let reader = cache.fill(&digest, 5000, Box::new(Cursor::new(wrong.clone())));
        assert_eq!(
            read_all(reader),
            wrong,
            "the pull goes on as the store sent it"
        );
        cache.settle();
        assert!(
            cache.get(&digest, 5000).is_none(),
            "bytes that do not match"
        );

        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "no spool files: {leftovers:?}");
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn bounded_least_recently_used_out_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ReadCache::open(dir.path(), 10_000).unwrap();
        let blobs: Vec<_> = (0..3).map(|i| blob(4000, 10 + i)).collect();
        for (digest, bytes) in &blobs[..2] {
            read_all(cache.fill(digest, 4000, Box::new(Cursor::new(bytes.clone()))));
            cache.settle();
        }
        // The first is used again, so the second is the least recent.
        assert!(cache.get(&blobs[0].0, 4000).is_some());
        let (digest, bytes) = &blobs[2];
        read_all(cache.fill(digest, 4000, Box::new(Cursor::new(bytes.clone()))));
        cache.settle();
        assert!(cache.bytes() <= 10_000);
        assert!(cache.get(&blobs[0].0, 4000).is_some());
        assert!(cache.get(&blobs[1].0, 4000).is_none(), "evicted");
        assert!(cache.get(&blobs[2].0, 4000).is_some());
        // Larger than the whole cache: passed through, never cached.
        let (big, big_bytes) = blob(20_000, 9);
        assert_eq!(
            read_all(cache.fill(&big, 20_000, Box::new(Cursor::new(big_bytes.clone())))),
            big_bytes
        );
        cache.settle();
        assert!(cache.get(&big, 20_000).is_none());
        // A restart under a smaller bound trims, and a crash's spool file goes.
        fs::write(dir.path().join(".fill-left"), b"half").unwrap();
        drop(cache);
        let cache = ReadCache::open(dir.path(), 5000).unwrap();
        assert!(cache.bytes() <= 5000);
        assert!(!dir.path().join(".fill-left").exists());
    }

    #[test]
    fn forget_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ReadCache::open(dir.path(), 1 << 20).unwrap();
        let (digest, bytes) = blob(3000, 4);
        read_all(cache.fill(&digest, 3000, Box::new(Cursor::new(bytes))));
        cache.settle();
        cache.forget(&digest);
        assert!(cache.get(&digest, 3000).is_none());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
