//! What the private registry reads from a client before the store sees anything: the request
//! path (`registry::api::route`), its query string, and a pushed manifest
//! (`registry::manifest::parse`) under each media type the registry accepts. The input's first
//! line is the path and query, the rest the manifest. A panic is a bug.
#![no_main]

use gateway_agent::registry::api::route;
use gateway_agent::registry::manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(head) = std::str::from_utf8(head) {
        let (path, query) = head.split_once('?').map_or((head, None), |(p, q)| (p, Some(q)));
        if let Ok(route) = route::route(path) {
            // Whatever passed the grammar prints back as what it parsed from.
            let _ = format!("{route:?}");
        }
        let params = route::query(query);
        let _ = route::param(&params, "digest");
    }
    for media_type in [
        None,
        Some(manifest::OCI_MANIFEST),
        Some(manifest::OCI_INDEX),
        Some(manifest::DOCKER_MANIFEST),
        Some(manifest::DOCKER_LIST),
    ] {
        if let Ok(parsed) = manifest::parse(media_type, body) {
            let _ = parsed.referrer(&gateway_agent::registry::names::Digest::sha256_of(body), 0);
        }
    }
});
