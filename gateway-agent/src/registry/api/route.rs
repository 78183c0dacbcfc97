//! Which endpoint of the distribution spec a request path names, with its repository name,
//! reference or digest checked against the grammar. Names may contain `/`, so the path is
//! split at the last keyword (`/blobs/`, `/manifests/`, …), as the spec's endpoint table does.

use crate::registry::names::{Digest, Reference, RepoName};

/// An endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    Uploads(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

/// Why a path names no endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Not an endpoint at all (404 without a code).
    NotFound,
    /// The repository name breaks the grammar.
    NameInvalid(String),
    /// The digest in the path is not one.
    DigestInvalid(String),
    /// The manifest reference is neither a tag nor a digest.
    ReferenceInvalid(String),
}

/// The endpoint `path` names.
pub fn route(path: &str) -> Result<Route, RouteError> {
    let rest = match path.strip_prefix("/v2") {
        Some("" | "/") => return Ok(Route::Base),
        Some(rest) => rest.strip_prefix('/').ok_or(RouteError::NotFound)?,
        None => return Err(RouteError::NotFound),
    };
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags(name_of(name)?));
    }
    if let Some(name) = rest.strip_suffix("/blobs/uploads/") {
        return Ok(Route::Uploads(name_of(name)?));
    }
    if let Some(name) = rest.strip_suffix("/blobs/uploads") {
        return Ok(Route::Uploads(name_of(name)?));
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        if !id.is_empty() && !id.contains('/') {
            return Ok(Route::Upload(name_of(name)?, id.to_owned()));
        }
    }
    for (keyword, make) in [
        ("/manifests/", Kind::Manifest),
        ("/blobs/", Kind::Blob),
        ("/referrers/", Kind::Referrers),
    ] {
        let Some((name, last)) = rest.rsplit_once(keyword) else {
            continue;
        };
        if last.is_empty() || last.contains('/') {
            continue;
        }
        let name = name_of(name)?;
        return match make {
            Kind::Manifest => last
                .parse()
                .map(|reference| Route::Manifest(name, reference))
                .map_err(|error| {
                    if last.contains(':') {
                        RouteError::DigestInvalid(error)
                    } else {
                        RouteError::ReferenceInvalid(error)
                    }
                }),
            Kind::Blob => digest_of(last).map(|digest| Route::Blob(name, digest)),
            Kind::Referrers => digest_of(last).map(|digest| Route::Referrers(name, digest)),
        };
    }
    Err(RouteError::NotFound)
}

enum Kind {
    Manifest,
    Blob,
    Referrers,
}

fn name_of(name: &str) -> Result<RepoName, RouteError> {
    name.parse().map_err(RouteError::NameInvalid)
}

fn digest_of(text: &str) -> Result<Digest, RouteError> {
    text.parse().map_err(RouteError::DigestInvalid)
}

/// The query's parameters, percent-decoded (`+` is a plus: clients encode the digest's `:`,
/// never a space).
pub fn query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// The first value of `key`.
pub fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, value)| value.as_str())
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' {
            if let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> String {
        Digest::sha256_of(b"x").to_string()
    }

    #[test]
    fn every_endpoint_is_recognised() {
        let d = digest();
        let name: RepoName = "team/app".parse().unwrap();
        assert_eq!(route("/v2/"), Ok(Route::Base));
        assert_eq!(route("/v2"), Ok(Route::Base));
        assert_eq!(route("/v2/_catalog"), Ok(Route::Catalog));
        assert_eq!(
            route("/v2/team/app/tags/list"),
            Ok(Route::Tags(name.clone()))
        );
        assert!(matches!(
            route("/v2/team/app/manifests/latest"),
            Ok(Route::Manifest(n, Reference::Tag(_))) if n == name
        ));
        assert!(matches!(
            route(&format!("/v2/team/app/manifests/{d}")),
            Ok(Route::Manifest(_, Reference::Digest(_)))
        ));
        assert!(matches!(
            route(&format!("/v2/team/app/blobs/{d}")),
            Ok(Route::Blob(n, _)) if n == name
        ));
        assert_eq!(
            route("/v2/team/app/blobs/uploads/"),
            Ok(Route::Uploads(name.clone()))
        );
        assert_eq!(
            route("/v2/team/app/blobs/uploads/abc"),
            Ok(Route::Upload(name.clone(), "abc".into()))
        );
        assert!(matches!(
            route(&format!("/v2/team/app/referrers/{d}")),
            Ok(Route::Referrers(..))
        ));
        // A repository may itself be called "blobs" or "manifests".
        assert!(matches!(
            route("/v2/blobs/manifests/manifests/v1"),
            Ok(Route::Manifest(n, _)) if n.as_str() == "blobs/manifests"
        ));
    }

    #[test]
    fn bad_names_and_digests_are_told_apart() {
        let d = digest();
        for bad in ["../x", "UPPER", &"a".repeat(300), "a/../b", "%2e%2e"] {
            assert!(
                matches!(
                    route(&format!("/v2/{bad}/manifests/latest")),
                    Err(RouteError::NameInvalid(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            route(&format!("/v2/UPPER/blobs/{d}")),
            Err(RouteError::NameInvalid(_))
        ));
        assert!(matches!(
            route("/v2/a/blobs/sha256:nothex"),
            Err(RouteError::DigestInvalid(_))
        ));
        assert!(matches!(
            route("/v2/a/manifests/-bad"),
            Err(RouteError::ReferenceInvalid(_))
        ));
        assert_eq!(route("/v1/x"), Err(RouteError::NotFound));
        assert_eq!(route("/v2/a/other"), Err(RouteError::NotFound));
    }

    #[test]
    fn query_values_are_decoded() {
        let params = query(Some("digest=sha256%3Aab&n=10&flag"));
        assert_eq!(param(&params, "digest"), Some("sha256:ab"));
        assert_eq!(param(&params, "n"), Some("10"));
        assert_eq!(param(&params, "flag"), Some(""));
        assert_eq!(param(&params, "last"), None);
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
