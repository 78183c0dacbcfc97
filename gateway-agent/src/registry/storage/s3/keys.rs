//! Where each thing lives in the bucket, under the configured prefix. Every component comes
//! from a checked name or digest ([`crate::registry::names`]) or from a random id, so keys
//! need no escaping and two gateways on one bucket compute the same key for the same thing.
//!
//! ```text
//! blobs/<alg>/<hex>                          pointer: {"data": "<key>", "size": N} (the commit)
//! data/<id>                                  a blob's bytes, written before its pointer
//! repositories/<repo>/_layers/<alg>/<hex>    empty: the repository links the blob
//! repositories/<repo>/_manifests/<alg>/<hex> the manifest's media type
//! repositories/<repo>/_tags/<tag>            the digest the tag points at
//! repositories/<repo>/_referrers/<alg>/<subject hex>/<alg>-<hex>   a referrer entry (JSON)
//! uploads/<id>/state-<seq>                   an upload session's state, one per write (JSON)
//! uploads/<id>/chunk-<seq>                   bytes of a session not yet in a part
//! ```
//!
//! Repository name components never start with `_`, so `/_` ends a repository's part of a key.

use object_store::path::Path;

use crate::registry::names::{Digest, RepoName, Tag};

/// The key builder for one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (`""`: the bucket's root; else components separated by `/`).
    pub fn new(prefix: &str) -> Keys {
        let prefix = prefix.trim_matches('/');
        Keys {
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }
    }

    fn key(&self, rest: &str) -> Path {
        Path::from(format!("{}{rest}", self.prefix))
    }

    /// `key` without the prefix, if it is under it.
    pub fn strip<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.prefix)
    }

    pub fn pointer(&self, digest: &Digest) -> Path {
        self.key(&format!(
            "blobs/{}/{}",
            digest.algorithm().name(),
            digest.hex()
        ))
    }

    pub fn pointers(&self) -> Path {
        self.key("blobs")
    }

    pub fn data(&self, id: &str) -> Path {
        self.key(&format!("data/{id}"))
    }

    pub fn all_data(&self) -> Path {
        self.key("data")
    }

    pub fn uploads(&self) -> Path {
        self.key("uploads")
    }

    pub fn upload(&self, id: &str) -> Path {
        self.key(&format!("uploads/{id}"))
    }

    /// Zero-padded, so a listing sorts states in the order they were written.
    pub fn upload_state(&self, id: &str, seq: u64) -> Path {
        self.key(&format!("uploads/{id}/state-{seq:010}"))
    }

    pub fn upload_chunk(&self, id: &str, seq: u64) -> Path {
        self.key(&format!("uploads/{id}/chunk-{seq:010}"))
    }

    /// The session id and, for a state, its sequence number, of a key under `uploads/`.
    pub fn upload_of(&self, key: &str) -> Option<(String, Option<u64>)> {
        let rest = self.strip(key)?.strip_prefix("uploads/")?;
        let (id, name) = rest.split_once('/')?;
        let seq = name.strip_prefix("state-").and_then(|n| n.parse().ok());
        Some((id.to_owned(), seq))
    }

    pub fn repositories(&self) -> Path {
        self.key("repositories")
    }

    pub fn link(&self, repo: &RepoName, digest: &Digest) -> Path {
        self.key(&format!(
            "repositories/{repo}/_layers/{}/{}",
            digest.algorithm().name(),
            digest.hex()
        ))
    }

    pub fn manifest(&self, repo: &RepoName, digest: &Digest) -> Path {
        self.key(&format!(
            "repositories/{repo}/_manifests/{}/{}",
            digest.algorithm().name(),
            digest.hex()
        ))
    }

    pub fn manifests(&self, repo: &RepoName) -> Path {
        self.key(&format!("repositories/{repo}/_manifests"))
    }

    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> Path {
        self.key(&format!("repositories/{repo}/_tags/{tag}"))
    }

    pub fn tags(&self, repo: &RepoName) -> Path {
        self.key(&format!("repositories/{repo}/_tags"))
    }

    pub fn referrer(&self, repo: &RepoName, subject: &Digest, digest: &Digest) -> Path {
        self.key(&format!(
            "repositories/{repo}/_referrers/{}/{}/{}-{}",
            subject.algorithm().name(),
            subject.hex(),
            digest.algorithm().name(),
            digest.hex()
        ))
    }

    pub fn referrers(&self, repo: &RepoName, subject: &Digest) -> Path {
        self.key(&format!(
            "repositories/{repo}/_referrers/{}/{}",
            subject.algorithm().name(),
            subject.hex()
        ))
    }

    pub fn all_referrers(&self, repo: &RepoName) -> Path {
        self.key(&format!("repositories/{repo}/_referrers"))
    }

    /// The repository a key under `repositories/` belongs to.
    pub fn repo_of(&self, key: &str) -> Option<RepoName> {
        let rest = self.strip(key)?.strip_prefix("repositories/")?;
        let end = rest.find("/_")?;
        rest[..end].parse().ok()
    }

    /// The digest a key under `blobs/` or `…/_manifests/` names (`…/<alg>/<hex>`).
    pub fn digest_of(key: &str) -> Option<Digest> {
        let mut parts = key.rsplit('/');
        let hex = parts.next()?;
        let algorithm = parts.next()?;
        format!("{algorithm}:{hex}").parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_repository_and_digest() {
        let keys = Keys::new("/site-a/");
        let repo: RepoName = "team/app".parse().unwrap();
        let digest = Digest::sha256_of(b"x");
        let link = keys.link(&repo, &digest);
        assert_eq!(
            link.as_ref(),
            format!(
                "site-a/repositories/team/app/_layers/sha256/{}",
                digest.hex()
            )
        );
        assert_eq!(keys.repo_of(link.as_ref()), Some(repo.clone()));
        assert_eq!(Keys::digest_of(link.as_ref()), Some(digest.clone()));
        assert_eq!(keys.repo_of("other/repositories/team/app/_tags/1"), None);
        let state = keys.upload_state("ab", 12);
        assert_eq!(state.as_ref(), "site-a/uploads/ab/state-0000000012");
        assert_eq!(
            keys.upload_of(state.as_ref()),
            Some(("ab".to_owned(), Some(12)))
        );
        assert_eq!(
            keys.upload_of(keys.upload_chunk("ab", 3).as_ref()),
            Some(("ab".to_owned(), None))
        );
        let root = Keys::new("");
        assert_eq!(
            root.pointer(&digest).as_ref(),
            format!("blobs/sha256/{}", digest.hex())
        );
    }
}
