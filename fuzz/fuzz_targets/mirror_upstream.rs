//! What the mirror reads from an upstream registry (or anyone on the path to it) before it
//! acts on it: a `WWW-Authenticate` challenge (`mirror::auth::parse_challenge`), the URL it
//! names and a redirect's `Location` (`mirror::config::Endpoint::parse`), a token answer, and
//! a `Docker-Content-Digest`. The input's first line is the header value, the rest the token
//! answer. A panic is a bug.
#![no_main]

use gateway_agent::mirror::auth::{self, Challenge, TokenAnswer};
use gateway_agent::mirror::config::Endpoint;
use gateway_agent::registry::names::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(head) = std::str::from_utf8(head) {
        if let Some(Challenge::Bearer { realm, service, scope }) = auth::parse_challenge(head) {
            if let Ok(endpoint) = Endpoint::parse(&realm) {
                let _ = endpoint.origin();
            }
            let _ = auth::encode_query(service.as_deref().unwrap_or(""));
            let _ = auth::encode_query(scope.as_deref().unwrap_or(""));
        }
        if let Ok(endpoint) = Endpoint::parse(head) {
            let _ = endpoint.to_string();
        }
        let _ = head.trim().parse::<Digest>();
    }
    if let Ok(answer) = serde_json::from_slice::<TokenAnswer>(body) {
        let _ = answer.into_token();
    }
    let _ = auth::base64(body);
});
