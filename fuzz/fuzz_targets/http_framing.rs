//! The HTTP proxy's framing scanner (`http_proxy::framing::Scanner`) reads every byte an inside
//! client sends before hyper does. The first byte says where the rest is split into two reads;
//! the verdicts must not depend on that split. A panic is a bug.
#![no_main]

use std::sync::Arc;

use gateway_agent::http_proxy::framing::{Scanner, Verdicts};
use libfuzzer_sys::fuzz_target;

fn verdicts(parts: &[&[u8]]) -> Vec<Option<&'static str>> {
    let verdicts = Arc::new(Verdicts::default());
    let mut scanner = Scanner::new(64 * 1024, verdicts.clone());
    for part in parts {
        scanner.feed(part);
    }
    (0..8).map(|_| verdicts.next_request()).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (a, b) = rest.split_at(usize::from(split).min(rest.len()));
    assert_eq!(verdicts(&[a, b]), verdicts(&[rest]));
});
