//! One upstream fetch per blob, however many clients ask at once, streamed to all of them as
//! it arrives.
//!
//! The first request for a blob that is neither cached nor in flight starts a fetch: a task of
//! its own (a client that goes away does not stop it) that writes the upstream's bytes into an
//! upload session of the store, which hashes them on the way, and publishes how far it got on
//! a `watch` channel. Every request for that blob, the first one included, reads the session's
//! data up to that point and sends it on; a request that arrives late starts from the
//! beginning of what is already there. The last byte is held back until the store has checked
//! the digest and committed the blob, so a client never sees a clean end of a body that did
//! not verify: on a mismatch (or any failure) every response ends with an error (hyper resets
//! the stream) and nothing is stored.
//!
//! The fetch and every response following it hold a [`Lease`] on the digest, so eviction
//! under `mirror.max_size` never sweeps a blob from under them (see [`super::lease`]).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use tokio::sync::watch;

use super::cache::Cache;
use super::error::FetchError;
use super::lease::Lease;
use super::upstream::UpstreamError;
use crate::registry::api::Body;
use crate::registry::names::{Digest, RepoName};
use crate::registry::storage::ReadSeek;

/// Bytes gathered from the upstream before one write to the store.
const WRITE_CHUNK: usize = 256 << 10;
/// Bytes per read when streaming out.
const READ_CHUNK: usize = 256 << 10;
/// How long the upstream may send nothing in the middle of a blob.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a fetch is.
#[derive(Debug, Clone)]
pub enum State {
    /// Asking the upstream.
    Connecting,
    /// Bytes arriving into upload session `id`: `have` of them so far, `size` if the upstream
    /// said.
    Streaming {
        id: String,
        size: Option<u64>,
        have: u64,
    },
    /// Verified and committed: the store serves it.
    Done { size: u64 },
    /// Failed; nothing was stored.
    Failed(FetchError),
}

/// The fetches in flight, by repository and digest.
#[derive(Default)]
pub struct Flights {
    running: Mutex<HashMap<(RepoName, Digest), watch::Receiver<State>>>,
}

/// What a blob request gets.
pub enum Joined {
    /// The store has it.
    Cached,
    /// A fetch is (now) running: follow it.
    Flight(watch::Receiver<State>),
}

/// The request for `repo`'s blob `digest`: served from the store, or joined to its fetch
/// (started here if none runs). The caller holds a lease on `digest` from before this call
/// until its response is made, so what is found here is still there then.
pub fn join(cache: &Arc<Cache>, repo: &RepoName, digest: &Digest) -> Result<Joined, FetchError> {
    let key = (repo.clone(), digest.clone());
    let mut running = cache
        .flights
        .running
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(state) = running.get(&key) {
        cache
            .counters
            .joined_fetches
            .fetch_add(1, Ordering::Relaxed);
        return Ok(Joined::Flight(state.clone()));
    }
    // Checked under the lock: a fetch commits before it leaves the map, so a blob is either
    // in the map or in the store here, never in neither between the two. And with the GC
    // lock shared: a sweep either ran before (the blob is gone, fetched again) or runs after
    // and sees the caller's lease.
    let cached = {
        let _shared = cache
            .store
            .gc_lock()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        cache
            .store
            .blob_size(repo, digest, false)
            .map_err(|error| FetchError::Store(format!("{error:#}")))?
    };
    if cached.is_some() {
        cache.counters.blob_hits.fetch_add(1, Ordering::Relaxed);
        return Ok(Joined::Cached);
    }
    let (tx, rx) = watch::channel(State::Connecting);
    running.insert(key.clone(), rx.clone());
    drop(running);
    cache.counters.blob_fetches.fetch_add(1, Ordering::Relaxed);
    // The fetch's own lease: from before the upload starts until after the commit, then
    // the pull window, so a layer just committed stays while its pull goes on.
    let lease = cache.leases.hold(digest);
    let cache = cache.clone();
    tokio::spawn(async move {
        let _lease = lease;
        let outcome = fetch(&cache, &key.0, &key.1, &tx).await;
        let state = match outcome {
            Ok(size) => State::Done { size },
            Err(error) => {
                tracing::warn!("mirror: fetching {}@{}: {error}", key.0, key.1);
                State::Failed(error)
            }
        };
        tx.send_replace(state);
        cache
            .flights
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    });
    Ok(Joined::Flight(rx))
}

