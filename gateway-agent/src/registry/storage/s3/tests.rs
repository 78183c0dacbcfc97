//! The S3 backend against a real SeaweedFS (`weed mini` in a namespace of the test's own):
//! verified commits, links per repository, multipart uploads that stay invisible until they
//! are committed, manifests, tags and referrers, and two stores (two gateways) on one bucket.

use std::io::{Read, Seek, SeekFrom};

use gateway_tests::seaweedfs::SeaweedFs;
use gateway_tests::{in_netns, Netns};

use super::session::PART;
use super::*;
use crate::registry::names::Algorithm;
use sha2::{Digest as _, Sha512};

/// A SeaweedFS of the test's own and the settings to reach it (from inside its namespace).
struct World {
    ns: Netns,
    _weed: SeaweedFs,
    settings: S3Settings,
    dir: tempfile::TempDir,
}

fn world() -> World {
    let lab = Netns::lab();
    let ns = Netns::new(&lab, "up");
    // Not under /tmp: SeaweedFS gets a /tmp of its own.
    let dir = tempfile::Builder::new()
        .prefix("gateway-s3-test")
        .tempdir_in("/var/tmp")
        .unwrap();
    let weed = SeaweedFs::start(&ns, &dir.path().join("weed"), "registry");
    let settings = S3Settings {
        endpoint: weed.endpoint.clone(),
        bucket: weed.bucket.clone(),
        region: "us-east-1".into(),
        access_key_id: weed.access_key_id.clone(),
        secret_access_key: weed.secret_access_key.clone(),
        prefix: "site".into(),
        ca: None,
        address: None,
        uplink: None,
        cache: None,
        spool: dir.path().join("spool-a"),
    };
    World {
        ns,
        _weed: weed,
        settings,
        dir,
    }
}

impl Drop for World {
    // What SeaweedFS said, when a test failed.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.dir.path().join("weed/weed.log");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- {} (last lines)", log.display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl World {
    /// Settings for another gateway on the same bucket (its own spool).
    fn second(&self) -> S3Settings {
        S3Settings {
            spool: self.dir.path().join("spool-b"),
            ..self.settings.clone()
        }
    }

    /// Runs `body` inside the namespace (where SeaweedFS's loopback is) with the settings of
    /// two gateways on the bucket.
    fn run<T: Send + 'static>(
        &self,
        body: impl FnOnce(S3Settings, S3Settings) -> T + Send + 'static,
    ) -> T {
        let (first, second) = (self.settings.clone(), self.second());
        in_netns(self.ns.name(), move || body(first, second))
    }
}

fn open(settings: S3Settings) -> S3Storage {
    S3Storage::open(settings, Limits::default()).unwrap()
}

fn repo(name: &str) -> RepoName {
    name.parse().unwrap()
}

fn push(store: &S3Storage, repo: &RepoName, data: &[u8], chunk: usize) -> Digest {
    let id = store.start_upload(repo).unwrap();
    for piece in data.chunks(chunk.max(1)) {
        store.append_upload(repo, &id, None, piece).unwrap();
    }
    let digest = Digest::sha256_of(data);
    store.finish_upload(repo, &id, &digest).unwrap();
    digest
}

fn read_all(store: &S3Storage, repo: &RepoName, digest: &Digest) -> Option<Vec<u8>> {
    let mut blob = store.open_blob(repo, digest).unwrap()?;
    let mut out = Vec::new();
    blob.reader.read_to_end(&mut out).unwrap();
    assert_eq!(out.len() as u64, blob.size);
    Some(out)
}

/// Every object under `data/` (committed or not).
fn data_objects(store: &S3Storage) -> usize {
    store.list(&store.keys.all_data()).unwrap().len()
}

