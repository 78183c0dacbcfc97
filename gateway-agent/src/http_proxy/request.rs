//! What goes upstream for a proxy request: the target from the request line, the request in
//! origin-form, and the headers without the hop-by-hop ones (RFC 9110 §7.6.1).
//!
//! Nothing is added that tells the origin about the client or the gateway: no `Via`, no
//! `X-Forwarded-For`, no `Forwarded`. Over Tor a `Via` would only mark the request as proxied
//! and name the proxy; the client's own end-to-end headers pass unchanged (its choice).

use std::net::IpAddr;

use hyper::{
    header::{self, HeaderName, HeaderValue},
    http::request::Parts,
    HeaderMap, Uri, Version,
};

use crate::egress::{Host, Target};

/// Longest host name accepted (RFC 1035).
const MAX_NAME_LEN: usize = 253;

/// Why a request cannot be proxied; each is a 400 for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// A request for the proxy itself (`GET /path`): there is nothing to forward.
    #[error("this is a proxy: send requests in absolute form (http://host/path) or use CONNECT")]
    OriginForm,
    /// A scheme other than `http`.
    #[error(
        "unsupported scheme {0:?}: only http:// is forwarded; use CONNECT for https, or \
         http://HTTPS///host/path to have the proxy fetch (and cache) https://host/path"
    )]
    Scheme(String),
    /// The host is neither a DNS name nor an IP address.
    #[error("invalid host {0:?}")]
    Host(String),
    /// Port 0.
    #[error("invalid port 0")]
    Port,
    /// CONNECT without `host:port`.
    #[error("CONNECT needs host:port")]
    ConnectTarget,
    /// Ambiguous message framing: `Content-Length` with `Transfer-Encoding`, or more than one
    /// `Content-Length` (RFC 9112 §6.3; request smuggling lives in the difference). hyper hides
    /// both, so the `framing` scanner finds them in the bytes.
    #[error("ambiguous framing: {0}")]
    Framing(&'static str),
    /// The body's framing is broken (a bad chunk size).
    #[error("the request body is not validly framed")]
    Body,
}

/// The target of an absolute-form request, `http://host[:port]/…` (port 80 by default).
pub fn absolute_target(uri: &Uri) -> Result<Target, BadRequest> {
    target_of(uri, "http", 80)
}

/// The target of a request [`https_form`] rewrote, `https://host[:port]/…` (port 443).
pub fn https_target(uri: &Uri) -> Result<Target, BadRequest> {
    target_of(uri, "https", 443)
}

/// The apt-cacher-ng form of an `https` upstream asked in plain HTTP,
/// `http://HTTPS///host[:port]/path`, as the `https://host[:port]/path` it stands for; `None`
/// for any other request. The proxy then speaks TLS to the origin itself, so the answer can be
/// cached without intercepting the client's TLS.
pub fn https_form(uri: &Uri) -> Option<Result<Uri, BadRequest>> {
    let authority = uri.authority()?;
    let plain = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http"));
    let path = uri.path();
    if !plain || !authority.as_str().eq_ignore_ascii_case("https") || !path.starts_with("//") {
        return None;
    }
    let rest = path.trim_start_matches('/');
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let rewritten = format!("https://{host}/{path}{query}");
    Some(
        rewritten
            .parse::<Uri>()
            .map_err(|_| BadRequest::Host(host.to_owned())),
    )
}

fn target_of(uri: &Uri, wanted: &str, default_port: u16) -> Result<Target, BadRequest> {
    let authority = uri.authority().ok_or(BadRequest::OriginForm)?;
    match uri.scheme_str() {
        Some(scheme) if scheme.eq_ignore_ascii_case(wanted) => {}
        Some(other) => return Err(BadRequest::Scheme(other.to_owned())),
        // Authority-form is only for CONNECT.
        None => return Err(BadRequest::OriginForm),
    }
    let port = authority.port_u16().unwrap_or(default_port);
    if port == 0 {
        return Err(BadRequest::Port);
    }
    Ok(Target {
        host: host(authority.host())?,
        port,
    })
}

