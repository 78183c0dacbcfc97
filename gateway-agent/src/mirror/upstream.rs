//! The mirror's HTTP client for one upstream registry: every stream through the service's
//! [`Connector`] (Tor unless `mirror.egress = "direct"`), TLS 1.3 for `https` (the system roots
//! or the upstream's `ca`; a certificate that does not verify is [`UpstreamError::Invalid`],
//! a 502, not "unreachable"), the token dance of [`super::auth`] on a `401` (or the
//! credentials as `Basic` to the upstream's own origin, when it asks for that), and redirects
//! followed (blob downloads often go to a CDN): at most 5 (`MAX_REDIRECTS`), never from `https`
//! to `http`, without the `Authorization` header from the first hop that leaves the
//! upstream's origin on.
//!
//! Each request has its own connection: over Tor a stream is cheap next to a layer, and it
//! keeps one slow blob from holding up a manifest behind it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, HOST, LOCATION, USER_AGENT, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use serde::Serialize;

use super::auth::{self, Challenge, Tokens};
use super::config::{Endpoint, Upstream};
use crate::egress::{Connector, EgressError, Host, Isolation, Target};

/// How long connecting (through Tor: building the stream) and the TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the upstream may take to answer a request's head.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;
/// A token answer larger than this is not one.
const MAX_TOKEN_ANSWER: usize = 64 << 10;

/// Why an upstream request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// Not reachable: the connector refused (Tor down), the connection or TLS failed, a
    /// timeout. Cached content is served; uncached content gets a 503.
    #[error("the upstream {upstream} is unreachable: {reason}")]
    Unreachable { upstream: String, reason: String },
    /// It answered, with something other than success.
    #[error("the upstream {upstream} answered {status}{detail}")]
    Status {
        upstream: String,
        status: StatusCode,
        detail: String,
    },
    /// It answered with something that is not what was asked for (a wrong digest, too large).
    #[error("the upstream {upstream} sent {reason}")]
    Invalid { upstream: String, reason: String },
}

/// The upstream's counters.
#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub token_requests: AtomicU64,
    pub failures: AtomicU64,
}

/// The counters, for status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamStats {
    pub requests: u64,
    pub token_requests: u64,
    pub failures: u64,
}

/// The client for one upstream.
pub struct UpstreamClient {
    config: Upstream,
    connector: Arc<dyn Connector>,
    /// `None`: no CA to check TLS with (an `http://` upstream without `ca` on a host without
    /// the system roots); `https` requests then fail.
    tls: Option<Arc<ClientConfig>>,
    isolation: Isolation,
    /// `user:password`, from the upstream's `credentials` file.
    credentials: Option<String>,
    /// The upstream asked for `Basic` before: later requests send the credentials at once
    /// (to its own origin only), sparing a round trip through Tor each.
    basic: AtomicBool,
    tokens: Tokens,
    counters: Counters,
}

impl UpstreamClient {
    /// A client for `config` through `connector`, verifying TLS with `tls`.
    pub fn new(
        config: Upstream,
        connector: Arc<dyn Connector>,
        tls: Option<Arc<ClientConfig>>,
        credentials: Option<String>,
    ) -> Self {
        let isolation = Isolation(format!("mirror:{}", config.name));
        UpstreamClient {
            config,
            connector,
            tls,
            isolation,
            credentials,
            basic: AtomicBool::new(false),
            tokens: Tokens::default(),
            counters: Counters::default(),
        }
    }

    /// Its config.
    pub fn config(&self) -> &Upstream {
        &self.config
    }

