//! Shared helpers for the agent's integration tests.
#![allow(dead_code)] // each test binary uses a different part

use std::io::Write;

pub mod frames;

/// Whether a test that needs root should be skipped: true, after one line on stderr naming
/// the test and what it needs, when not run as root. Namespaces, eBPF programs and raw
/// sockets need capabilities that a contributor's plain `cargo test` does not have, and an
/// EPERM deep inside the setup says less than a skip. Use it as the test's first statement:
/// `if support::skip_unless_root("loads eBPF programs") { return; }`.
pub fn skip_unless_root(needs: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return false;
    }
    // libtest names each test's thread after the test.
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    // Straight to stderr rather than eprintln!, which libtest captures and hides for a test
    // that passes, as a skipped one does.
    let _ = writeln!(std::io::stderr(), "skipped {test}: needs root ({needs})");
    true
}
