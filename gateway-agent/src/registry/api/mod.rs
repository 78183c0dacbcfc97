//! The distribution API over hyper 1: one [`Api`] per registry, [`Api::handle`] per request,
//! with the verified client certificate's name for the access rules. Every valid certificate
//! may pull; pushing and deleting need a `[[registry.access]]` entry (else `DENIED`).
//!
//! Store calls run on tokio's blocking pool; request bodies stream into uploads in chunks and
//! blobs stream out the same way, so memory stays bounded whatever the layer size.

mod blobs;
pub mod error;
mod manifests;
pub mod route;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use oci_spec::distribution::ErrorCode;
use serde::Serialize;

use self::error::ApiError;
use self::route::{Route, RouteError};
use super::config::Registry;
use super::names::RepoName;
use super::storage::{self, Storage};

/// A response body: bytes in memory or a stream from the store.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// What every request shares.
pub struct Api {
    store: Arc<dyn Storage>,
    access: Arc<Registry>,
    counters: Arc<Counters>,
}

/// The API's counters.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    pushes: AtomicU64,
    pulls: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    denied: AtomicU64,
    errors: AtomicU64,
    writes: AtomicU64,
}

/// The API's counters, for status and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApiStats {
    /// Requests answered.
    pub requests: u64,
    /// Manifests stored.
    pub pushes: u64,
    /// Manifests served (GET).
    pub pulls: u64,
    /// Blob bytes received.
    pub bytes_in: u64,
    /// Blob bytes sent.
    pub bytes_out: u64,
    /// Requests refused with `DENIED`.
    pub denied: u64,
    /// Requests that failed with a server error.
    pub errors: u64,
    /// Requests that changed the store (pushes, uploads, mounts, deletes).
    pub writes: u64,
}

/// Who is asking, and how.
pub struct Caller {
    /// The verified client certificate's name.
    pub client: Option<String>,
}

impl Api {
    /// An API over `store` with `access`'s push rules.
    pub fn new(store: Arc<dyn Storage>, access: Arc<Registry>) -> Api {
        Api {
            store,
            access,
            counters: Arc::default(),
        }
    }

    /// The store it serves.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// The counters now.
    pub fn stats(&self) -> ApiStats {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ApiStats {
            requests: get(&c.requests),
            pushes: get(&c.pushes),
            pulls: get(&c.pulls),
            bytes_in: get(&c.bytes_in),
            bytes_out: get(&c.bytes_out),
            denied: get(&c.denied),
            errors: get(&c.errors),
            writes: get(&c.writes),
        }
    }

    /// Answers one request.
    pub async fn handle(
        self: Arc<Self>,
        caller: Caller,
        request: Request<Incoming>,
    ) -> Response<Body> {
        bump(&self.counters.requests, 1);
        let head = request.method() == Method::HEAD;
        let reads = matches!(*request.method(), Method::GET | Method::HEAD);
        let mut response = match self.dispatch(&caller, request).await {
            Ok(response) => {
                if !reads {
                    bump(&self.counters.writes, 1);
                }
                response
            }
            Err(error) => {
                if error.status == StatusCode::FORBIDDEN {
                    bump(&self.counters.denied, 1);
                } else if error.status.is_server_error() {
                    bump(&self.counters.errors, 1);
                }
                let body = error.body();
                let mut response = if head {
                    empty(error.status)
                } else {
                    full(error.status, body)
                };
                if error.code.is_some() {
                    set(&mut response, CONTENT_TYPE, "application/json");
                }
                response
            }
        };
        set(
            &mut response,
            "docker-distribution-api-version",
            "registry/2.0",
        );
        response
    }

