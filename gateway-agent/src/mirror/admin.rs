//! What `gateway-agent mirror ls|du|gc|purge` do, and the eviction that keeps the cache under
//! `mirror.max_size`: all on the upstreams' stores with the private registry's own GC
//! ([`crate::registry::admin`]), whose mark phase decides what stays. Removing an image means
//! removing its manifests (an index with its children); the sweep that follows then takes
//! exactly the blobs no remaining manifest references, so no image still in the cache loses a
//! layer it needs.
//!
//! Eviction never breaks a pull off: an image with a manifest or blob in use (a request for
//! it running, or one within the pull window: [`super::lease`]) stays even when that leaves
//! the caches over the bound, and the sweep spares every blob in use, asked with the GC lock
//! held. The bound is met once those pulls are over.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::lease::Leases;
use super::pulls::PullClock;
use crate::registry::admin::{self, GcReport};
use crate::registry::manifest;
use crate::registry::names::{Digest, RepoName, Tag};
use crate::registry::storage::{self, Storage};

/// What a purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    /// Manifests removed (an index's children included).
    pub manifests: usize,
    /// The sweep after it.
    pub gc: GcReport,
}

/// What an eviction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evicted {
    /// The images removed, as `<upstream>/<repository>@<digest>`, least recently pulled first.
    pub images: Vec<String>,
    /// Bytes the caches held before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Images that would have gone but a pull is using (kept; the caches may stay over the
    /// bound until it is over), as `images` names them.
    #[serde(default)]
    pub spared: Vec<String>,
}

/// Parses `repo[:tag]` (a digest reference is not an image to purge by).
pub fn parse_image(image: &str) -> Result<(String, Option<String>), String> {
    let (repo, tag) = match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (image, None),
    };
    if repo.contains('@') {
        return Err(format!("{image:?}: purge by repository or repository:tag"));
    }
    Ok((repo.to_owned(), tag.map(str::to_owned)))
}

/// The manifests of `repo` that `digest` (a manifest there) takes with it: itself and, for an
/// index, its children that no other manifest of `repo` lists.
fn with_children(
    store: &dyn Storage,
    repo: &RepoName,
    digest: &Digest,
) -> storage::Result<Vec<Digest>> {
    let mut out = vec![digest.clone()];
    let Some(stored) = store.manifest(repo, digest)? else {
        return Ok(out);
    };
    let Ok(parsed) = manifest::parse(Some(&stored.media_type), &stored.bytes) else {
        return Ok(out);
    };
    if parsed.children.is_empty() {
        return Ok(out);
    }
    let mut listed_elsewhere = BTreeSet::new();
    for other in store.manifests(repo)? {
        if &other == digest {
            continue;
        }
        if let Some(m) = store.manifest(repo, &other)? {
            if let Ok(p) = manifest::parse(Some(&m.media_type), &m.bytes) {
                listed_elsewhere.extend(p.children);
            }
        }
    }
    out.extend(
        parsed
            .children
            .into_iter()
            .filter(|child| !listed_elsewhere.contains(child)),
    );
    Ok(out)
}

/// Removes `repo:tag` (the manifest the tag points at, with an index's own children), or all
/// of `repo` without a tag, from `store`, then sweeps every blob nothing references any more.
pub fn purge(
    store: &dyn Storage,
    pulls: &PullClock,
    leases: &Leases,
    repo: &RepoName,
    tag: Option<&Tag>,
) -> storage::Result<Purged> {
    let targets = match tag {
        Some(tag) => match store.tag(repo, tag)? {
            Some(digest) => with_children(store, repo, &digest)?,
            None => Vec::new(),
        },
        None => store.manifests(repo)?,
    };
    let mut purged = Purged::default();
    for digest in &targets {
        if store.delete_manifest(repo, digest)? {
            purged.manifests += 1;
        }
        pulls.forget(repo, digest);
    }
    // A blob being sent right now finishes first (the next sweep takes it).
    purged.gc = admin::gc_sparing(store, Duration::ZERO, &|digest| {
        leases.in_use(digest, Instant::now())
    })?;
    Ok(purged)
}

/// One upstream's store, pull clock and leases, for eviction.
pub struct Shelf<'a> {
    pub name: &'a str,
    pub store: &'a dyn Storage,
    pub pulls: &'a PullClock,
    pub leases: &'a Leases,
}

