//! Cross-site request forgery: every action form carries a token bound to the client
//! certificate that loaded the page, and every POST must come from the page's own origin.
//!
//! A token is `<issued, hex>.<HMAC-SHA256(key, fingerprint ‖ issued), hex>` under a key made
//! at each start: another certificate (or another agent run) cannot use it, and it expires
//! after [`LIFETIME`]. A page on another site can make the admin's browser POST with the
//! admin's certificate, but it cannot read a token; the `Origin` (or `Referer`) check refuses
//! it even before that.

use std::fmt::Write as _;

use anyhow::{anyhow, Result};
use hyper::header::{HeaderMap, HOST, ORIGIN, REFERER};
use ring::hmac;

/// How long a token is accepted after the page that carried it was rendered.
pub const LIFETIME_SECS: u64 = 12 * 3600;

/// Issues and checks tokens.
pub struct Csrf {
    key: hmac::Key,
}

impl Csrf {
    /// A new random key.
    pub fn new() -> Result<Csrf> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| anyhow!("no randomness for the status page's CSRF key"))?;
        Ok(Csrf { key })
    }

    /// A fixed key, for tests.
    #[cfg(test)]
    pub fn with_key(key: &[u8]) -> Csrf {
        Csrf {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The token for the certificate with `fingerprint` (SHA-256 of its DER), issued now.
    pub fn token(&self, fingerprint: &[u8], now_unix: u64) -> String {
        let tag = hmac::sign(&self.key, &message(fingerprint, now_unix));
        format!("{now_unix:x}.{}", hex(tag.as_ref()))
    }

    /// Whether `token` was issued by this key for `fingerprint` within [`LIFETIME_SECS`].
    pub fn check(&self, fingerprint: &[u8], token: &str, now_unix: u64) -> bool {
        let Some((issued, tag)) = token.split_once('.') else {
            return false;
        };
        let Ok(issued) = u64::from_str_radix(issued, 16) else {
            return false;
        };
        if issued > now_unix.saturating_add(60) || now_unix.saturating_sub(issued) > LIFETIME_SECS {
            return false;
        }
        let Some(tag) = unhex(tag) else {
            return false;
        };
        hmac::verify(&self.key, &message(fingerprint, issued), &tag).is_ok()
    }
}

fn message(fingerprint: &[u8], issued: u64) -> Vec<u8> {
    let mut message = b"gateway status page action\0".to_vec();
    message.extend_from_slice(fingerprint);
    message.extend_from_slice(&issued.to_be_bytes());
    message
}

/// Whether a POST comes from the page itself: its `Origin` is `https://<Host>`, or, without
/// an `Origin`, its `Referer` is a URL on `https://<Host>/`. Neither header: refused.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let ours = format!("https://{host}");
    if let Some(origin) = headers.get(ORIGIN) {
        return origin.to_str().is_ok_and(|origin| origin == ours);
    }
    headers
        .get(REFERER)
        .and_then(|r| r.to_str().ok())
        .is_some_and(|referer| {
            referer
                .strip_prefix(&ours)
                .is_some_and(|rest| rest.starts_with('/'))
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn a_token_is_bound_to_its_certificate_and_key() {
        let csrf = Csrf::with_key(b"k");
        let token = csrf.token(b"cert-a", 1000);
        assert!(csrf.check(b"cert-a", &token, 1000));
        assert!(csrf.check(b"cert-a", &token, 1000 + LIFETIME_SECS));
        assert!(!csrf.check(b"cert-b", &token, 1000), "another certificate");
        assert!(
            !Csrf::with_key(b"other").check(b"cert-a", &token, 1000),
            "another run"
        );
        assert!(
            !csrf.check(b"cert-a", &token, 1001 + LIFETIME_SECS),
            "expired"
        );
    }

    #[test]
    fn a_forged_or_altered_token_is_refused() {
        let csrf = Csrf::with_key(b"k");
        let token = csrf.token(b"cert-a", 1000);
        let (_, tag) = token.split_once('.').unwrap();
        // The same tag with a later issue time.
        assert!(!csrf.check(b"cert-a", &format!("{:x}.{tag}", 2000), 2000));
        for bad in [
            "",
            ".",
            "zz.00",
            "3e8.",
            "3e8.0",
            "3e8.ééé",
            &token[..token.len() - 1],
        ] {
            assert!(!csrf.check(b"cert-a", bad, 1000), "{bad:?}");
        }
        // From the future.
        let later = csrf.token(b"cert-a", 5000);
        assert!(!csrf.check(b"cert-a", &later, 1000));
    }

    fn headers(pairs: &[(hyper::header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn only_the_pages_own_origin_may_post() {
        let host = (HOST, "127.0.0.1:8443");
        assert!(same_origin(&headers(&[
            host.clone(),
            (ORIGIN, "https://127.0.0.1:8443")
        ])));
        assert!(same_origin(&headers(&[
            host.clone(),
            (REFERER, "https://127.0.0.1:8443/")
        ])));
        for refused in [
            vec![host.clone(), (ORIGIN, "https://evil.example")],
            vec![host.clone(), (ORIGIN, "http://127.0.0.1:8443")],
            vec![host.clone(), (ORIGIN, "null")],
            // An Origin that is wrong is not saved by a right Referer.
            vec![
                host.clone(),
                (ORIGIN, "https://evil.example"),
                (REFERER, "https://127.0.0.1:8443/"),
            ],
            vec![
                host.clone(),
                (REFERER, "https://127.0.0.1:8443.evil.example/"),
            ],
            vec![host.clone()],
            vec![(ORIGIN, "https://127.0.0.1:8443")],
        ] {
            assert!(!same_origin(&headers(&refused)), "{refused:?}");
        }
    }
}
