//! Shared helpers for the agent's integration tests.
#![allow(dead_code)] // each test binary uses a different part

pub mod frames;

/// BPF_PROG_TEST_RUN and map creation need CAP_BPF/CAP_NET_ADMIN; say so instead of failing
/// with EPERM deep inside aya.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests load eBPF programs and must run as root (cargo xtask test does)"
    );
}
