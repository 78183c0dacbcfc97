//! One cacheable request (GET or HEAD, without credentials) through the cache: a fresh hit is
//! served from disk with `Age`; a stale one is revalidated (304: the stored body; otherwise
//! the new one); a miss joins the fetch in flight for the same URL or makes it, and the body
//! streams to every waiting client while it is stored. Everything upstream goes through the
//! proxy's connector, like any forwarded request.

use std::{net::IpAddr, sync::Arc, time::SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};
use hyper::{
    header::{self, HeaderName, HeaderValue},
    http::request::Parts,
    HeaderMap, Method, Request, Response, StatusCode, Uri,
};

use super::{
    fill::{self, Progress},
    policy::{self, RangeAsk, UrlRule},
    store::{self, Meta},
    writer, Cache, Count, Found, Head, Joined, Lead,
};
use crate::egress::Target;
use crate::http_proxy::{
    forward::{text, upstream, BoxError, ProxyBody, UpstreamBody},
    request, Shared,
};

/// Whether a request may be answered from (and stored in) the cache: GET or HEAD, no
/// `Authorization` (a shared cache keeps nothing one user's credentials fetched).
pub(crate) fn cacheable(parts: &Parts) -> bool {
    (parts.method == Method::GET || parts.method == Method::HEAD)
        && !parts.headers.contains_key(header::AUTHORIZATION)
}

/// Answers a cacheable absolute-form request for `target`.
pub(crate) async fn answer(
    shared: &Arc<Shared>,
    cache: &Arc<Cache>,
    client: IpAddr,
    target: &Target,
    parts: Parts,
) -> Response<ProxyBody> {
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|pq| pq.starts_with('/'))
        .unwrap_or("/");
    // The key is the URL the origin sees: scheme, host and port as connected, path and query.
    let scheme = parts.uri.scheme_str().unwrap_or("http");
    let url = format!("{scheme}://{target}{path}");
    let Ok(uri) = url.parse::<Uri>() else {
        return text(StatusCode::BAD_REQUEST, "invalid request target\n");
    };
    let asked = asked(&parts, uri);
    // The URL's own key, or its variant's when its stored answers vary.
    let key = cache.key_for(&url, asked.headers());
    let up = Upstream {
        shared,
        client,
        target,
    };
    let now = SystemTime::now();
    if let Some(found) = cache.lookup(&key).await {
        let rule = policy::url_rule(asked.uri().path());
        match (found.meta.policy.before_request(&as_get(&asked), now), rule) {
            (BeforeRequest::Fresh(head), UrlRule::Normal) => {
                return from_cache(cache, &found, head.status, head.headers, &asked, Count::Hit);
            }
            (
                BeforeRequest::Fresh(_) | BeforeRequest::Stale { matches: true, .. },
                UrlRule::Immutable,
            ) => {
                let (status, headers) = stored_head(&found.meta, now);
                return from_cache(cache, &found, status, headers, &asked, Count::Hit);
            }
            // Not this request's variant after all (the origin changed its `Vary`): a miss.
            (BeforeRequest::Stale { matches: false, .. }, _) => {}
            _ => {
                if let Some(response) = revalidate(&up, cache, &key, &url, &asked, found).await {
                    return response;
                }
            }
        }
    }
    miss(&up, cache, &key, url, asked).await
}

/// How to reach the origin for this request.
struct Upstream<'a> {
    shared: &'a Arc<Shared>,
    client: IpAddr,
    target: &'a Target,
}

impl Upstream<'_> {
    /// Sends `asked` with `headers` in origin-form.
    async fn send(
        &self,
        asked: &Request<()>,
        headers: HeaderMap,
    ) -> Result<Response<UpstreamBody>, Response<ProxyBody>> {
        let mut parts = Request::builder()
            .method(asked.method().clone())
            .uri(asked.uri().clone())
            .body(())
            .map_err(|_| text(StatusCode::BAD_REQUEST, "invalid request\n"))?
            .into_parts()
            .0;
        parts.headers = headers;
        request::to_origin_form(&mut parts)
            .map_err(|problem| text(StatusCode::BAD_REQUEST, &format!("{problem}\n")))?;
        let tls = asked.uri().scheme() == Some(&hyper::http::uri::Scheme::HTTPS);
        let req = Request::from_parts(parts, empty());
        upstream(self.shared, self.client, self.target, tls, req).await
    }
}

