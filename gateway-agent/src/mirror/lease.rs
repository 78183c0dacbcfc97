//! Which blobs of one upstream's cache are in use, so eviction under `mirror.max_size` never
//! takes one from under a pull: a blob being fetched, or being sent to a client, is *held*
//! (a [`Lease`] lives as long as the fetch or the response body), and a blob stays *in use*
//! for the pull window after its last lease ends, so a layer just committed for a pull whose
//! client asks for the next layer a moment later is not swept in between.
//!
//! Eviction asks [`Leases::in_use`] for every digest of an image before it removes the image,
//! and the sweep after it asks again for each blob, with the store's GC lock held
//! exclusively; a blob request takes its lease before it looks in the store under that lock
//! shared (`flight::join`), so a blob is either spared by the sweep or already gone when the
//! request looks (and fetched again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::registry::names::Digest;

/// How long a blob or an image stays in use after its last request: longer than the pause
/// between one pull's requests (a client unpacking a layer before it asks for the next).
pub const PULL_WINDOW: Duration = Duration::from_secs(120);

/// Entries kept before the idle ones are dropped.
const PRUNE_AT: usize = 4096;

/// The leases of one cache.
#[derive(Debug)]
pub struct Leases {
    window: Duration,
    uses: Mutex<HashMap<Digest, Use>>,
}

#[derive(Debug)]
struct Use {
    holders: usize,
    last: Instant,
}

/// A held lease on a digest; released when dropped.
#[derive(Debug)]
pub struct Lease {
    leases: Arc<Leases>,
    digest: Digest,
}

impl Default for Leases {
    fn default() -> Self {
        Leases::new(PULL_WINDOW)
    }
}

impl Leases {
    /// Leases that keep a digest in use for `window` after its last lease ends.
    pub fn new(window: Duration) -> Self {
        Leases {
            window,
            uses: Mutex::new(HashMap::new()),
        }
    }

    /// The pull window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Holds `digest` until the lease is dropped.
    pub fn hold(self: &Arc<Self>, digest: &Digest) -> Lease {
        let now = Instant::now();
        let mut uses = self.uses.lock().unwrap_or_else(PoisonError::into_inner);
        if uses.len() >= PRUNE_AT {
            let window = self.window;
            uses.retain(|_, u| u.holders > 0 || now.duration_since(u.last) < window);
        }
        let entry = uses.entry(digest.clone()).or_insert(Use {
            holders: 0,
            last: now,
        });
        entry.holders += 1;
        entry.last = now;
        Lease {
            leases: self.clone(),
            digest: digest.clone(),
        }
    }

    /// Whether `digest` is held, or was released less than the window before `now`.
    pub fn in_use(&self, digest: &Digest, now: Instant) -> bool {
        let uses = self.uses.lock().unwrap_or_else(PoisonError::into_inner);
        uses.get(digest)
            .is_some_and(|u| u.holders > 0 || now.duration_since(u.last) < self.window)
    }

    /// How many leases are held now (for tests and status).
    pub fn held(&self) -> usize {
        let uses = self.uses.lock().unwrap_or_else(PoisonError::into_inner);
        uses.values().map(|u| u.holders).sum()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut uses = self
            .leases
            .uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = uses.get_mut(&self.digest) {
            entry.holders = entry.holders.saturating_sub(1);
            entry.last = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_then_in_use_for_the_window() {
        let leases = Arc::new(Leases::new(Duration::from_secs(60)));
        let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
        let now = Instant::now();
        assert!(!leases.in_use(&a, now));
        let first = leases.hold(&a);
        let second = leases.hold(&a);
        assert_eq!(leases.held(), 2);
        drop(first);
        // Still held by the second, long after the window.
        assert!(leases.in_use(&a, Instant::now() + Duration::from_secs(3600)));
        drop(second);
        assert_eq!(leases.held(), 0);
        assert!(leases.in_use(&a, Instant::now()));
        assert!(!leases.in_use(&a, Instant::now() + Duration::from_secs(61)));
        assert!(!leases.in_use(&b, Instant::now()));
    }

    #[test]
    fn a_zero_window_is_held_only() {
        let leases = Arc::new(Leases::new(Duration::ZERO));
        let a = Digest::sha256_of(b"a");
        let lease = leases.hold(&a);
        assert!(leases.in_use(&a, Instant::now()));
        drop(lease);
        assert!(!leases.in_use(&a, Instant::now()));
    }
}
