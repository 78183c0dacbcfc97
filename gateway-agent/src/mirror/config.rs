//! `[mirror]` beyond `enabled` and `port`: where the cache lives, how its requests leave the
//! gateway, how long a tag is trusted before it is re-checked upstream, and the upstream
//! registries (`[[mirror.upstreams]]`), one of them the default.
//!
//! Without any `[[mirror.upstreams]]` the one upstream is Docker Hub, as Docker's
//! `registry-mirrors` expects: `registry-1.docker.io`, its token realm, and the `library/`
//! prefix for official images. Those names are defaults here and in the example config only.

use std::path::PathBuf;

use hyper::Uri;
use toml::Value;

use crate::config::reader::{self, Section};
use crate::config::{values, Errors, Seconds};
use crate::egress::{self, Egress};

/// Docker Hub's name as image references spell it, and containerd's `?ns=`.
pub const DOCKER_HUB: &str = "docker.io";

/// `[mirror]` beyond enabled/port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The cache's directory; `None`: `<state.dir>/mirror`. One store per upstream below it.
    pub dir: Option<PathBuf>,
    /// Where its upstream requests go out (`tor` unless explicitly `direct`).
    pub egress: Egress,
    /// A cached tag is served this long before the upstream is asked (`HEAD`) again.
    pub tag_ttl: Seconds,
    /// The upstream a request without `?ns=` goes to.
    pub default: String,
    /// The upstreams, by name.
    pub upstreams: Vec<Upstream>,
    /// Largest blob fetched.
    pub max_blob_size: u64,
    /// Bytes the caches may hold together; the least recently pulled images go first.
    pub max_size: u64,
}

/// One `[[mirror.upstreams]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The registry's name as image references and containerd's `?ns=` spell it
    /// (`docker.io`, `ghcr.io`); also its store's directory name.
    pub name: String,
    /// Where its API is: `https://host[:port]` (`http://` only for a registry on a network
    /// the administrator trusts: an exit relay could read and change clear text).
    pub url: Endpoint,
    /// One-component names get `library/` in front (Docker Hub's official images).
    pub library: bool,
    /// The token realm credentials may be sent to; a realm the upstream names otherwise gets
    /// anonymous token requests only.
    pub realm: Option<Endpoint>,
    /// A root-only file holding `user:password` for this upstream: sent to `realm` for a
    /// token, or to `url`'s own origin when it asks for `Basic`; never anywhere else.
    pub credentials: Option<PathBuf>,
    /// CA certificates (PEM) its TLS certificate is checked against; the system roots when
    /// unset.
    pub ca: Option<PathBuf>,
}

/// An `http(s)://host[:port][/path]` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The path, `/` when none.
    pub path: String,
}

impl Endpoint {
    /// Parses `text`, which must be an absolute `http` or `https` URL without credentials.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let uri: Uri = text
            .parse()
            .map_err(|error| format!("{text:?} is not a URL: {error}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{text:?} is not an http:// or https:// URL")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{text:?} names no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{text:?} holds credentials; put them in a `credentials` file"
            ));
        }
        let host = authority
            .host()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("{text:?} names no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Endpoint {
            tls,
            host,
            port,
            path: uri
                .path_and_query()
                .map_or("/".to_owned(), |p| p.as_str().to_owned()),
        })
    }

    /// `scheme://host:port` (what `Host` and the pool key use).
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.origin(), self.path)
    }
}

impl Default for Mirror {
    fn default() -> Self {
        Mirror {
            dir: None,
            egress: Egress::Tor,
            tag_ttl: Seconds::new(600),
            default: DOCKER_HUB.to_owned(),
            upstreams: vec![docker_hub()],
            max_blob_size: 10 << 30,
            max_size: 50 << 30,
        }
    }
}

/// Docker Hub as the default upstream.
fn docker_hub() -> Upstream {
    Upstream {
        name: DOCKER_HUB.to_owned(),
        url: Endpoint {
            tls: true,
            host: "registry-1.docker.io".to_owned(),
            port: 443,
            path: "/".to_owned(),
        },
        library: true,
        realm: Some(Endpoint {
            tls: true,
            host: "auth.docker.io".to_owned(),
            port: 443,
            path: "/token".to_owned(),
        }),
        credentials: None,
        ca: None,
    }
}

impl Mirror {
    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|upstream| upstream.name == name)
    }
}

