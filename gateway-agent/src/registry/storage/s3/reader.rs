//! A blob's bytes in the bucket as the synchronous `Read + Seek` the registry's API streams
//! from (it runs on tokio's blocking pool): a ranged GET from the current position, read a
//! chunk at a time; a seek drops the stream and the next read asks from the new position.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::runtime::Handle;
use tokio::sync::mpsc::{self, Receiver};

use super::blocking::wait_on;

/// A reader over one object of known size.
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    runtime: Handle,
    key: Path,
    size: u64,
    position: u64,
    /// The response body, read ahead by a task on the backend's runtime (dropping it stops
    /// the task).
    stream: Option<Receiver<object_store::Result<Bytes>>>,
    chunk: Bytes,
}

/// Chunks read ahead of the client (hyper's are up to a few tens of KiB).
const READ_AHEAD: usize = 64;

impl ObjectReader {
    pub fn new(store: Arc<dyn ObjectStore>, runtime: Handle, key: Path, size: u64) -> Self {
        ObjectReader {
            store,
            runtime,
            key,
            size,
            position: 0,
            stream: None,
            chunk: Bytes::new(),
        }
    }

    fn open(&mut self) -> io::Result<()> {
        let options = GetOptions {
            range: Some(GetRange::Offset(self.position)),
            ..GetOptions::default()
        };
        let (store, key) = (self.store.clone(), self.key.clone());
        let result = wait_on(
            &self.runtime,
            async move { store.get_opts(&key, options).await },
        )
        .ok_or_else(|| io::Error::other("the S3 store's runtime stopped"))?
        .map_err(|error| io::Error::other(format!("reading {}: {error}", self.key)))?;
        // One task pumps the body; the reader takes chunks off a channel instead of a task
        // and a wake-up for each.
        let (sender, receiver) = mpsc::channel(READ_AHEAD);
        let mut body = result.into_stream();
        self.runtime.spawn(async move {
            while let Some(item) = body.next().await {
                if sender.send(item).await.is_err() {
                    break;
                }
            }
        });
        self.stream = Some(receiver);
        Ok(())
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.position >= self.size {
            return Ok(0);
        }
        if self.chunk.is_empty() {
            if self.stream.is_none() {
                self.open()?;
            }
            let Some(stream) = self.stream.as_mut() else {
                return Ok(0);
            };
            // The reader runs on the blocking pool, never on a runtime's worker.
            let next = stream.blocking_recv();
            match next {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(error)) => {
                    self.stream = None;
                    return Err(io::Error::other(format!("reading {}: {error}", self.key)));
                }
                // Shorter than its pointer said: never pass that off as the whole blob.
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{} ended at {} of {} bytes",
                            self.key, self.position, self.size
                        ),
                    ))
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for ObjectReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.size.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        if target != self.position {
            self.position = target;
            self.stream = None;
            self.chunk = Bytes::new();
        }
        Ok(self.position)
    }
}
