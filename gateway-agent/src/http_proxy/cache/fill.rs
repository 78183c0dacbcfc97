//! A body being stored and read at once: the fill writes the upstream body into a temporary
//! file and publishes how far it got; any number of readers stream from the same file up to
//! there. This is how collapsed requests all stream from one upstream fetch, and how a large
//! object reaches its first client while it is stored.

use std::{fs::File, os::unix::fs::FileExt, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::watch;

use crate::http_proxy::forward::{BoxError, ProxyBody};

/// How far a body has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// This many bytes are in the file so far.
    Writing(u64),
    /// The body is complete with this many bytes.
    Done(u64),
    /// The upstream body broke off: readers fail too, so no client takes a truncated body
    /// for a whole one.
    Failed,
}

/// Bytes read from the file per frame.
const CHUNK: u64 = 64 * 1024;

/// A complete body that is already on disk.
pub(crate) fn complete(size: u64) -> watch::Receiver<Progress> {
    watch::channel(Progress::Done(size)).1
}

/// Streams bytes `start..end` (`end`: to the end of the body) of `file` as they are written.
pub(crate) fn reader(
    file: Arc<File>,
    progress: watch::Receiver<Progress>,
    start: u64,
    end: Option<u64>,
) -> ProxyBody {
    struct State {
        file: Arc<File>,
        progress: watch::Receiver<Progress>,
        offset: u64,
        end: Option<u64>,
        over: bool,
    }
    let state = State {
        file,
        progress,
        offset: start,
        end,
        over: false,
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        if state.over {
            return None;
        }
        loop {
            let now = *state.progress.borrow_and_update();
            let (written, done) = match now {
                Progress::Writing(n) => (n, false),
                Progress::Done(n) => (n, true),
                Progress::Failed => {
                    state.over = true;
                    let error: BoxError = "the upstream body broke off".into();
                    return Some((Err(error), state));
                }
            };
            let limit = state.end.map_or(written, |end| end.min(written));
            if state.offset < limit {
                let len = (limit - state.offset).min(CHUNK);
                let (file, offset) = (state.file.clone(), state.offset);
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(64 * 1024)];
                    let n = file.read_at(&mut buf, offset)?;
                    buf.truncate(n);
                    Ok::<_, std::io::Error>(buf)
                })
                .await;
                return match read {
                    Ok(Ok(buf)) if !buf.is_empty() => {
                        state.offset += buf.len() as u64;
                        Some((Ok(Frame::data(Bytes::from(buf))), state))
                    }
                    _ => {
                        state.over = true;
                        let error: BoxError = "reading a cached body failed".into();
                        Some((Err(error), state))
                    }
                };
            }
            let reached_end = state.end.is_some_and(|end| state.offset >= end);
            if done || reached_end {
                return None;
            }
            if state.progress.changed().await.is_err() {
                // The fill went away without saying it was done.
                state.over = true;
                let error: BoxError = "the upstream fetch stopped".into();
                return Some((Err(error), state));
            }
        }
    });
    StreamBody::new(stream).boxed()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    async fn collect(body: ProxyBody) -> Result<Vec<u8>, BoxError> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn readers_follow_the_writer() {
        let mut temp = tempfile::tempfile().unwrap();
        let (tx, rx) = watch::channel(Progress::Writing(0));
        temp.write_all(b"hello ").unwrap();
        let file = Arc::new(temp.try_clone().unwrap());
        let early = tokio::spawn(collect(reader(file.clone(), rx.clone(), 0, None)));
        let part = tokio::spawn(collect(reader(file.clone(), rx.clone(), 2, Some(8))));
        tx.send(Progress::Writing(6)).unwrap();
        tokio::task::yield_now().await;
        temp.write_all(b"world").unwrap();
        tx.send(Progress::Done(11)).unwrap();
        assert_eq!(early.await.unwrap().unwrap(), b"hello world");
        assert_eq!(part.await.unwrap().unwrap(), b"llo wo");
        // A late reader of the finished body.
        let late = collect(reader(file, complete(11), 6, None)).await.unwrap();
        assert_eq!(late, b"world");
    }

    #[tokio::test]
    async fn a_broken_fill_fails_its_readers() {
        let temp = tempfile::tempfile().unwrap();
        let (tx, rx) = watch::channel(Progress::Writing(0));
        let body = tokio::spawn(collect(reader(Arc::new(temp), rx, 0, None)));
        tx.send(Progress::Failed).unwrap();
        assert!(body.await.unwrap().is_err());
        // And a fill that vanishes without a word.
        let temp = tempfile::tempfile().unwrap();
        let (tx, rx) = watch::channel(Progress::Writing(0));
        let body = tokio::spawn(collect(reader(Arc::new(temp), rx, 0, None)));
        drop(tx);
        assert!(body.await.unwrap().is_err());
    }
}
