//! Blob endpoints: GET/HEAD (with `Range`), DELETE, and uploads (POST, monolithic PUT,
//! chunked PATCH with `Content-Range`, status GET, cancel DELETE, cross-repository mount).

use std::io::{Read, Seek, SeekFrom};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use hyper::{Request, Response, StatusCode};
use oci_spec::distribution::ErrorCode;

use super::error::ApiError;
use super::route::param;
use super::{bump, empty, set, Api, Body, Caller};
use crate::registry::names::{Digest, RepoName};
use crate::registry::storage::{StorageError, UploadState};

/// Bytes gathered from a request body before one write to the store.
const WRITE_CHUNK: usize = 1 << 20;
/// Bytes per read when streaming a blob out.
const READ_CHUNK: usize = 256 << 10;

pub(super) async fn get(
    api: &Api,
    name: RepoName,
    digest: Digest,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let head = request.method() == hyper::Method::HEAD;
    if head {
        // A HEAD is how a push asks whether it can skip a layer: renew its GC grace.
        let (n, d) = (name.clone(), digest.clone());
        let size = api
            .renewing_call(move |store| store.blob_size(&n, &d, true))
            .await?
            .ok_or_else(|| unknown_blob(&digest))?;
        let mut response = empty(StatusCode::OK);
        blob_headers(&mut response, &digest, size);
        return Ok(response);
    }
    let range = request
        .headers()
        .get(RANGE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let (n, d) = (name.clone(), digest.clone());
    let blob = api
        .store_call(move |store| store.open_blob(&n, &d))
        .await?
        .ok_or_else(|| unknown_blob(&digest))?;
    let size = blob.size;
    let (start, end) = match &range {
        None => (0, size),
        Some(range) => parse_range(range, size).ok_or_else(|| {
            ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BlobUnknown,
                format!("the range {range:?} is not within the blob's {size} bytes"),
            )
        })?,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let mut reader = blob.reader;
    let counted = api.counters.clone();
    tokio::task::spawn_blocking(move || {
        let mut left = end - start;
        if let Err(error) = reader.seek(SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(error));
            return;
        }
        let mut buf = vec![0u8; READ_CHUNK];
        while left > 0 {
            let want = usize::try_from(left).map_or(READ_CHUNK, |left| left.min(READ_CHUNK));
            match reader.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => {
                    left -= n as u64;
                    bump(&counted.bytes_out, n as u64);
                    let frame = Frame::data(Bytes::copy_from_slice(&buf[..n]));
                    if tx.blocking_send(Ok(frame)).is_err() {
                        return; // The client went away.
                    }
                }
                Err(error) => {
                    let _ = tx.blocking_send(Err(error));
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed());
    blob_headers(&mut response, &digest, end - start);
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        set(
            &mut response,
            CONTENT_RANGE,
            &format!("bytes {start}-{}/{size}", end.saturating_sub(1)),
        );
    }
    Ok(response)
}

fn blob_headers(response: &mut Response<Body>, digest: &Digest, len: u64) {
    set(response, CONTENT_LENGTH, &len.to_string());
    set(response, CONTENT_TYPE, "application/octet-stream");
    set(response, "docker-content-digest", &digest.to_string());
    set(response, "accept-ranges", "bytes");
}

fn unknown_blob(digest: &Digest) -> ApiError {
    ApiError::not_found(
        ErrorCode::BlobUnknown,
        format!("blob {digest} is not in this repository"),
    )
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` as the half-open `[start, end)` within `size`.
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let (start, end) = if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        (size.saturating_sub(suffix), size)
    } else {
        let start: u64 = first.parse().ok()?;
        let end = if last.is_empty() {
            size
        } else {
            last.parse::<u64>().ok()?.saturating_add(1).min(size)
        };
        (start, end)
    };
    (start < end).then_some((start, end))
}

pub(super) async fn delete(
    api: &Api,
    name: RepoName,
    digest: Digest,
) -> Result<Response<Body>, ApiError> {
    let (n, d) = (name.clone(), digest.clone());
    if api
        .store_call(move |store| store.unlink_blob(&n, &d))
        .await?
    {
        Ok(empty(StatusCode::ACCEPTED))
    } else {
        Err(unknown_blob(&digest))
    }
}

/// POST: a mount (`mount` and `from`), a monolithic upload (`digest`), or a new session.
pub(super) async fn start(
    api: &Api,
    _caller: &Caller,
    name: RepoName,
    params: &[(String, String)],
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if let (Some(mount), Some(from)) = (param(params, "mount"), param(params, "from")) {
        let digest: Digest = mount
            .parse()
            .map_err(|error: String| ApiError::bad_request(ErrorCode::DigestInvalid, error))?;
        // A `from` that is not a name simply has nothing to mount; fall through to an upload.
        if let Ok(from) = from.parse::<RepoName>() {
            let (n, d) = (name.clone(), digest.clone());
            if api
                .renewing_call(move |store| store.mount_blob(&from, &n, &d))
                .await?
            {
                let mut response = empty(StatusCode::CREATED);
                set(
                    &mut response,
                    LOCATION,
                    &format!("/v2/{name}/blobs/{digest}"),
                );
                set(&mut response, "docker-content-digest", &digest.to_string());
                return Ok(response);
            }
        }
    }
    let n = name.clone();
    let id = api.store_call(move |store| store.start_upload(&n)).await?;
    if let Some(digest) = param(params, "digest") {
        let digest: Digest = digest
            .parse()
            .map_err(|error: String| ApiError::bad_request(ErrorCode::DigestInvalid, error))?;
        stream_into(api, &name, &id, Some(0), request.into_body()).await?;
        return commit(api, name, id, digest).await;
    }
    // Named to the client: the store keeps it from here on (another gateway may go on).
    let (n, i) = (name.clone(), id.clone());
    let state = api
        .store_call(move |store| store.save_upload(&n, &i))
        .await?;
    Ok(session_response(StatusCode::ACCEPTED, &name, &id, state))
}

pub(super) async fn status(
    api: &Api,
    name: RepoName,
    id: String,
) -> Result<Response<Body>, ApiError> {
    let (n, i) = (name.clone(), id.clone());
    let state = api
        .store_call(move |store| store.upload_state(&n, &i))
        .await?;
    Ok(session_response(StatusCode::NO_CONTENT, &name, &id, state))
}

pub(super) async fn patch(
    api: &Api,
    name: RepoName,
    id: String,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let offset = match request.headers().get(CONTENT_RANGE) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(content_range_start)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        ErrorCode::BlobUploadInvalid,
                        "Content-Range is not <start>-<end>",
                    )
                })?,
        ),
    };
    stream_into(api, &name, &id, offset, request.into_body()).await?;
    // Acknowledged bytes must survive a crash: what the store still buffers is saved first.
    let (n, i) = (name.clone(), id.clone());
    let state = api
        .store_call(move |store| store.save_upload(&n, &i))
        .await?;
    Ok(session_response(StatusCode::ACCEPTED, &name, &id, state))
}

/// `start-end` (optionally after `bytes `): the start.
fn content_range_start(value: &str) -> Option<u64> {
    let value = value.trim();
    let value = value.strip_prefix("bytes ").unwrap_or(value);
    let (start, end) = value.split_once('-')?;
    let end = end.split('/').next()?;
    let (start, end): (u64, u64) = (start.parse().ok()?, end.parse().ok()?);
    (start <= end).then_some(start)
}

/// PUT: the last chunk (if any), then the commit under `digest`.
pub(super) async fn finish(
    api: &Api,
    name: RepoName,
    id: String,
    params: &[(String, String)],
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let digest: Digest = param(params, "digest")
        .ok_or_else(|| ApiError::bad_request(ErrorCode::DigestInvalid, "no digest parameter"))?
        .parse()
        .map_err(|error: String| ApiError::bad_request(ErrorCode::DigestInvalid, error))?;
    stream_into(api, &name, &id, None, request.into_body()).await?;
    commit(api, name, id, digest).await
}

async fn commit(
    api: &Api,
    name: RepoName,
    id: String,
    digest: Digest,
) -> Result<Response<Body>, ApiError> {
    let (n, d) = (name.clone(), digest.clone());
    api.renewing_call(move |store| store.finish_upload(&n, &id, &d))
        .await?;
    let mut response = empty(StatusCode::CREATED);
    set(
        &mut response,
        LOCATION,
        &format!("/v2/{name}/blobs/{digest}"),
    );
    set(&mut response, "docker-content-digest", &digest.to_string());
    set(&mut response, CONTENT_LENGTH, "0");
    Ok(response)
}

pub(super) async fn cancel(
    api: &Api,
    name: RepoName,
    id: String,
) -> Result<Response<Body>, ApiError> {
    api.store_call(move |store| store.cancel_upload(&name, &id))
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn session_response(
    status: StatusCode,
    name: &RepoName,
    id: &str,
    state: UploadState,
) -> Response<Body> {
    let mut response = empty(status);
    set(
        &mut response,
        LOCATION,
        &format!("/v2/{name}/blobs/uploads/{id}"),
    );
    set(&mut response, "docker-upload-uuid", id);
    set(
        &mut response,
        RANGE,
        &format!("0-{}", state.size.saturating_sub(1)),
    );
    set(&mut response, CONTENT_LENGTH, "0");
    response
}

/// Streams `body` into the upload `id`, starting at `offset` when given; the state after.
///
/// One write is in flight while the next chunk is read from the network, so disk and
/// network overlap; writes stay in order (each names the offset the previous one ended at).
async fn stream_into(
    api: &Api,
    name: &RepoName,
    id: &str,
    offset: Option<u64>,
    mut body: Incoming,
) -> Result<UploadState, ApiError> {
    let mut writes = Writes {
        api,
        name,
        id,
        offset,
        pending: None,
        state: None,
    };
    let mut buf = Vec::with_capacity(WRITE_CHUNK);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::bad_request(
                ErrorCode::BlobUploadInvalid,
                format!("reading the request body: {error}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        if buf.len() >= WRITE_CHUNK {
            let data = std::mem::replace(&mut buf, Vec::with_capacity(WRITE_CHUNK));
            writes.start(data).await?;
        }
    }
    if !buf.is_empty() {
        writes.start(buf).await?;
    }
    writes.wait().await?;
    if let Some(state) = writes.state {
        return Ok(state);
    }
    // An empty body: the session as it is, which must be where the client said it was.
    let (n, i) = (name.clone(), id.to_owned());
    let state = api
        .store_call(move |store| store.upload_state(&n, &i))
        .await?;
    if let Some(given) = offset {
        if given != state.size {
            return Err(StorageError::RangeInvalid {
                given,
                have: state.size,
            }
            .into());
        }
    }
    Ok(state)
}

/// The writes of one request body into an upload, at most one in flight.
struct Writes<'a> {
    api: &'a Api,
    name: &'a RepoName,
    id: &'a str,
    /// Where the next write must start (`None`: wherever the session ends).
    offset: Option<u64>,
    pending: Option<(
        u64,
        tokio::task::JoinHandle<crate::registry::storage::Result<UploadState>>,
    )>,
    state: Option<UploadState>,
}

impl Writes<'_> {
    /// Waits for the write in flight, then starts writing `data` after it.
    async fn start(&mut self, data: Vec<u8>) -> Result<(), ApiError> {
        self.wait().await?;
        let store = self.api.store.clone();
        let (name, id, offset) = (self.name.clone(), self.id.to_owned(), self.offset);
        let len = data.len() as u64;
        let handle =
            tokio::task::spawn_blocking(move || store.append_upload(&name, &id, offset, &data));
        self.pending = Some((len, handle));
        Ok(())
    }

    /// Waits for the write in flight, if any.
    async fn wait(&mut self) -> Result<(), ApiError> {
        let Some((len, handle)) = self.pending.take() else {
            return Ok(());
        };
        let state = handle.await.map_err(ApiError::internal)??;
        bump(&self.api.counters.bytes_in, len);
        // Later chunks of this body must follow on directly.
        self.offset = Some(state.size);
        self.state = Some(state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_the_rfc_says() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 100)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-2", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn content_ranges_give_their_start() {
        assert_eq!(content_range_start("0-99"), Some(0));
        assert_eq!(content_range_start("bytes 100-199/*"), Some(100));
        assert_eq!(content_range_start("5-2"), None);
        assert_eq!(content_range_start("x"), None);
    }
}