/// The request as the policy sees it: the absolute URL, the client's method and headers, and
/// `Host` from the URL (RFC 9112 §3.2.2: a proxy ignores the client's `Host` for an
/// absolute-form target; the policy compares it, so a stray one would miss a stored answer).
fn asked(parts: &Parts, uri: Uri) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    let host = uri
        .authority()
        .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok());
    *req.uri_mut() = uri;
    *req.headers_mut() = parts.headers.clone();
    if let Some(host) = host {
        req.headers_mut().insert(header::HOST, host);
    }
    req
}

/// The request as a GET, for the policy: a stored GET answers a HEAD too (RFC 9110 §9.3.2).
fn as_get(asked: &Request<()>) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = asked.uri().clone();
    *req.headers_mut() = asked.headers().clone();
    req
}

/// A stale (or always-revalidated) entry: a conditional request with the stored validators.
/// `None`: the origin's 304 does not fit the stored object, so the request goes on as a miss.
async fn revalidate(
    up: &Upstream<'_>,
    cache: &Arc<Cache>,
    key: &str,
    url: &str,
    asked: &Request<()>,
    found: Found,
) -> Option<Response<ProxyBody>> {
    let stored = decode(&found.meta.headers);
    let mut headers = asked.headers().clone();
    for name in [header::RANGE, header::IF_RANGE, header::IF_MATCH] {
        headers.remove(name);
    }
    // Our validators replace the client's: the answer comes from our copy either way.
    headers.remove(header::IF_NONE_MATCH);
    headers.remove(header::IF_MODIFIED_SINCE);
    if let Some(etag) = stored.get(header::ETAG) {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = stored.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
    let now = SystemTime::now();
    let age = found.meta.policy.age(now);
    let stale = |cache: &Arc<Cache>| {
        let (status, headers) = stored_head(&found.meta, now);
        from_cache(cache, &found, status, headers, asked, Count::Stale)
    };
    let response = match up.send(asked, headers).await {
        Ok(response) => response,
        Err(failure) if policy::stale_if_error(&stored, age) => {
            drop(failure);
            return Some(stale(cache));
        }
        Err(failure) => return Some(failure),
    };
    if response.status() == StatusCode::NOT_MODIFIED {
        let now = SystemTime::now();
        return match found
            .meta
            .policy
            .after_response(&as_get(asked), &response, now)
        {
            AfterResponse::NotModified(new_policy, head) => {
                let mut meta = (*found.meta).clone();
                meta.policy = new_policy;
                let mut kept = head.headers.clone();
                kept.remove(header::AGE);
                meta.headers = encode(&kept);
                cache.refresh(key, meta).await;
                Some(from_cache(
                    cache,
                    &found,
                    head.status,
                    head.headers,
                    asked,
                    Count::Revalidated,
                ))
            }
            AfterResponse::Modified(..) => None,
        };
    }
    if response.status().is_server_error() && policy::stale_if_error(&stored, age) {
        return Some(stale(cache));
    }
    if asked.method() == Method::HEAD {
        // A HEAD cannot refill the body; the stored one is outdated now.
        cache.purge(url).await;
        return Some(passed(response));
    }
    Some(store_or_pass(up, cache, None, url.to_owned(), asked, response).await)
}

/// Nothing usable stored: follow the fetch in flight, or make it.
async fn miss(
    up: &Upstream<'_>,
    cache: &Arc<Cache>,
    key: &str,
    url: String,
    asked: Request<()>,
) -> Response<ProxyBody> {
    cache.count(Count::Miss, 0);
    // A HEAD or a part of an uncached object: forwarded as asked, nothing stored from it.
    if asked.method() == Method::HEAD || asked.headers().contains_key(header::RANGE) {
        if asked.method() == Method::GET {
            fetch_whole(up, cache, key, &url, &asked);
        }
        return match up.send(&asked, asked.headers().clone()).await {
            Ok(response) => passed(response),
            Err(failure) => failure,
        };
    }
    match cache.join_or_lead(key) {
        Joined::Follow(mut head) => {
            let shared = head
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|head| head.clone());
            if let Some(Head::Shared {
                file,
                progress,
                status,
                headers,
                policy,
            }) = shared
            {
                let same_variant = match policy.before_request(&asked, SystemTime::now()) {
                    BeforeRequest::Fresh(_) => true,
                    BeforeRequest::Stale { matches, .. } => matches,
                };
                if same_variant {
                    return streamed(status, headers, file, progress);
                }
            }
            // Not shareable: on its own.
            match up.send(&asked, asked.headers().clone()).await {
                Ok(response) => passed(response),
                Err(failure) => failure,
            }
        }
        Joined::Lead(lead) => match up.send(&asked, asked.headers().clone()).await {
            Ok(response) => store_or_pass(up, cache, Some(lead), url, &asked, response).await,
            // Dropping the lead sends the followers upstream themselves.
            Err(failure) => failure,
        },
    }
}

