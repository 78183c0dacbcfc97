//! When each cached manifest was last pulled, for evicting the least recently pulled images
//! when the cache is over `mirror.max_size`. One empty file per (repository, manifest) in
//! `<cache>/<upstream>.pulls/`, its modification time the last pull: it survives restarts
//! and costs one `utime` a pull.
//!
//! File names are `<alg>-<hex>@<repository with '/' as '+'>` (`+` is not in the repository
//! grammar, so the name reads back unambiguously).

use std::fs::{self, File};
use std::path::PathBuf;
use std::time::SystemTime;

use crate::registry::names::{Digest, RepoName};

/// The pull times of one upstream's cache.
#[derive(Debug, Clone)]
pub struct PullClock {
    dir: PathBuf,
}

impl PullClock {
    /// The clock kept in `dir` (made when first needed).
    pub fn new(dir: PathBuf) -> Self {
        PullClock { dir }
    }

    fn path(&self, repo: &RepoName, digest: &Digest) -> PathBuf {
        self.dir.join(format!(
            "{}-{}@{}",
            digest.algorithm().name(),
            digest.hex(),
            repo.as_str().replace('/', "+")
        ))
    }

    /// `repo`'s manifest `digest` was pulled now.
    pub fn pulled(&self, repo: &RepoName, digest: &Digest) -> std::io::Result<()> {
        let path = self.path(repo, digest);
        let file = match File::options().write(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir)?;
                File::create(&path)?
            }
            Err(error) => return Err(error),
        };
        file.set_modified(SystemTime::now())
    }

    /// When `repo`'s manifest `digest` was last pulled (`None`: never, as far as the clock
    /// knows).
    pub fn last_pull(&self, repo: &RepoName, digest: &Digest) -> Option<SystemTime> {
        fs::metadata(self.path(repo, digest))
            .and_then(|meta| meta.modified())
            .ok()
    }

    /// Forgets `repo`'s manifest `digest` (evicted or purged).
    pub fn forget(&self, repo: &RepoName, digest: &Digest) {
        let _ = fs::remove_file(self.path(repo, digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_are_remembered_per_repository_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let clock = PullClock::new(dir.path().join("hub.pulls"));
        let repo: RepoName = "library/alpine".parse().unwrap();
        let other: RepoName = "team/app".parse().unwrap();
        let digest = Digest::sha256_of(b"m");
        assert_eq!(clock.last_pull(&repo, &digest), None);
        clock.pulled(&repo, &digest).unwrap();
        let first = clock.last_pull(&repo, &digest).unwrap();
        assert_eq!(clock.last_pull(&other, &digest), None);
        std::thread::sleep(std::time::Duration::from_millis(20));
        clock.pulled(&repo, &digest).unwrap();
        assert!(clock.last_pull(&repo, &digest).unwrap() > first);
        clock.forget(&repo, &digest);
        assert_eq!(clock.last_pull(&repo, &digest), None);
    }
}
