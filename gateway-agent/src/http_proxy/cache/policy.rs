//! The cache's decisions beyond what `http-cache-semantics` answers: what we refuse to store
//! even when RFC 9111 would allow it, the package-repository rules, `stale-if-error`, and
//! `Range`. Pure functions of headers and paths.

use std::time::Duration;

use hyper::{header, HeaderMap, StatusCode};

/// How a URL's objects are treated, from its path (the rules apt-cacher-ng users expect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UrlRule {
    /// Whatever the headers say.
    Normal,
    /// Repository indexes (`InRelease`, `Release`, `Packages*`, `Sources*`, `Translation*`):
    /// always revalidated, so a client never gets an index older than the origin's.
    AlwaysRevalidate,
    /// Content-addressed files (`by-hash/`, `pool/`): a name never gets other bytes, so a
    /// stored copy is served without asking the origin again.
    Immutable,
}

/// The rule for a URL path.
pub(crate) fn url_rule(path: &str) -> UrlRule {
    let file = path.rsplit('/').next().unwrap_or_default();
    let index = file == "InRelease"
        || file == "Release"
        || file == "Release.gpg"
        || ["Packages", "Sources", "Translation"]
            .iter()
            .any(|prefix| file.starts_with(prefix));
    // by-hash names are hashes of the content, though they live beside the indexes.
    if path.contains("/by-hash/") || path.contains("/pool/") {
        UrlRule::Immutable
    } else if index {
        UrlRule::AlwaysRevalidate
    } else {
        UrlRule::Normal
    }
}

/// The request headers a response varies on (its `Vary` values), lower-cased, sorted and
/// without repeats; empty when it does not vary.
pub(crate) fn vary_names<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<String> {
    let mut names: Vec<String> = values
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The digest (hex SHA-256) naming the variant `request` selects among the answers that vary on
/// `names`: each name with the request's values for it, in order, an absent header told apart
/// from an empty one. `None` when `names` is empty.
pub(crate) fn vary_key(names: &[String], request: &HeaderMap) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for name in names {
        context.update(name.as_bytes());
        let mut values = request.get_all(name.as_str()).iter().peekable();
        if values.peek().is_none() {
            context.update(b"\0absent");
        }
        for value in values {
            context.update(b"\0=");
            context.update(value.as_bytes());
        }
        context.update(b"\n");
    }
    Some(super::store::hex(context.finish().as_ref()))
}

/// Our own refusals on top of the policy's `is_storable`: only complete 200s, nothing a
/// request with credentials got, nothing that sets a cookie (it is one client's), no `Vary: *`.
pub(crate) fn may_store(request: &HeaderMap, status: StatusCode, response: &HeaderMap) -> bool {
    let vary_any = response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "*");
    status == StatusCode::OK
        && !request.contains_key(header::AUTHORIZATION)
        && !request.contains_key(header::COOKIE)
        && !response.contains_key(header::SET_COOKIE)
        && !response.contains_key(header::CONTENT_RANGE)
        && !vary_any
        && !directives(response)
            .iter()
            .any(|(name, _)| name == "no-store" || name == "private")
}

/// The `Cache-Control` directives of some headers, lower-cased, with their values.
fn directives(headers: &HeaderMap) -> Vec<(String, Option<String>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            let (name, value) = match d.split_once('=') {
                Some((n, v)) => (n, Some(v.trim().trim_matches('"').to_owned())),
                None => (d, None),
            };
            Some((name.trim().to_ascii_lowercase(), value))
        })
        .collect()
}

fn seconds(value: Option<&String>) -> Option<Duration> {
    value?.parse::<u64>().ok().map(Duration::from_secs)
}

/// Whether a stale stored response may stand in when the origin cannot be reached
/// (RFC 5861 `stale-if-error`): only within its window counted from when it went stale, and
/// never when `must-revalidate`, `proxy-revalidate`, `no-cache` or `s-maxage` (RFC 9111
/// §5.2.2.10: it implies proxy-revalidate) forbid serving it stale.
pub(crate) fn stale_if_error(response: &HeaderMap, age: Duration) -> bool {
    let directives = directives(response);
    let has = |name: &str| directives.iter().any(|(n, _)| n == name);
    if has("must-revalidate") || has("proxy-revalidate") || has("no-cache") || has("s-maxage") {
        return false;
    }
    let value = |name: &str| directives.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let Some(window) = value("stale-if-error").and_then(|v| seconds(v.as_ref())) else {
        return false;
    };
    let lifetime = value("max-age")
        .and_then(|v| seconds(v.as_ref()))
        .unwrap_or_default();
    age.saturating_sub(lifetime) <= window
}

/// What a `Range` header asks of a stored body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeAsk {
    /// No range, or one we answer with the whole body (several ranges, another unit, nonsense:
    /// RFC 9110 §14.2 lets a server ignore them).
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Outside the body: 416.
    Unsatisfiable,
}