/// A range of an uncached object was asked: fetch the whole object once in the background, so
/// the next range comes from the cache (if it turns out cacheable; if another fetch is in
/// flight, that one will do).
fn fetch_whole(up: &Upstream<'_>, cache: &Arc<Cache>, key: &str, url: &str, asked: &Request<()>) {
    let Joined::Lead(lead) = cache.join_or_lead(key) else {
        return;
    };
    let mut whole = Request::new(());
    *whole.uri_mut() = asked.uri().clone();
    *whole.headers_mut() = asked.headers().clone();
    for name in [header::RANGE, header::IF_RANGE] {
        whole.headers_mut().remove(name);
    }
    let (shared, client, target) = (up.shared.clone(), up.client, up.target.clone());
    let (cache, url) = (cache.clone(), url.to_owned());
    tokio::spawn(async move {
        let up = Upstream {
            shared: &shared,
            client,
            target: &target,
        };
        if let Ok(response) = up.send(&whole, whole.headers().clone()).await {
            // The writer task stores it; nobody reads this copy.
            drop(store_or_pass(&up, &cache, Some(lead), url, &whole, response).await);
        }
    });
}

/// A fresh response: stored while it streams to the client (and to the followers of `lead`)
/// if it may be, passed through otherwise. It is stored under the key of the variant it is
/// (its `Vary` and the request's values), beside the URL's other variants.
async fn store_or_pass(
    up: &Upstream<'_>,
    cache: &Arc<Cache>,
    lead: Option<Lead>,
    url: String,
    asked: &Request<()>,
    response: Response<UpstreamBody>,
) -> Response<ProxyBody> {
    let now = SystemTime::now();
    let policy = CachePolicy::new_options(asked, &response, now, CacheOptions::default());
    let expected = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let storable = policy.is_storable()
        && policy::may_store(asked.headers(), response.status(), response.headers())
        && expected.is_none_or(|n| n <= cache.max_object());
    if !storable {
        drop(lead);
        if response.status() == StatusCode::OK {
            // What was stored for this URL is outdated by a newer answer.
            cache.purge(&url).await;
        }
        return passed(response);
    }
    let store = cache.store.clone();
    let temp = match tokio::task::spawn_blocking(move || store.temp_file()).await {
        Ok(Ok(temp)) => temp,
        _ => {
            tracing::warn!("no temporary file for a cache object; passing it through");
            return passed(response);
        }
    };
    let (temp, file) = (temp.0, Arc::new(temp.1));
    let (progress, watching) = tokio::sync::watch::channel(Progress::Writing(0));
    let (parts, body) = response.into_parts();
    let vary = policy::vary_names(
        parts
            .headers
            .get_all(header::VARY)
            .iter()
            .map(|v| v.as_bytes()),
    );
    let vary_key = policy::vary_key(&vary, asked.headers());
    let key = store::key_for(&url, vary_key.as_deref());
    let meta = Meta {
        version: store::VERSION,
        url,
        body: String::new(),
        size: 0,
        sha256: String::new(),
        stored_unix: crate::clock::unix_now(),
        status: parts.status.as_u16(),
        headers: encode(&parts.headers),
        policy: policy.clone(),
        vary_key,
    };
    if let Some(lead) = &lead {
        lead.publish(Head::Shared {
            file: file.clone(),
            progress: watching.clone(),
            status: parts.status,
            headers: parts.headers.clone(),
            policy: Box::new(policy),
        });
    }
    let fill = writer::Fill {
        lead,
        key,
        meta,
        expected,
        temp,
        file: file.clone(),
        progress,
    };
    tokio::spawn(writer::run(
        cache.clone(),
        fill,
        body,
        up.shared.shutdown.clone(),
    ));
    Response::from_parts(parts, fill::reader(file, watching, 0, None))
}

