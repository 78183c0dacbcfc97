//! The HTTP/1.1 server: `GET /metrics` (and HEAD), 404 for other paths, 405 for other methods.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, header, server::conn::http1, service::service_fn, Method, Request, Response,
    StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, Semaphore},
};

use super::{exposition::CONTENT_TYPE, MetricsSource};
use crate::net::service_task::ServiceTask;

/// Scrapers open one connection at a time; more than this at once is not a scraper.
const MAX_CONNECTIONS: usize = 16;

/// A request head must arrive within this; it also ends idle keep-alive connections.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A running metrics endpoint. Dropping it stops it too; [`MetricsServer::stop`] waits for that.
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: ServiceTask,
}

impl MetricsServer {
    /// Binds `listen` (`metrics.listen`) and serves `source` until stopped.
    pub async fn start(listen: SocketAddr, source: MetricsSource) -> Result<MetricsServer> {
        let listener = TcpListener::bind(listen).await.with_context(|| {
            format!("binding the metrics endpoint to tcp {listen} (metrics.listen)")
        })?;
        let local_addr = listener
            .local_addr()
            .context("reading the metrics endpoint's address")?;
        if !listen.ip().is_loopback() {
            tracing::warn!(
                %listen,
                "metrics.listen is not a loopback address: whoever reaches it can read the counters"
            );
        }
        let source = Arc::new(source);
        let task = ServiceTask::spawn("metrics endpoint", |shutdown| {
            accept_loop(listener, source, shutdown)
        });
        Ok(MetricsServer { local_addr, task })
    }

    /// The address it listens on (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops listening and closes every connection.
    pub async fn stop(self) {
        self.task.stop().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    source: Arc<MetricsSource>,
    mut shutdown: watch::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, usually: back off instead of spinning.
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the limit the connection is closed unanswered.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let source = source.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve(stream, source, shutdown).await;
            drop(slot);
        });
    }
}

/// One connection: requests until the client closes or times out, or the server stops.
async fn serve(stream: TcpStream, source: Arc<MetricsSource>, mut shutdown: watch::Receiver<()>) {
    let service = service_fn(move |request| {
        let source = source.clone();
        async move { Ok::<_, Infallible>(respond(&request, &source)) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "metrics client");
            }
        }
        _ = shutdown.changed() => {}
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