    /// The counters now.
    pub fn stats(&self) -> UpstreamStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UpstreamStats {
            requests: get(&self.counters.requests),
            token_requests: get(&self.counters.token_requests),
            failures: get(&self.counters.failures),
        }
    }

    /// `method` on the registry path `path` (`/v2/…`) with `accept`, authenticated for
    /// `scope` as the upstream asks, redirects followed. Any status comes back as a response;
    /// only a failure to get one is an error.
    pub async fn registry_request(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        scope: &str,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let result = self.authorized(method, path, accept, scope).await;
        if result.is_err() {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn authorized(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        scope: &str,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sent_credentials = false;
        let mut authorization = match (self.tokens.get(scope), &self.credentials) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, Some(credentials)) if self.basic.load(Ordering::Relaxed) => {
                sent_credentials = true;
                Some(format!("Basic {}", auth::base64(credentials.as_bytes())))
            }
            _ => None,
        };
        for attempt in 0..2 {
            let response = self
                .follow(method.clone(), path, accept, authorization.as_deref())
                .await?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let challenge = response
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .find_map(auth::parse_challenge);
            if sent_credentials && !matches!(challenge, Some(Challenge::Bearer { .. })) {
                return Err(UpstreamError::Status {
                    upstream: self.config.name.clone(),
                    status: StatusCode::UNAUTHORIZED,
                    detail: format!(
                        " to the credentials from {} (Basic): refused",
                        self.credentials_file()
                    ),
                });
            }
            if attempt == 1 {
                return Ok(response);
            }
            sent_credentials = false;
            authorization = match challenge {
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope: asked,
                }) => {
                    self.basic.store(false, Ordering::Relaxed);
                    self.tokens.forget(scope);
                    let token = self
                        .token(
                            &realm,
                            service.as_deref(),
                            asked.as_deref().unwrap_or(scope),
                        )
                        .await?;
                    self.tokens.put(scope, token.0.clone(), token.1);
                    Some(format!("Bearer {}", token.0))
                }
                // Basic: the upstream's own credentials, to its own origin only (`follow`
                // drops them on a redirect elsewhere).
                Some(Challenge::Basic) => match &self.credentials {
                    Some(credentials) => {
                        sent_credentials = true;
                        self.basic.store(true, Ordering::Relaxed);
                        Some(format!("Basic {}", auth::base64(credentials.as_bytes())))
                    }
                    None => return Ok(response),
                },
                None => return Ok(response),
            };
        }
        Err(self.invalid("no answer after authenticating".into()))
    }

    /// A token for `scope` from `realm`: with the credentials only if `realm` is the
    /// configured one.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), UpstreamError> {
        self.counters.token_requests.fetch_add(1, Ordering::Relaxed);
        let endpoint = Endpoint::parse(realm)
            .map_err(|error| self.invalid(format!("a token realm that is not a URL: {error}")))?;
        let mut query = Vec::new();
        if let Some(service) = service {
            query.push(format!("service={}", auth::encode_query(service)));
        }
        query.push(format!("scope={}", auth::encode_query(scope)));
        let separator = if endpoint.path.contains('?') {
            '&'
        } else {
            '?'
        };
        let path = format!("{}{separator}{}", endpoint.path, query.join("&"));
        let configured = self
            .config
            .realm
            .as_ref()
            .is_some_and(|configured| same_realm(configured, &endpoint));
        let authorization = match (&self.credentials, configured) {
            (Some(credentials), true) => {
                Some(format!("Basic {}", auth::base64(credentials.as_bytes())))
            }
            _ => None,
        };
        let response = self
            .send(
                &endpoint,
                Method::GET,
                &path,
                None,
                authorization.as_deref(),
            )
            .await?;
        let status = response.status();
        if !status.is_success() {
            let refused = if authorization.is_some() && status == StatusCode::UNAUTHORIZED {
                format!(
                    " (the credentials from {} were refused)",
                    self.credentials_file()
                )
            } else {
                String::new()
            };
            return Err(UpstreamError::Status {
                upstream: self.config.name.clone(),
                status,
                detail: format!(" to a token request at {}{refused}", endpoint.origin()),
            });
        }
        let body = Limited::new(response.into_body(), MAX_TOKEN_ANSWER)
            .collect()
            .await
            .map_err(|error| self.unreachable(format!("reading a token: {error}")))?
            .to_bytes();
        serde_json::from_slice::<auth::TokenAnswer>(&body)
            .ok()
            .and_then(auth::TokenAnswer::into_token)
            .ok_or_else(|| self.invalid("a token answer without a token".into()))
    }

    /// `method` on `path`, following redirects.
    async fn follow(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut endpoint = self.config.url.clone();
        endpoint.path = path.to_owned();
        let mut authorization = authorization;
        for _ in 0..=MAX_REDIRECTS {
            let response = self
                .send(
                    &endpoint,
                    method.clone(),
                    &endpoint.path,
                    accept,
                    authorization,
                )
                .await?;
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED
            {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| self.invalid("a redirect without a Location".into()))?;
            let next = redirect_target(&endpoint, location, self.config.url.tls)
                .map_err(|reason| self.invalid(format!("a redirect {reason}")))?;
            if next.origin() != self.config.url.origin() {
                // The credentials and tokens are the upstream's, not the CDN's; once dropped
                // they stay dropped, even if a later hop comes back.
                authorization = None;
            }
            endpoint = next;
        }
        Err(self.invalid(format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// One request on a new connection to `endpoint`'s origin.
    async fn send(
        &self,
        endpoint: &Endpoint,
        method: Method,
        path: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let target = Target {
            host: match endpoint.host.parse::<IpAddr>() {
                Ok(ip) => Host::Ip(ip),
                Err(_) => Host::Name(endpoint.host.clone()),
            },
            port: endpoint.port,
        };
        let connecting = async {
            let stream = self
                .connector
                .connect(&target, &self.isolation)
                .await
                .map_err(|error: EgressError| self.unreachable(error.to_string()))?;
            if !endpoint.tls {
                return Ok(stream);
            }
            let tls = self.tls.as_ref().ok_or_else(|| {
                self.invalid(format!(
                    "nothing: there are no CA certificates to check {target} with (set the \
                     upstream's `ca`)"
                ))
            })?;
            crate::http_proxy::upstream_tls::connect(tls, &target.host, stream)
                .await
                .map_err(|error| match certificate_error(&error) {
                    // Not a network problem: whoever answered is not the upstream (or the
                    // `ca` is wrong). Nothing is sent, nothing cached; a 502, not a 503.
                    Some(reason) => self.invalid(format!(
                        "a TLS certificate for {target} that does not verify against {}: \
                         {reason}; refused",
                        self.trust_anchor()
                    )),
                    None => self.unreachable(format!("TLS with {target}: {error}")),
                })
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| self.unreachable(format!("connecting to {target} timed out")))??;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| self.unreachable(format!("HTTP with {target}: {error}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let default_port = if endpoint.tls { 443 } else { 80 };
        let host = if endpoint.port == default_port {
            endpoint.host.clone()
        } else {
            format!("{}:{}", endpoint.host, endpoint.port)
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host)
            .header(
                USER_AGENT,
                concat!("gateway-mirror/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(authorization) = authorization {
            if let Ok(mut value) = HeaderValue::from_str(authorization) {
                value.set_sensitive(true);
                request = request.header(AUTHORIZATION, value);
            }
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|error| self.invalid(format!("an unusable request path {path:?}: {error}")))?;
        tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| self.unreachable(format!("{target} did not answer in time")))?
            .map_err(|error| self.unreachable(format!("the request to {target}: {error}")))
    }

    /// What its TLS certificates are checked against, for messages.
    fn trust_anchor(&self) -> String {
        match &self.config.ca {
            Some(ca) => format!("its `ca` {}", ca.display()),
            None => format!(
                "the system roots ({})",
                crate::http_proxy::upstream_tls::SYSTEM_ROOTS
            ),
        }
    }

    /// The credentials file, for messages (never its content).
    fn credentials_file(&self) -> String {
        self.config.credentials.as_ref().map_or_else(
            || "the credentials file".to_owned(),
            |p| p.display().to_string(),
        )
    }

    /// An [`UpstreamError::Unreachable`] for this upstream.
    pub fn unreachable(&self, reason: String) -> UpstreamError {
        UpstreamError::Unreachable {
            upstream: self.config.name.clone(),
            reason,
        }
    }

    /// An [`UpstreamError::Invalid`] for this upstream.
    pub fn invalid(&self, reason: String) -> UpstreamError {
        UpstreamError::Invalid {
            upstream: self.config.name.clone(),
            reason,
        }
    }
}

/// The certificate problem in a failed TLS handshake, if that is why it failed.
fn certificate_error(error: &std::io::Error) -> Option<String> {
    let inner = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    match inner {
        rustls::Error::InvalidCertificate(reason) => Some(format!("{reason:?}")),
        rustls::Error::NoCertificatesPresented => Some("no certificate presented".into()),
        _ => None,
    }
}

/// Where a redirect from `current` to `location` goes: an absolute `http(s)` URL, a
/// network-path (`//host/path`) or an absolute path on the same origin. From an `https`
/// upstream (`tls`) only to `https`: an exit relay could read and change clear text.
pub fn redirect_target(current: &Endpoint, location: &str, tls: bool) -> Result<Endpoint, String> {
    let next = if let Some(rest) = location.strip_prefix("//") {
        let scheme = if current.tls { "https" } else { "http" };
        Endpoint::parse(&format!("{scheme}://{rest}"))?
    } else if location.starts_with('/') {
        Endpoint {
            path: location.to_owned(),
            ..current.clone()
        }
    } else if location.contains("://") {
        Endpoint::parse(location)?
    } else {
        return Err(format!("to a relative Location {location:?}"));
    };
    if tls && !next.tls {
        return Err(format!(
            "from https to {} (clear text); refused",
            next.origin()
        ));
    }
    Ok(next)
}

/// Whether the realm the upstream named is the configured one (scheme, host, port and path;
/// the query is the request's own).
fn same_realm(configured: &Endpoint, named: &Endpoint) -> bool {
    let path = |e: &Endpoint| e.path.split('?').next().unwrap_or("").to_owned();
    configured.origin() == named.origin() && path(configured) == path(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_and_never_downgrade() {
        let here = Endpoint::parse("https://registry.hub.test/v2/a/blobs/x").unwrap();
        let to = |location: &str| redirect_target(&here, location, true);
        let cdn = to("https://cdn.hub.test:8443/blob?sig=1").unwrap();
        assert_eq!(cdn.origin(), "https://cdn.hub.test:8443");
        assert_eq!(cdn.path, "/blob?sig=1");
        let same = to("/v2/a/blobs/y").unwrap();
        assert_eq!(same.origin(), here.origin());
        assert_eq!(same.path, "/v2/a/blobs/y");
        let network = to("//cdn.hub.test/b").unwrap();
        assert_eq!(network.origin(), "https://cdn.hub.test:443");
        assert!(to("http://cdn.hub.test/b")
            .unwrap_err()
            .contains("clear text"));
        assert!(to("blob").is_err());
        assert!(to("https://u:p@cdn.hub.test/b").is_err());
        // From a clear-text upstream (a trusted network) anything goes.
        let plain = Endpoint::parse("http://registry.hub.test/v2/").unwrap();
        assert!(redirect_target(&plain, "http://cdn.hub.test/b", false).is_ok());
    }

    #[test]
    fn only_the_configured_realm_is_the_configured_realm() {
        let configured = Endpoint::parse("https://auth.test/token").unwrap();
        assert!(same_realm(
            &configured,
            &Endpoint::parse("https://auth.test/token?x=1").unwrap()
        ));
        assert!(same_realm(
            &configured,
            &Endpoint::parse("https://auth.test:443/token").unwrap()
        ));
        for other in [
            "http://auth.test/token",
            "https://evil.test/token",
            "https://auth.test/other",
            "https://auth.test:8443/token",
        ] {
            assert!(
                !same_realm(&configured, &Endpoint::parse(other).unwrap()),
                "{other}"
            );
        }
    }
}