/// A response streamed from a fill in progress.
fn streamed(
    status: StatusCode,
    headers: HeaderMap,
    file: Arc<std::fs::File>,
    progress: tokio::sync::watch::Receiver<Progress>,
) -> Response<ProxyBody> {
    let mut response = Response::new(fill::reader(file, progress, 0, None));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// An answer from a stored object: the whole body, the asked range (206), or 416.
fn from_cache(
    cache: &Cache,
    found: &Found,
    status: StatusCode,
    mut headers: HeaderMap,
    asked: &Request<()>,
    count: Count,
) -> Response<ProxyBody> {
    let size = found.meta.size;
    let head_only = asked.method() == Method::HEAD;
    if status == StatusCode::OK && client_has_it(asked.headers(), &headers) {
        // The client's own copy is current: a 304 saves it the whole body (apt's indexes).
        cache.count(count, size);
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
        ] {
            headers.remove(name);
        }
        *response.headers_mut() = headers;
        return response;
    }
    let ask = if status == StatusCode::OK && if_range_holds(asked.headers(), &headers) {
        policy::range(asked.headers(), size)
    } else {
        RangeAsk::Whole
    };
    let (status, body, sent) = match ask {
        RangeAsk::Whole => (status, (0, None), size),
        RangeAsk::Part { start, end } => {
            let range = format!("bytes {start}-{end}/{size}");
            insert(&mut headers, header::CONTENT_RANGE, &range);
            let len = end - start + 1;
            insert(&mut headers, header::CONTENT_LENGTH, &len.to_string());
            (StatusCode::PARTIAL_CONTENT, (start, Some(end + 1)), len)
        }
        RangeAsk::Unsatisfiable => {
            insert(
                &mut headers,
                header::CONTENT_RANGE,
                &format!("bytes */{size}"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            (StatusCode::RANGE_NOT_SATISFIABLE, (0, Some(0)), 0)
        }
    };
    cache.count(count, if head_only { 0 } else { sent });
    let body = if head_only {
        empty()
    } else {
        fill::reader(found.file.clone(), fill::complete(size), body.0, body.1)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Whether the client's conditional request names the stored object (RFC 9110 §13.1.2:
/// `If-None-Match` wins over `If-Modified-Since`; dates are compared as the origin sent them).
fn client_has_it(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(wanted) = request.get(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let weak = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
        return wanted
            .to_str()
            .map(|list| {
                list.split(',')
                    .any(|tag| tag.trim() == "*" || weak(tag) == weak(etag))
            })
            .unwrap_or(false);
    }
    match (
        request.get(header::IF_MODIFIED_SINCE),
        stored.get(header::LAST_MODIFIED),
    ) {
        (Some(since), Some(modified)) => since == modified,
        _ => false,
    }
}

/// `If-Range` absent, or naming the stored validator: the range may be served.
fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(wanted) = request.get(header::IF_RANGE) else {
        return true;
    };
    [header::ETAG, header::LAST_MODIFIED]
        .iter()
        .any(|name| stored.get(name) == Some(wanted))
}

/// The stored head with its current `Age`, for answers the policy did not compute (an
/// immutable object, a stale one standing in for an unreachable origin).
fn stored_head(meta: &Meta, now: SystemTime) -> (StatusCode, HeaderMap) {
    let mut headers = decode(&meta.headers);
    let age = meta.policy.age(now).as_secs().to_string();
    insert(&mut headers, header::AGE, &age);
    let status = StatusCode::from_u16(meta.status).unwrap_or(StatusCode::OK);
    (status, headers)
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// An upstream answer passed on as it is.
fn passed(response: Response<UpstreamBody>) -> Response<ProxyBody> {
    response.map(|body| body.map_err(BoxError::from).boxed())
}

fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed()
}

/// Headers as stored in the metadata.
fn encode(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

/// Headers from the metadata; a pair that does not parse is left out.
fn decode(pairs: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}