/// The fetch: upstream GET, bytes into an upload session, the store's digest check, commit.
async fn fetch(
    cache: &Arc<Cache>,
    repo: &RepoName,
    digest: &Digest,
    tx: &watch::Sender<State>,
) -> Result<u64, FetchError> {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let response = cache
        .client
        .registry_request(Method::GET, &path, None, &Cache::scope(repo))
        .await?;
    let status = response.status();
    if status != StatusCode::OK {
        return Err(FetchError::Upstream(UpstreamError::Status {
            upstream: cache.client.config().name.clone(),
            status,
            detail: format!(" for the blob {repo}@{digest}"),
        }));
    }
    let limit = cache.store.limits().max_blob_bytes;
    let size = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(size) = size.filter(|size| *size > limit) {
        return Err(FetchError::Upstream(cache.client.invalid(format!(
            "a blob of {size} bytes, over the limit of {limit} (mirror.max_blob_size)"
        ))));
    }
    let r = repo.clone();
    let id = cache.store_call(move |s| s.start_upload(&r)).await?;
    let result = stream_into(cache, repo, &id, size, limit, response.into_body(), tx).await;
    let have = match result {
        Ok(have) => have,
        Err(error) => {
            let (r, i) = (repo.clone(), id.clone());
            let _ = cache.store_call(move |s| s.cancel_upload(&r, &i)).await;
            return Err(error);
        }
    };
    let (r, d) = (repo.clone(), digest.clone());
    let committed = cache
        .store_call(move |s| {
            let _shared = s.gc_lock().read().unwrap_or_else(PoisonError::into_inner);
            s.finish_upload(&r, &id, &d)
        })
        .await;
    match committed {
        Ok(_) => Ok(have),
        Err(FetchError::DigestMismatch(message)) => {
            cache
                .counters
                .digest_mismatches
                .fetch_add(1, Ordering::Relaxed);
            Err(FetchError::DigestMismatch(format!(
                "the upstream's blob {repo}@{digest}: {message}; nothing stored"
            )))
        }
        Err(error) => Err(error),
    }
}

/// Copies the upstream's body into upload `id`, publishing progress; the byte count.
async fn stream_into(
    cache: &Arc<Cache>,
    repo: &RepoName,
    id: &str,
    size: Option<u64>,
    limit: u64,
    mut body: hyper::body::Incoming,
    tx: &watch::Sender<State>,
) -> Result<u64, FetchError> {
    tx.send_replace(State::Streaming {
        id: id.to_owned(),
        size,
        have: 0,
    });
    let bound = size.unwrap_or(limit);
    let mut have = 0u64;
    let mut pending: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| {
                cache
                    .client
                    .unreachable(format!("the blob stalled after {have} bytes"))
            })?;
        let end = match frame {
            None => true,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if have + (pending.len() + data.len()) as u64 > bound {
                        return Err(FetchError::Upstream(cache.client.invalid(format!(
                            "more than the {bound} bytes it announced (or the limit)"
                        ))));
                    }
                    pending.extend_from_slice(&data);
                }
                false
            }
            Some(Err(error)) => {
                return Err(FetchError::Upstream(cache.client.unreachable(format!(
                    "the blob broke off after {have} bytes: {error}"
                ))))
            }
        };
        if pending.len() >= WRITE_CHUNK || (end && !pending.is_empty()) {
            let data = std::mem::replace(&mut pending, Vec::with_capacity(WRITE_CHUNK));
            let n = data.len() as u64;
            let (r, i) = (repo.clone(), id.to_owned());
            cache
                .store_call(move |s| s.append_upload(&r, &i, None, &data))
                .await?;
            have += n;
            cache
                .counters
                .blob_bytes_fetched
                .fetch_add(n, Ordering::Relaxed);
            tx.send_replace(State::Streaming {
                id: id.to_owned(),
                size,
                have,
            });
        }
        if end {
            break;
        }
    }
    if let Some(size) = size.filter(|size| *size != have) {
        return Err(FetchError::Upstream(cache.client.unreachable(format!(
            "the blob ended after {have} of its {size} bytes"
        ))));
    }
    Ok(have)
}

