//! The filesystem backend on a temporary directory: verified commits, links per repository,
//! resumable and expiring uploads, manifests, tags and referrers.

use std::time::Duration;

use super::*;

fn repo(name: &str) -> RepoName {
    name.parse().unwrap()
}

fn store() -> (tempfile::TempDir, FsStorage) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStorage::open(dir.path().join("registry"), Limits::default()).unwrap();
    (dir, store)
}

/// Uploads `data` in `chunks` pieces into `repo`; the digest.
fn push(store: &FsStorage, repo: &RepoName, data: &[u8], chunks: usize) -> Digest {
    let id = store.start_upload(repo).unwrap();
    for chunk in data.chunks(data.len().div_ceil(chunks).max(1)) {
        store.append_upload(repo, &id, None, chunk).unwrap();
    }
    let digest = Digest::sha256_of(data);
    store.finish_upload(repo, &id, &digest).unwrap();
    digest
}

fn read_all(store: &FsStorage, repo: &RepoName, digest: &Digest) -> Option<Vec<u8>> {
    let mut blob = store.open_blob(repo, digest).unwrap()?;
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut blob.reader, &mut out).unwrap();
    Some(out)
}

#[test]
fn a_pushed_blob_is_served_only_where_it_is_linked() {
    let (_dir, store) = store();
    let (a, b) = (repo("team/a"), repo("team/b"));
    let digest = push(&store, &a, b"layer bytes", 3);
    assert_eq!(read_all(&store, &a, &digest).unwrap(), b"layer bytes");
    assert_eq!(store.blob_size(&a, &digest, false).unwrap(), Some(11));
    assert!(
        store.open_blob(&b, &digest).unwrap().is_none(),
        "not by digest alone"
    );
    assert!(store.mount_blob(&a, &b, &digest).unwrap());
    assert_eq!(read_all(&store, &b, &digest).unwrap(), b"layer bytes");
    assert!(!store
        .mount_blob(&repo("other"), &b, &Digest::sha256_of(b"x"))
        .unwrap());
    assert!(store.unlink_blob(&a, &digest).unwrap());
    assert!(store.open_blob(&a, &digest).unwrap().is_none());
    assert!(store.open_blob(&b, &digest).unwrap().is_some());
}

#[test]
fn content_that_does_not_match_its_digest_is_not_stored() {
    let (_dir, store) = store();
    let a = repo("a");
    let id = store.start_upload(&a).unwrap();
    store.append_upload(&a, &id, Some(0), b"evil").unwrap();
    let claimed = Digest::sha256_of(b"good");
    let error = store.finish_upload(&a, &id, &claimed).unwrap_err();
    assert!(
        matches!(error, StorageError::DigestInvalid { .. }),
        "{error}"
    );
    assert!(store.blob_size(&a, &claimed, false).unwrap().is_none());
    assert!(store.stored_blobs().unwrap().is_empty());
    assert!(matches!(
        store.upload_state(&a, &id),
        Err(StorageError::UploadUnknown)
    ));
}

#[test]
fn sha512_digests_are_verified_too() {
    let (_dir, store) = store();
    let a = repo("a");
    let id = store.start_upload(&a).unwrap();
    store.append_upload(&a, &id, None, b"data").unwrap();
    let digest = Digest::of(Algorithm::Sha512, b"data");
    assert_eq!(store.finish_upload(&a, &id, &digest).unwrap(), 4);
    assert_eq!(read_all(&store, &a, &digest).unwrap(), b"data");
}

#[test]
fn chunks_must_be_in_order_and_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_blob_bytes: 8,
        ..Limits::default()
    };
    let store = FsStorage::open(dir.path(), limits).unwrap();
    let a = repo("a");
    let id = store.start_upload(&a).unwrap();
    assert_eq!(
        store.append_upload(&a, &id, Some(0), b"1234").unwrap().size,
        4
    );
    assert!(matches!(
        store.append_upload(&a, &id, Some(2), b"x"),
        Err(StorageError::RangeInvalid { given: 2, have: 4 })
    ));
    assert!(matches!(
        store.append_upload(&a, &id, Some(4), b"56789"),
        Err(StorageError::TooLarge { .. })
    ));
    assert_eq!(store.upload_state(&a, &id).unwrap().size, 4);
    // Another repository cannot touch the session.
    assert!(matches!(
        store.append_upload(&repo("b"), &id, None, b"x"),
        Err(StorageError::UploadUnknown)
    ));
    assert!(matches!(
        store.upload_state(&a, "../../etc"),
        Err(StorageError::UploadUnknown)
    ));
    store.cancel_upload(&a, &id).unwrap();
    assert!(store.upload_state(&a, &id).is_err());
}

