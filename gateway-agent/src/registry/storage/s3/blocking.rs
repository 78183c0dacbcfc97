//! Waiting for the backend's requests from synchronous code. The [`super::Storage`] methods are
//! called on tokio's blocking pool, but also from status snapshots in async code, where
//! `Handle::block_on` would panic: so each request runs as a task on the backend's own runtime
//! and the caller waits on a channel, which works from any thread.

use std::future::Future;
use std::sync::mpsc;

use tokio::runtime::Handle;

/// Runs `future` on `runtime` and waits for its output; `None` if the runtime shut down first.
pub fn wait_on<T: Send + 'static>(
    runtime: &Handle,
    future: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().ok()
}
