//! The HTTP/1.1 server: `GET /metrics` (and HEAD), 404 for other paths, 405 for other methods.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, header, service::service_fn, Method, Request, Response, StatusCode};
use tokio::net::TcpStream;

use super::{exposition::CONTENT_TYPE, MetricsSource};
use crate::net::http::{serve_connection, HttpSettings};
use crate::net::listener::{self, Clients, Connection, Listener, ListenerSettings};

/// Scrapers open one connection at a time; more than this at once is not a scraper.
const MAX_CONNECTIONS: usize = 16;

/// A request head must arrive within this; it also ends idle keep-alive connections.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A running metrics endpoint. Dropping it stops it too; [`MetricsServer::stop`] waits for that.
pub struct MetricsServer {
    local_addr: SocketAddr,
    listener: Listener,
}

impl MetricsServer {
    /// Binds `listen` (`metrics.listen`) and serves `source` until stopped.
    pub async fn start(listen: SocketAddr, source: MetricsSource) -> Result<MetricsServer> {
        let (socket, local_addr) =
            listener::bind_tcp(listen, "the metrics endpoint (metrics.listen)").await?;
        if !listen.ip().is_loopback() {
            tracing::warn!(
                %listen,
                "metrics.listen is not a loopback address: whoever reaches it can read the counters"
            );
        }
        let source = Arc::new(source);
        let settings = ListenerSettings {
            name: "metrics endpoint",
            // Loopback by default; the config warns when it is not.
            clients: Clients::Local,
            max_connections: MAX_CONNECTIONS,
        };
        let listener = Listener::spawn(socket, settings, move |conn: Connection<TcpStream>| {
            serve(conn, source.clone())
        });
        Ok(MetricsServer {
            local_addr,
            listener,
        })
    }

    /// The address it listens on (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops listening and closes every connection.
    pub async fn stop(self) {
        self.listener.stop().await;
    }
}

/// One connection: requests until the client closes or times out, or the server stops.
async fn serve(conn: Connection<TcpStream>, source: Arc<MetricsSource>) {
    let _slot = conn.slot;
    let service = service_fn(move |request| {
        let source = source.clone();
        async move { Ok::<_, Infallible>(respond(&request, &source)) }
    });
    let settings = HttpSettings {
        header_timeout: HEADER_TIMEOUT,
        ..HttpSettings::default()
    };
    if let Err(error) = serve_connection(conn.stream, service, settings, conn.shutdown).await {
        tracing::debug!(%error, "metrics client");
    }
}

/// The answer to one request. HEAD gets GET's headers; hyper leaves the body out.
fn respond(request: &Request<Incoming>, source: &MetricsSource) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from(source.scrape())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
