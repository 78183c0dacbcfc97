//! What Tor is carrying now: the streams open through the `tor` connector and the isolation
//! groups they belong to. Streams of different groups never share a circuit, so each group
//! with an open stream holds at least one circuit: that count is the status page's "circuits
//! in use" (arti 0.47 has no stable interface that lists circuits themselves).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Open streams per isolation group.
#[derive(Debug, Default)]
pub struct InUse {
    groups: Mutex<HashMap<u64, u64>>,
}

impl InUse {
    /// A stream of `group` opened; it counts until the guard drops.
    pub fn open(self: &Arc<Self>, group: u64) -> StreamGuard {
        *self
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(group)
            .or_default() += 1;
        StreamGuard {
            in_use: self.clone(),
            group,
        }
    }

    /// (open streams, groups with an open stream).
    pub fn counts(&self) -> (u64, u64) {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        (groups.values().sum(), groups.len() as u64)
    }
}

/// Counts one open stream.
#[derive(Debug)]
pub struct StreamGuard {
    in_use: Arc<InUse>,
    group: u64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut groups = self
            .in_use
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = groups.get_mut(&self.group) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                groups.remove(&self.group);
            }
        }
    }
}

/// A stream that counts as open while it exists.
pub struct Counted<S> {
    inner: S,
    _guard: StreamGuard,
}

impl<S> Counted<S> {
    pub fn new(inner: S, guard: StreamGuard) -> Self {
        Counted {
            inner,
            _guard: guard,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn streams_count_while_open_and_groups_while_they_have_one() {
        let in_use = Arc::new(InUse::default());
        assert_eq!(in_use.counts(), (0, 0));
        let (a, mut peer) = tokio::io::duplex(64);
        let mut a = Counted::new(a, in_use.open(1));
        let b = in_use.open(1);
        let c = in_use.open(2);
        assert_eq!(in_use.counts(), (3, 2));
        // The wrapper passes bytes both ways untouched.
        a.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        drop(c);
        assert_eq!(in_use.counts(), (2, 1));
        drop(a);
        drop(b);
        assert_eq!(in_use.counts(), (0, 0));
    }
}
