//! The fill task: copies an upstream body into a temporary file for the readers, checks that
//! it is complete, and commits it to the store. It runs on its own task, so the object is
//! stored even when the client that asked for it goes away.

use std::{fs::File, os::unix::fs::FileExt, path::PathBuf, sync::Arc};

use crate::http_proxy::forward::UpstreamBody;
use http_body_util::BodyExt;
use ring::digest;
use tokio::sync::watch;

use super::{
    fill::Progress,
    store::{self, Meta},
    Cache, Lead,
};

/// Where a fill writes and what it commits.
pub(crate) struct Fill {
    /// Held until the entry is in the index (`None`: a refill after revalidation, no flight).
    pub lead: Option<Lead>,
    pub key: String,
    /// The metadata, but for the body name, size and digest, which the fill sets.
    pub meta: Meta,
    /// `Content-Length` of the response, if it had one: a shorter body is a failure.
    pub expected: Option<u64>,
    pub temp: PathBuf,
    pub file: Arc<File>,
    pub progress: watch::Sender<Progress>,
}

/// Stores `body` as `fill.key`, publishing progress; on any failure the readers fail and the
/// temporary file goes (a crash leaves it for the next start to remove).
pub(crate) async fn run(
    cache: Arc<Cache>,
    fill: Fill,
    mut body: UpstreamBody,
    mut shutdown: watch::Receiver<()>,
) {
    let Fill {
        lead,
        key,
        mut meta,
        expected,
        temp,
        file,
        progress,
    } = fill;
    let mut context = digest::Context::new(&digest::SHA256);
    let mut written = 0u64;
    let complete = loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = shutdown.changed() => break false,
        };
        let data = match frame {
            None => break expected.is_none_or(|n| n == written),
            Some(Err(_)) => break false,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: nothing to store.
                Err(_) => continue,
            },
        };
        context.update(&data);
        let (target, offset, len) = (file.clone(), written, data.len() as u64);
        let wrote = tokio::task::spawn_blocking(move || target.write_all_at(&data, offset)).await;
        if !matches!(wrote, Ok(Ok(()))) {
            tracing::warn!("writing a cache body failed; the object is not stored");
            break false;
        }
        // Readers get everything but the last frame until the object is committed: with a
        // Content-Length, the last byte is what tells a client the body is complete.
        progress.send_replace(Progress::Writing(written));
        written += len;
    };
    if !complete {
        progress.send_replace(Progress::Failed);
        remove(temp).await;
        return;
    }
    // Readers finish only once the object is committed: a client that got a whole body knows
    // the next request (or a restart) finds it stored.
    if written <= cache.max_object() {
        meta.size = written;
        meta.sha256 = store::hex(context.finish().as_ref());
        let committer = cache.clone();
        let committed = tokio::task::spawn_blocking(move || {
            meta.body = store::Store::body_name(&key)?;
            committer
                .store
                .commit(&key, &temp, &file, &meta)
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&temp);
                })?;
            committer.insert(&key, meta);
            Ok::<_, anyhow::Error>(())
        })
        .await;
        match committed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!("storing a cache object failed: {error:#}"),
            Err(_) => tracing::warn!("storing a cache object failed"),
        }
    } else {
        remove(temp).await;
    }
    // The entry is in the index now: the next request finds it, not this flight (whose
    // followers keep what they hold).
    drop(lead);
    progress.send_replace(Progress::Done(written));
}

async fn remove(temp: PathBuf) {
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(temp)).await;
}
