//! The page's HTTPS server: the toolkit's listener and TLS acceptor, then hyper. Routes:
//! `GET /` (the page), `GET /status.json` (the same data and the page's live part, for the
//! script), `POST /action/{policy,purge,revoke}` (admins only, same origin, CSRF token).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use super::chart::DropHistory;
use super::config::StatusPage;
use super::csrf::{self, Csrf};
use super::form;
use super::model::{self, Model, Repository};
use super::render::{self, Notice, Viewer};
use crate::clock::unix_now;
use crate::dataplane::{inspect, pins::PinLayout};
use crate::net::http::{serve_connection, HttpSettings};
use crate::net::listener::Connection;
use crate::net::tls::TlsAcceptor;
use crate::pki::Pki;
use crate::service::StatusSource;

/// Largest action form body.
const MAX_FORM_BYTES: usize = 8 * 1024;
/// How long the registry's listing is reused (it walks the store).
const REGISTRY_TTL: Duration = Duration::from_secs(10);

/// Everything a request may need, shared by the connections.
pub struct Page {
    pub source: Arc<StatusSource>,
    pub config: StatusPage,
    pub pins: Option<PinLayout>,
    pub history: Arc<Mutex<DropHistory>>,
    /// `[[mirror.upstreams]]`: name and URL.
    pub mirror_urls: Vec<(String, String)>,
    pub pki: Pki,
    pub csrf: Csrf,
    pub stats: Arc<PageStats>,
    registry: Mutex<Option<(Instant, Vec<Repository>)>>,
}

/// The page's counters (its status and metrics).
#[derive(Debug, Default)]
pub struct PageStats {
    pub requests: AtomicU64,
    pub actions: AtomicU64,
    /// POSTs refused: not an admin, another origin, a bad or missing token.
    pub refused: AtomicU64,
    /// TLS handshakes that failed (on the inside address: every non-admin).
    pub handshake_failures: AtomicU64,
}

/// What the server knows of the client from its handshake.
#[derive(Debug, Clone, Default)]
struct Peer {
    name: Option<String>,
    /// SHA-256 of the client certificate, the CSRF token's binding.
    fingerprint: Option<Vec<u8>>,
}

impl Page {
    pub fn new(
        source: Arc<StatusSource>,
        config: StatusPage,
        pins: Option<PinLayout>,
        history: Arc<Mutex<DropHistory>>,
        mirror_urls: Vec<(String, String)>,
        pki: Pki,
        csrf: Csrf,
    ) -> Page {
        Page {
            source,
            config,
            pins,
            history,
            mirror_urls,
            pki,
            csrf,
            stats: Arc::default(),
            registry: Mutex::new(None),
        }
    }

    /// The page's data now.
    async fn model(&self) -> Model {
        let now = unix_now();
        let status = self.source.status();
        let service = |name: &str| status.services.get(name);
        let mut model = Model {
            now_unix: now,
            version: status.version.clone(),
            uptime_secs: status.uptime_secs,
            inside_address: status.inside_address.clone(),
            uplink: service("uplink").and_then(|s| model::uplink(s, now)),
            tor: service("tor").and_then(model::tor),
            dns_cache: service("dns").and_then(model::dns_cache),
            proxy_cache: service("http_proxy").and_then(model::proxy_cache),
            mirror: service("mirror").map(|s| model::mirror(s, &self.mirror_urls)),
            ..Model::default()
        };
        for view in self.source.views() {
            model.services.push(model::ServiceCounters {
                name: view.name().to_owned(),
                counters: model::counters(&view.status()),
            });
        }
        let known = self.source.known();
        let mine = known.iter().position(|name| *name == super::SERVICE.name);
        model.off = known[..mine.unwrap_or(known.len())]
            .iter()
            .filter(|name| self.source.view(name).is_none())
            .map(|name| (*name).to_owned())
            .collect();

        let leases: Vec<crate::dhcp::LeaseRecord> = self
            .operate("dhcp", "leases")
            .await
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let policies: Option<crate::dataplane::service::PolicyTable> = self
            .operate("dataplane", "policies")
            .await
            .and_then(|v| serde_json::from_value(v).ok());
        let (counters, drops) = match &self.pins {
            Some(pins) => (
                inspect::clients(pins).unwrap_or_default(),
                inspect::drops(pins).unwrap_or_default(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        model.clients = model::clients(&leases, policies.as_ref(), &counters, now);
        model.drops = model::drops(&drops);
        model.drops_history = self
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .intervals();
        if self.source.view("registry").is_some() {
            model.registry = Some(self.registry().await);
        }
        model
    }

    /// A service's read-only operation, `None` when it does not run or fails.
    async fn operate(&self, service: &str, operation: &str) -> Option<Value> {
        let view = self.source.view(service)?;
        view.operate(operation, Value::Null).await.ok()
    }

    async fn registry(&self) -> Vec<Repository> {
        if let Some((read, repos)) = &*self.registry.lock().unwrap_or_else(PoisonError::into_inner)
        {
            if read.elapsed() < REGISTRY_TTL {
                return repos.clone();
            }
        }
        let ls = self.operate("registry", "ls").await.unwrap_or(Value::Null);
        let du = self.operate("registry", "du").await.unwrap_or(Value::Null);
        let repos = model::registry(&ls, &du);
        *self.registry.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), repos.clone()));
        repos
    }