/// Every object under `uploads/` (session states and chunks).
fn upload_objects(store: &S3Storage) -> usize {
    store.list(&store.keys.uploads()).unwrap().len()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

fn manifest(bytes: &[u8]) -> Manifest {
    Manifest {
        digest: Digest::sha256_of(bytes),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        bytes: bytes.to_vec(),
    }
}

#[test]
fn blobs_are_verified_committed_and_served_only_where_linked() {
    let world = world();
    world.run(|settings, _| {
        let store = open(settings);
        let (a, b) = (repo("team/a"), repo("team/b"));
        let digest = push(&store, &a, b"layer bytes", 3);
        assert_eq!(read_all(&store, &a, &digest).unwrap(), b"layer bytes");
        assert_eq!(store.blob_size(&a, &digest, true).unwrap(), Some(11));
        assert!(
            store.open_blob(&b, &digest).unwrap().is_none(),
            "not by digest alone"
        );
        assert!(store.mount_blob(&a, &b, &digest).unwrap());
        assert_eq!(read_all(&store, &b, &digest).unwrap(), b"layer bytes");
        assert!(store.unlink_blob(&a, &digest).unwrap());
        assert!(store.open_blob(&a, &digest).unwrap().is_none());
        assert_eq!(read_all(&store, &b, &digest).unwrap(), b"layer bytes");

        // Content that does not match its digest leaves nothing behind.
        let id = store.start_upload(&a).unwrap();
        store.append_upload(&a, &id, Some(0), b"evil").unwrap();
        let claimed = Digest::sha256_of(b"good");
        let error = store.finish_upload(&a, &id, &claimed).unwrap_err();
        assert!(
            matches!(error, StorageError::DigestInvalid { .. }),
            "{error}"
        );
        assert!(store.blob_size(&a, &claimed, false).unwrap().is_none());
        assert!(matches!(
            store.upload_state(&a, &id),
            Err(StorageError::UploadUnknown)
        ));
        assert_eq!(store.stored_blobs().unwrap().len(), 1);
        assert_eq!(data_objects(&store), 1);

        // Out-of-order chunks and another repository's session id are refused.
        let id = store.start_upload(&a).unwrap();
        store.append_upload(&a, &id, Some(0), b"abc").unwrap();
        assert!(matches!(
            store.append_upload(&a, &id, Some(1), b"x"),
            Err(StorageError::RangeInvalid { given: 1, have: 3 })
        ));
        assert!(matches!(
            store.upload_state(&b, &id),
            Err(StorageError::UploadUnknown)
        ));
        store.cancel_upload(&a, &id).unwrap();

        // sha512 is verified from the spooled copy.
        let id = store.start_upload(&a).unwrap();
        store
            .append_upload(&a, &id, None, b"sha512 content")
            .unwrap();
        let digest512 = Digest::from_hash(Algorithm::Sha512, &Sha512::digest(b"sha512 content"));
        store.finish_upload(&a, &id, &digest512).unwrap();
        assert_eq!(read_all(&store, &a, &digest512).unwrap(), b"sha512 content");

        // GC's view and its delete.
        store.remove_blob(&digest).unwrap();
        assert!(store.open_blob(&b, &digest).unwrap().is_none());
        assert!(store.links_to(&digest).unwrap().is_empty());
        assert_eq!(
            data_objects(&store),
            1,
            "only the sha512 blob's data is left"
        );
    });
}

#[test]
fn a_large_blob_goes_up_in_parts_and_is_invisible_until_committed() {
    let world = world();
    world.run(|settings, _| {
        let store = open(settings.clone());
        let a = repo("big");
        let data = pattern(2 * PART + 12345);
        let digest = Digest::sha256_of(&data);
        let id = store.start_upload(&a).unwrap();
        for piece in data.chunks(1 << 20) {
            store.append_upload(&a, &id, None, piece).unwrap();
        }
        // Parts are in the bucket, yet nothing is visible: no data object, no pointer.
        assert!(
            store.session_has_multipart(&id),
            "no multipart upload started"
        );
        assert_eq!(data_objects(&store), 0);
        assert!(store.stored_blobs().unwrap().is_empty());
        assert!(store.blob_size(&a, &digest, false).unwrap().is_none());
        // The mirror reads a layer back while it arrives.
        let mut head = [0u8; 16];
        assert_eq!(store.read_upload(&a, &id, 100, &mut head).unwrap(), 16);
        assert_eq!(&head, &data[100..116]);
        assert_eq!(
            store.finish_upload(&a, &id, &digest).unwrap(),
            data.len() as u64
        );
        assert_eq!(read_all(&store, &a, &digest).unwrap(), data);
        // A Range request seeks.
        let mut blob = store.open_blob(&a, &digest).unwrap().unwrap();
        blob.reader.seek(SeekFrom::Start(PART as u64 - 3)).unwrap();
        let mut six = [0u8; 6];
        blob.reader.read_exact(&mut six).unwrap();
        assert_eq!(&six, &data[PART - 3..PART + 3]);

        // An abandoned upload (a client gone, a gateway killed): nothing of it is visible, and
        // a new store on the bucket starts clean.
        let id = store.start_upload(&a).unwrap();
        for piece in pattern(PART + 1).chunks(1 << 20) {
            store.append_upload(&a, &id, None, piece).unwrap();
        }
        drop(store);
        // The bytes were never acknowledged (no PATCH ended): the session in the bucket has
        // none of them, and cancelling it leaves nothing behind.
        let store = open(settings);
        assert_eq!(store.upload_state(&a, &id).unwrap().size, 0);
        store.cancel_upload(&a, &id).unwrap();
        assert!(matches!(
            store.upload_state(&a, &id),
            Err(StorageError::UploadUnknown)
        ));
        assert_eq!(upload_objects(&store), 0);
        assert_eq!(store.stored_blobs().unwrap().len(), 1);
        assert_eq!(data_objects(&store), 1);
    });
}

/// Appends `data` to session `id` in `chunk`-sized writes, then ends the request (a PATCH).
fn patch(store: &S3Storage, repo: &RepoName, id: &str, data: &[u8], chunk: usize) -> u64 {
    for piece in data.chunks(chunk) {
        store.append_upload(repo, id, None, piece).unwrap();
    }
    store.save_upload(repo, id).unwrap().size
}

#[test]
fn an_upload_goes_on_after_a_restart_and_through_another_gateway() {
    let world = world();
    world.run(|first, second| {
        let app = repo("team/app");
        let data = pattern(2 * PART + 3 * 1_000_003);
        let digest = Digest::sha256_of(&data);
        let (one, two, three) = (PART + 1_000_003, 2 * PART + 1_000_003, 2 * PART + 2_000_006);

        let a = open(first.clone());
        // A push in one request (nobody told of its session) leaves no session objects.
        push(&a, &app, b"in one go", 3);
        assert_eq!(upload_objects(&a), 0);
        let id = a.start_upload(&app).unwrap();
        assert_eq!(patch(&a, &app, &id, &data[..one], 1 << 20), one as u64);
        // Unacknowledged bytes (a request cut short) are not counted once the process goes.
        a.append_upload(&app, &id, None, &data[one..one + 5000])
            .unwrap();
        drop(a);

        // The same gateway restarted: the session is where the last PATCH left it.
        let a = open(first);
        assert_eq!(a.upload_state(&app, &id).unwrap().size, one as u64);
        assert_eq!(patch(&a, &app, &id, &data[one..two], 3 << 20), two as u64);

        // Another gateway takes over; the first one's copy is stale now and is refused.
        let b = open(second);
        assert_eq!(b.upload_state(&app, &id).unwrap().size, two as u64);
        assert!(matches!(
            b.append_upload(&app, &id, Some(1), b"x"),
            Err(StorageError::RangeInvalid { given: 1, .. })
        ));
        assert_eq!(
            patch(&b, &app, &id, &data[two..three], 1 << 19),
            three as u64
        );
        assert!(matches!(
            a.append_upload(&app, &id, Some(two as u64), b"late"),
            Err(StorageError::UploadConflict)
        ));
        // Having dropped its copy, the first one reads the bucket's again.
        assert_eq!(a.upload_state(&app, &id).unwrap().size, three as u64);
        for piece in data[three..].chunks(1 << 20) {
            a.append_upload(&app, &id, None, piece).unwrap();
        }
        assert_eq!(
            a.finish_upload(&app, &id, &digest).unwrap(),
            data.len() as u64
        );
        assert_eq!(read_all(&b, &app, &digest).unwrap(), data);
        assert_eq!(upload_objects(&a), 0, "the finished session left objects");
        assert!(matches!(
            b.upload_state(&app, &id),
            Err(StorageError::UploadUnknown)
        ));
    });
}

#[test]
fn a_resumed_upload_is_verified_against_what_the_bucket_holds() {
    let world = world();
    world.run(|first, second| {
        let (a, b) = (open(first), open(second));
        let app = repo("team/app");
        let real = pattern(PART + 4321);
        let digest = push(&a, &app, &real, 1 << 20);
        let other = repo("other/app");

        // Bytes sent through two gateways are hashed from the bucket: a session that claims
        // an existing blob's digest, without its bytes, does not get it linked.
        let id = a.start_upload(&other).unwrap();
        patch(&a, &other, &id, &real[..PART], 1 << 20);
        let fake = b"not the rest of it";
        b.append_upload(&other, &id, Some(PART as u64), fake)
            .unwrap();
        assert!(matches!(
            b.finish_upload(&other, &id, &digest),
            Err(StorageError::DigestInvalid { .. })
        ));
        assert!(b.blob_size(&other, &digest, false).unwrap().is_none());
        assert_eq!(read_all(&a, &app, &digest).unwrap(), real);

        // The right bytes, resumed elsewhere, do commit.
        let id = a.start_upload(&other).unwrap();
        patch(&a, &other, &id, &real[..PART + 10], 1 << 20);
        b.append_upload(&other, &id, None, &real[PART + 10..])
            .unwrap();
        b.finish_upload(&other, &id, &digest).unwrap();
        assert_eq!(read_all(&a, &other, &digest).unwrap(), real);
        assert_eq!(upload_objects(&a), 0);
        // One copy of the content, whoever committed last.
        assert_eq!(data_objects(&a), a.stored_blobs().unwrap().len());
    });
}

#[test]
fn abandoned_sessions_expire_from_the_bucket() {
    let world = world();
    world.run(|first, second| {
        let a = open(first);
        let quick = Limits {
            upload_expiry: Duration::ZERO,
            ..Limits::default()
        };
        let b = S3Storage::open(second, quick).unwrap();
        let app = repo("team/app");
        let id = a.start_upload(&app).unwrap();
        patch(&a, &app, &id, &pattern(PART + 77), 1 << 20);
        // Past the (zero) expiry, in the store's whole-second clock too.
        std::thread::sleep(Duration::from_millis(1100));
        // Another gateway's expiry removes what this one abandoned, its multipart upload too.
        assert_eq!(b.expire_uploads().unwrap(), 1);
        assert_eq!(upload_objects(&a), 0);
        assert!(matches!(
            b.upload_state(&app, &id),
            Err(StorageError::UploadUnknown)
        ));
        let digest = Digest::sha256_of(&pattern(PART + 77));
        assert!(a.finish_upload(&app, &id, &digest).is_err());
        assert!(a.blob_size(&app, &digest, false).unwrap().is_none());
        assert_eq!(data_objects(&a), 0);
    });
}

#[test]
fn manifests_tags_and_referrers() {
    let world = world();
    world.run(|settings, _| {
        let store = open(settings);
        let app = repo("team/app");
        let one = manifest(br#"{"schemaVersion":2,"n":1}"#);
        let two = manifest(br#"{"schemaVersion":2,"n":2}"#);
        let tag: Tag = "v1".parse().unwrap();
        store.put_manifest(&app, &one, Some(&tag), None).unwrap();
        let got = store.manifest(&app, &one.digest).unwrap().unwrap();
        assert_eq!(got.bytes, one.bytes);
        assert_eq!(got.media_type, one.media_type);
        assert_eq!(store.tag(&app, &tag).unwrap(), Some(one.digest.clone()));
        assert!(store
            .manifest(&repo("other"), &one.digest)
            .unwrap()
            .is_none());
        let referrer = Referrer {
            digest: two.digest.to_string(),
            media_type: two.media_type.clone(),
            size: two.bytes.len() as u64,
            artifact_type: Some("application/example".into()),
            annotations: None,
        };
        store
            .put_manifest(&app, &two, None, Some((&one.digest, &referrer)))
            .unwrap();
        assert_eq!(store.referrers(&app, &one.digest).unwrap(), vec![referrer]);
        let mut manifests = store.manifests(&app).unwrap();
        manifests.sort();
        let mut expected = vec![one.digest.clone(), two.digest.clone()];
        expected.sort();
        assert_eq!(manifests, expected);
        // Moving the tag replaces it whole.
        store.put_manifest(&app, &two, Some(&tag), None).unwrap();
        assert_eq!(store.tag(&app, &tag).unwrap(), Some(two.digest.clone()));
        assert_eq!(store.tags(&app).unwrap(), Some(vec![tag.clone()]));
        assert_eq!(store.tags(&repo("nobody")).unwrap(), None);
        store.put_manifest(&repo("team"), &one, None, None).unwrap();
        assert_eq!(store.tags(&repo("team")).unwrap(), Some(vec![]));
        assert_eq!(
            store.repositories().unwrap(),
            vec![repo("team"), repo("team/app")]
        );
        // Deleting a manifest takes its tags and its referrer entries with it.
        assert!(store.delete_manifest(&app, &two.digest).unwrap());
        assert_eq!(store.tag(&app, &tag).unwrap(), None);
        assert!(store.referrers(&app, &one.digest).unwrap().is_empty());
        assert!(!store.delete_manifest(&app, &two.digest).unwrap());
        // The manifest's content is a blob, as GC sees it.
        let stored: Vec<Digest> = store
            .stored_blobs()
            .unwrap()
            .into_iter()
            .map(|b| b.digest)
            .collect();
        assert!(
            stored.contains(&one.digest) && stored.contains(&two.digest),
            "{stored:?}"
        );
    });
}

#[test]
fn two_gateways_share_one_bucket() {
    let world = world();
    world.run(|first, second| {
        let (a, b) = (open(first), open(second));
        let app = repo("team/app");
        // A push through one is pullable through the other at once.
        let digest = push(&a, &app, b"shared layer", 5);
        assert_eq!(read_all(&b, &app, &digest).unwrap(), b"shared layer");
        let one = manifest(br#"{"schemaVersion":2,"from":"a"}"#);
        let tag: Tag = "latest".parse().unwrap();
        a.put_manifest(&app, &one, Some(&tag), None).unwrap();
        assert_eq!(b.tag(&app, &tag).unwrap(), Some(one.digest.clone()));

        // The same large blob pushed through both at the same moment: one commit wins, the
        // other's copy is gone, both read the same bytes.
        let data = pattern(PART + 999);
        let (da, db) = std::thread::scope(|scope| {
            let pa = scope.spawn(|| push(&a, &app, &data, 1 << 20));
            let pb = scope.spawn(|| push(&b, &app, &data, 1 << 20));
            (pa.join().unwrap(), pb.join().unwrap())
        });
        assert_eq!(da, db);
        assert_eq!(read_all(&a, &app, &da).unwrap(), data);
        assert_eq!(read_all(&b, &app, &da).unwrap(), data);
        let blobs = a.stored_blobs().unwrap().len();
        assert_eq!(data_objects(&a), blobs, "a losing commit left its copy");

        // Racing tag updates: one winner, and neither manifest lost.
        for round in 0..5 {
            let ma = manifest(format!(r#"{{"schemaVersion":2,"a":{round}}}"#).as_bytes());
            let mb = manifest(format!(r#"{{"schemaVersion":2,"b":{round}}}"#).as_bytes());
            std::thread::scope(|scope| {
                scope.spawn(|| a.put_manifest(&app, &ma, Some(&tag), None).unwrap());
                scope.spawn(|| b.put_manifest(&app, &mb, Some(&tag), None).unwrap());
            });
            let winner = a.tag(&app, &tag).unwrap();
            assert!(
                winner == Some(ma.digest.clone()) || winner == Some(mb.digest.clone()),
                "{winner:?}"
            );
            assert_eq!(b.tag(&app, &tag).unwrap(), winner);
            for m in [&ma, &mb] {
                assert_eq!(b.manifest(&app, &m.digest).unwrap().unwrap().bytes, m.bytes);
            }
        }
    });
}

#[test]
fn a_wrong_secret_is_refused_at_open_with_the_stores_answer() {
    let world = world();
    world.run(|settings, _| {
        let wrong = S3Settings {
            secret_access_key: "not-the-secret".into(),
            ..settings
        };
        let error = S3Storage::open(wrong, Limits::default())
            .err()
            .expect("opened with a wrong secret");
        let text = format!("{error:#}");
        assert!(text.contains("http://127.0.0.1:8333/registry"), "{text}");
        assert!(
            text.contains("SignatureDoesNotMatch") || text.contains("403"),
            "{text}"
        );
    });
}

#[test]
fn one_gateway_collects_while_the_other_pushes() {
    let world = world();
    world.run(|first, second| {
        let (collector, pusher) = (open(first), open(second));
        let grace = std::time::Duration::from_secs(3);
        let app = repo("team/app");
        // Garbage old enough to go, and an old unreferenced layer the pusher will use again.
        let garbage = push(&pusher, &app, b"nobody needs this", 4);
        let reused = push(&pusher, &app, b"a layer pushed long ago", 4);
        std::thread::sleep(grace + std::time::Duration::from_millis(1500));
        let done = std::sync::atomic::AtomicBool::new(false);
        let pushed = std::thread::scope(|scope| {
            let gc = scope.spawn(|| {
                let mut swept = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    swept += crate::registry::admin::gc(&collector, grace).unwrap().swept;
                }
                swept
            });
            // Ends the GC loop however this thread ends (a failed assertion included).
            struct Done<'a>(&'a std::sync::atomic::AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let stop = Done(&done);
            let mut pushed = Vec::new();
            for round in 0..8 {
                let config = format!("config {round}");
                let layer = push(&pusher, &app, config.as_bytes(), 2);
                // A client that finds the old layer there (HEAD) references it, as docker
                // push does for a layer the registry already has; one that does not (GC was
                // quicker) pushes it again.
                if pusher.blob_size(&app, &reused, true).unwrap() != Some(23) {
                    push(&pusher, &app, b"a layer pushed long ago", 4);
                }
                let body = serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": layer.to_string(),
                        "size": config.len(),
                    },
                    "layers": [{
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": reused.to_string(),
                        "size": 23,
                    }],
                });
                let m = manifest(body.to_string().as_bytes());
                pusher.put_manifest(&app, &m, None, None).unwrap();
                pushed.push((m, vec![layer, reused.clone()]));
            }
            drop(stop);
            assert!(gc.join().unwrap() >= 1, "GC never swept the garbage");
            pushed
        });
        assert!(collector.open_blob(&app, &garbage).unwrap().is_none());
        for (m, layers) in &pushed {
            assert!(collector.manifest(&app, &m.digest).unwrap().is_some());
            for layer in layers {
                assert!(
                    read_all(&collector, &app, layer).is_some(),
                    "{layer} of a pushed manifest was collected"
                );
            }
        }
    });
}

#[test]
fn the_read_cache_serves_hot_blobs_but_the_bucket_still_decides_who_sees_them() {
    let world = world();
    let cache_dir = world.dir.path().join("cache-a");
    world.run(move |settings, second| {
        let cached = open(S3Settings {
            cache: Some((cache_dir.clone(), 1 << 20)),
            ..settings
        });
        let other = open(second);
        let (a, b) = (repo("team/a"), repo("team/b"));
        let data = pattern(300_000);
        let digest = push(&other, &a, &data, 64 << 10);
        assert!(other.mount_blob(&a, &b, &digest).unwrap());

        // A range read does not fill; a whole read does, once the digest checked out.
        let mut blob = cached.open_blob(&a, &digest).unwrap().unwrap();
        blob.reader.seek(SeekFrom::Start(1000)).unwrap();
        let mut part = vec![0u8; 10];
        blob.reader.read_exact(&mut part).unwrap();
        assert_eq!(part, data[1000..1010]);
        drop(blob);
        let cache = cached.cache.clone().unwrap();
        cache.settle();
        assert_eq!(cache.bytes(), 0);
        assert_eq!(read_all(&cached, &a, &digest).unwrap(), data);
        cache.settle();
        assert_eq!(cache.bytes(), data.len() as u64);

        // The bytes now come from this gateway's disk: with the bucket's copy gone (its
        // pointer and links left), the caching gateway still serves them, the other cannot.
        let pointer = other.pointer(&digest).unwrap().unwrap();
        assert!(other.remove(&other.keys.data(&pointer.id)).unwrap());
        assert_eq!(read_all(&cached, &a, &digest).unwrap(), data);
        let mut broken = other.open_blob(&a, &digest).unwrap().unwrap();
        assert!(broken.reader.read_to_end(&mut Vec::new()).is_err());

        // What may be seen is still the bucket's call: unlinked or deleted elsewhere, it is
        // gone here too, cache or not.
        assert!(other.unlink_blob(&a, &digest).unwrap());
        assert!(cached.open_blob(&a, &digest).unwrap().is_none());
        assert_eq!(read_all(&cached, &b, &digest).unwrap(), data);
        other.remove_blob(&digest).unwrap();
        assert!(cached.open_blob(&b, &digest).unwrap().is_none());
    });
}

/// A CA and a server certificate for 127.0.0.1 it signed, as PEM: (CA, cert, key).
fn tls_files() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn an_https_store_is_reached_only_with_its_ca() {
    let lab = Netns::lab();
    let ns = Netns::new(&lab, "up");
    let dir = tempfile::Builder::new()
        .prefix("gateway-s3-tls")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (ca, cert, key) = tls_files();
    let (cert_file, key_file) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let weed = SeaweedFs::start_with(
        &ns,
        &dir.path().join("weed"),
        "registry",
        Some((&cert_file, &key_file)),
    );
    let (other_ca, _, _) = tls_files();
    let settings = S3Settings {
        endpoint: format!(
            "https://127.0.0.1:{}",
            gateway_tests::seaweedfs::S3_TLS_PORT
        ),
        bucket: weed.bucket.clone(),
        region: "us-east-1".into(),
        access_key_id: weed.access_key_id.clone(),
        secret_access_key: weed.secret_access_key.clone(),
        prefix: "tls".into(),
        ca: Some(ca.into_bytes()),
        address: None,
        uplink: None,
        cache: None,
        spool: dir.path().join("spool"),
    };
    in_netns(ns.name(), move || {
        let store = open(settings.clone());
        let digest = push(&store, &repo("team/tls"), b"over TLS", 4);
        assert_eq!(
            read_all(&store, &repo("team/tls"), &digest).unwrap(),
            b"over TLS"
        );
        drop(store);
        for (ca, why) in [(None, "the system roots"), (Some(other_ca), "another CA")] {
            let refused = S3Storage::open(
                S3Settings {
                    ca: ca.map(String::into_bytes),
                    ..settings.clone()
                },
                Limits::default(),
            );
            let error = format!("{:#}", refused.err().expect(why));
            assert!(
                error.contains("certificate") || error.contains("UnknownIssuer"),
                "{why}: {error}"
            );
        }
    });
}