#[test]
fn an_upload_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a = repo("a");
    let id = {
        let store = FsStorage::open(dir.path(), Limits::default()).unwrap();
        let id = store.start_upload(&a).unwrap();
        store.append_upload(&a, &id, None, b"first ").unwrap();
        id
    };
    let store = FsStorage::open(dir.path(), Limits::default()).unwrap();
    assert_eq!(store.upload_state(&a, &id).unwrap().size, 6);
    store.append_upload(&a, &id, Some(6), b"second").unwrap();
    let digest = Digest::sha256_of(b"first second");
    store.finish_upload(&a, &id, &digest).unwrap();
    assert_eq!(read_all(&store, &a, &digest).unwrap(), b"first second");
}

#[test]
fn abandoned_uploads_expire_and_are_never_visible() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        upload_expiry: Duration::ZERO,
        ..Limits::default()
    };
    let store = FsStorage::open(dir.path(), limits).unwrap();
    let a = repo("a");
    let id = store.start_upload(&a).unwrap();
    store.append_upload(&a, &id, None, b"partial").unwrap();
    assert!(store.stored_blobs().unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(store.expire_uploads().unwrap(), 1);
    assert!(entries(&dir.path().join("uploads")).unwrap().is_empty());
    // Leftovers in tmp/ go at the next open.
    std::fs::write(dir.path().join("tmp/leftover"), b"x").unwrap();
    drop(store);
    FsStorage::open(dir.path(), Limits::default()).unwrap();
    assert!(entries(&dir.path().join("tmp")).unwrap().is_empty());
}

fn manifest(bytes: &[u8]) -> Manifest {
    Manifest {
        digest: Digest::sha256_of(bytes),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        bytes: bytes.to_vec(),
    }
}

#[test]
fn manifests_tags_and_referrers() {
    let (_dir, store) = store();
    let a = repo("team/app");
    let image = manifest(b"{\"image\":1}");
    let v1: Tag = "v1".parse().unwrap();
    store.put_manifest(&a, &image, Some(&v1), None).unwrap();
    assert_eq!(store.tag(&a, &v1).unwrap(), Some(image.digest.clone()));
    let got = store.manifest(&a, &image.digest).unwrap().unwrap();
    assert_eq!(got.bytes, image.bytes);
    assert_eq!(got.media_type, image.media_type);
    assert!(store
        .manifest(&repo("other"), &image.digest)
        .unwrap()
        .is_none());

    let signature = manifest(b"{\"sig\":1}");
    let referrer = Referrer {
        digest: signature.digest.to_string(),
        media_type: signature.media_type.clone(),
        size: signature.bytes.len() as u64,
        artifact_type: Some("application/example.sig".into()),
        annotations: None,
    };
    store
        .put_manifest(&a, &signature, None, Some((&image.digest, &referrer)))
        .unwrap();
    assert_eq!(store.referrers(&a, &image.digest).unwrap(), vec![referrer]);
    assert_eq!(store.manifests(&a).unwrap().len(), 2);
    assert_eq!(store.repositories().unwrap(), vec![a.clone()]);
    assert_eq!(store.tags(&a).unwrap(), Some(vec![v1.clone()]));
    assert_eq!(store.tags(&repo("none")).unwrap(), None);

    assert!(store.delete_manifest(&a, &signature.digest).unwrap());
    assert!(store.referrers(&a, &image.digest).unwrap().is_empty());
    assert!(store.delete_manifest(&a, &image.digest).unwrap());
    assert_eq!(store.tag(&a, &v1).unwrap(), None, "its tags go with it");
    assert!(!store.delete_manifest(&a, &image.digest).unwrap());
}

#[test]
fn removing_a_blob_removes_every_link() {
    let (_dir, store) = store();
    let (a, b) = (repo("a"), repo("b/c"));
    let digest = push(&store, &a, b"shared", 1);
    store.mount_blob(&a, &b, &digest).unwrap();
    assert_eq!(store.repositories().unwrap(), vec![a.clone(), b.clone()]);
    let stored = store.stored_blobs().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].size, 6);
    store.remove_blob(&digest).unwrap();
    assert!(store.open_blob(&a, &digest).unwrap().is_none());
    assert!(!store.layout.link(&b, &digest).exists());
    // Pushing it again brings it back.
    push(&store, &a, b"shared", 2);
    assert!(store.open_blob(&a, &digest).unwrap().is_some());
}
