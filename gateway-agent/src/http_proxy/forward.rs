//! One proxy request: forward an absolute-form request, or open a CONNECT tunnel. Every
//! outbound stream comes from the connector; a failure is an HTTP status for the client, never
//! a fallback.

use std::{convert::Infallible, net::IpAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::{
    body::Incoming, client::conn::http1 as client, header, upgrade::OnUpgrade, Method, Request,
    Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::{
    cache::exchange,
    idle::{Activity, Tracked},
    pool,
    request::{self, BadRequest},
    stats::{bump, ActiveGuard},
    upstream_tls, Shared,
};
use crate::egress::{BoxStream, EgressError, Isolation, Target};

/// The error of a body the proxy sends: hyper's, or the cache's.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the proxy sends.
pub(crate) type ProxyBody = BoxBody<Bytes, BoxError>;

/// Answers one request from `client`; `ambiguous` says why its framing is refused, if it is
/// (`framing`).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    client: IpAddr,
    active: Arc<ActiveGuard>,
    ambiguous: Option<&'static str>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let method = req.method().clone();
    let shown = shown_target(&req);
    let response = if let Some(why) = ambiguous {
        bad_request(&shared, &BadRequest::Framing(why))
    } else if method == Method::CONNECT {
        let mut response = connect(&shared, client, active, req).await;
        // Refused: the client may already be sending what was meant for the tunnel, and the
        // framing scanner stopped at the CONNECT, so the connection ends here.
        if !response.status().is_success() {
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    } else {
        forward(&shared, client, req).await
    };
    if shared.settings.log_queries {
        // Host and port only: paths and queries often carry tokens.
        tracing::info!(
            %client,
            %method,
            target = %shown,
            status = response.status().as_u16(),
            "http proxy"
        );
    }
    response
}

/// `host:port` of the request line for the query log.
fn shown_target(req: &Request<Incoming>) -> String {
    match req.uri().authority() {
        Some(authority) => authority
            .as_str()
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_owned(),
        None => "-".to_owned(),
    }
}

/// An absolute-form request: answered from the cache when it can be, otherwise rewritten to
/// origin-form and sent over a fresh stream.
async fn forward(
    shared: &Arc<Shared>,
    client: IpAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let counters = &shared.counters;
    bump(&counters.requests);
    let (mut parts, body) = req.into_parts();
    // `http://HTTPS///host/path`: the proxy fetches `https://host/path` itself.
    let target = match request::https_form(&parts.uri) {
        Some(Ok(uri)) => {
            parts.uri = uri;
            request::https_target(&parts.uri)
        }
        Some(Err(problem)) => Err(problem),
        None => request::absolute_target(&parts.uri),
    };
    let target = match target {
        Ok(target) => target,
        Err(problem) => return bad_request(shared, &problem),
    };
    if !shared.settings.ports.contains(&target.port) {
        bump(&counters.denied_ports);
        return text(
            StatusCode::FORBIDDEN,
            &format!(
                "requests to port {} are not allowed here (http_proxy.ports)\n",
                target.port
            ),
        );
    }
    if let Some(cache) = &shared.cache {
        if exchange::cacheable(&parts) {
            return exchange::answer(shared, cache, client, &target, parts).await;
        }
    }
    let tls = parts.uri.scheme() == Some(&hyper::http::uri::Scheme::HTTPS);
    if let Err(problem) = request::to_origin_form(&mut parts) {
        return bad_request(shared, &problem);
    }
    let Some(body) = primed(body, shared.settings.header_timeout).await else {
        return bad_request(shared, &BadRequest::Body);
    };
    match upstream(
        shared,
        client,
        &target,
        tls,
        Request::from_parts(parts, body),
    )
    .await
    {
        Ok(response) => response.map(|body| body.map_err(BoxError::from).boxed()),
        Err(response) => response,
    }
}

/// The body of an upstream response: hyper's, giving its connection back to the pool.
pub(crate) type UpstreamBody = pool::Returning;

/// Sends an origin-form request to `target` for `client` (in TLS when `tls`), over an idle
/// connection of the same client to the same place if one is pooled, else a fresh stream: the
/// response with its hop-by-hop headers removed, or the proxy's own answer explaining the
/// failure.
pub(crate) async fn upstream(
    shared: &Shared,
    client: IpAddr,
    target: &Target,
    tls: bool,
    req: Request<ProxyBody>,
) -> Result<Response<UpstreamBody>, Response<ProxyBody>> {
    use hyper::body::Body as _;
    let key = pool::Key::new(Isolation::client(client), target, tls);
    let mut req = req;
    // Only bodiless requests go on a pooled connection: one the origin closed meanwhile fails
    // before any answer, and such a request can be sent again on a fresh one.
    if req.body().is_end_stream() {
        if let Some(conn) = shared.pool.take(&key).await {
            let again = copy_head(&req);
            match send(shared, target, conn, req, key.clone()).await {
                Sent::Answer(response) => return *response,
                Sent::Broken => req = again,
            }
        }
    }
    let conn = dial(shared, client, target, tls).await?;
    match send(shared, target, conn, req, key).await {
        Sent::Answer(response) => *response,
        Sent::Broken => {
            bump(&shared.counters.protocol);
            Err(text(
                StatusCode::BAD_GATEWAY,
                &format!("no valid HTTP answer from {target}\n"),
            ))
        }
    }
}

/// A bodiless request's head, to send it again.
fn copy_head(req: &Request<ProxyBody>) -> Request<ProxyBody> {
    let mut again = Request::new(empty());
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    again
}

fn empty() -> ProxyBody {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// What one attempt on a connection gave.
enum Sent {
    /// An answer, or the proxy's reason why not (boxed: it is large, `Broken` is not).
    Answer(Box<Result<Response<UpstreamBody>, Response<ProxyBody>>>),
    /// The connection broke before any byte of an answer (worth a fresh one).
    Broken,
}

async fn send(
    shared: &Shared,
    target: &Target,
    mut conn: pool::Conn,
    req: Request<ProxyBody>,
    key: pool::Key,
) -> Sent {
    let counters = &shared.counters;
    let idle = shared.settings.idle_timeout;
    let timed_out = || {
        bump(&counters.timeout);
        Sent::Answer(Box::new(Err(text(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("{target} did not answer in time\n"),
        ))))
    };
    let response = match tokio::time::timeout(idle, conn.sender.send_request(req)).await {
        Ok(Ok(response)) => response,
        // The idle watchdog dropped the connection: a silent origin, not a broken one.
        Ok(Err(_)) if conn.activity.is_idle(idle) => return timed_out(),
        Ok(Err(_)) => return Sent::Broken,
        Err(_) => return timed_out(),
    };
    let (mut parts, body) = response.into_parts();
    request::strip_hop_by_hop(&mut parts.headers);
    let body = pool::Returning::new(body, shared.pool.clone(), key, conn);
    Sent::Answer(Box::new(Ok(Response::from_parts(parts, body))))
}

/// A new connection to `target` for `client`: the connector's stream, TLS if asked, the HTTP/1.1
/// handshake, and its driver task (it ends when the origin closes, after `idle_timeout` without a
/// byte, or at stop).
async fn dial(
    shared: &Shared,
    client: IpAddr,
    target: &Target,
    tls: bool,
) -> Result<pool::Conn, Response<ProxyBody>> {
    let counters = &shared.counters;
    let mut stream = open(shared, client, target).await?;
    if tls {
        let Some(config) = &shared.upstream_tls else {
            bump(&counters.tls);
            return Err(text(
                StatusCode::BAD_GATEWAY,
                "no CA certificates for https origins (http_proxy.upstream_ca)\n",
            ));
        };
        let handshake = upstream_tls::connect(config, &target.host, stream);
        stream = match tokio::time::timeout(shared.settings.connect_timeout, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                bump(&counters.tls);
                return Err(text(
                    StatusCode::BAD_GATEWAY,
                    &format!("TLS to {target} failed: {error}\n"),
                ));
            }
            Err(_) => {
                bump(&counters.timeout);
                return Err(text(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!("TLS to {target} did not complete in time\n"),
                ));
            }
        };
    }
    let activity = Activity::new();
    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
    let (sender, connection) = match client::handshake(io).await {
        Ok(pair) => pair,
        Err(_) => {
            bump(&counters.protocol);
            return Err(text(
                StatusCode::BAD_GATEWAY,
                "the origin connection failed\n",
            ));
        }
    };
    let idle = shared.settings.idle_timeout;
    let mut shutdown = shared.shutdown.clone();
    let watchdog = activity.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = connection => {}
            _ = watchdog.idle(idle) => {}
            _ = shutdown.changed() => {}
        }
    });
    Ok(pool::Conn { sender, activity })
}

