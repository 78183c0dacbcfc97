//! When a cached tag was last confirmed upstream. A tag is served from the cache for
//! `mirror.tag_ttl` after that; then the next pull asks the upstream with a `HEAD` (Docker Hub
//! counts GETs, not HEADs, toward its pull limit) and fetches the manifest again only when the
//! digest changed. The times live in memory: after a restart every tag is re-checked once.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::registry::names::{RepoName, Tag};

/// The confirmation times of the cached tags.
pub struct TagClock {
    ttl: Duration,
    checked: Mutex<HashMap<(RepoName, Tag), Instant>>,
}

impl TagClock {
    /// Tags are trusted for `ttl` after a check.
    pub fn new(ttl: Duration) -> Self {
        TagClock {
            ttl,
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `repo:tag` was confirmed within the TTL at `now`.
    pub fn is_fresh(&self, repo: &RepoName, tag: &Tag, now: Instant) -> bool {
        let checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        checked
            .get(&(repo.clone(), tag.clone()))
            .is_some_and(|at| now.saturating_duration_since(*at) < self.ttl)
    }

    /// `repo:tag` was confirmed (or fetched) at `now`.
    pub fn confirmed(&self, repo: &RepoName, tag: &Tag, now: Instant) {
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        checked.insert((repo.clone(), tag.clone()), now);
    }

    /// Forgets `repo`'s tags (purged from the cache).
    pub fn forget_repo(&self, repo: &RepoName) {
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        checked.retain(|(r, _), _| r != repo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_fresh_for_the_ttl_after_its_check() {
        let clock = TagClock::new(Duration::from_secs(60));
        let (repo, tag): (RepoName, Tag) =
            ("library/alpine".parse().unwrap(), "3".parse().unwrap());
        let t0 = Instant::now();
        assert!(!clock.is_fresh(&repo, &tag, t0), "never checked");
        clock.confirmed(&repo, &tag, t0);
        assert!(clock.is_fresh(&repo, &tag, t0 + Duration::from_secs(59)));
        assert!(!clock.is_fresh(&repo, &tag, t0 + Duration::from_secs(60)));
        let other: Tag = "latest".parse().unwrap();
        assert!(!clock.is_fresh(&repo, &other, t0));
        clock.forget_repo(&repo);
        assert!(!clock.is_fresh(&repo, &tag, t0));
    }
}