    fn viewer(&self, peer: &Peer) -> Viewer {
        let admin = peer.fingerprint.is_some() && self.config.is_admin(peer.name.as_deref());
        Viewer {
            name: peer.name.clone(),
            admin,
            token: match (&peer.fingerprint, admin) {
                (Some(fingerprint), true) => Some(self.csrf.token(fingerprint, unix_now())),
                _ => None,
            },
        }
    }

    async fn issued(&self) -> Vec<String> {
        let pki = self.pki.clone();
        let list = tokio::task::spawn_blocking(move || pki.list()).await;
        let mut names: Vec<String> = match list {
            Ok(Ok(issued)) => issued
                .into_iter()
                .filter(|cert| !cert.revoked)
                .map(|cert| cert.name)
                .collect(),
            _ => Vec::new(),
        };
        names.dedup();
        names
    }

    /// The page, with `notice` above it.
    async fn page(&self, peer: &Peer, notice: Option<Notice>, status: StatusCode) -> Reply {
        let model = self.model().await;
        let viewer = self.viewer(peer);
        let issued = if viewer.admin {
            self.issued().await
        } else {
            Vec::new()
        };
        let nonce = nonce();
        let html = render::page(&model, &viewer, notice.as_ref(), &issued, &nonce);
        Reply::html(status, html, &nonce)
    }

