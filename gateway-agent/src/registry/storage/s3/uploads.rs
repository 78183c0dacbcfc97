//! The S3 backend's upload sessions over the bucket: the protocol [`super::session`] describes.
//!
//! A request that writes a session first creates its next state (the claim), then sends
//! parts, then, at the end of a PATCH, stores what is left over in a chunk object and creates
//! the state after that. Creating a state fails when another writer created it first: then
//! this process's copy of the session is stale and is dropped, and the client hears of the
//! conflict. A session this process does not hold (it restarted, or the upload began on
//! another gateway) is loaded from its newest state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use sha2::Digest as _;

use super::blocking::wait_on;
use super::session::{Chunk, S3Session, Saved, PART, PARTS_IN_FLIGHT};
use super::{io, not_found, S3Storage, Slot};
use crate::registry::names::{Algorithm, Digest, RepoName};
use crate::registry::storage::layout::{is_id, random_id};
use crate::registry::storage::upload::{file_digest, Hasher};
use crate::registry::storage::{Result, StorageError, UploadState};

impl S3Storage {
    pub(super) fn slot(&self, id: &str) -> Option<Slot> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn forget(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// The slot of session `id`: this process's, else loaded from the bucket.
    fn session_slot(&self, repo: &RepoName, id: &str) -> Result<Slot> {
        if let Some(slot) = self.slot(id) {
            return Ok(slot);
        }
        let session = self.load(repo, id)?;
        // Two loads at once: the first one in the table wins, the other's spool goes with it.
        Ok(self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Some(session))))
            .clone())
    }

    /// The newest state of session `id` in the bucket, and its sequence number.
    fn newest_state(&self, id: &str) -> Result<Option<(u64, Saved)>> {
        let Some(seq) = self.newest_seq(id)? else {
            return Ok(None);
        };
        let Some(bytes) = self.get(&self.keys.upload_state(id, seq))? else {
            return Ok(None);
        };
        let saved: Saved = serde_json::from_slice(&bytes)
            .map_err(|error| io(format!("the state of upload {id} is unreadable: {error}")))?;
        Ok(Some((seq, saved)))
    }

    /// The sequence number of session `id`'s newest state in the bucket.
    fn newest_seq(&self, id: &str) -> Result<Option<u64>> {
        Ok(self
            .list(&self.keys.upload(id))?
            .iter()
            .filter_map(|meta| self.keys.upload_of(meta.location.as_ref()))
            .filter_map(|(of, seq)| seq.filter(|_| of == id))
            .max())
    }

    /// Session `id` of `repo` as the bucket holds it.
    fn load(&self, repo: &RepoName, id: &str) -> Result<S3Session> {
        if !is_id(id) {
            return Err(StorageError::UploadUnknown);
        }
        let Some((seq, saved)) = self.newest_state(id)? else {
            return Err(StorageError::UploadUnknown);
        };
        if saved.repo != repo.as_str() || saved.finishing {
            return Err(StorageError::UploadUnknown);
        }
        if !saved.is_consistent() {
            return Err(io(format!(
                "the state of upload {id} does not account for its bytes"
            )));
        }
        let tail_start = saved.parts.len() as u64 * PART as u64;
        let mut tail = Vec::with_capacity((saved.size - tail_start) as usize);
        for chunk in &saved.chunks {
            let bytes = self
                .get(&self.keys.upload_chunk(id, chunk.seq))?
                .ok_or_else(|| io(format!("upload {id} lost its chunk {}", chunk.seq)))?;
            if bytes.len() as u64 != chunk.len {
                return Err(io(format!(
                    "upload {id}'s chunk {} is cut short",
                    chunk.seq
                )));
            }
            let skip = tail_start.saturating_sub(chunk.start) as usize;
            tail.extend_from_slice(&bytes[skip..]);
        }
        // A spool of its own: two loads at once must not share one.
        let spool = self.spool.join(format!("{id}-{}", random_id()?));
        Ok(S3Session::resume(
            saved,
            seq,
            tail,
            spool,
            self.keys.data(id),
        )?)
    }

    /// Creates state `seq` of session `id`, unless another writer did.
    fn write_state(&self, id: &str, seq: u64, saved: &Saved) -> Result<()> {
        let json = serde_json::to_vec(saved).map_err(io)?;
        if !self.create(&self.keys.upload_state(id, seq), json)? {
            return Err(StorageError::UploadConflict);
        }
        Ok(())
    }

    /// Waits for `session`'s parts in flight until at most `keep` are.
    fn settle_parts(&self, session: &mut S3Session, keep: usize) -> Result<()> {
        while session.in_flight.len() > keep {
            let Some(part) = session.in_flight.pop_front() else {
                break;
            };
            let part = wait_on(&self.handle(), part)
                .ok_or_else(|| io("its runtime stopped"))?
                .map_err(io)?
                .map_err(io)?;
            session.parts.push(part);
        }
        Ok(())
    }

    /// Writes `session`'s next state (after its parts in flight are done); with `chunk`, the
    /// bytes no part or chunk holds yet go to a chunk object first.
    fn record(
        &self,
        id: &str,
        session: &mut S3Session,
        chunk: bool,
        finishing: bool,
    ) -> Result<()> {
        self.settle_parts(session, 0)?;
        let tail = session.tail_start();
        let next = session.next_seq();
        let (mut saved, gone) = session.next_state(finishing);
        if chunk && session.size > saved.size {
            let from = (saved.size - tail) as usize;
            let bytes = Bytes::copy_from_slice(&session.pending[from..]);
            if !self.create(&self.keys.upload_chunk(id, next), bytes)? {
                return Err(StorageError::UploadConflict);
            }
            let new = Chunk {
                seq: next,
                start: saved.size,
                len: session.size - saved.size,
            };
            session.chunks.push(new);
            saved.chunks.push(new);
            saved.size = session.size;
        }
        self.write_state(id, next, &saved)?;
        session.seq = next;
        session.recorded = true;
        session.saved = saved.size;
        session.claimed = true;
        for chunk in gone {
            let key = self.keys.upload_chunk(id, chunk.seq);
            if let Err(error) = self.remove(&key) {
                tracing::warn!("the S3 store: removing {key}: {error}");
            }
        }
        Ok(())
    }

    /// Hands whole parts of what `session` has pending to its multipart upload (starting it,
    /// and recording it in the bucket, once the blob outgrows one part); waits while too many
    /// parts are in flight.
    fn feed(&self, id: &str, session: &mut S3Session) -> Result<()> {
        while session.pending.len() >= PART {
            let upload = match &session.multipart {
                Some(upload) => upload.clone(),
                None => {
                    let key = session.data_key.clone();
                    let multipart = self.multipart.clone();
                    let upload = wait_on(&self.handle(), async move {
                        multipart.create_multipart(&key).await
                    })
                    .ok_or_else(|| io("its runtime stopped"))?
                    .map_err(io)?;
                    session.multipart = Some(upload.clone());
                    // So an abandoned session's upload can be aborted by whoever expires it.
                    self.record(id, session, false, false)?;
                    upload
                }
            };
            let rest = session.pending.split_off(PART);
            let part = std::mem::replace(&mut session.pending, rest);
            let index = session.parts.len() + session.in_flight.len();
            let (multipart, key) = (self.multipart.clone(), session.data_key.clone());
            let payload = PutPayload::from(part);
            session.in_flight.push_back(
                self.handle()
                    .spawn(async move { multipart.put_part(&key, &upload, index, payload).await }),
            );
            self.settle_parts(session, PARTS_IN_FLIGHT)?;
        }
        Ok(())
    }

    /// Aborts session `id`'s multipart upload and removes `objects`, what the bucket holds of
    /// it (`None`: whatever is listed under it).
    fn discard(&self, id: &str, multipart: Option<String>, objects: Option<Vec<Path>>) {
        if let Some(upload) = multipart {
            let (store, key) = (self.multipart.clone(), self.keys.data(id));
            let aborted = wait_on(&self.handle(), async move {
                store.abort_multipart(&key, &upload).await
            });
            if let Some(Err(error)) = aborted {
                tracing::warn!("the S3 store: aborting the upload of {id}: {error}");
            }
        }
        let objects = match objects {
            Some(objects) => Ok(objects),
            None => self
                .list(&self.keys.upload(id))
                .map(|metas| metas.into_iter().map(|meta| meta.location).collect()),
        };
        if let Err(error) = objects.and_then(|objects| self.delete_all(objects)) {
            tracing::warn!("the S3 store: removing upload {id}: {error}");
        }
    }

    /// The objects `session` knows it has in the bucket: every state (none is deleted before
    /// the end) and the chunks still named. Leftovers of a writer that died mid-request are
    /// found by the expiry's listing.
    fn session_objects(&self, id: &str, session: &S3Session) -> Vec<Path> {
        if !session.recorded {
            return Vec::new();
        }
        let states = (0..=session.seq).map(|seq| self.keys.upload_state(id, seq));
        let chunks = session
            .chunks
            .iter()
            .map(|chunk| self.keys.upload_chunk(id, chunk.seq));
        states.chain(chunks).collect()
    }

    /// Deletes `objects`, in as few requests as the store allows.
    fn delete_all(&self, objects: Vec<Path>) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        self.run(|store| async move {
            let keys = futures::stream::iter(objects.into_iter().map(Ok)).boxed();
            let mut deleted = store.delete_stream(keys);
            while let Some(result) = deleted.next().await {
                match result {
                    Err(error) if !not_found(&error) => return Err(error),
                    _ => {}
                }
            }
            Ok(())
        })
    }

    /// `key`'s content under `algorithm`, read back from the bucket.
    fn hash_object(&self, key: &Path, algorithm: Algorithm) -> Result<Digest> {
        let key = key.clone();
        self.run(move |store: Arc<dyn ObjectStore>| async move {
            let mut stream = store.get(&key).await?.into_stream();
            let mut hasher = Hasher::new(algorithm);
            while let Some(bytes) = stream.try_next().await? {
                hasher.update(&bytes);
            }
            Ok(hasher.finish())
        })
    }

    /// The digest of a session every byte passed through (else `None`: read it back).
    fn known_digest(session: &S3Session, algorithm: Algorithm) -> Result<Option<Digest>> {
        let Some(sha256) = &session.sha256 else {
            return Ok(None);
        };
        Ok(Some(match algorithm {
            Algorithm::Sha256 => Digest::from_hash(algorithm, &sha256.clone().finalize()),
            Algorithm::Sha512 => file_digest(&session.spool_path, algorithm)?,
        }))
    }

    /// Writes the rest of `session` and completes its data object.
    fn assemble(&self, session: &mut S3Session) -> Result<()> {
        let pending = Bytes::from(std::mem::take(&mut session.pending));
        match session.multipart.clone() {
            Some(upload) => {
                self.settle_parts(session, 0)?;
                let (store, key) = (self.multipart.clone(), session.data_key.clone());
                let mut parts = std::mem::take(&mut session.parts);
                let index = parts.len();
                self.run(|_| async move {
                    if !pending.is_empty() {
                        parts.push(store.put_part(&key, &upload, index, pending.into()).await?);
                    }
                    store
                        .complete_multipart(&key, &upload, parts)
                        .await
                        .map(|_| ())
                })?;
                session.multipart = None;
            }
            None => self.put(&session.data_key, pending)?,
        }
        Ok(())
    }

    /// Commits `session` as `digest` in `repo` (its state already claimed as finishing).
    fn commit_upload(
        &self,
        id: &str,
        session: &mut S3Session,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<u64> {
        let size = session.size;
        let known = Self::known_digest(session, digest.algorithm())?;
        if let Some(actual) = &known {
            if actual != digest {
                return Err(StorageError::DigestInvalid {
                    expected: digest.clone(),
                    actual: actual.clone(),
                });
            }
            // Content already here (another push, another gateway): link that.
            if self.renew(digest)?.is_some() {
                self.put(&self.keys.link(repo, digest), Bytes::new())?;
                return Ok(size);
            }
        }
        self.assemble(session)?;
        if known.is_none() {
            // Bytes that did not all pass through here: what the bucket holds decides.
            let actual = self.hash_object(&session.data_key, digest.algorithm())?;
            if &actual != digest {
                self.remove(&session.data_key)?;
                return Err(StorageError::DigestInvalid {
                    expected: digest.clone(),
                    actual,
                });
            }
        }
        self.commit(digest, id, size)?;
        self.put(&self.keys.link(repo, digest), Bytes::new())?;
        Ok(size)
    }

    /// Takes session `id` of `repo` out of the table (loading it if this process does not
    /// hold it).
    fn take_session(&self, repo: &RepoName, id: &str) -> Result<S3Session> {
        let slot = self.session_slot(repo, id)?;
        let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.as_ref().is_none_or(|s| s.repo != repo.as_str()) {
            return Err(StorageError::UploadUnknown);
        }
        self.forget(id);
        guard.take().ok_or(StorageError::UploadUnknown)
    }

    /// Runs `f` on session `id` of `repo`; a failure that leaves this process's copy in
    /// doubt (the bucket's, or a conflict) drops the copy: the bucket's state stays.
    fn with_session<T>(
        &self,
        repo: &RepoName,
        id: &str,
        f: impl FnOnce(&mut S3Session) -> Result<T>,
    ) -> Result<T> {
        let slot = self.session_slot(repo, id)?;
        let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        let result = match guard.as_mut() {
            Some(session) if session.repo == repo.as_str() => f(session),
            _ => return Err(StorageError::UploadUnknown),
        };
        if matches!(
            result,
            Err(StorageError::Io(_) | StorageError::UploadConflict)
        ) {
            guard.take();
            self.forget(id);
        }
        result
    }

    pub(super) fn start_session(&self, repo: &RepoName) -> Result<String> {
        let id = random_id()?;
        // In the bucket from its first save on (the API saves before it names the session).
        let session = S3Session::create(repo.as_str(), self.spool.join(&id), self.keys.data(&id))?;
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), Arc::new(Mutex::new(Some(session))));
        Ok(id)
    }

    /// The session's state, after making what it received durable (the client is told next).
    /// A copy another writer made stale is dropped and the bucket's state reported instead.
    pub(super) fn session_state(&self, repo: &RepoName, id: &str) -> Result<UploadState> {
        let state = || {
            self.with_session(repo, id, |session| {
                if session.size > session.saved || !session.recorded {
                    self.record(id, session, true, false)?;
                } else if self.newest_seq(id)? != Some(session.seq) {
                    return Err(StorageError::UploadConflict);
                }
                // The next request claims it again.
                session.claimed = false;
                Ok(UploadState { size: session.size })
            })
        };
        match state() {
            Err(StorageError::UploadConflict) => state(),
            other => other,
        }
    }

    pub(super) fn append_session(
        &self,
        repo: &RepoName,
        id: &str,
        offset: Option<u64>,
        data: &[u8],
    ) -> Result<UploadState> {
        let limit = self.limits.max_blob_bytes;
        self.with_session(repo, id, |session| {
            if let Some(given) = offset {
                if given != session.size {
                    return Err(StorageError::RangeInvalid {
                        given,
                        have: session.size,
                    });
                }
            }
            if session.size + data.len() as u64 > limit {
                return Err(StorageError::TooLarge {
                    what: "the blob",
                    limit,
                });
            }
            if !session.claimed {
                self.record(id, session, false, false)?;
            }
            session.append(data)?;
            self.feed(id, session)?;
            Ok(UploadState { size: session.size })
        })
    }

    pub(super) fn finish_session(&self, repo: &RepoName, id: &str, digest: &Digest) -> Result<u64> {
        let mut session = self.take_session(repo, id)?;
        // From here on no other writer touches it, nor loads it (unless no one could).
        if session.recorded {
            self.record(id, &mut session, false, true)?;
        }
        let result = self.commit_upload(id, &mut session, repo, digest);
        match &result {
            // Another writer holds it now.
            Err(StorageError::UploadConflict) => {}
            _ if !session.recorded => {}
            _ => {
                let objects = self.session_objects(id, &session);
                self.discard(id, session.multipart.take(), Some(objects));
            }
        }
        result
    }

    pub(super) fn cancel_session(&self, repo: &RepoName, id: &str) -> Result<()> {
        let mut session = self.take_session(repo, id)?;
        let objects = self.session_objects(id, &session);
        self.discard(id, session.multipart.take(), Some(objects));
        Ok(())
    }

    pub(super) fn read_session(
        &self,
        repo: &RepoName,
        id: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        use std::os::unix::fs::FileExt;
        // Only a session this process holds: the mirror reads its own fetches.
        let slot = self.slot(id).ok_or(StorageError::UploadUnknown)?;
        let guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(session) if session.repo == repo.as_str() => {
                let Some(at) = offset.checked_sub(session.base) else {
                    return Err(io(format!(
                        "upload {id} is held here from byte {} on",
                        session.base
                    )));
                };
                Ok(session.spool.read_at(buf, at)?)
            }
            _ => Err(StorageError::UploadUnknown),
        }
    }

    /// Removes sessions untouched for longer than the expiry: this process's, and any in the
    /// bucket whose newest state is that old (a crashed gateway's, an abandoned push's).
    pub(super) fn expire_sessions(&self) -> Result<usize> {
        let expiry = self.limits.upload_expiry;
        let held: Vec<(String, Slot)> = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, slot)| (id.clone(), slot.clone()))
            .collect();
        let mut expired = 0;
        for (id, slot) in held {
            let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if guard.as_ref().is_some_and(|s| s.touched.elapsed() > expiry) {
                if let Some(mut session) = guard.take() {
                    self.discard(&id, session.multipart.take(), None);
                }
                self.forget(&id);
                expired += 1;
            }
        }
        let cutoff = SystemTime::now() - expiry;
        let mut newest: HashMap<String, SystemTime> = HashMap::new();
        for meta in self.list(&self.keys.uploads())? {
            if let Some((id, _)) = self.keys.upload_of(meta.location.as_ref()) {
                let at = SystemTime::from(meta.last_modified);
                let entry = newest.entry(id).or_insert(at);
                *entry = (*entry).max(at);
            }
        }
        for (id, at) in newest {
            if at >= cutoff || !is_id(&id) || self.slot(&id).is_some() {
                continue;
            }
            let multipart = match self.newest_state(&id) {
                Ok(state) => state.and_then(|(_, saved)| saved.multipart),
                Err(error) => {
                    tracing::warn!("the S3 store: expiring upload {id}: {error}");
                    None
                }
            };
            self.discard(&id, multipart, None);
            expired += 1;
        }
        Ok(expired)
    }
}