/// The target of a CONNECT request, `host:port`; the port is required.
pub fn connect_target(uri: &Uri) -> Result<Target, BadRequest> {
    if uri.scheme().is_some() {
        return Err(BadRequest::ConnectTarget);
    }
    let authority = uri.authority().ok_or(BadRequest::ConnectTarget)?;
    let port = authority.port_u16().ok_or(BadRequest::ConnectTarget)?;
    if port == 0 {
        return Err(BadRequest::Port);
    }
    Ok(Target {
        host: host(authority.host())?,
        port,
    })
}

/// A host from a URI: an IP literal (`[v6]` bracketed) or a DNS name, lower-cased. Names stay
/// names: the connector resolves them (over Tor, never with a local resolver).
fn host(text: &str) -> Result<Host, BadRequest> {
    let bad = || BadRequest::Host(text.to_owned());
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(bad)?;
        return match inner.parse::<IpAddr>() {
            Ok(ip @ IpAddr::V6(_)) => Ok(Host::Ip(ip)),
            _ => Err(bad()),
        };
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.split('.').all(valid_label) {
        return Err(bad());
    }
    Ok(Host::Name(name.to_ascii_lowercase()))
}

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1, plus the
/// proxy credentials and the non-standard `Proxy-Connection`).
fn hop_by_hop() -> [HeaderName; 9] {
    [
        header::CONNECTION,
        HeaderName::from_static("proxy-connection"),
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ]
}

/// Removes the hop-by-hop headers, and every header the `Connection` header names.
///
/// Framing is not lost: hyper has already decoded the body (`Transfer-Encoding`), and frames
/// it again for the next hop (a `Content-Length` stays, otherwise chunked).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in hop_by_hop() {
        headers.remove(name);
    }
}

