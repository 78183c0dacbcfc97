//! `[http_proxy]` beyond `enabled` and `port`: which ports CONNECT may reach and where requests
//! go out, with their defaults and their reader.

use crate::config::reader::{self, Section};
use crate::config::{values, Errors};
use crate::egress::{self, Egress};

/// `[http_proxy]` beyond enabled/port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProxy {
    /// Ports CONNECT may reach, each once. Only 443 by default, like Squid's `SSL_ports`: plain
    /// HTTP goes in absolute form, and a CONNECT to any port would make the proxy a general
    /// TCP relay (that is what SOCKS is for).
    pub connect_ports: Vec<u16>,
    /// Ports an absolute-form request (`GET http://host:port/…`) may reach, each once: 80 and
    /// 443 by default, so the proxy cannot be pointed at arbitrary services.
    pub ports: Vec<u16>,
    /// Where the proxy's requests go out.
    pub egress: Egress,
    /// Whether GET and HEAD responses are cached on disk (`state.dir/http-cache`).
    pub cache: bool,
    /// Bytes the cache may hold on disk; the least recently used objects go first.
    pub cache_size: u64,
    /// The largest object stored; larger ones pass through uncached.
    pub max_object_size: u64,
    /// CA certificates (PEM) for https origins asked as `http://HTTPS///host/path`; the
    /// system roots when unset.
    pub upstream_ca: Option<std::path::PathBuf>,
}

/// 1 GiB.
const GIB: u64 = 1 << 30;

impl Default for HttpProxy {
    fn default() -> Self {
        HttpProxy {
            connect_ports: vec![443],
            ports: vec![80, 443],
            egress: Egress::Tor,
            cache: true,
            cache_size: 10 * GIB,
            // Debian packages and image layers reach hundreds of MiB.
            max_object_size: GIB,
            upstream_ca: None,
        }
    }
}

/// Reads the keys of `[http_proxy]` beyond enabled/port.
pub(crate) fn read(section: &mut Section, errors: &mut Errors) -> Option<HttpProxy> {
    let defaults = HttpProxy::default();
    let egress = section.optional("egress", defaults.egress, errors, |value| {
        egress::config::parse(&reader::string(value)?)
    });
    let connect_ports = port_list(section, "connect_ports", errors);
    let ports = port_list(section, "ports", errors);
    let cache = section.optional("cache", defaults.cache, errors, reader::boolean);
    let cache_size = section.optional("cache_size", defaults.cache_size, errors, size);
    let max_object_size =
        section.optional("max_object_size", defaults.max_object_size, errors, size);
    let upstream_ca = section.optional("upstream_ca", None, errors, |value| {
        values::absolute_path(&reader::string(value)?).map(Some)
    });
    let (cache_size, max_object_size) = (cache_size?, max_object_size?);
    if max_object_size > cache_size {
        let key = section.key("max_object_size");
        errors.check::<()>(
            &key,
            Err(format!(
                "{max_object_size} bytes is more than http_proxy.cache_size ({cache_size})"
            )),
        );
        return None;
    }
    Some(HttpProxy {
        connect_ports: connect_ports?.unwrap_or(defaults.connect_ports),
        ports: ports?.unwrap_or(defaults.ports),
        egress: egress?,
        cache: cache?,
        cache_size,
        max_object_size,
        upstream_ca: upstream_ca?,
    })
}

/// A size: an integer of bytes, or a string with a binary unit (`"512 MiB"`, `"10GiB"`).
fn size(value: toml::Value) -> Result<u64, String> {
    if let toml::Value::Integer(n) = value {
        return u64::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{n} is not a positive size"));
    }
    let text = reader::string(value)?;
    parse_size(&text)
}

/// `"<n> [KiB|MiB|GiB|TiB]"`, binary units only, so a size never means two things.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (B, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like \"10 GiB\""))?;
    n.checked_mul(1 << shift)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a positive size that fits in 64 bits"))
}

/// A list of distinct ports under `key` (`connect_ports`, `ports`): `None` when absent.
fn port_list(
    section: &mut Section,
    key: &'static str,
    errors: &mut Errors,
) -> Option<Option<Vec<u16>>> {
    let ports_key = section.key(key);
    let entries = section.optional(key, None, errors, |value| reader::array(value).map(Some))?;
    let Some(entries) = entries else {
        return Some(None);
    };
    let mut ports = Vec::new();
    let mut ok = true;
    for (i, entry) in entries.into_iter().enumerate() {
        let port = reader::integer(entry)
            .and_then(values::port)
            .and_then(|port| {
                if ports.contains(&port) {
                    Err(format!("{port} is listed twice"))
                } else {
                    Ok(port)
                }
            });
        match errors.check(&format!("{ports_key}[{i}]"), port) {
            Some(port) => ports.push(port),
            None => ok = false,
        }
    }
    ok.then_some(Some(ports))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10 GiB"), Ok(10 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1 KiB"), Ok(1024));
        assert!(parse_size("1 GB").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999 TiB").is_err());
    }
}
