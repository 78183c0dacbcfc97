//! Idle upstream HTTP/1.1 connections, kept per (isolation group, destination, TLS), so an
//! origin that keeps connections alive is not dialled again (over Tor: a new stream) for each
//! request. The key holds the client's isolation group, so pooling never puts two clients'
//! requests on one stream or circuit.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

use super::{forward::ProxyBody, idle::Activity};
use crate::egress::{Isolation, Target};

/// Idle connections kept per key at most.
const MAX_IDLE_PER_KEY: usize = 4;

/// How long a pooled connection may take to be ready for the next request.
const READY_WAIT: Duration = Duration::from_secs(1);

/// Whose connection to where.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    isolation: Isolation,
    target: String,
    tls: bool,
}

impl Key {
    pub fn new(isolation: Isolation, target: &Target, tls: bool) -> Self {
        Key {
            isolation,
            target: target.to_string(),
            tls,
        }
    }
}

/// A connection: its request sender and the activity its idle watchdog reads.
pub(crate) struct Conn {
    pub sender: SendRequest<ProxyBody>,
    pub activity: Arc<Activity>,
}

/// The idle connections.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<Key, Vec<Conn>>>,
}

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Conn>>> {
        // Each update is one push or pop: a poisoned map is still consistent.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection for `key` that is still open and ready, if there is one.
    pub async fn take(&self, key: &Key) -> Option<Conn> {
        loop {
            let mut conn = {
                let mut idle = self.idle();
                let conns = idle.get_mut(key)?;
                let conn = conns.pop();
                if conns.is_empty() {
                    idle.remove(key);
                }
                conn?
            };
            if conn.sender.is_closed() {
                continue;
            }
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, conn.sender.ready()).await {
                return Some(conn);
            }
        }
    }

    /// Keeps `conn` for the next request to `key`, unless it closed or enough are kept.
    pub fn put(&self, key: Key, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        let conns = idle.entry(key).or_default();
        if conns.len() < MAX_IDLE_PER_KEY {
            conns.push(conn);
        }
    }
}

/// A response body that gives its connection back to the pool once read to the end; one
/// dropped early takes its connection with it (the rest of the body is still on the wire).
pub(crate) struct Returning {
    inner: Incoming,
    back: Option<(Arc<Pool>, Key, Conn)>,
}

impl Returning {
    pub fn new(inner: Incoming, pool: Arc<Pool>, key: Key, conn: Conn) -> Self {
        let mut body = Returning {
            inner,
            back: Some((pool, key, conn)),
        };
        // Nothing to read (a 304, a HEAD): the connection is free at once.
        if body.inner.is_end_stream() {
            body.give_back();
        }
        body
    }

    fn give_back(&mut self) {
        if let Some((pool, key, conn)) = self.back.take() {
            pool.put(key, conn);
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            // Readers that know the length stop polling after the last byte: the end of the
            // body is seen with it, not only as a final `None`.
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
