//! What `gateway-agent registry gc|ls|du` do, on any [`Storage`]: through the running agent's
//! control socket when one serves the store, directly otherwise.
//!
//! GC marks every manifest of every repository and what each references (an index's
//! children, layers and configs, the subject a referrer points at), then sweeps the blobs
//! nobody marked that are older than the grace period. It is safe while the registry serves:
//! uploads in progress are not blobs yet; a blob that was just uploaded, mounted or asked about
//! (a HEAD) is younger than the grace period; and the sweep holds the store's GC lock, which
//! those renewals and a manifest push (between checking its references and storing itself)
//! hold shared.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::manifest;
use super::names::{Digest, RepoName};
use super::storage::{self, Storage};

/// What a GC run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Blobs (manifests included) something references.
    pub marked: usize,
    /// Unreferenced blobs removed.
    pub swept: usize,
    /// Their bytes.
    pub swept_bytes: u64,
    /// Unreferenced blobs kept because they are younger than the grace period (or spared:
    /// [`gc_sparing`]).
    pub young: usize,
    /// Abandoned upload sessions removed.
    pub uploads_expired: usize,
}

/// Runs GC on `store`, keeping unreferenced blobs younger than `grace`.
pub fn gc(store: &dyn Storage, grace: Duration) -> storage::Result<GcReport> {
    gc_sparing(store, grace, &|_| false)
}

/// [`gc`], also keeping every unreferenced blob `spare` says yes to. `spare` is asked with
/// the sweep's lock held exclusively, just before the blob would go (the mirror spares the
/// blobs a pull is using; see `mirror::lease`); those count as `young`.
pub fn gc_sparing(
    store: &dyn Storage,
    grace: Duration,
    spare: &dyn Fn(&Digest) -> bool,
) -> storage::Result<GcReport> {
    let uploads_expired = store.expire_uploads()?;
    let marked = mark(store)?;
    let _sweeping = store
        .gc_lock()
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = SystemTime::now();
    let mut report = GcReport {
        marked: marked.len(),
        uploads_expired,
        ..GcReport::default()
    };
    for blob in store.stored_blobs()? {
        if marked.contains(&blob.digest) {
            continue;
        }
        if now.duration_since(blob.touched).unwrap_or_default() < grace || spare(&blob.digest) {
            report.young += 1;
            continue;
        }
        if !store.remove_blob_untouched(&blob.digest, blob.touched)? {
            // Another gateway on a shared store renewed it since the listing.
            report.young += 1;
            continue;
        }
        report.swept += 1;
        report.swept_bytes += blob.size;
    }
    Ok(report)
}

/// Every digest a manifest of any repository is or references.
fn mark(store: &dyn Storage) -> storage::Result<BTreeSet<Digest>> {
    let mut marked = BTreeSet::new();
    for repo in store.repositories()? {
        for digest in store.manifests(&repo)? {
            let Some(stored) = store.manifest(&repo, &digest)? else {
                continue;
            };
            marked.insert(digest.clone());
            match manifest::parse(Some(&stored.media_type), &stored.bytes) {
                Ok(parsed) => {
                    marked.extend(parsed.blobs);
                    marked.extend(parsed.children);
                    marked.extend(parsed.subject);
                }
                // It was checked when pushed; if it no longer reads, keep everything rather
                // than guess what it needed.
                Err(error) => {
                    tracing::warn!(%repo, %digest, "GC: unreadable manifest ({error}); nothing swept");
                    return Err(storage::StorageError::Io(anyhow::anyhow!(
                        "manifest {digest} in {repo} is unreadable: {error}"
                    )));
                }
            }
        }
    }
    Ok(marked)
}

/// One repository as `registry ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoListing {
    pub repository: String,
    pub tags: BTreeMap<String, String>,
    pub manifests: usize,
}

/// Every repository with its tags (and the digests they point at).
pub fn ls(store: &dyn Storage) -> storage::Result<Vec<RepoListing>> {
    let mut out = Vec::new();
    for repo in store.repositories()? {
        let mut tags = BTreeMap::new();
        for tag in store.tags(&repo)?.unwrap_or_default() {
            if let Some(digest) = store.tag(&repo, &tag)? {
                tags.insert(tag.to_string(), digest.to_string());
            }
        }
        out.push(RepoListing {
            repository: repo.to_string(),
            tags,
            manifests: store.manifests(&repo)?.len(),
        });
    }
    Ok(out)
}

