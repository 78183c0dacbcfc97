//! The mirror on loopback in front of a real upstream (distribution 2.8 with token auth):
//! a pull by curl and by skopeo gets the upstream's exact bytes; two concurrent pulls of a
//! blob make one upstream GET and get identical bytes; a blob whose content does not match its
//! digest breaks off every response and is not stored; a tag is re-checked with HEAD after the
//! TTL and not before; cached content is served while the upstream or "Tor" is down, and the
//! rest gets a 503 with the spec's error body. Nothing leaves 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mirror_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mirror_support::{
    tools_present, upstream_config, Image, Loopback, MirrorUnderTest, TokenService, Upstream,
};

struct World {
    _dir: tempfile::TempDir,
    _tokens: TokenService,
    upstream: Upstream,
    connector: Arc<Loopback>,
    mirror: MirrorUnderTest,
}

async fn world(tag_ttl: u32) -> World {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenService::start(dir.path(), "tokens", None);
    let upstream = Upstream::start(dir.path(), &tokens.realm(), dir.path());
    let connector = Arc::new(Loopback::default());
    let mirror = MirrorUnderTest::start(
        dir.path(),
        vec![(upstream_config("hub.test", &upstream.url()), None)],
        connector.clone(),
        tag_ttl,
    )
    .await;
    World {
        _dir: dir,
        _tokens: tokens,
        upstream,
        connector,
        mirror,
    }
}