/// The response for a request following a fetch: waits for the upstream's answer, then
/// streams. `None`: the fetch is done and the store serves the blob.
pub async fn respond(
    cache: &Arc<Cache>,
    repo: &RepoName,
    digest: &Digest,
    mut state: watch::Receiver<State>,
) -> Result<Option<Response<Body>>, FetchError> {
    let first = state
        .wait_for(|s| !matches!(s, State::Connecting))
        .await
        .map(|s| s.clone())
        .map_err(|_| FetchError::Store("the fetch ended without a word".into()))?;
    let size = match first {
        State::Connecting | State::Done { .. } => return Ok(None),
        State::Failed(error) => return Err(error),
        State::Streaming { size, .. } => size,
    };
    let follower = Follower {
        _lease: cache.leases.hold(digest),
        cache: cache.clone(),
        repo: repo.clone(),
        digest: digest.clone(),
        state,
        offset: 0,
        blob: std::sync::Mutex::new(None),
        failed_reads: 0,
        finished: false,
    };
    let stream = futures::stream::unfold(follower, |mut follower| async move {
        if follower.finished {
            return None;
        }
        match follower.next().await {
            Ok(Some(bytes)) => Some((Ok(Frame::data(bytes)), follower)),
            Ok(None) => None,
            Err(error) => {
                follower.finished = true;
                Some((Err(error), follower))
            }
        }
    });
    let mut response = Response::new(StreamBody::new(stream).boxed());
    let headers = response.headers_mut();
    if let Some(size) = size {
        headers.insert(CONTENT_LENGTH, size.into());
    }
    headers.insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = digest.to_string().parse() {
        headers.insert("docker-content-digest", value);
    }
    Ok(Some(response))
}

/// One response's position in a fetch; its lease lives as long as the response body.
struct Follower {
    _lease: Lease,
    cache: Arc<Cache>,
    repo: RepoName,
    digest: Digest,
    state: watch::Receiver<State>,
    offset: u64,
    /// The committed blob, once the follower reads from it (in a mutex only so the response
    /// body is `Sync`; just `&mut self` reaches it).
    blob: std::sync::Mutex<Option<Box<dyn ReadSeek>>>,
    failed_reads: u32,
    finished: bool,
}

impl Follower {
    /// The next bytes; `None` at the verified end.
    async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        loop {
            let state = self.state.borrow_and_update().clone();
            match state {
                State::Failed(error) => return Err(std::io::Error::other(error.to_string())),
                State::Done { size } => {
                    if self.offset >= size {
                        return Ok(None);
                    }
                    let bytes = self.read_blob().await?;
                    if bytes.is_empty() {
                        return Err(std::io::Error::other("the committed blob is shorter"));
                    }
                    self.offset += bytes.len() as u64;
                    return Ok(Some(bytes));
                }
                // All but the last byte: the end comes only after the digest checked out.
                State::Streaming { id, have, .. } if self.offset + 1 < have => {
                    let len = (have - 1 - self.offset).min(READ_CHUNK as u64) as usize;
                    match self.read_upload(id, len).await {
                        Ok(bytes) if !bytes.is_empty() => {
                            self.offset += bytes.len() as u64;
                            return Ok(Some(bytes));
                        }
                        // Committed (renamed) between the state and the read, or a real
                        // failure: the next state tells.
                        _ => {
                            self.failed_reads += 1;
                            if self.failed_reads > 3 {
                                return Err(std::io::Error::other(
                                    "reading the blob as it arrives failed",
                                ));
                            }
                        }
                    }
                    if self.state.changed().await.is_err() {
                        return Err(std::io::Error::other("the fetch went away"));
                    }
                }
                _ => {
                    if self.state.changed().await.is_err() {
                        // The sender is gone: the final state is in the channel already.
                        let last = self.state.borrow().clone();
                        if matches!(last, State::Streaming { .. } | State::Connecting) {
                            return Err(std::io::Error::other("the fetch went away"));
                        }
                    }
                }
            }
        }
    }

    async fn read_upload(&self, id: String, len: usize) -> std::io::Result<Bytes> {
        let (repo, offset) = (self.repo.clone(), self.offset);
        let store = self.cache.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            let n = store
                .read_upload(&repo, &id, offset, &mut buf)
                .map_err(std::io::Error::other)?;
            buf.truncate(n);
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// The next chunk of the committed blob, from a reader opened once (on an object store
    /// each open is requests of its own) and kept between chunks.
    async fn read_blob(&mut self) -> std::io::Result<Bytes> {
        let (repo, digest, offset) = (self.repo.clone(), self.digest.clone(), self.offset);
        let store = self.cache.store.clone();
        let open = self
            .blob
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let (bytes, reader) = tokio::task::spawn_blocking(move || {
            let mut reader = match open {
                Some(reader) => reader,
                None => {
                    let blob = store
                        .open_blob(&repo, &digest)
                        .map_err(std::io::Error::other)?
                        .ok_or_else(|| std::io::Error::other("the committed blob is gone"))?;
                    let mut reader = blob.reader;
                    reader.seek(SeekFrom::Start(offset))?;
                    reader
                }
            };
            let mut buf = vec![0u8; READ_CHUNK];
            let n = reader.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((Bytes::from(buf), reader))
        })
        .await
        .map_err(std::io::Error::other)??;
        *self
            .blob
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reader);
        Ok(bytes)
    }
}