/// CONNECT host:port: the stream first, so a failure is a real status; then 200 and the
/// bytes both ways once hyper hands over the client connection.
async fn connect(
    shared: &Shared,
    client: IpAddr,
    active: Arc<ActiveGuard>,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    bump(&shared.counters.connects);
    let target = match request::connect_target(req.uri()) {
        Ok(target) => target,
        Err(problem) => return bad_request(shared, &problem),
    };
    if !shared.settings.connect_ports.contains(&target.port) {
        bump(&shared.counters.denied_ports);
        return text(
            StatusCode::FORBIDDEN,
            &format!(
                "CONNECT to port {} is not allowed here (http_proxy.connect_ports)\n",
                target.port
            ),
        );
    }
    let upstream = match open(shared, client, &target).await {
        Ok(stream) => stream,
        Err(response) => return response,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let idle = shared.settings.idle_timeout;
    let shutdown = shared.shutdown.clone();
    tokio::spawn(tunnel(on_upgrade, upstream, idle, shutdown, active));
    Response::new(
        Empty::new()
            .map_err(|never: Infallible| match never {})
            .boxed(),
    )
}

/// Copies both ways until either side closes, nothing moves for `idle`, or the proxy stops.
async fn tunnel(
    on_upgrade: OnUpgrade,
    upstream: BoxStream,
    idle: std::time::Duration,
    mut shutdown: watch::Receiver<()>,
    _active: Arc<ActiveGuard>,
) {
    // Fails when the client went away before the 200 reached it: nothing to do.
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let activity = Activity::new();
    let mut client = Tracked::new(TokioIo::new(upgraded), activity.clone());
    let mut upstream = Tracked::new(upstream, activity.clone());
    tokio::select! {
        _ = crate::egress::relay(&mut client, &mut upstream) => {}
        _ = activity.idle(idle) => {}
        _ = shutdown.changed() => {}
    }
}

/// A stream to `target` for `client`, or the response that explains why not.
async fn open(
    shared: &Shared,
    client: IpAddr,
    target: &Target,
) -> Result<BoxStream, Response<ProxyBody>> {
    let isolation = Isolation::client(client);
    let connect = shared.connector.connect(target, &isolation);
    match tokio::time::timeout(shared.settings.connect_timeout, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => {
            shared.counters.egress_error(&error);
            Err(egress_response(shared.connector.name(), target, &error))
        }
        // No stream at all: the egress (Tor) failed us, which is a bad gateway; 504 is kept for
        // an origin that was reached but stays silent.
        Err(_) => {
            bump(&shared.counters.timeout);
            Err(text(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "no connection to {target} through {} in time\n",
                    shared.connector.name()
                ),
            ))
        }
    }
}