/// An evictable image: a manifest no index of its repository lists.
struct Unit {
    shelf: usize,
    repo: RepoName,
    digest: Digest,
    last_pull: SystemTime,
    /// What a pull of it asks for: its manifests (an index's children too) and their blobs.
    members: BTreeSet<Digest>,
}

/// The manifest `digest` of `repo`, its children if it is an index, and every blob they
/// reference.
fn members(
    store: &dyn Storage,
    repo: &RepoName,
    digest: &Digest,
) -> storage::Result<BTreeSet<Digest>> {
    let mut out = BTreeSet::new();
    let mut todo = vec![digest.clone()];
    while let Some(next) = todo.pop() {
        if !out.insert(next.clone()) {
            continue;
        }
        let Some(stored) = store.manifest(repo, &next)? else {
            continue;
        };
        if let Ok(parsed) = manifest::parse(Some(&stored.media_type), &stored.bytes) {
            out.extend(parsed.blobs);
            todo.extend(parsed.children);
        }
    }
    Ok(out)
}

fn units(shelves: &[Shelf<'_>]) -> storage::Result<Vec<Unit>> {
    let mut out = Vec::new();
    for (i, shelf) in shelves.iter().enumerate() {
        for repo in shelf.store.repositories()? {
            let manifests = shelf.store.manifests(&repo)?;
            let mut children = BTreeSet::new();
            for digest in &manifests {
                if let Some(m) = shelf.store.manifest(&repo, digest)? {
                    if let Ok(p) = manifest::parse(Some(&m.media_type), &m.bytes) {
                        children.extend(p.children);
                    }
                }
            }
            for digest in manifests {
                if children.contains(&digest) {
                    continue;
                }
                let last_pull = shelf
                    .pulls
                    .last_pull(&repo, &digest)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push(Unit {
                    shelf: i,
                    members: members(shelf.store, &repo, &digest)?,
                    repo: repo.clone(),
                    digest,
                    last_pull,
                });
            }
        }
    }
    out.sort_by_key(|unit| unit.last_pull);
    Ok(out)
}

fn total_bytes(shelves: &[Shelf<'_>]) -> storage::Result<u64> {
    let mut total = 0;
    for shelf in shelves {
        total += shelf
            .store
            .stored_blobs()?
            .iter()
            .map(|blob| blob.size)
            .sum::<u64>();
    }
    Ok(total)
}

/// Whether a pull is using `unit`: its manifest pulled within the pull window, or a
/// manifest or blob of it in use (a request running, or ended within the window).
fn in_a_pull(unit: &Unit, leases: &Leases) -> bool {
    let recent = SystemTime::now()
        .duration_since(unit.last_pull)
        .is_ok_and(|age| age < leases.window());
    let now = Instant::now();
    recent || unit.members.iter().any(|digest| leases.in_use(digest, now))
}

/// Removes the least recently pulled images until the stores hold at most `max` bytes, each
/// followed by a sweep of what it alone needed. The most recently pulled image always stays
/// (it is the one a client is pulling now), even if it alone is over the bound, and so does
/// every image a pull is using ([`Evicted::spared`]); the sweep spares the blobs in use.
pub fn evict(shelves: &[Shelf<'_>], max: u64) -> storage::Result<Evicted> {
    let bytes_before = total_bytes(shelves)?;
    let mut report = Evicted {
        bytes_before,
        bytes_after: bytes_before,
        ..Evicted::default()
    };
    if bytes_before <= max {
        return Ok(report);
    }
    let mut units = units(shelves)?;
    // The newest stays.
    units.pop();
    for unit in units {
        if report.bytes_after <= max {
            break;
        }
        let shelf = &shelves[unit.shelf];
        let name = format!("{}/{}@{}", shelf.name, unit.repo, unit.digest);
        if in_a_pull(&unit, shelf.leases) {
            report.spared.push(name);
            continue;
        }
        for digest in with_children(shelf.store, &unit.repo, &unit.digest)? {
            shelf.store.delete_manifest(&unit.repo, &digest)?;
            shelf.pulls.forget(&unit.repo, &digest);
        }
        let swept = admin::gc_sparing(shelf.store, Duration::ZERO, &|digest| {
            shelf.leases.in_use(digest, Instant::now())
        })?;
        report.bytes_after = report.bytes_after.saturating_sub(swept.swept_bytes);
        report.images.push(name);
    }
    report.bytes_after = total_bytes(shelves)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::manifest::OCI_MANIFEST;
    use crate::registry::storage::{FsStorage, Limits, Manifest};
    use std::sync::Arc;

    fn push(store: &FsStorage, repo: &RepoName, data: &[u8]) -> Digest {
        let id = store.start_upload(repo).unwrap();
        store.append_upload(repo, &id, None, data).unwrap();
        let digest = Digest::sha256_of(data);
        store.finish_upload(repo, &id, &digest).unwrap();
        digest
    }

    /// An image in `repo:tag` with `layers` (shared layers are pushed once).
    fn image(store: &FsStorage, repo: &str, tag: &str, layers: &[&[u8]]) -> Digest {
        let repo: RepoName = repo.parse().unwrap();
        let config = push(store, &repo, format!("{{\"{repo}\":1}}").as_bytes());
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|data| {
                let digest = push(store, &repo, data);
                serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest.to_string(), "size": data.len()})
            })
            .collect();
        let bytes = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
            "layers": layers})).unwrap();
        let manifest = Manifest {
            digest: Digest::sha256_of(&bytes),
            media_type: OCI_MANIFEST.into(),
            bytes,
        };
        store
            .put_manifest(&repo, &manifest, Some(&tag.parse().unwrap()), None)
            .unwrap();
        manifest.digest
    }

    #[test]
    fn images_parse_with_and_without_tags() {
        assert_eq!(
            parse_image("library/alpine:3").unwrap(),
            ("library/alpine".into(), Some("3".into()))
        );
        assert_eq!(parse_image("team/app").unwrap(), ("team/app".into(), None));
        assert!(parse_image("a@sha256:00").is_err());
    }

    #[test]
    fn eviction_takes_the_least_recently_pulled_and_keeps_shared_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStorage::open(dir.path().join("hub"), Limits::default()).unwrap();
        let pulls = PullClock::new(dir.path().join("hub.pulls"));
        let shared = vec![7u8; 10_000];
        let (a, b, c) = (vec![1u8; 20_000], vec![2u8; 20_000], vec![3u8; 20_000]);
        let old = image(
            &store,
            "library/old",
            "1",
            &[shared.as_slice(), a.as_slice()],
        );
        let mid = image(
            &store,
            "library/mid",
            "1",
            &[shared.as_slice(), b.as_slice()],
        );
        let new = image(&store, "library/new", "1", &[c.as_slice()]);
        let repo = |name: &str| -> RepoName { name.parse().unwrap() };
        for (name, digest) in [
            ("library/old", &old),
            ("library/mid", &mid),
            ("library/new", &new),
        ] {
            pulls.pulled(&repo(name), digest).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let leases = Leases::new(Duration::ZERO);
        let shelves = [Shelf {
            name: "hub",
            store: &store,
            pulls: &pulls,
            leases: &leases,
        }];
        let before = total_bytes(&shelves).unwrap();
        // Room for all but about one image: only the oldest goes, and the shared layer stays.
        let report = evict(&shelves, before - 15_000).unwrap();
        assert_eq!(report.images.len(), 1, "{report:?}");
        assert!(
            report.images[0].starts_with("hub/library/old@"),
            "{report:?}"
        );
        assert!(report.bytes_after <= before - 15_000);
        assert!(store
            .manifest(&repo("library/old"), &old)
            .unwrap()
            .is_none());
        let shared_digest = Digest::sha256_of(&shared);
        assert!(store
            .blob_size(&repo("library/mid"), &shared_digest, false)
            .unwrap()
            .is_some());
        assert!(store
            .blob_size(&repo("library/old"), &Digest::sha256_of(&a), false)
            .unwrap()
            .is_none());
        // A bound nothing fits under: everything but the newest goes.
        let report = evict(&shelves, 1).unwrap();
        assert_eq!(report.images.len(), 1, "{report:?}");
        assert!(store
            .manifest(&repo("library/new"), &new)
            .unwrap()
            .is_some());
        assert!(store
            .blob_size(&repo("library/new"), &Digest::sha256_of(&c), false)
            .unwrap()
            .is_some());
    }

    #[test]
    fn purge_removes_a_tag_or_a_repository_and_what_only_it_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStorage::open(dir.path().join("hub"), Limits::default()).unwrap();
        let pulls = PullClock::new(dir.path().join("hub.pulls"));
        let shared = vec![7u8; 1000];
        let one = image(
            &store,
            "library/app",
            "1",
            &[shared.as_slice(), b"one".as_slice()],
        );
        let two = image(
            &store,
            "library/app",
            "2",
            &[shared.as_slice(), b"two".as_slice()],
        );
        let repo: RepoName = "library/app".parse().unwrap();
        let leases = Leases::new(Duration::ZERO);
        let purged = purge(&store, &pulls, &leases, &repo, Some(&"1".parse().unwrap())).unwrap();
        assert_eq!(purged.manifests, 1);
        assert!(purged.gc.swept >= 2, "{purged:?}");
        assert!(store.manifest(&repo, &one).unwrap().is_none());
        assert!(store.manifest(&repo, &two).unwrap().is_some());
        assert!(store
            .blob_size(&repo, &Digest::sha256_of(&shared), false)
            .unwrap()
            .is_some());
        let purged = purge(&store, &pulls, &leases, &repo, None).unwrap();
        assert_eq!(purged.manifests, 1);
        assert!(store.stored_blobs().unwrap().is_empty());
    }

    #[test]
    fn eviction_spares_what_a_pull_is_using() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStorage::open(dir.path().join("hub"), Limits::default()).unwrap();
        let pulls = PullClock::new(dir.path().join("hub.pulls"));
        let (a, b, c) = (vec![1u8; 20_000], vec![2u8; 20_000], vec![3u8; 20_000]);
        let old = image(&store, "library/old", "1", &[a.as_slice()]);
        let mid = image(&store, "library/mid", "1", &[b.as_slice()]);
        let new = image(&store, "library/new", "1", &[c.as_slice()]);
        let repo = |name: &str| -> RepoName { name.parse().unwrap() };
        for (name, digest) in [
            ("library/old", &old),
            ("library/mid", &mid),
            ("library/new", &new),
        ] {
            pulls.pulled(&repo(name), digest).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        // A client is still reading old's layer (a held lease): old stays, mid goes.
        let leases = Arc::new(Leases::new(Duration::ZERO));
        let reading = leases.hold(&Digest::sha256_of(&a));
        let shelf = |leases| Shelf {
            name: "hub",
            store: &store,
            pulls: &pulls,
            leases,
        };
        let report = evict(&[shelf(&leases)], 1).unwrap();
        assert_eq!(report.images.len(), 1, "{report:?}");
        assert!(
            report.images[0].starts_with("hub/library/mid@"),
            "{report:?}"
        );
        assert_eq!(report.spared.len(), 1, "{report:?}");
        assert!(
            report.spared[0].starts_with("hub/library/old@"),
            "{report:?}"
        );
        assert!(store
            .manifest(&repo("library/old"), &old)
            .unwrap()
            .is_some());
        assert!(store
            .blob_size(&repo("library/old"), &Digest::sha256_of(&a), false)
            .unwrap()
            .is_some());
        // Its read over (no window here), old goes at the next run.
        drop(reading);
        let report = evict(&[shelf(&leases)], 1).unwrap();
        assert!(
            report.images[0].starts_with("hub/library/old@"),
            "{report:?}"
        );
        assert!(report.spared.is_empty(), "{report:?}");
        // With a window, an image pulled a moment ago is in a pull still: nothing goes, the
        // caches stay over the bound.
        let windowed = Leases::new(Duration::from_secs(600));
        let report = evict(&[shelf(&windowed)], 1).unwrap();
        assert!(report.images.is_empty(), "{report:?}");
        assert!(report.bytes_after > 1);
    }

    #[test]
    fn the_sweep_spares_a_blob_in_use_that_nothing_references() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStorage::open(dir.path().join("hub"), Limits::default()).unwrap();
        let repo: RepoName = "library/app".parse().unwrap();
        // Just committed by a fetch, its manifest not here (evicted meanwhile, say).
        let kept = push(&store, &repo, b"in use");
        let loose = push(&store, &repo, b"loose");
        let leases = Arc::new(Leases::new(Duration::from_secs(600)));
        drop(leases.hold(&kept));
        let report = admin::gc_sparing(&store, Duration::ZERO, &|digest| {
            leases.in_use(digest, Instant::now())
        })
        .unwrap();
        assert_eq!((report.swept, report.young), (1, 1), "{report:?}");
        assert!(store.blob_size(&repo, &kept, false).unwrap().is_some());
        assert!(store.blob_size(&repo, &loose, false).unwrap().is_none());
    }
}