/// Sizes, as `registry du` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Per repository: the bytes its manifests and what they reference add up to (shared
    /// layers count in each repository that uses them).
    pub repositories: BTreeMap<String, u64>,
    /// Blobs stored, manifests included.
    pub blobs: usize,
    /// Their bytes: the space the store takes.
    pub bytes: u64,
}

/// The store's usage.
pub fn du(store: &dyn Storage) -> storage::Result<Usage> {
    let stored = store.stored_blobs()?;
    let sizes: BTreeMap<Digest, u64> = stored
        .iter()
        .map(|blob| (blob.digest.clone(), blob.size))
        .collect();
    let mut usage = Usage {
        blobs: stored.len(),
        bytes: stored.iter().map(|blob| blob.size).sum(),
        ..Usage::default()
    };
    for repo in store.repositories()? {
        let used = referenced(store, &repo)?;
        let bytes = used.iter().filter_map(|digest| sizes.get(digest)).sum();
        usage.repositories.insert(repo.to_string(), bytes);
    }
    Ok(usage)
}

fn referenced(store: &dyn Storage, repo: &RepoName) -> storage::Result<BTreeSet<Digest>> {
    let mut used = BTreeSet::new();
    for digest in store.manifests(repo)? {
        if let Some(stored) = store.manifest(repo, &digest)? {
            if let Ok(parsed) = manifest::parse(Some(&stored.media_type), &stored.bytes) {
                used.extend(parsed.blobs);
            }
        }
        used.insert(digest);
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::manifest::{OCI_INDEX, OCI_MANIFEST};
    use crate::registry::storage::{FsStorage, Limits, Manifest};

    fn push(store: &FsStorage, repo: &RepoName, data: &[u8]) -> Digest {
        let id = store.start_upload(repo).unwrap();
        store.append_upload(repo, &id, None, data).unwrap();
        let digest = Digest::sha256_of(data);
        store.finish_upload(repo, &id, &digest).unwrap();
        digest
    }

    fn put(
        store: &FsStorage,
        repo: &RepoName,
        media_type: &str,
        value: serde_json::Value,
        tag: &str,
    ) -> Digest {
        let bytes = serde_json::to_vec(&value).unwrap();
        let manifest = Manifest {
            digest: Digest::sha256_of(&bytes),
            media_type: media_type.into(),
            bytes,
        };
        store
            .put_manifest(repo, &manifest, Some(&tag.parse().unwrap()), None)
            .unwrap();
        manifest.digest
    }

    #[test]
    fn gc_sweeps_only_old_unreferenced_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStorage::open(dir.path(), Limits::default()).unwrap();
        let repo: RepoName = "team/app".parse().unwrap();
        let config = push(&store, &repo, b"{}");
        let layer = push(&store, &repo, b"layer");
        let garbage = push(&store, &repo, b"garbage");
        let child = put(
            &store,
            &repo,
            OCI_MANIFEST,
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 5}]}),
            "child",
        );
        put(
            &store,
            &repo,
            OCI_INDEX,
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
                "manifests": [{"mediaType": OCI_MANIFEST, "digest": child.to_string(), "size": 1}]}),
            "index",
        );

        // Everything is young: nothing goes.
        let report = gc(&store, Duration::from_secs(3600)).unwrap();
        assert_eq!((report.swept, report.young, report.marked), (0, 1, 4));

        let report = gc(&store, Duration::ZERO).unwrap();
        assert_eq!(report.swept, 1);
        assert_eq!(report.swept_bytes, 7);
        assert!(store.open_blob(&repo, &garbage).unwrap().is_none());
        for kept in [&config, &layer, &child] {
            assert!(store.blob_size(&repo, kept, false).unwrap().is_some() || kept == &child);
        }
        assert!(store.manifest(&repo, &child).unwrap().is_some());

        let listing = ls(&store).unwrap();
        assert_eq!(listing[0].repository, "team/app");
        assert_eq!(listing[0].tags.len(), 2);
        let usage = du(&store).unwrap();
        assert_eq!(usage.blobs, 4);
        assert!(usage.repositories["team/app"] >= 7);
    }
}
