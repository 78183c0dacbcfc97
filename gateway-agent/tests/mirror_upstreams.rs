//! Upstreams as real registries are, on loopback: HTTPS with a CA the mirror is configured
//! with (and refused when the certificate does not verify: wrong CA, wrong name); blob
//! downloads redirected to a "CDN" on another name, followed through the connector a bounded
//! number of times, without the Authorization header, the digest still checked; a private
//! registry with Basic credentials (docker-registry's htpasswd auth) that gets them and no one
//! else does, and wrong credentials as a clear error. Every name is a `.test` name the test's
//! connector maps to 127.0.0.1; nothing is resolved, nothing leaves loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mirror_support;

use std::path::Path;
use std::sync::Arc;

use gateway_agent::config::MirrorUpstream;
use gateway_agent::mirror::config::Endpoint;
use gateway_agent::registry::names::RepoName;
use gateway_agent::registry::storage::Storage;
use gateway_tests::fail;
use mirror_support::{
    tools_present, upstream_config, Auth, Image, Loopback, MirrorUnderTest, Redirector, TlsFiles,
    TokenService, Upstream,
};

/// Pulls `image` by its full name through `mirror`: the manifest by tag, then each blob; every
/// byte checked.
async fn pull(mirror: &MirrorUnderTest, image: &Image) {
    let manifest = mirror
        .get(
            "GET",
            &format!("/v2/{}/manifests/{}", image.repo, image.tag),
        )
        .await;
    if manifest.status != 200 || manifest.body != image.manifest {
        fail(format!("the manifest of {}: {manifest:?}", image.repo));
    }
    for (digest, data) in &image.layers {
        let blob = mirror
            .get("GET", &format!("/v2/{}/blobs/{digest}", image.repo))
            .await;
        if !blob.ok || blob.status != 200 || blob.body != *data {
            fail(format!(
                "the blob {digest}: ok {}, status {}, {} of {} bytes, {}",
                blob.ok,
                blob.status,
                blob.body.len(),
                data.len(),
                blob.stderr
            ));
        }
    }
}

/// The error message of a registry error body.
fn message(fetched: &mirror_support::Fetched) -> String {
    fetched.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Nothing at all in `store`: no repository, no blob.
fn nothing_cached(store: &Arc<dyn Storage>) -> bool {
    store.repositories().unwrap().is_empty() && store.stored_blobs().unwrap().is_empty()
}

fn https_upstream(name: &str, url: &str, ca: Option<&Path>) -> MirrorUpstream {
    let mut config = upstream_config(name, url);
    config.ca = ca.map(Path::to_owned);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_https_upstream_is_verified_against_its_ca() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsFiles::issue(&dir.path().join("upstream-pki"), "hub.test");
    let tokens = TokenService::start_with(dir.path(), "tokens", None, Some(&tls));
    let realm = tokens.https_realm("registry.hub.test");
    let upstream = Upstream::start_with(
        dir.path(),
        Auth::Token {
            realm: &realm,
            token_dir: dir.path(),
        },
        Some(&tls),
    );
    let image = upstream.seed("library/app", "v1", &[200_000, 3_000], 41);
    let url = format!("https://registry.hub.test:{}", upstream.port);
    let connector = Arc::new(Loopback::default());

    // The right CA: the pull works, over TLS all the way (the token too).
    let mut config = https_upstream("hub.test", &url, Some(&tls.ca));
    config.realm = Some(Endpoint::parse(&realm).unwrap());
    let mirror = MirrorUnderTest::start(
        &dir.path().join("good"),
        vec![(config, None)],
        connector.clone(),
        600,
    )
    .await;
    pull(&mirror, &image).await;
    for (digest, _) in &image.layers {
        let path = format!("/v2/library/app/blobs/{digest}");
        assert_eq!(upstream.served("GET", &path), 1, "{path}");
    }
    assert!(!tokens.requests().is_empty(), "the token path did not run");
    let names = connector.names();
    assert!(
        names.contains(&format!("registry.hub.test:{}", upstream.port))
            && names.contains(&format!("registry.hub.test:{}", tokens.port)),
        "{names:?}"
    );

    // Another CA, a name the certificate does not cover, and the system roots: each refused
    // with a 502 that says why, before any HTTP request; nothing cached.
    let other = TlsFiles::issue(&dir.path().join("other-pki"), "hub.test");
    let wrong_name = format!("https://wrong.hub.test:{}", upstream.port);
    let mut cases = vec![
        (
            "wrong-ca",
            https_upstream("hub.test", &url, Some(&other.ca)),
        ),
        (
            "wrong-name",
            https_upstream("hub.test", &wrong_name, Some(&tls.ca)),
        ),
    ];
    if Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        cases.push(("system-roots", https_upstream("hub.test", &url, None)));
    }
    let served_before = std::fs::read_to_string(&upstream.log)
        .unwrap()
        .matches("\"GET /v2/")
        .count();
    for (case, config) in cases {
        let mirror = MirrorUnderTest::start(
            &dir.path().join(case),
            vec![(config, None)],
            connector.clone(),
            600,
        )
        .await;
        let manifest = mirror.get("GET", "/v2/library/app/manifests/v1").await;
        assert_eq!(manifest.status, 502, "{case}: {manifest:?}");
        assert_eq!(
            manifest.json()["errors"][0]["code"],
            "MANIFEST_UNKNOWN",
            "{case}"
        );
        let said = message(&manifest);
        assert!(
            said.contains("does not verify") && said.contains("refused"),
            "{case}: {said}"
        );
        let blob = mirror
            .get(
                "GET",
                &format!("/v2/library/app/blobs/{}", image.layers[0].0),
            )
            .await;
        assert_eq!(blob.status, 502, "{case}: {blob:?}");
        assert_eq!(blob.json()["errors"][0]["code"], "BLOB_UNKNOWN", "{case}");
        assert!(nothing_cached(&mirror.stores["hub.test"]), "{case}: cached");
    }
    let served_after = std::fs::read_to_string(&upstream.log)
        .unwrap()
        .matches("\"GET /v2/")
        .count();
    assert_eq!(
        served_before, served_after,
        "a refused upstream got requests"
    );
}

