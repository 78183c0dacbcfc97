//! The mirror's HTTP API: the distribution spec's pull side. Each request picks its upstream
//! (containerd's `?ns=<registry>`, echoed as `OCI-Namespace`; without it the default one, as
//! Docker's `registry-mirrors` expects), brings what it names into that upstream's cache, and
//! is then answered by the private registry's own API over the cache's store, so what is
//! served (ranges, headers, errors) is exactly what the registry serves. A blob still on its
//! way in is streamed as it arrives ([`super::flight`]). Pushes and deletes are `UNSUPPORTED`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode, Uri};
use oci_spec::distribution::ErrorCode;

use super::cache::Cache;
use super::error::FetchError;
use super::flight::{self, Joined};
use super::upstream::UpstreamError;
use crate::registry::api::error::ApiError;
use crate::registry::api::route::{self, param, Route};
use crate::registry::api::{Body, Caller};
use crate::registry::names::{Digest, Reference, RepoName};

/// The mirror: a cache per upstream.
pub struct Mirror {
    caches: BTreeMap<String, Arc<Cache>>,
    default: String,
    max_bytes: u64,
}

impl Mirror {
    /// A mirror over `caches` (by upstream name); `default` serves requests without `?ns=`;
    /// together they hold at most `max_bytes` after each eviction run.
    pub fn new(caches: BTreeMap<String, Arc<Cache>>, default: String, max_bytes: u64) -> Self {
        Mirror {
            caches,
            default,
            max_bytes,
        }
    }

    /// The caches, by upstream name.
    pub fn caches(&self) -> &BTreeMap<String, Arc<Cache>> {
        &self.caches
    }

    /// The upstream requests without `?ns=` go to.
    pub fn default_upstream(&self) -> &str {
        &self.default
    }

    /// Evicts the least recently pulled images while the caches hold more than the bound
    /// (blocking: it walks the stores).
    pub fn evict(&self) -> crate::registry::storage::Result<super::admin::Evicted> {
        let shelves: Vec<super::admin::Shelf<'_>> = self
            .caches
            .iter()
            .map(|(name, cache)| super::admin::Shelf {
                name,
                store: &**cache.store(),
                pulls: cache.pulls(),
                leases: cache.leases(),
            })
            .collect();
        let evicted = super::admin::evict(&shelves, self.max_bytes)?;
        if !evicted.spared.is_empty() {
            tracing::debug!(
                "mirror: over mirror.max_size, but pulls are using {}",
                evicted.spared.join(", ")
            );
        }
        if !evicted.images.is_empty() {
            tracing::info!(
                "mirror: over mirror.max_size ({} bytes): evicted {} ({} -> {} bytes)",
                self.max_bytes,
                evicted.images.join(", "),
                evicted.bytes_before,
                evicted.bytes_after
            );
        }
        Ok(evicted)
    }

    /// The bound on the caches' bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes fetched from every upstream so far (eviction runs when this moves).
    pub fn fetched_bytes(&self) -> u64 {
        self.caches
            .values()
            .map(|cache| cache.stats().blob_bytes_fetched)
            .sum()
    }

    /// Answers one request.
    pub async fn handle(
        self: Arc<Self>,
        caller: Caller,
        request: Request<Incoming>,
    ) -> Response<Body> {
        let params = route::query(request.uri().query());
        let ns = param(&params, "ns").map(str::to_owned);
        let head = request.method() == Method::HEAD;
        let mut response = match self.dispatch(caller, request, ns.as_deref()).await {
            Ok(response) => response,
            Err(error) => error_response(&error, head),
        };
        if let Some(ns) = ns.and_then(|ns| HeaderValue::from_str(&ns).ok()) {
            response.headers_mut().insert("oci-namespace", ns);
        }
        response.headers_mut().insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        response
    }

