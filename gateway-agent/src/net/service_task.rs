//! A server's accept loop as a task that can be told to stop, waited for (bounded), and that
//! stops anyway when its owner is dropped.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long [`ServiceTask::stop`] waits for the task to wind down before giving up on it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The shutdown signal a task watches: never sent on, its sender going away means stop.
pub type Shutdown = watch::Receiver<()>;

/// A spawned server task and the sender of its shutdown signal.
pub struct ServiceTask {
    name: &'static str,
    shutdown: Option<watch::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ServiceTask {
    /// Spawns `body` with the shutdown signal it (and every task it starts) should watch.
    pub fn spawn<F>(name: &'static str, body: impl FnOnce(Shutdown) -> F) -> ServiceTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = watch::channel(());
        ServiceTask {
            name,
            shutdown: Some(tx),
            task: Some(tokio::spawn(body(rx))),
        }
    }

    /// Signals shutdown and waits for the task to end, at most [`STOP_TIMEOUT`]; then aborts it
    /// (and with it its listener).
    pub async fn stop(self) {
        self.stop_within(STOP_TIMEOUT).await;
    }

    async fn stop_within(mut self, limit: Duration) {
        self.shutdown.take();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(limit, &mut task).await.is_err() {
                tracing::warn!("the {} did not stop within {limit:?}; aborted", self.name);
                task.abort();
            }
        }
    }
}

impl Drop for ServiceTask {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_signals_and_waits() {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let task = ServiceTask::spawn("test server", |mut shutdown| async move {
            let _ = shutdown.changed().await;
            let _ = done_tx.send(());
        });
        task.stop().await;
        assert!(
            done_rx.await.is_ok(),
            "the task saw the signal and finished"
        );
    }

    #[tokio::test]
    async fn a_task_that_ignores_the_signal_is_aborted() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = ServiceTask::spawn("stubborn server", |_shutdown| async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        task.stop_within(Duration::from_millis(50)).await;
        assert!(rx.await.is_err(), "aborted after the timeout");
    }

    #[tokio::test]
    async fn dropping_aborts() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = ServiceTask::spawn("test server", |_shutdown| async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        drop(task);
        assert!(rx.await.is_err(), "the aborted task dropped its sender");
    }
}