/// An upstream behind the redirector, with a token service that wants credentials.
struct Redirected {
    dir: tempfile::TempDir,
    tokens: TokenService,
    upstream: Upstream,
    redirector: Redirector,
    connector: Arc<Loopback>,
    mirror: MirrorUnderTest,
}

async fn redirected() -> Redirected {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenService::start(dir.path(), "tokens", Some("ci:secret"));
    let upstream = Upstream::start(dir.path(), &tokens.realm(), dir.path());
    let redirector = Redirector::start(dir.path(), &upstream, "cdn.hub.test", 1);
    let connector = Arc::new(Loopback::default());
    let mut config = upstream_config(
        "hub.test",
        &format!("http://registry.hub.test:{}", redirector.port),
    );
    config.realm = Some(Endpoint::parse(&tokens.realm()).unwrap());
    let mirror = MirrorUnderTest::start(
        &dir.path().join("mirror"),
        vec![(config, Some("ci:secret".to_owned()))],
        connector.clone(),
        600,
    )
    .await;
    Redirected {
        dir,
        tokens,
        upstream,
        redirector,
        connector,
        mirror,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blob_redirects_are_followed_without_credentials() {
    if !tools_present() {
        return;
    }
    let w = redirected().await;
    let image = w.upstream.seed("library/app", "v1", &[700_000, 12_000], 42);
    pull(&w.mirror, &image).await;

    let seen = w.redirector.seen();
    let cdn: Vec<_> = seen.iter().filter(|s| s.side == "cdn").collect();
    for (digest, _) in &image.layers {
        // Two hops at the CDN (the redirector's own extra redirect, then the bytes), once.
        let served: Vec<_> = cdn
            .iter()
            .filter(|s| s.path == format!("/hop/0/{digest}"))
            .collect();
        assert_eq!(served.len(), 1, "{digest}: {cdn:?}");
        assert_eq!(served[0].method, "GET");
        assert_eq!(
            served[0].host,
            format!("cdn.hub.test:{}", w.redirector.cdn_port)
        );
        assert!(cdn.iter().any(|s| s.path == format!("/hop/1/{digest}")));
        // Never from the registry itself: only its HEAD (the front's check).
        let path = format!("/v2/library/app/blobs/{digest}");
        assert_eq!(w.upstream.served("GET", &path), 0, "{path}");
    }
    // No credential or token ever reached the CDN; the registry got tokens, the realm Basic.
    assert!(!cdn.is_empty());
    for s in &cdn {
        assert_eq!(s.authorization, "none", "the CDN got {s:?}");
    }
    assert!(seen
        .iter()
        .any(|s| s.side == "front" && s.authorization == "bearer"));
    assert!(w
        .tokens
        .requests()
        .iter()
        .all(|(authorization, _)| authorization == "basic:ci"));
    // Through the connector, by name.
    let names = w.connector.names();
    assert!(
        names.contains(&format!("cdn.hub.test:{}", w.redirector.cdn_port)),
        "{names:?}"
    );
    // Cached and verified: pulled again, nothing more goes upstream.
    let before = w.redirector.seen().len();
    pull(&w.mirror, &image).await;
    let after = w.redirector.seen();
    assert!(
        after[before..]
            .iter()
            .all(|s| s.side == "front" && s.path.contains("/manifests/")),
        "{:?}",
        &after[before..]
    );
    let repo: RepoName = "library/app".parse().unwrap();
    for (digest, data) in &image.layers {
        let size = w.mirror.stores["hub.test"]
            .blob_size(&repo, digest, false)
            .unwrap();
        assert_eq!(size, Some(data.len() as u64));
    }
    let _ = &w.dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_are_bounded_and_the_digest_still_checked() {
    if !tools_present() {
        return;
    }
    let w = redirected().await;
    // `…/loop` redirects 50 times at the CDN.
    let looping = w.upstream.seed("library/loop", "v1", &[5_000], 43);
    let (digest, _) = &looping.layers[0];
    let blob = w
        .mirror
        .get("GET", &format!("/v2/library/loop/blobs/{digest}"))
        .await;
    assert_eq!(blob.status, 502, "{blob:?}");
    assert!(message(&blob).contains("more than 5 redirects"), "{blob:?}");
    let hops = w
        .redirector
        .seen()
        .iter()
        .filter(|s| s.side == "cdn" && s.path.ends_with(&digest.to_string()))
        .count();
    assert_eq!(hops, 5, "hops followed at the CDN");

    // What the CDN serves is checked against the digest like anything else.
    let bad = w.upstream.seed("library/bad", "v1", &[300_000], 44);
    let (digest, _) = &bad.layers[0];
    w.upstream.corrupt(digest);
    let blob = w
        .mirror
        .get("GET", &format!("/v2/library/bad/blobs/{digest}"))
        .await;
    assert!(!blob.ok, "a corrupt redirected blob ended cleanly");
    let store = &w.mirror.stores["hub.test"];
    assert!(store
        .stored_blobs()
        .unwrap()
        .iter()
        .all(|b| { b.digest != *digest && b.digest != looping.layers[0].0 }));
    assert_eq!(w.mirror.cache("hub.test").stats().digest_mismatches, 1);
}

/// A private registry (htpasswd, HTTPS) and a second, token-auth upstream in one mirror.
async fn basic_world(
    dir: &Path,
    given: &str,
) -> (Upstream, TokenService, Upstream, MirrorUnderTest, TlsFiles) {
    let tls = TlsFiles::issue(&dir.join("pki"), "private.test");
    let private_dir = dir.join("private");
    std::fs::create_dir_all(&private_dir).unwrap();
    let private = Upstream::start_with(
        &private_dir,
        Auth::Htpasswd {
            credentials: "ci:secret",
        },
        Some(&tls),
    );
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let tokens = TokenService::start(&other_dir, "tokens", Some("ci:secret"));
    let other = Upstream::start(&other_dir, &tokens.realm(), &other_dir);
    let mut config = https_upstream(
        "private.test",
        &format!("https://registry.private.test:{}", private.port),
        Some(&tls.ca),
    );
    config.library = false;
    config.credentials = Some(dir.join("private.credentials"));
    let mirror = MirrorUnderTest::start(
        &dir.join("mirror"),
        vec![
            (config, Some(given.to_owned())),
            (upstream_config("other.test", &other.url()), None),
        ],
        Arc::new(Loopback::default()),
        600,
    )
    .await;
    (private, tokens, other, mirror, tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basic_credentials_go_to_their_upstream_only() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (private, tokens, other, mirror, _tls) = basic_world(dir.path(), "ci:secret").await;
    // Anonymous pulls are refused: the credentials are what lets the mirror in.
    let direct = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!(
            "https://127.0.0.1:{}/v2/team/app/manifests/v1",
            private.port
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&direct.stdout), "401");

    let image = private.seed("team/app", "v1", &[150_000], 45);
    pull(&mirror, &image).await;
    let path = format!("/v2/team/app/blobs/{}", image.layers[0].0);
    assert_eq!(private.served("GET", &path), 1);

    // The other upstream, pulled with ?ns=, gets no credentials: its realm is asked
    // anonymously (and it is not the configured realm of anyone).
    let theirs = other.seed("library/tool", "1", &[4_000], 46);
    let manifest = mirror
        .get("GET", "/v2/tool/manifests/1?ns=other.test")
        .await;
    assert_eq!(manifest.status, 200, "{manifest:?}");
    assert_eq!(manifest.body, theirs.manifest);
    let requests = tokens.requests();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|(authorization, _)| authorization == "none"),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_basic_credentials_are_a_clear_error() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (private, _tokens, _other, mirror, _tls) = basic_world(dir.path(), "ci:wrong").await;
    let image = private.seed("team/app", "v1", &[1_000], 47);
    let manifest = mirror.get("GET", "/v2/team/app/manifests/v1").await;
    assert_eq!(manifest.status, 403, "{manifest:?}");
    assert_eq!(manifest.json()["errors"][0]["code"], "DENIED");
    let said = message(&manifest);
    assert!(
        said.contains("private.test")
            && said.contains("refused")
            && said.contains("private.credentials")
            && !said.contains("wrong"),
        "{said}"
    );
    let blob = mirror
        .get("GET", &format!("/v2/team/app/blobs/{}", image.layers[0].0))
        .await;
    assert_eq!(blob.status, 403, "{blob:?}");
    assert!(nothing_cached(&mirror.stores["private.test"]));
}
