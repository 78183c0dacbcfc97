//! The mirror's credentials go only to the token realm configured for the upstream: with the
//! configured realm the token service sees them (and grants), with a realm the upstream names
//! by itself it is asked anonymously. Against distribution 2.8 with token auth on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mirror_support;

use std::sync::Arc;

use gateway_agent::mirror::config::Endpoint;
use mirror_support::{
    tools_present, upstream_config, Loopback, MirrorUnderTest, TokenService, Upstream,
};

/// Pulls `library/app:v1` (seeded) through a mirror whose upstream's configured realm is one
/// token service, and whose registry sends clients to that one (`same`) or another.
async fn pull_with_realms(same: bool) -> (tempfile::TempDir, TokenService, TokenService) {
    let dir = tempfile::tempdir().unwrap();
    let configured = TokenService::start(dir.path(), "configured", Some("ci:secret"));
    let other = TokenService::start(dir.path(), "other", Some("ci:secret"));
    let named = if same { &configured } else { &other };
    let upstream = Upstream::start(dir.path(), &named.realm(), dir.path());
    let image = upstream.seed("library/app", "v1", &[10_000], 11);
    let mut config = upstream_config("hub.test", &upstream.url());
    config.realm = Some(Endpoint::parse(&configured.realm()).unwrap());
    let mirror = MirrorUnderTest::start(
        dir.path(),
        vec![(config, Some("ci:secret".to_owned()))],
        Arc::new(Loopback::default()),
        600,
    )
    .await;
    let manifest = mirror.get("GET", "/v2/app/manifests/v1").await;
    assert_eq!(manifest.status, 200, "{manifest:?}");
    assert_eq!(manifest.body, image.manifest);
    let blob = mirror
        .get("GET", &format!("/v2/app/blobs/{}", image.layers[0].0))
        .await;
    assert!(blob.body == image.layers[0].1);
    (dir, configured, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_go_to_the_configured_realm() {
    if !tools_present() {
        return;
    }
    let (_dir, configured, other) = pull_with_realms(true).await;
    let requests = configured.requests();
    assert!(!requests.is_empty());
    for (authorization, scopes) in &requests {
        assert_eq!(authorization, "basic:ci");
        assert_eq!(scopes, &["repository:library/app:pull".to_owned()]);
    }
    assert!(other.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realm_the_upstream_names_by_itself_gets_no_credentials() {
    if !tools_present() {
        return;
    }
    let (_dir, configured, other) = pull_with_realms(false).await;
    let requests = other.requests();
    assert!(!requests.is_empty(), "the named realm was never asked");
    for (authorization, _) in &requests {
        assert_eq!(
            authorization, "none",
            "credentials went to a realm nobody configured"
        );
    }
    assert!(configured.requests().is_empty());
}