/// Pulls `image` (by its one-component name, as Docker asks for official images) through the
/// mirror: the manifest by tag, then each blob; checks every byte.
async fn pull(mirror: &MirrorUnderTest, name: &str, image: &Image) {
    let manifest = mirror
        .get("GET", &format!("/v2/{name}/manifests/{}", image.tag))
        .await;
    assert_eq!(manifest.status, 200, "{manifest:?}");
    assert_eq!(manifest.body, image.manifest);
    assert_eq!(
        manifest.header("docker-content-digest"),
        Some(image.digest.to_string().as_str())
    );
    assert_eq!(
        manifest.header("content-type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    for (digest, data) in &image.layers {
        let blob = mirror
            .get("GET", &format!("/v2/{name}/blobs/{digest}"))
            .await;
        assert!(blob.ok, "{}", blob.stderr);
        assert_eq!(blob.status, 200);
        assert!(blob.body == *data, "the blob {digest} differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_get_the_upstreams_bytes_once_each() {
    if !tools_present() {
        return;
    }
    let w = world(600).await;
    let image = w
        .upstream
        .seed("library/app", "v1", &[300_000, 5_000, 1_200_000], 1);

    // Anonymous direct pulls are refused: the token path is real.
    let direct = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/v2/library/app/manifests/v1", w.upstream.url()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&direct.stdout), "401");

    pull(&w.mirror, "app", &image).await;
    pull(&w.mirror, "library/app", &image).await;
    // By digest too, served from the cache.
    let by_digest = w
        .mirror
        .get("GET", &format!("/v2/app/manifests/{}", image.digest))
        .await;
    assert_eq!(by_digest.body, image.manifest);
    for (digest, _) in &image.layers {
        let path = format!("/v2/library/app/blobs/{digest}");
        assert_eq!(
            w.upstream.served("GET", &path),
            1,
            "{path} fetched upstream once"
        );
    }
    assert_eq!(w.upstream.served("GET", "/v2/library/app/manifests/v1"), 1);
    let stats = w.mirror.cache("hub.test").stats();
    assert_eq!(stats.blob_fetches, 3, "{stats:?}");
    assert_eq!(stats.blob_hits, 3, "{stats:?}");
    assert_eq!(stats.manifest_fetches, 1, "{stats:?}");

    // A HEAD of a cached blob answers from the cache; range requests work on it.
    let (digest, data) = &image.layers[0];
    let head = w
        .mirror
        .get("HEAD", &format!("/v2/app/blobs/{digest}"))
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(data.len().to_string().as_str())
    );

    // Pushing is not what a mirror does.
    let push = w.mirror.get("POST", "/v2/app/blobs/uploads/").await;
    assert_eq!(push.status, 405);
    assert_eq!(push.json()["errors"][0]["code"], "UNSUPPORTED");
    let unknown = w
        .mirror
        .get("GET", "/v2/app/manifests/v1?ns=quay.example")
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["errors"][0]["code"], "NAME_UNKNOWN");
    assert_eq!(unknown.header("oci-namespace"), Some("quay.example"));
    let missing = w.mirror.get("GET", "/v2/app/manifests/nope").await;
    assert_eq!(missing.status, 404, "{missing:?}");
    assert_eq!(missing.json()["errors"][0]["code"], "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pulls_of_a_blob_share_one_upstream_fetch() {
    if !tools_present() {
        return;
    }
    let w = world(600).await;
    let image = w.upstream.seed("library/big", "v1", &[24 << 20], 2);
    let (digest, data) = &image.layers[0];
    // Both requests arrive while the fetch is still connecting.
    w.connector.delay_ms.store(400, Ordering::SeqCst);
    let path = format!("/v2/big/blobs/{digest}");
    let (a, b) = tokio::join!(w.mirror.get("GET", &path), w.mirror.get("GET", &path));
    for fetched in [&a, &b] {
        assert!(fetched.ok, "{}", fetched.stderr);
        assert_eq!(fetched.status, 200);
        assert!(fetched.body == *data, "a client got other bytes");
    }
    assert_eq!(
        w.upstream
            .served("GET", &format!("/v2/library/big/blobs/{digest}")),
        1
    );
    let stats = w.mirror.cache("hub.test").stats();
    assert_eq!(
        (stats.blob_fetches, stats.joined_fetches),
        (1, 1),
        "{stats:?}"
    );
    // A third pull after the commit comes from the cache.
    let c = w.mirror.get("GET", &path).await;
    assert!(c.body == *data);
    assert_eq!(
        w.upstream
            .served("GET", &format!("/v2/library/big/blobs/{digest}")),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_that_fails_its_digest_breaks_off_and_is_not_stored() {
    if !tools_present() {
        return;
    }
    let w = world(600).await;
    let image = w.upstream.seed("library/bad", "v1", &[3 << 20], 3);
    let (digest, data) = &image.layers[0];
    w.upstream.corrupt(digest);
    w.connector.delay_ms.store(300, Ordering::SeqCst);
    let path = format!("/v2/bad/blobs/{digest}");
    let (a, b) = tokio::join!(w.mirror.get("GET", &path), w.mirror.get("GET", &path));
    for fetched in [&a, &b] {
        // The status and almost all bytes went out; the clean end never did.
        assert!(
            !fetched.ok,
            "a corrupt blob ended cleanly: {:?}",
            fetched.status
        );
        assert!(
            fetched.body.len() < data.len(),
            "{} bytes",
            fetched.body.len()
        );
    }
    let store = &w.mirror.stores["hub.test"];
    let repo = "library/bad".parse().unwrap();
    assert_eq!(
        store.blob_size(&repo, digest, false).unwrap(),
        None,
        "stored anyway"
    );
    assert!(store
        .stored_blobs()
        .unwrap()
        .iter()
        .all(|b| &b.digest != digest));
    assert_eq!(w.mirror.cache("hub.test").stats().digest_mismatches, 1);
    // Fixed upstream, it is fetched again and served.
    w.connector.delay_ms.store(0, Ordering::SeqCst);
    w.upstream.restore(digest, data);
    let again = w.mirror.get("GET", &path).await;
    assert!(again.ok, "{}", again.stderr);
    assert!(again.body == *data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_moved_tag_is_seen_after_the_ttl_by_a_head() {
    if !tools_present() {
        return;
    }
    let w = world(2).await;
    let old = w.upstream.seed("library/moving", "stable", &[1000], 4);
    let digest_of =
        |f: &mirror_support::Fetched| f.header("docker-content-digest").unwrap().to_owned();
    let path = "/v2/moving/manifests/stable";
    let first = w.mirror.get("GET", path).await;
    assert_eq!(digest_of(&first), old.digest.to_string());
    let new = w.upstream.seed("library/moving", "stable", &[2000], 5);
    // Within the TTL: the cached digest, and the upstream was not asked.
    let within = w.mirror.get("GET", path).await;
    assert_eq!(digest_of(&within), old.digest.to_string());
    assert_eq!(
        w.upstream
            .served("HEAD", "/v2/library/moving/manifests/stable"),
        0
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let after = w.mirror.get("GET", path).await;
    assert_eq!(digest_of(&after), new.digest.to_string());
    assert_eq!(after.body, new.manifest);
    assert_eq!(
        w.upstream
            .served("HEAD", "/v2/library/moving/manifests/stable"),
        1
    );
    assert_eq!(
        w.upstream
            .served("GET", "/v2/library/moving/manifests/stable"),
        2
    );
    // Unchanged after another TTL: a HEAD, no GET.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let unchanged = w.mirror.get("GET", path).await;
    assert_eq!(digest_of(&unchanged), new.digest.to_string());
    assert_eq!(
        w.upstream
            .served("HEAD", "/v2/library/moving/manifests/stable"),
        2
    );
    assert_eq!(
        w.upstream
            .served("GET", "/v2/library/moving/manifests/stable"),
        2
    );
    // The old manifest stays reachable by digest.
    let by_digest = w
        .mirror
        .get("GET", &format!("/v2/moving/manifests/{}", old.digest))
        .await;
    assert_eq!(by_digest.body, old.manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_the_cache_serves_and_the_rest_gets_a_503() {
    if !tools_present() {
        return;
    }
    let mut w = world(0).await;
    let cached = w.upstream.seed("library/kept", "v1", &[4000, 5000], 6);
    let _uncached = w.upstream.seed("library/other", "v1", &[100], 7);
    pull(&w.mirror, "kept", &cached).await;

    // "Tor" down: the connector refuses.
    w.connector.down.store(true, Ordering::SeqCst);
    pull(&w.mirror, "kept", &cached).await;
    let refused = w.mirror.get("GET", "/v2/other/manifests/v1").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    let error = &refused.json()["errors"][0];
    assert_eq!(error["code"], "MANIFEST_UNKNOWN");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("unreachable") && message.contains("Tor is not bootstrapped"),
        "{message}"
    );
    let blob = w
        .mirror
        .get("GET", &format!("/v2/other/blobs/{}", _uncached.layers[0].0))
        .await;
    assert_eq!(blob.status, 503);
    assert_eq!(blob.json()["errors"][0]["code"], "BLOB_UNKNOWN");

    // The upstream down instead: the same.
    w.connector.down.store(false, Ordering::SeqCst);
    w.upstream.stop();
    pull(&w.mirror, "kept", &cached).await;
    let refused = w.mirror.get("GET", "/v2/other/manifests/v1").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(w.mirror.cache("hub.test").stats().served_stale >= 2);
    w.mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skopeo_copies_through_the_mirror() {
    if !tools_present()
        || std::process::Command::new("skopeo")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("skipped: no skopeo");
        return;
    }
    let w = world(600).await;
    let image = w
        .upstream
        .seed("library/tool", "1.0", &[70_000, 900_000], 8);
    let work = w._dir.path().join("skopeo");
    std::fs::create_dir_all(&work).unwrap();
    let registries = work.join("registries.conf");
    std::fs::write(&registries, "").unwrap();
    let out = work.join("out");
    let output = tokio::process::Command::new("skopeo")
        .env("REGISTRIES_CONFIG_PATH", &registries)
        .env("HOME", &work)
        .args(["--insecure-policy", "--tmpdir"])
        .arg(&work)
        .args(["copy", "--src-cert-dir"])
        .arg(&w.mirror.bundle)
        .args(["--authfile"])
        .arg(work.join("auth.json"))
        .arg(format!(
            "docker://127.0.0.1:{}/tool:1.0",
            w.mirror.addr.port()
        ))
        .arg(format!("dir:{}", out.display()))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read(out.join("manifest.json")).unwrap(),
        image.manifest
    );
    for (digest, data) in &image.layers {
        assert!(std::fs::read(out.join(digest.hex())).unwrap() == *data);
        let path = format!("/v2/library/tool/blobs/{digest}");
        assert_eq!(w.upstream.served("GET", &path), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_bound_the_least_recently_pulled_image_goes() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenService::start(dir.path(), "tokens", None);
    let upstream = Upstream::start(dir.path(), &tokens.realm(), dir.path());
    let old = upstream.seed("library/old", "1", &[400_000], 21);
    let new = upstream.seed("library/new", "1", &[400_000], 22);
    // Room for one image and a half.
    let mirror = MirrorUnderTest::bounded(
        dir.path(),
        vec![(upstream_config("hub.test", &upstream.url()), None)],
        Arc::new(Loopback::default()),
        600,
        600_000,
    )
    .await;
    pull(&mirror, "old", &old).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    pull(&mirror, "new", &new).await;
    let store = mirror.stores["hub.test"].clone();
    let repo = |name: &str| -> gateway_agent::registry::names::RepoName { name.parse().unwrap() };
    let (old_layer, new_layer) = (old.layers[0].0.clone(), new.layers[0].0.clone());
    let evicted = gateway_tests::eventually(Duration::from_secs(10), || {
        store
            .blob_size(&repo("library/old"), &old_layer, false)
            .unwrap()
            .is_none()
    });
    assert!(evicted, "the old image's layer is still cached");
    assert!(store
        .manifest(&repo("library/old"), &old.digest)
        .unwrap()
        .is_none());
    assert!(store
        .blob_size(&repo("library/new"), &new_layer, false)
        .unwrap()
        .is_some());
    let held: u64 = store.stored_blobs().unwrap().iter().map(|b| b.size).sum();
    assert!(held <= 600_000, "{held} bytes held");
    // Pulled again, it comes back from the upstream.
    pull(&mirror, "old", &old).await;
    let path = format!("/v2/library/old/blobs/{old_layer}");
    assert_eq!(upstream.served("GET", &path), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eviction_never_takes_a_blob_from_a_pull_in_progress() {
    use tokio::io::AsyncReadExt;
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenService::start(dir.path(), "tokens", None);
    let upstream = Upstream::start(dir.path(), &tokens.realm(), dir.path());
    // Far larger than what the sockets and curl buffer (here tcp_rmem's ceiling is 32 MiB,
    // and a receiver that does not read does not grow its window), so the mirror is still
    // sending it when the client stops reading.
    let big = upstream.seed("library/big", "1", &[64 << 20], 31);
    let small = upstream.seed("library/small", "1", &[2 << 20], 32);
    // Room for the big image, not for both.
    let mirror = MirrorUnderTest::bounded(
        dir.path(),
        vec![(upstream_config("hub.test", &upstream.url()), None)],
        Arc::new(Loopback::default()),
        600,
        (64 << 20) + (1 << 20),
    )
    .await;
    let store = mirror.stores["hub.test"].clone();
    let repo = |name: &str| -> gateway_agent::registry::names::RepoName { name.parse().unwrap() };
    let (layer, data) = &big.layers[0];

    // A pull of the big image: its manifest, then its layer, read only a little.
    let manifest = mirror.get("GET", "/v2/big/manifests/1").await;
    assert_eq!(manifest.status, 200, "{manifest:?}");
    let mut curl = tokio::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "120", "--cacert"])
        .arg(&mirror.ca)
        .arg("--cert")
        .arg(mirror.bundle.join("client.cert"))
        .arg("--key")
        .arg(mirror.bundle.join("client.key"))
        .args([
            "--resolve",
            &format!("mirror.home.arpa:{}:127.0.0.1", mirror.addr.port()),
        ])
        .arg(format!(
            "https://mirror.home.arpa:{}/v2/big/blobs/{layer}",
            mirror.addr.port()
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = curl.stdout.take().unwrap();
    let mut body = vec![0u8; 64 << 10];
    stdout.read_exact(&mut body).await.unwrap();
    // The fetch goes on without the client and commits the layer.
    let committed = gateway_tests::eventually(Duration::from_secs(30), || {
        store
            .blob_size(&repo("library/big"), layer, false)
            .unwrap()
            .is_some()
    });
    assert!(committed, "the big layer was never committed");

    // Meanwhile another image is pulled: the caches are over the bound, and the big image is
    // no longer the one pulled last.
    pull(&mirror, "small", &small).await;
    let evicting = mirror.mirror.clone();
    let evicted = tokio::task::spawn_blocking(move || evicting.evict())
        .await
        .unwrap()
        .unwrap();

    // The client reads on: every byte, a clean end.
    stdout.read_to_end(&mut body).await.unwrap();
    let status = curl.wait().await.unwrap();
    let mut stderr = String::new();
    curl.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(
        status.success(),
        "the pull in progress broke off ({status}: {stderr}); eviction: {evicted:?}"
    );
    assert!(body == *data, "the layer's bytes differ");
    assert!(
        store
            .manifest(&repo("library/big"), &big.digest)
            .unwrap()
            .is_some(),
        "the image being pulled was evicted: {evicted:?}"
    );
    assert!(
        evicted
            .spared
            .iter()
            .any(|image| image.contains("library/big@")),
        "{evicted:?}"
    );
    // Its pull over (the tests' pull window is zero), it is the one that goes.
    let cache = mirror.cache("hub.test").clone();
    let released =
        gateway_tests::eventually(Duration::from_secs(10), || cache.leases().held() == 0);
    assert!(released, "leases still held after the pull");
    let evicting = mirror.mirror.clone();
    let evicted = tokio::task::spawn_blocking(move || evicting.evict())
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .manifest(&repo("library/big"), &big.digest)
            .unwrap()
            .is_none(),
        "{evicted:?}"
    );
    let held: u64 = store.stored_blobs().unwrap().iter().map(|b| b.size).sum();
    assert!(held <= (64 << 20) + (1 << 20), "{held} bytes held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_cached_for_one_repository_serves_another_the_upstream_allows() {
    if !tools_present() {
        return;
    }
    let w = world(600).await;
    // The same seed: the same config and layer in two repositories (a shared base layer).
    let first = w.upstream.seed("library/one", "v1", &[500_000], 51);
    let second = w.upstream.seed("library/two", "v1", &[500_000], 51);
    let (layer, data) = &first.layers[0];
    assert_eq!(layer, &second.layers[0].0);
    pull(&w.mirror, "one", &first).await;
    pull(&w.mirror, "two", &second).await;
    // Asked about once for "two" (a HEAD), fetched once in all.
    assert_eq!(
        w.upstream
            .served("GET", &format!("/v2/library/one/blobs/{layer}")),
        1
    );
    assert_eq!(
        w.upstream
            .served("GET", &format!("/v2/library/two/blobs/{layer}")),
        0
    );
    assert_eq!(
        w.upstream
            .served("HEAD", &format!("/v2/library/two/blobs/{layer}")),
        1
    );
    let stats = w.mirror.cache("hub.test").stats();
    assert_eq!((stats.blob_fetches, stats.blob_mounts), (1, 1), "{stats:?}");

    // A repository the upstream does not have it in gets the upstream's answer, and no link.
    let _other = w.upstream.seed("library/three", "v1", &[1_000], 52);
    let refused = w
        .mirror
        .get("GET", &format!("/v2/three/blobs/{layer}"))
        .await;
    assert_eq!(refused.status, 404, "{refused:?}");
    assert_eq!(refused.json()["errors"][0]["code"], "BLOB_UNKNOWN");
    let store = &w.mirror.stores["hub.test"];
    assert!(store
        .blob_size(&"library/three".parse().unwrap(), layer, false)
        .unwrap()
        .is_none());
    assert!(refused.body != *data);
    assert_eq!(w.mirror.cache("hub.test").stats().blob_mounts, 1);
}