/// The status and short text for a connector error. Not found is a 502 like Squid's DNS
/// failure page, not a 504: nothing timed out.
fn egress_response(connector: &str, target: &Target, error: &EgressError) -> Response<ProxyBody> {
    let via = if connector == "tor" { "Tor" } else { connector };
    let (status, message) = match error {
        EgressError::NotReady(_) => (
            StatusCode::BAD_GATEWAY,
            format!("{via} is not ready yet, so nothing was sent; try again shortly\n"),
        ),
        EgressError::Refused(_) => (
            StatusCode::FORBIDDEN,
            format!("the gateway's policy does not allow {target}\n"),
        ),
        EgressError::NotFound(_) => (
            StatusCode::BAD_GATEWAY,
            format!("{target}: host not found (via {via})\n"),
        ),
        EgressError::Unreachable(_) => (
            StatusCode::BAD_GATEWAY,
            format!("{target} is unreachable (via {via})\n"),
        ),
        EgressError::Failed(_) => (
            StatusCode::BAD_GATEWAY,
            format!("could not connect to {target} (via {via})\n"),
        ),
    };
    text(status, &message)
}

/// The request body with its first frame already read, so framing the client got wrong at
/// the start (bad chunk sizes) is a 400 before anything goes upstream; `None` for such a body.
/// Errors later in a long upload abort the upstream request instead. A client slower than
/// `wait` to send its first bytes is not judged here.
async fn primed(mut body: Incoming, wait: std::time::Duration) -> Option<ProxyBody> {
    use futures::{StreamExt, TryStreamExt};
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return Some(body.map_err(BoxError::from).boxed());
    }
    let first = match tokio::time::timeout(wait, body.frame()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(_))) => return None,
        Ok(None) | Err(_) => return Some(body.map_err(BoxError::from).boxed()),
    };
    let first = futures::stream::once(async move { Ok::<_, BoxError>(first) });
    let rest = TryStreamExt::map_err(http_body_util::BodyStream::new(body), BoxError::from);
    Some(BodyExt::boxed(http_body_util::StreamBody::new(
        first.chain(rest),
    )))
}

/// A 400 from the proxy; the connection closes after it (the client's framing may be off).
fn bad_request(shared: &Shared, problem: &BadRequest) -> Response<ProxyBody> {
    bump(&shared.counters.bad_requests);
    let mut response = text(StatusCode::BAD_REQUEST, &format!("{problem}\n"));
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// A short plain-text answer from the proxy itself.
pub(crate) fn text(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_owned()))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