/// Reads the keys of `[mirror]` beyond enabled/port.
pub(crate) fn read(section: &mut Section, errors: &mut Errors) -> Option<Mirror> {
    let d = Mirror::default();
    let dir = section.optional("dir", None, errors, |value| {
        values::absolute_path(&reader::string(value)?).map(Some)
    });
    let egress = section.optional("egress", d.egress, errors, |value| {
        egress::config::parse(&reader::string(value)?)
    });
    let tag_ttl = section.optional("tag_ttl", d.tag_ttl, errors, values::duration);
    let max_blob_size = section.optional("max_blob_size", d.max_blob_size, errors, |value| {
        values::positive(value, 1 << 50)
    });
    let max_size = section.optional("max_size", d.max_size, errors, |value| {
        values::positive(value, 1 << 60)
    });
    let default_key = section.key("default");
    let default = section.optional("default", None, errors, |value| {
        reader::string(value).map(Some)
    });
    let upstreams_key = section.key("upstreams");
    let entries = section.optional("upstreams", None, errors, |value| {
        reader::array(value).map(Some)
    })?;
    let upstreams = match entries {
        None => d.upstreams.clone(),
        Some(entries) => {
            let mut upstreams: Vec<Upstream> = Vec::new();
            let mut ok = true;
            for (i, entry) in entries.into_iter().enumerate() {
                let path = format!("{upstreams_key}[{i}]");
                match upstream(path.clone(), entry, errors) {
                    Some(upstream) if upstreams.iter().any(|u| u.name == upstream.name) => {
                        errors.push(
                            &format!("{path}.name"),
                            format!("{:?} is named twice", upstream.name),
                        );
                        ok = false;
                    }
                    Some(upstream) => upstreams.push(upstream),
                    None => ok = false,
                }
            }
            if upstreams.is_empty() && ok {
                errors.push(&upstreams_key, "empty; name at least one upstream");
                return None;
            }
            ok.then_some(upstreams)?
        }
    };
    let default = match default? {
        Some(name) => name,
        // One upstream is the default by itself.
        None if upstreams.len() == 1 => upstreams[0].name.clone(),
        None if upstreams.iter().any(|u| u.name == DOCKER_HUB) => DOCKER_HUB.to_owned(),
        None => {
            errors.push(
                &default_key,
                "missing; with several upstreams and none named docker.io, name the one \
                 requests without ?ns= go to",
            );
            return None;
        }
    };
    if !upstreams.iter().any(|u| u.name == default) {
        let names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
        errors.push(
            &default_key,
            format!(
                "{default:?} is not an upstream (mirror.upstreams names {})",
                names.join(", ")
            ),
        );
        return None;
    }
    let (max_blob_size, max_size) = (max_blob_size?, max_size?);
    if max_blob_size > max_size {
        errors.push(
            &section.key("max_blob_size"),
            format!("{max_blob_size} bytes is more than mirror.max_size ({max_size})"),
        );
        return None;
    }
    Some(Mirror {
        dir: dir?,
        egress: egress?,
        tag_ttl: tag_ttl?,
        default,
        upstreams,
        max_blob_size,
        max_size,
    })
}

/// One `[[mirror.upstreams]]`.
fn upstream(path: String, entry: Value, errors: &mut Errors) -> Option<Upstream> {
    let Value::Table(table) = entry else {
        errors.push(&path, reader::expected("a table with name and url", &entry));
        return None;
    };
    let mut section = Section::nested(path, table);
    let name = section.required(
        "name",
        "the registry's name as image references spell it, like \"ghcr.io\"",
        errors,
        |value| upstream_name(&reader::string(value)?),
    );
    let url = section.required(
        "url",
        "where its API is, like \"https://ghcr.io\"",
        errors,
        |value| Endpoint::parse(&reader::string(value)?),
    );
    let library = section.optional("library", None, errors, |value| {
        reader::boolean(value).map(Some)
    });
    let realm = section.optional("realm", None, errors, |value| {
        Endpoint::parse(&reader::string(value)?).map(Some)
    });
    let credentials_key = section.key("credentials");
    let credentials = section.optional("credentials", None, errors, |value| {
        values::absolute_path(&reader::string(value)?).map(Some)
    });
    let ca = section.optional("ca", None, errors, |value| {
        values::absolute_path(&reader::string(value)?).map(Some)
    });
    section.finish(errors);
    let (name, url, realm, credentials) = (name?, url?, realm?, credentials?);
    if credentials.is_some() {
        // Over Tor, clear text crosses an exit relay: credentials only inside TLS.
        let clear = std::iter::once(&url)
            .chain(realm.as_ref())
            .find(|endpoint| !endpoint.tls);
        if let Some(clear) = clear {
            errors.push(
                &credentials_key,
                format!(
                    "credentials would cross the exit relay in clear text to {}; use https:// \
                     for `url` and `realm`",
                    clear.origin()
                ),
            );
            return None;
        }
    }
    Some(Upstream {
        library: library?.unwrap_or(name == DOCKER_HUB),
        name,
        url,
        realm,
        credentials,
        ca: ca?,
    })
}

/// A registry name: lowercase DNS-ish (letters, digits, `.`, `-`, an optional `:port`), so it
/// is also a safe directory name.
fn upstream_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['.', '-', ':'])
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:".contains(&b));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not a registry name (lowercase letters, digits, '.', '-', ':port')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_default_ports() {
        let e = Endpoint::parse("https://Registry.Test/token?x=1").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (true, "registry.test", 443)
        );
        assert_eq!(e.path, "/token?x=1");
        let e = Endpoint::parse("http://127.0.0.1:5001").unwrap();
        assert_eq!((e.tls, e.port, e.path.as_str()), (false, 5001, "/"));
        assert!(Endpoint::parse("ftp://x.test").is_err());
        assert!(Endpoint::parse("https://u:p@x.test").is_err());
        assert!(Endpoint::parse("x.test").is_err());
    }

    #[test]
    fn upstream_names_are_safe_directory_names() {
        assert!(upstream_name("hub.test").is_ok());
        assert!(upstream_name("registry.test:5000").is_ok());
        for bad in ["", "..", "../x", "a/b", "UPPER.test", ".x", "a..b"] {
            assert!(upstream_name(bad).is_err(), "{bad}");
        }
    }
}