/// Reads a `Range` header against a body of `size` bytes.
pub(crate) fn range(request: &HeaderMap, size: u64) -> RangeAsk {
    let Some(spec) = request
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeAsk::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        // `-N`: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => return RangeAsk::Unsatisfiable,
            Some(n) => (size.saturating_sub(n), size.saturating_sub(1)),
            None => return RangeAsk::Whole,
        },
        (false, true) => match number(first) {
            Some(start) => (start, size.saturating_sub(1)),
            None => return RangeAsk::Whole,
        },
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end => (start, end.min(size.saturating_sub(1))),
            _ => return RangeAsk::Whole,
        },
        (true, true) => return RangeAsk::Whole,
    };
    if size == 0 || start >= size {
        RangeAsk::Unsatisfiable
    } else {
        RangeAsk::Part { start, end }
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn repository_rules() {
        use UrlRule::*;
        let cases = [
            ("/debian/dists/stable/InRelease", AlwaysRevalidate),
            ("/debian/dists/stable/Release", AlwaysRevalidate),
            (
                "/debian/dists/stable/main/binary-amd64/Packages.xz",
                AlwaysRevalidate,
            ),
            (
                "/debian/dists/stable/main/source/Sources.gz",
                AlwaysRevalidate,
            ),
            (
                "/debian/dists/stable/main/i18n/Translation-en",
                AlwaysRevalidate,
            ),
            (
                "/debian/dists/stable/main/binary-amd64/by-hash/SHA256/ab12",
                Immutable,
            ),
            (
                "/debian/pool/main/h/hello/hello_2.10-3_amd64.deb",
                Immutable,
            ),
            ("/index.html", Normal),
            ("/PackagesDoc/readme", Normal),
        ];
        for (path, rule) in cases {
            assert_eq!(url_rule(path), rule, "{path}");
        }
    }

    #[test]
    fn what_is_never_stored() {
        let plain = HeaderMap::new();
        let public = headers(&[("cache-control", "max-age=60")]);
        assert!(may_store(&plain, StatusCode::OK, &public));
        assert!(!may_store(&plain, StatusCode::PARTIAL_CONTENT, &public));
        assert!(!may_store(
            &plain,
            StatusCode::OK,
            &headers(&[("cache-control", "No-Store")])
        ));
        assert!(!may_store(
            &plain,
            StatusCode::OK,
            &headers(&[("cache-control", "public, private=\"x\"")])
        ));
        assert!(!may_store(
            &headers(&[("authorization", "Basic eDp5")]),
            StatusCode::OK,
            &public
        ));
        assert!(!may_store(
            &plain,
            StatusCode::OK,
            &headers(&[("set-cookie", "a=b")])
        ));
        assert!(!may_store(
            &plain,
            StatusCode::OK,
            &headers(&[("vary", "accept, *")])
        ));
    }

    #[test]
    fn stale_if_error_windows() {
        let secs = Duration::from_secs;
        let allowed = headers(&[("cache-control", "max-age=10, stale-if-error=60")]);
        assert!(stale_if_error(&allowed, secs(30)));
        assert!(stale_if_error(&allowed, secs(70)));
        assert!(!stale_if_error(&allowed, secs(71)));
        assert!(!stale_if_error(
            &headers(&[("cache-control", "max-age=10")]),
            secs(11)
        ));
        for forbidding in [
            "must-revalidate",
            "proxy-revalidate",
            "no-cache",
            "s-maxage=5",
        ] {
            let mut map = allowed.clone();
            map.append(
                header::CACHE_CONTROL,
                HeaderValue::from_str(forbidding).unwrap(),
            );
            assert!(!stale_if_error(&map, secs(30)), "{forbidding}");
        }
    }

    #[test]
    fn ranges() {
        let ask = |value: &'static str| range(&headers(&[("range", value)]), 100);
        assert_eq!(range(&HeaderMap::new(), 100), RangeAsk::Whole);
        assert_eq!(ask("bytes=0-9"), RangeAsk::Part { start: 0, end: 9 });
        assert_eq!(ask("bytes=90-"), RangeAsk::Part { start: 90, end: 99 });
        assert_eq!(ask("bytes=-10"), RangeAsk::Part { start: 90, end: 99 });
        assert_eq!(ask("bytes=-1000"), RangeAsk::Part { start: 0, end: 99 });
        assert_eq!(ask("bytes=50-1000"), RangeAsk::Part { start: 50, end: 99 });
        assert_eq!(ask("bytes=100-"), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=-0"), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=0-1,5-6"), RangeAsk::Whole);
        assert_eq!(ask("items=0-1"), RangeAsk::Whole);
        assert_eq!(ask("bytes=9-1"), RangeAsk::Whole);
    }
}
