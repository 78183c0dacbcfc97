//! The store and the cache over a temporary directory: what survives a restart, what a crash
//! leaves, and that a damaged body is never served.

use std::fs;

use http_cache_semantics::CachePolicy;
use hyper::{Request, Response};

use super::{
    store::{self, Meta, Store},
    Cache,
};

fn policy() -> CachePolicy {
    let req = Request::get("http://example.com:80/a").body(()).unwrap();
    let res = Response::builder()
        .header("cache-control", "max-age=600")
        .body(())
        .unwrap();
    CachePolicy::new(&req, &res)
}

/// Stores `body` under `url` the way a fill does: a temporary file, then commit.
fn put(store: &Store, url: &str, body: &[u8], stored_unix: u64) -> (String, Meta) {
    let key = store::key_of(url);
    let (temp, file) = store.temp_file().unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, body, 0).unwrap();
    let meta = Meta {
        version: store::VERSION,
        url: url.to_owned(),
        body: Store::body_name(&key).unwrap(),
        size: body.len() as u64,
        sha256: store::hex(ring::digest::digest(&ring::digest::SHA256, body).as_ref()),
        stored_unix,
        status: 200,
        headers: vec![("content-type".into(), b"text/plain".to_vec())],
        policy: policy(),
        vary_key: None,
    };
    store.commit(&key, &temp, &file, &meta).unwrap();
    (key, meta)
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn entries_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (store, entries) = Store::open(dir.path()).unwrap();
    assert!(entries.is_empty());
    put(&store, "http://example.com:80/a", b"hello", 1);
    let cache = Cache::open(dir.path(), 1 << 20, 1 << 20).unwrap();
    assert_eq!(cache.stats().entries, 1);
    assert_eq!(cache.stats().size_bytes, 5);
    let found = cache
        .lookup(&store::key_of("http://example.com:80/a"))
        .await
        .unwrap();
    assert_eq!(found.meta.size, 5);
    assert_eq!(found.meta.headers[0].0, "content-type");
    assert!(cache.purge("http://example.com:80/a").await);
    assert!(!cache.purge("http://example.com:80/a").await);
    assert!(files(&dir.path().join("objects")).is_empty());
}

#[tokio::test]
async fn a_crash_mid_write_leaves_nothing_served() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    // A fill that died half-way: only its temporary file exists.
    let (_temp, file) = store.temp_file().unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"half of it", 0).unwrap();
    // A crash between the body's rename and its metadata: a body nobody names.
    let key = store::key_of("http://example.com:80/b");
    let orphan = dir
        .path()
        .join("objects")
        .join(Store::body_name(&key).unwrap());
    fs::write(&orphan, b"complete, but never committed").unwrap();
    let cache = Cache::open(dir.path(), 1 << 20, 1 << 20).unwrap();
    assert_eq!(cache.stats().entries, 0);
    assert!(cache.lookup(&key).await.is_none());
    assert!(
        files(&dir.path().join("tmp")).is_empty(),
        "temporary files are removed at start"
    );
    assert!(!orphan.exists(), "orphan bodies are removed at start");
}

#[tokio::test]
async fn damaged_entries_are_dropped_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let (short_key, short) = put(&store, "http://example.com:80/short", b"0123456789", 1);
    let (flip_key, flipped) = put(&store, "http://example.com:80/flip", b"0123456789", 2);
    let objects = dir.path().join("objects");
    // Truncated: caught by the size check at start.
    fs::write(objects.join(&short.body), b"01234").unwrap();
    // Same size, other bytes: caught by the digest on first use.
    fs::write(objects.join(&flipped.body), b"0123456780").unwrap();
    fs::write(objects.join("junk.meta"), b"{not json").unwrap();
    let cache = Cache::open(dir.path(), 1 << 20, 1 << 20).unwrap();
    assert_eq!(
        cache.stats().entries,
        1,
        "the truncated entry is gone at start"
    );
    assert!(cache.lookup(&short_key).await.is_none());
    assert!(
        cache.lookup(&flip_key).await.is_none(),
        "a wrong digest is never served"
    );
    assert_eq!(cache.stats().corrupt, 1);
    assert_eq!(cache.stats().entries, 0);
    assert!(files(&objects).is_empty(), "{:?}", files(&objects));
}

#[tokio::test]
async fn the_size_bound_evicts_the_oldest_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let (old, _) = put(&store, "http://example.com:80/old", &[1; 600], 1);
    let (new, _) = put(&store, "http://example.com:80/new", &[2; 600], 2);
    let cache = Cache::open(dir.path(), 1000, 1000).unwrap();
    assert!(cache.lookup(&old).await.is_none());
    assert!(cache.lookup(&new).await.is_some());
    assert_eq!(cache.stats().size_bytes, 600);
}
