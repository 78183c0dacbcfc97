//! The API end to end over loopback HTTP (plain TCP: TLS is the acceptor's, tested there),
//! against a real store in a temporary directory.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::*;
use crate::net::http::{serve_connection, HttpSettings};
use crate::registry::config::Access;
use crate::registry::manifest::{OCI_INDEX, OCI_MANIFEST};
use crate::registry::names::Digest;
use crate::registry::storage::{FsStorage, Limits};

struct Server {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::watch::Sender<()>,
}

/// A registry where client "ci" may push to `team/`, serving every connection as `client`.
async fn server(client: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStorage::open(dir.path(), Limits::default()).unwrap());
    let access = Registry {
        access: vec![Access {
            client: "ci".into(),
            push: vec!["team/".into()],
        }],
        ..Registry::default()
    };
    let api = Arc::new(Api::new(store, Arc::new(access)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, watch) = tokio::sync::watch::channel(());
    let client = client.map(str::to_owned);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (api, client, watch) = (api.clone(), client.clone(), watch.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let api = api.clone();
                    let caller = Caller {
                        client: client.clone(),
                    };
                    async move { Ok::<_, Infallible>(api.handle(caller, request).await) }
                });
                let _ = serve_connection(tcp, service, HttpSettings::default(), watch).await;
            });
        }
    });
    Server {
        addr,
        _dir: dir,
        _shutdown: shutdown,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap())
            .unwrap_or("")
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Server {
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "registry");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], b"").await
    }

    /// Pushes `data` monolithically into `repo`; its digest.
    async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        let reply = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                &[],
                data,
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        digest
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &Value,
    ) -> Reply {
        self.send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            &serde_json::to_vec(body).unwrap(),
        )
        .await
    }
}

fn image(config: &Digest, layers: &[&Digest]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": layers.iter().map(|d| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": 1})).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn the_base_endpoint_answers() {
    let server = server(None).await;
    let reply = server.get("/v2/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("docker-distribution-api-version"),
        "registry/2.0"
    );
}