/// Rewrites an absolute-form request into the origin-form request the origin gets:
/// `GET /path?query HTTP/1.1`, `Host` from the request line (RFC 9112 §3.2.2: it wins over
/// the client's `Host`), hop-by-hop headers and `Expect` removed.
pub fn to_origin_form(parts: &mut Parts) -> Result<(), BadRequest> {
    let authority = parts.uri.authority().ok_or(BadRequest::OriginForm)?;
    // Userinfo (`user:pass@`) never goes into Host.
    let host_port = authority
        .as_str()
        .rsplit('@')
        .next()
        .unwrap_or(authority.as_str());
    let host = HeaderValue::from_str(host_port).map_err(|_| BadRequest::Host(host_port.into()))?;
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|pq| pq.starts_with('/'))
        .unwrap_or("/");
    let uri = path
        .parse::<Uri>()
        .map_err(|_| BadRequest::Host(host_port.into()))?;

    strip_hop_by_hop(&mut parts.headers);
    // hyper has already answered `100-continue` to the client; the origin gets the body at once.
    parts.headers.remove(header::EXPECT);
    parts.headers.insert(header::HOST, host);
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hyper::{Method, Request};

    use super::*;

    /// A URI hyper would not even parse is a 400 already; it counts as a bad host here.
    fn target(uri: &str) -> Result<Target, BadRequest> {
        match uri.parse::<Uri>() {
            Ok(uri) => absolute_target(&uri),
            Err(_) => Err(BadRequest::Host(uri.to_owned())),
        }
    }

    fn name(name: &str, port: u16) -> Target {
        Target {
            host: Host::Name(name.to_owned()),
            port,
        }
    }

    #[test]
    fn absolute_targets() {
        assert_eq!(target("http://Example.COM/x"), Ok(name("example.com", 80)));
        assert_eq!(
            target("http://example.com.:8080/"),
            Ok(name("example.com", 8080))
        );
        assert_eq!(
            target("http://u:p@192.0.2.7:81/"),
            Ok(Target {
                host: Host::Ip(Ipv4Addr::new(192, 0, 2, 7).into()),
                port: 81
            })
        );
        assert_eq!(
            target("http://[2001:db8::1]/"),
            Ok(Target {
                host: Host::Ip(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into()),
                port: 80
            })
        );
        assert_eq!(target("/index.html"), Err(BadRequest::OriginForm));
        assert_eq!(
            target("https://example.com/"),
            Err(BadRequest::Scheme("https".into()))
        );
        assert_eq!(
            target("ftp://example.com/"),
            Err(BadRequest::Scheme("ftp".into()))
        );
        assert_eq!(target("http://example.com:0/"), Err(BadRequest::Port));
        assert!(matches!(target("http://a..b/"), Err(BadRequest::Host(_))));
        assert!(matches!(target("http://a%20b/"), Err(BadRequest::Host(_))));
        assert!(matches!(target("http://a!b$c/"), Err(BadRequest::Host(_))));
        assert!(matches!(target("http://[zz]/"), Err(BadRequest::Host(_))));
    }

    #[test]
    fn https_forms() {
        let form = |s: &str| https_form(&s.parse::<Uri>().unwrap());
        assert_eq!(
            form("http://HTTPS///deb.example/debian/dists/x?y=1").map(|u| u.unwrap().to_string()),
            Some("https://deb.example/debian/dists/x?y=1".to_owned())
        );
        assert_eq!(
            form("http://https//deb.example:8443/a").map(|u| u.unwrap().to_string()),
            Some("https://deb.example:8443/a".to_owned())
        );
        assert!(form("http://https.example///a").is_none());
        assert!(form("http://HTTPS/a").is_none());
        assert!(form("http://deb.example///a").is_none());
        let uri = form("http://HTTPS///deb.example:8443/a").unwrap().unwrap();
        assert_eq!(https_target(&uri), Ok(name("deb.example", 8443)));
        let uri = form("http://HTTPS///deb.example/").unwrap().unwrap();
        assert_eq!(https_target(&uri), Ok(name("deb.example", 443)));
    }

    #[test]
    fn connect_targets() {
        let connect = |s: &str| connect_target(&s.parse::<Uri>().unwrap());
        assert_eq!(connect("example.com:443"), Ok(name("example.com", 443)));
        assert_eq!(connect("example.com"), Err(BadRequest::ConnectTarget));
        assert_eq!(
            connect("http://example.com:443"),
            Err(BadRequest::ConnectTarget)
        );
        assert_eq!(connect("example.com:0"), Err(BadRequest::Port));
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("proxy-connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-authenticate", "Basic"),
            ("x-kept", "3"),
            ("content-length", "4"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "x-kept"]);
    }

    #[test]
    fn rewritten_to_origin_form() {
        let (mut parts, ()) = Request::builder()
            .method(Method::POST)
            .uri("http://user:pw@Example.com:8080/a/b?c=d")
            .version(Version::HTTP_10)
            .header("host", "wrong.example")
            .header("proxy-connection", "keep-alive")
            .header("expect", "100-continue")
            .header("user-agent", "curl")
            .body(())
            .unwrap()
            .into_parts();
        to_origin_form(&mut parts).unwrap();
        assert_eq!(parts.uri, "/a/b?c=d");
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.headers["host"], "Example.com:8080");
        assert_eq!(parts.headers["user-agent"], "curl");
        assert!(parts.headers.get("proxy-connection").is_none());
        assert!(parts.headers.get("expect").is_none());
        assert!(parts.headers.get("via").is_none());
        assert!(parts.headers.get("x-forwarded-for").is_none());
        assert!(parts.headers.get("forwarded").is_none());
    }

    #[test]
    fn empty_path_becomes_slash() {
        let (mut parts, ()) = Request::builder()
            .uri("http://example.com")
            .body(())
            .unwrap()
            .into_parts();
        to_origin_form(&mut parts).unwrap();
        assert_eq!(parts.uri, "/");
        assert_eq!(parts.headers["host"], "example.com");
    }
}
