//! Registry authentication as Docker Hub and distribution do it: a `401` with
//! `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` sends the client to the realm for
//! a token for that scope. Credentials (from a root-only file) go to the realm only when it is
//! the one configured for the upstream; a realm the upstream names by itself is asked
//! anonymously. `Basic` challenges get the credentials only from the upstream itself.
//!
//! This file is the parsing and the small helpers; the requests are in [`super::upstream`].

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm=…,service=…,scope=…`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// `Basic realm=…`.
    Basic,
}

/// Parses the first scheme of a `WWW-Authenticate` value; `None`: neither scheme.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: get("realm")?,
        service: get("service"),
        scope: get("scope"),
    })
}

/// `key="value", key=value, …` (quoted values may hold commas and `\"`).
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_owned();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        out.push((key, value));
    }
}

/// Percent-encodes a query component (RFC 3986 unreserved characters stay).
pub fn encode_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (for `Authorization: Basic`).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What a token endpoint answers (Docker's `token`, OAuth's `access_token`).
#[derive(Debug, serde::Deserialize)]
pub struct TokenAnswer {
    pub token: Option<String>,
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
}

impl TokenAnswer {
    /// The token and how long to use it (a little less than it lives; 60 s when unsaid, as
    /// the token spec says).
    pub fn into_token(self) -> Option<(String, Duration)> {
        let token = self.token.or(self.access_token)?;
        let lifetime = self.expires_in.unwrap_or(60).clamp(10, 3600);
        Some((token, Duration::from_secs(lifetime.saturating_sub(5))))
    }
}

/// Tokens by scope, until they expire.
#[derive(Default)]
pub struct Tokens {
    by_scope: Mutex<HashMap<String, (String, Instant)>>,
}

impl Tokens {
    /// A live token for `scope`.
    pub fn get(&self, scope: &str) -> Option<String> {
        let tokens = self.by_scope.lock().unwrap_or_else(PoisonError::into_inner);
        tokens
            .get(scope)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(token, _)| token.clone())
    }

    /// Keeps `token` for `scope` for `lifetime`.
    pub fn put(&self, scope: &str, token: String, lifetime: Duration) {
        let mut tokens = self.by_scope.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.retain(|_, (_, until)| Instant::now() < *until);
        tokens.insert(scope.to_owned(), (token, Instant::now() + lifetime));
    }

    /// Forgets `scope`'s token (the upstream refused it).
    pub fn forget(&self, scope: &str) {
        let mut tokens = self.by_scope.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.remove(scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hubs_challenge_parses() {
        let value = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:library/alpine:pull""#;
        assert_eq!(
            parse_challenge(value),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        // Unquoted values, odd spacing, a quoted comma.
        let value = r#"bearer  realm=https://a.test/t , scope="repository:a/b:pull,push""#;
        let Some(Challenge::Bearer {
            realm,
            scope,
            service,
        }) = parse_challenge(value)
        else {
            panic!("not parsed");
        };
        assert_eq!(realm, "https://a.test/t");
        assert_eq!(scope.as_deref(), Some("repository:a/b:pull,push"));
        assert_eq!(service, None);
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn encodings() {
        assert_eq!(
            encode_query("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn tokens_expire() {
        let tokens = Tokens::default();
        tokens.put("s", "t".into(), Duration::from_secs(60));
        assert_eq!(tokens.get("s").as_deref(), Some("t"));
        tokens.put("old", "x".into(), Duration::ZERO);
        assert_eq!(tokens.get("old"), None);
        tokens.forget("s");
        assert_eq!(tokens.get("s"), None);
    }
}