    async fn dispatch(
        &self,
        caller: &Caller,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        let route = route::route(request.uri().path()).map_err(|error| match error {
            RouteError::NotFound => ApiError {
                status: StatusCode::NOT_FOUND,
                code: None,
                message: String::new(),
            },
            RouteError::NameInvalid(message) => {
                ApiError::bad_request(ErrorCode::NameInvalid, message)
            }
            RouteError::DigestInvalid(message) => {
                ApiError::bad_request(ErrorCode::DigestInvalid, message)
            }
            RouteError::ReferenceInvalid(message) => {
                ApiError::bad_request(ErrorCode::ManifestInvalid, message)
            }
        })?;
        let method = request.method().clone();
        // An upload session is a push in progress, whatever the method.
        let writes =
            !matches!(method, Method::GET | Method::HEAD) || matches!(route, Route::Upload(..));
        match &route {
            Route::Base | Route::Catalog => {}
            Route::Tags(name)
            | Route::Manifest(name, _)
            | Route::Blob(name, _)
            | Route::Uploads(name)
            | Route::Upload(name, _)
            | Route::Referrers(name, _) => {
                if writes {
                    self.check_push(caller, name)?;
                }
            }
        }
        let params = route::query(request.uri().query());
        match (route, method) {
            (Route::Base, Method::GET | Method::HEAD) => {
                Ok(json(StatusCode::OK, &serde_json::json!({})))
            }
            (Route::Catalog, Method::GET) => manifests::catalog(self, &params).await,
            (Route::Tags(name), Method::GET) => manifests::tags(self, name, &params).await,
            (Route::Manifest(name, reference), Method::GET | Method::HEAD) => {
                let head = request.method() == Method::HEAD;
                manifests::get(self, name, reference, head).await
            }
            (Route::Manifest(name, reference), Method::PUT) => {
                manifests::put(self, name, reference, request).await
            }
            (Route::Manifest(name, reference), Method::DELETE) => {
                manifests::delete(self, name, reference).await
            }
            (Route::Referrers(name, digest), Method::GET) => {
                manifests::referrers(self, name, digest, &params).await
            }
            (Route::Blob(name, digest), Method::GET | Method::HEAD) => {
                blobs::get(self, name, digest, request).await
            }
            (Route::Blob(name, digest), Method::DELETE) => blobs::delete(self, name, digest).await,
            (Route::Uploads(name), Method::POST) => {
                blobs::start(self, caller, name, &params, request).await
            }
            (Route::Upload(name, id), Method::GET) => blobs::status(self, name, id).await,
            (Route::Upload(name, id), Method::PATCH) => blobs::patch(self, name, id, request).await,
            (Route::Upload(name, id), Method::PUT) => {
                blobs::finish(self, name, id, &params, request).await
            }
            (Route::Upload(name, id), Method::DELETE) => blobs::cancel(self, name, id).await,
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                "this endpoint does not take that method",
            )),
        }
    }

    fn check_push(&self, caller: &Caller, name: &RepoName) -> Result<(), ApiError> {
        if self
            .access
            .may_push(caller.client.as_deref(), name.as_str())
        {
            Ok(())
        } else {
            Err(ApiError::denied(format!(
                "client {:?} may not push to or delete from {name} (no [[registry.access]] entry covers it)",
                caller.client.as_deref().unwrap_or("")
            )))
        }
    }

    /// Like [`Api::store_call`], holding the store's GC lock shared: for what makes a blob
    /// young again (a commit, a mount, a HEAD), so a GC sweep never removes a blob between
    /// reading its age and its renewal.
    async fn renewing_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Storage) -> storage::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.store_call(move |store| {
            let _shared = store
                .gc_lock()
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(store)
        })
        .await
    }

    /// Runs `f` on the store on the blocking pool.
    async fn store_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Storage) -> storage::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::from)
    }
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A response with no body.
fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}

/// A response with `body`.
fn full(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let len = body.len();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    set(&mut response, CONTENT_LENGTH, &len.to_string());
    response
}

/// A JSON response.
fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut response = full(status, serde_json::to_vec(value).unwrap_or_default());
    set(&mut response, CONTENT_TYPE, "application/json");
    response
}

/// Sets a header; a value that is not a valid header (never, for what this module sets) is
/// left out.
fn set(response: &mut Response<Body>, name: impl hyper::header::IntoHeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

#[cfg(test)]
mod tests;