    async fn dispatch(
        &self,
        caller: Caller,
        request: Request<Incoming>,
        ns: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let name = ns.unwrap_or(&self.default);
        let cache = self.caches.get(name).ok_or_else(|| {
            ApiError::not_found(
                ErrorCode::NameUnknown,
                format!(
                    "the mirror has no upstream {name:?} (mirror.upstreams names {})",
                    self.caches.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return Err(unsupported());
        }
        let path = request.uri().path().to_owned();
        let Ok(route) = route::route(&path) else {
            // The registry's API has the right error for a path that is no endpoint.
            return Ok(cache.api.clone().handle(caller, request).await);
        };
        match route {
            Route::Base | Route::Catalog => Ok(cache.api.clone().handle(caller, request).await),
            Route::Uploads(_) | Route::Upload(..) => Err(unsupported()),
            Route::Tags(name) | Route::Referrers(name, _) => {
                let repo = upstream_name(cache, &name)?;
                delegate(cache, caller, request, &name, &repo).await
            }
            Route::Manifest(name, reference) => {
                let repo = upstream_name(cache, &name)?;
                cache
                    .ensure_manifest(&repo, &reference)
                    .await
                    .map_err(|error| fetch_error(cache, &error, ErrorCode::ManifestUnknown))?;
                if request.method() == Method::GET {
                    note_pull(cache, &repo, &reference).await;
                }
                delegate(cache, caller, request, &name, &repo).await
            }
            Route::Blob(name, digest) => {
                let repo = upstream_name(cache, &name)?;
                if request.method() == Method::HEAD {
                    return head_blob(cache, caller, request, &name, &repo, &digest).await;
                }
                // Cached for another repository: shared if the upstream has it in this one.
                cache
                    .share_blob(&repo, &digest)
                    .await
                    .map_err(|error| fetch_error(cache, &error, ErrorCode::BlobUnknown))?;
                // Held until the response is made (a cached blob's file is open by then;
                // a streamed one holds its own lease for the body).
                let _lease = cache.leases().hold(&digest);
                let joined = flight::join(cache, &repo, &digest)
                    .map_err(|error| fetch_error(cache, &error, ErrorCode::BlobUnknown))?;
                if let Joined::Flight(state) = joined {
                    let streamed = flight::respond(cache, &repo, &digest, state)
                        .await
                        .map_err(|error| fetch_error(cache, &error, ErrorCode::BlobUnknown))?;
                    if let Some(response) = streamed {
                        return Ok(response);
                    }
                }
                delegate(cache, caller, request, &name, &repo).await
            }
        }
    }
}

/// Records a pull of `repo`'s manifest `reference` for eviction (a failure only loses
/// recency, so it is logged, not answered).
async fn note_pull(cache: &Arc<Cache>, repo: &RepoName, reference: &Reference) {
    let (store, r, reference) = (cache.store().clone(), repo.clone(), reference.clone());
    let owner = cache.clone();
    let noted = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let digest = match reference {
            Reference::Digest(digest) => Some(digest),
            Reference::Tag(tag) => store.tag(&r, &tag)?,
        };
        if let Some(digest) = digest {
            owner.pulls().pulled(&r, &digest)?;
        }
        Ok(())
    })
    .await;
    if let Ok(Err(error)) = noted {
        tracing::warn!("mirror: recording a pull of {repo}: {error:#}");
    }
}

/// A blob HEAD: from the cache if it is there, else asked upstream (nothing fetched).
async fn head_blob(
    cache: &Arc<Cache>,
    caller: Caller,
    request: Request<Incoming>,
    name: &RepoName,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Response<Body>, ApiError> {
    let (r, d) = (repo.clone(), digest.clone());
    let cached = cache
        .store_call(move |s| s.blob_size(&r, &d, false))
        .await
        .map_err(|error| fetch_error(cache, &error, ErrorCode::BlobUnknown))?;
    if cached.is_some() {
        return delegate(cache, caller, request, name, repo).await;
    }
    let path = format!("/v2/{repo}/blobs/{digest}");
    let upstream = cache
        .client
        .registry_request(Method::HEAD, &path, None, &Cache::scope(repo))
        .await
        .map_err(|error| {
            fetch_error(cache, &FetchError::Upstream(error), ErrorCode::BlobUnknown)
        })?;
    let status = upstream.status();
    if status != StatusCode::OK {
        let error = FetchError::Upstream(UpstreamError::Status {
            upstream: cache.client.config().name.clone(),
            status,
            detail: format!(" for the blob {repo}@{digest}"),
        });
        return Err(fetch_error(cache, &error, ErrorCode::BlobUnknown));
    }
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    if let Some(len) = upstream.headers().get(CONTENT_LENGTH) {
        response.headers_mut().insert(CONTENT_LENGTH, len.clone());
    }
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = digest.to_string().parse() {
        headers.insert("docker-content-digest", value);
    }
    Ok(response)
}

/// The name the upstream and the cache know `name` by: Docker Hub's official images are
/// `library/<name>`.
fn upstream_name(cache: &Cache, name: &RepoName) -> Result<RepoName, ApiError> {
    if !cache.client.config().library || name.as_str().contains('/') {
        return Ok(name.clone());
    }
    format!("library/{name}")
        .parse()
        .map_err(|error: String| ApiError::bad_request(ErrorCode::NameInvalid, error))
}

/// Answers from the cache: the registry's API over the cache's store, the request's path
/// renamed to the cache's name for the repository.
async fn delegate(
    cache: &Arc<Cache>,
    caller: Caller,
    request: Request<Incoming>,
    name: &RepoName,
    repo: &RepoName,
) -> Result<Response<Body>, ApiError> {
    let (mut parts, body) = request.into_parts();
    if name != repo {
        let path = parts.uri.path();
        let rest = path
            .strip_prefix("/v2/")
            .and_then(|p| p.strip_prefix(name.as_str()))
            .ok_or_else(|| ApiError::internal(format!("{path} does not name {name}")))?;
        let renamed = match parts.uri.query() {
            Some(query) => format!("/v2/{repo}{rest}?{query}"),
            None => format!("/v2/{repo}{rest}"),
        };
        parts.uri = renamed.parse::<Uri>().map_err(ApiError::internal)?;
    }
    Ok(cache
        .api
        .clone()
        .handle(caller, Request::from_parts(parts, body))
        .await)
}

fn unsupported() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Unsupported,
        "the mirror is pull-only; push to the private registry",
    )
}

fn fetch_error(cache: &Cache, error: &FetchError, code: ErrorCode) -> ApiError {
    let api = error.to_api(code);
    if api.status == StatusCode::SERVICE_UNAVAILABLE {
        cache.counters.unavailable.fetch_add(1, Ordering::Relaxed);
    }
    api
}

fn error_response(error: &ApiError, head: bool) -> Response<Body> {
    let body = if head { Vec::new() } else { error.body() };
    let len = body.len();
    let mut response = Response::new(
        http_body_util::Full::new(bytes::Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = error.status;
    if error.code.is_some() {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if !head {
        response.headers_mut().insert(CONTENT_LENGTH, len.into());
    }
    response
}