#[tokio::test]
async fn blobs_go_in_whole_or_in_chunks_and_come_back_with_ranges() {
    let server = server(Some("ci")).await;
    let digest = server.push_blob("team/app", b"hello world").await;
    let head = server
        .send(
            Method::HEAD,
            &format!("/v2/team/app/blobs/{digest}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), "11");
    assert_eq!(head.header("docker-content-digest"), digest.to_string());
    let whole = server.get(&format!("/v2/team/app/blobs/{digest}")).await;
    assert_eq!(whole.body, b"hello world");
    let part = server
        .send(
            Method::GET,
            &format!("/v2/team/app/blobs/{digest}"),
            &[("range", "bytes=6-")],
            b"",
        )
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, b"world");
    assert_eq!(part.header("content-range"), "bytes 6-10/11");
    // Not linked in another repository, even though the content is stored.
    let elsewhere = server.get(&format!("/v2/team/other/blobs/{digest}")).await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
    assert_eq!(elsewhere.code(), "BLOB_UNKNOWN");

    // Chunked.
    let started = server
        .send(Method::POST, "/v2/team/app/blobs/uploads/", &[], b"")
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED);
    let location = started.header("location").to_owned();
    let first = server
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "0-4")],
            b"chunk",
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.header("range"), "0-4");
    let wrong = server
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "2-4")],
            b"xyz",
        )
        .await;
    assert_eq!(wrong.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(wrong.code(), "BLOB_UPLOAD_INVALID");
    let status = server.get(&location).await;
    assert_eq!(status.status, StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), "0-4");
    let digest = Digest::sha256_of(b"chunked");
    let done = server
        .send(
            Method::PUT,
            &format!("{location}?digest={digest}"),
            &[],
            b"ed",
        )
        .await;
    assert_eq!(done.status, StatusCode::CREATED);
    assert_eq!(
        server
            .get(&format!("/v2/team/app/blobs/{digest}"))
            .await
            .body,
        b"chunked"
    );

    // Cross-repository mount.
    let mounted = server
        .send(
            Method::POST,
            &format!("/v2/team/copy/blobs/uploads/?mount={digest}&from=team/app"),
            &[],
            b"",
        )
        .await;
    assert_eq!(mounted.status, StatusCode::CREATED);
    assert_eq!(
        server
            .get(&format!("/v2/team/copy/blobs/{digest}"))
            .await
            .body,
        b"chunked"
    );

    // Delete.
    let deleted = server
        .send(
            Method::DELETE,
            &format!("/v2/team/copy/blobs/{digest}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    assert_eq!(
        server
            .get(&format!("/v2/team/copy/blobs/{digest}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn content_that_does_not_match_its_digest_is_refused() {
    let server = server(Some("ci")).await;
    let claimed = Digest::sha256_of(b"good");
    let reply = server
        .send(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?digest={claimed}"),
            &[],
            b"evil",
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "DIGEST_INVALID");
    let head = server
        .send(
            Method::HEAD,
            &format!("/v2/team/app/blobs/{claimed}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    assert!(head.body.is_empty());
    let bad = server.get("/v2/team/app/blobs/sha256:abc").await;
    assert_eq!(bad.code(), "DIGEST_INVALID");
}

#[tokio::test]
async fn bad_names_are_name_invalid() {
    let server = server(Some("ci")).await;
    let long = "a".repeat(300);
    for name in ["../x", "UPPER", long.as_str()] {
        let reply = server.get(&format!("/v2/{name}/tags/list")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(reply.code(), "NAME_INVALID", "{name}");
    }
}

#[tokio::test]
async fn pushing_needs_an_access_entry() {
    let server = server(Some("ci")).await;
    let reply = server
        .send(Method::POST, "/v2/other/app/blobs/uploads/", &[], b"")
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.code(), "DENIED");
    let anonymous = server_as_dev().await;
    let reply = anonymous
        .send(Method::POST, "/v2/team/app/blobs/uploads/", &[], b"")
        .await;
    assert_eq!(reply.code(), "DENIED");
    // Pulling is for everyone.
    assert_eq!(anonymous.get("/v2/_catalog").await.status, StatusCode::OK);
}

async fn server_as_dev() -> Server {
    server(Some("dev")).await
}

#[tokio::test]
async fn manifests_need_their_blobs_and_are_served_by_tag_and_digest() {
    let server = server(Some("ci")).await;
    let config = Digest::sha256_of(b"{}");
    let layer = Digest::sha256_of(b"layer");
    let manifest = image(&config, &[&layer]);
    let missing = server
        .put_manifest("team/app", "v1", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.code(), "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        server.get("/v2/team/app/manifests/v1").await.code(),
        "MANIFEST_UNKNOWN"
    );

    server.push_blob("team/app", b"{}").await;
    server.push_blob("team/app", b"layer").await;
    let stored = server
        .put_manifest("team/app", "v1", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(stored.status, StatusCode::CREATED);
    let digest = Digest::sha256_of(&serde_json::to_vec(&manifest).unwrap());
    assert_eq!(stored.header("docker-content-digest"), digest.to_string());
    for reference in ["v1".to_owned(), digest.to_string()] {
        let got = server
            .get(&format!("/v2/team/app/manifests/{reference}"))
            .await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.header("content-type"), OCI_MANIFEST);
        assert_eq!(got.header("docker-content-digest"), digest.to_string());
        assert_eq!(Digest::sha256_of(&got.body), digest);
    }
    // By digest, the digest must match.
    let wrong = server
        .put_manifest(
            "team/app",
            &Digest::sha256_of(b"x").to_string(),
            OCI_MANIFEST,
            &manifest,
        )
        .await;
    assert_eq!(wrong.code(), "DIGEST_INVALID");

    // An index needs its children.
    let index = |child: &Digest| {
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child.to_string(), "size": 1,
         "platform": {"architecture": "arm64", "os": "linux"}}]})
    };
    let orphan = server
        .put_manifest(
            "team/app",
            "multi",
            OCI_INDEX,
            &index(&Digest::sha256_of(b"none")),
        )
        .await;
    assert_eq!(orphan.code(), "MANIFEST_BLOB_UNKNOWN");
    let multi = server
        .put_manifest("team/app", "multi", OCI_INDEX, &index(&digest))
        .await;
    assert_eq!(multi.status, StatusCode::CREATED);

    // A referrer.
    let mut signature = image(&config, &[]);
    signature["artifactType"] = json!("application/example.signature");
    signature["subject"] =
        json!({"mediaType": OCI_MANIFEST, "digest": digest.to_string(), "size": 1});
    let sig_digest = Digest::sha256_of(&serde_json::to_vec(&signature).unwrap());
    let stored = server
        .put_manifest(
            "team/app",
            &sig_digest.to_string(),
            OCI_MANIFEST,
            &signature,
        )
        .await;
    assert_eq!(stored.status, StatusCode::CREATED);
    assert_eq!(stored.header("oci-subject"), digest.to_string());
    let referrers = server
        .get(&format!("/v2/team/app/referrers/{digest}"))
        .await;
    assert_eq!(referrers.header("content-type"), OCI_INDEX);
    let listed = referrers.json();
    assert_eq!(listed["manifests"][0]["digest"], sig_digest.to_string());
    assert_eq!(
        listed["manifests"][0]["artifactType"],
        "application/example.signature"
    );
    let filtered = server
        .get(&format!(
            "/v2/team/app/referrers/{digest}?artifactType=other/type"
        ))
        .await;
    assert_eq!(filtered.header("oci-filters-applied"), "artifactType");
    assert_eq!(filtered.json()["manifests"], json!([]));

    // Tags, paged, and the catalog.
    let tags = server.get("/v2/team/app/tags/list").await.json();
    assert_eq!(tags, json!({"name": "team/app", "tags": ["multi", "v1"]}));
    let first = server.get("/v2/team/app/tags/list?n=1").await;
    assert_eq!(first.json()["tags"], json!(["multi"]));
    assert!(
        first.header("link").contains("last=multi"),
        "{}",
        first.header("link")
    );
    let rest = server.get("/v2/team/app/tags/list?n=1&last=multi").await;
    assert_eq!(rest.json()["tags"], json!(["v1"]));
    assert_eq!(
        server.get("/v2/nothing/tags/list").await.code(),
        "NAME_UNKNOWN"
    );
    assert_eq!(
        server.get("/v2/_catalog").await.json(),
        json!({"repositories": ["team/app"]})
    );

    // Delete by tag, then by digest.
    let untagged = server
        .send(Method::DELETE, "/v2/team/app/manifests/multi", &[], b"")
        .await;
    assert_eq!(untagged.status, StatusCode::ACCEPTED);
    let gone = server
        .send(
            Method::DELETE,
            &format!("/v2/team/app/manifests/{digest}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(gone.status, StatusCode::ACCEPTED);
    assert_eq!(
        server.get("/v2/team/app/manifests/v1").await.code(),
        "MANIFEST_UNKNOWN"
    );
}

#[tokio::test]
async fn docker_schema2_manifests_are_accepted() {
    let server = server(Some("ci")).await;
    let config = server.push_blob("team/app", b"{}").await;
    let layer = server.push_blob("team/app", b"layer").await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": crate::registry::manifest::DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer.to_string(), "size": 5}],
    });
    let stored = server
        .put_manifest(
            "team/app",
            "docker",
            crate::registry::manifest::DOCKER_MANIFEST,
            &manifest,
        )
        .await;
    assert_eq!(
        stored.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&stored.body)
    );
    let got = server.get("/v2/team/app/manifests/docker").await;
    assert_eq!(
        got.header("content-type"),
        crate::registry::manifest::DOCKER_MANIFEST
    );
}

#[tokio::test]
async fn a_body_of_many_chunks_is_written_in_order() {
    let server = server(Some("ci")).await;
    // Several WRITE_CHUNKs and a remainder, no two alike.
    let data: Vec<u8> = (0..(7u32 << 19) + 12345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let digest = server.push_blob("team/big", &data).await;
    let got = server.get(&format!("/v2/team/big/blobs/{digest}")).await;
    assert_eq!(got.body.len(), data.len());
    assert!(got.body == data, "the content came back changed");
    // And through a session with a wrong Content-Range start after a long first chunk.
    let started = server
        .send(Method::POST, "/v2/team/big/blobs/uploads/", &[], b"")
        .await;
    let location = started.header("location").to_owned();
    let first = server.send(Method::PATCH, &location, &[], &data).await;
    assert_eq!(first.header("range"), format!("0-{}", data.len() - 1));
    let wrong = server
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "0-9")],
            b"0123456789",
        )
        .await;
    assert_eq!(wrong.status, StatusCode::RANGE_NOT_SATISFIABLE);
}