    async fn respond(&self, peer: Peer, request: Request<Incoming>) -> Reply {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        let read = method == Method::GET || method == Method::HEAD;
        match path.as_str() {
            "/" if read => self.page(&peer, None, StatusCode::OK).await,
            "/status.json" if read => {
                let model = self.model().await;
                let live = render::live(&model);
                Reply::json(&json!({ "model": model, "live": live }))
            }
            "/" | "/status.json" => Reply::text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: GET or HEAD\n",
            ),
            action if action.starts_with("/action/") => {
                if method == Method::POST {
                    self.action(&peer, request).await
                } else {
                    Reply::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: POST\n")
                }
            }
            _ => Reply::text(StatusCode::NOT_FOUND, "not found: the page is at /\n"),
        }
    }

    /// An admin's POST: checked (admin, origin, token), then done through the service that
    /// owns the state.
    async fn action(&self, peer: &Peer, request: Request<Incoming>) -> Reply {
        let refuse = |why: &'static str| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            Reply::text(StatusCode::FORBIDDEN, why)
        };
        let (Some(fingerprint), true) = (
            &peer.fingerprint,
            self.config.is_admin(peer.name.as_deref()),
        ) else {
            return refuse(
                "forbidden: actions need a client certificate named in status_page.admins\n",
            );
        };
        if !csrf::same_origin(request.headers()) {
            return refuse(
                "forbidden: the request does not come from this page (Origin/Referer)\n",
            );
        }
        let path = request.uri().path().to_owned();
        let body = match Limited::new(request.into_body(), MAX_FORM_BYTES)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return Reply::text(
                    StatusCode::BAD_REQUEST,
                    "bad request: the form is too large\n",
                )
            }
        };
        let Some(fields) = form::parse(&body) else {
            return Reply::text(StatusCode::BAD_REQUEST, "bad request: a malformed form\n");
        };
        let token = form::field(&fields, "token").unwrap_or("");
        if !self.csrf.check(fingerprint, token, unix_now()) {
            return refuse(
                "forbidden: the form's token is missing, expired or not yours; reload the page\n",
            );
        }
        let admin = peer.name.as_deref().unwrap_or("");
        let outcome = match path.as_str() {
            "/action/policy" => self.set_policy(&fields).await,
            "/action/purge" => self.purge(&fields).await,
            "/action/revoke" => self.revoke(&fields).await,
            _ => return Reply::text(StatusCode::NOT_FOUND, "not found: no such action\n"),
        };
        self.stats.actions.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(done) => {
                tracing::info!(admin, action = %path, "status page: done");
                self.page(peer, Some(Notice::Done(done)), StatusCode::OK)
                    .await
            }
            Err(error) => {
                tracing::info!(admin, action = %path, "status page: failed: {error:#}");
                self.page(
                    peer,
                    Some(Notice::Failed(format!("{error:#}"))),
                    StatusCode::BAD_REQUEST,
                )
                .await
            }
        }
    }

    async fn set_policy(&self, fields: &[(String, String)]) -> anyhow::Result<String> {
        let mac = form::field(fields, "mac").unwrap_or("").trim();
        let policy = form::field(fields, "policy").unwrap_or("");
        let view = self
            .source
            .view("dataplane")
            .ok_or_else(|| anyhow::anyhow!("the dataplane does not run"))?;
        let done = view
            .operate("set_policy", json!({ "mac": mac, "policy": policy }))
            .await?;
        Ok(format!(
            "{} is {}",
            done["mac"].as_str().unwrap_or(mac),
            done["policy"].as_str().unwrap_or(policy)
        ))
    }

    async fn purge(&self, fields: &[(String, String)]) -> anyhow::Result<String> {
        let url = form::field(fields, "url").unwrap_or("").trim();
        let view = self
            .source
            .view("http_proxy")
            .ok_or_else(|| anyhow::anyhow!("the HTTP proxy does not run"))?;
        let done = view.operate("cache_purge", json!({ "url": url })).await?;
        Ok(if done["purged"].as_bool().unwrap_or(false) {
            "purged from the cache".to_owned()
        } else {
            "that URL was not cached".to_owned()
        })
    }

    async fn revoke(&self, fields: &[(String, String)]) -> anyhow::Result<String> {
        let name = form::field(fields, "name").unwrap_or("").trim().to_owned();
        crate::pki::check_client_name(&name).map_err(anyhow::Error::msg)?;
        let pki = self.pki.clone();
        let revoked = name.clone();
        tokio::task::spawn_blocking(move || pki.revoke(&revoked))
            .await
            .map_err(|error| anyhow::anyhow!("revoking: {error}"))??;
        Ok(format!(
            "{name} revoked; the registry, the mirror and this page refuse it within a second"
        ))
    }
}

/// One connection: the handshake, then HTTP.
pub async fn serve(conn: Connection<TcpStream>, acceptor: TlsAcceptor, page: Arc<Page>) {
    let _slot = conn.slot;
    let accepted = match acceptor.accept(conn.stream).await {
        Ok(accepted) => accepted,
        Err(error) => {
            page.stats
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = ?conn.peer, "status page: {error}");
            return;
        }
    };
    let fingerprint = accepted
        .stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| Sha256::digest(cert.as_ref()).to_vec());
    let peer = Peer {
        name: accepted.client_name,
        fingerprint,
    };
    let service = service_fn(move |request| {
        let (page, peer) = (page.clone(), peer.clone());
        async move { Ok::<_, Infallible>(page.respond(peer, request).await.into_response()) }
    });
    let _ = serve_connection(
        accepted.stream,
        service,
        HttpSettings::default(),
        conn.shutdown,
    )
    .await;
}

/// A response being built.
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    nonce: Option<String>,
}

impl Reply {
    fn html(status: StatusCode, html: String, nonce: &str) -> Reply {
        Reply {
            status,
            content_type: "text/html; charset=utf-8",
            body: Bytes::from(html),
            nonce: Some(nonce.to_owned()),
        }
    }

    fn json(value: &impl Serialize) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: "application/json",
            body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            nonce: None,
        }
    }

    fn text(status: StatusCode, text: &'static str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from_static(text.as_bytes()),
            nonce: None,
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        let nonce = self.nonce.unwrap_or_default();
        let policy = format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        );
        if let Ok(value) = HeaderValue::from_str(&policy) {
            headers.insert(header::CONTENT_SECURITY_POLICY, value);
        }
        response
    }
}

/// A fresh nonce for one page's inline style and script.
fn nonce() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // Without randomness the nonce is fixed; the page still works, the CSP is only weaker.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
