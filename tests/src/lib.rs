//! The test kit: what every integration test of the workspace shares, here and in
//! `gateway-agent/tests` (a dev-dependency there).
//!
//! - [`testlab`](mod@testlab): a gateway per test in a lab its test binary shares, or a lab of
//!   its own ([`TestLab`]), commands in the lab's namespaces;
//! - [`agent`](mod@agent): the real agent running in the gateway's `gw` namespace ([`Agent`]),
//!   its CLI and metrics;
//! - [`dhcp`](mod@dhcp): real DHCP clients in the lab and the events they report;
//! - [`capture`](mod@capture): packet captures with tcpdump that fail the test when they did
//!   not capture ([`Capture`]);
//! - [`netns`](mod@netns): the one namespace guard ([`Netns`]) for tests that build their own
//!   small world, named like a lab's (`<prefix>-<role>`) so `cargo xtask lab down --all` finds
//!   what a killed test left behind, and [`in_netns`] to run code inside one;
//! - [`frames`](mod@frames): crafted Ethernet frames for `BPF_PROG_TEST_RUN`;
//! - [`process`](mod@process): background processes, polling, root checks.
//!
//! **One lab per test binary.** [`TestLab::up`] gives each test a gateway slot of its own
//! (namespaces `<prefix>-gw.N`, `-lan.N`, `-c1.N`, `-c2.N`, its own agent config, bpffs, control
//! socket and DHCP files) in a lab that the test binary builds once, on first use: one modem,
//! origin and, once a test needs it, one private Tor network for every test of the binary. A
//! slot goes down when its `TestLab` is dropped (also when the test panics); the shared lab goes
//! down when the process exits (`atexit`; `cargo xtask test` also runs `lab down --all` after
//! the tests, for a binary that was killed). [`TestLab::up_own`] gives a lab of its own, for
//! tests that stop or break what a lab's gateways share (the Tor network, the modem's dnsmasq)
//! or that take a whole lab down.
//!
//! The modem's and the origin's logs are the lab's: [`TestLab::modem_log`] and
//! [`TestLab::origin_clients`] start where they were when the slot came up, and tests pick
//! their own gateway's lines by its uplink address; captures on the uplink go on the slot's
//! own port ([`lab::Lab::uplink_port`]), never on the shared bridge.
//!
//! **Failing.** The helpers are assertions: what a test cannot do without (a namespace, a
//! process, a capture) fails the test with the reason, through [`fail`]; the `try_` variants
//! return the error instead. Tests that need root start with
//! `if skip_unless_root("what it needs") { return; }`.
//!
//! Everything targets addresses inside namespaces the test created; nothing else.

pub mod agent;
pub mod capture;
pub mod dhcp;
pub mod frames;
pub mod netns;
pub mod process;
pub mod seaweedfs;
pub mod testlab;
mod tor;

pub use xtask::lab;
pub use xtask::lab::tor as lab_tor;

pub use agent::{agent_bin, metric, Agent, METRICS_URL};
pub use capture::Capture;
pub use dhcp::{DhcpClient, DhcpEvent};
pub use netns::{in_netns, netns_exists, unique_prefix, Netns};
pub use process::{
    eventually, host, is_root, require_root, skip_unless_root, wait_timeout, Background,
};
pub use testlab::TestLab;

/// Fails the calling test with `message`. The kit's helpers are test assertions: a test whose
/// setup or check cannot go on stops here, loudly, with what went wrong.
#[allow(
    clippy::panic,
    reason = "the test kit's assertions fail the test that called them"
)]
#[track_caller]
pub fn fail(message: impl std::fmt::Display) -> ! {
    panic!("{message}")
}

/// `Result` as a test assertion: the value, or the test fails with `what` and the error chain.
pub trait OrFail<T> {
    /// The value, or [`fail`] with "`what`: `error`".
    fn or_fail(self, what: impl std::fmt::Display) -> T;
}

impl<T, E: Into<anyhow::Error>> OrFail<T> for Result<T, E> {
    #[track_caller]
    fn or_fail(self, what: impl std::fmt::Display) -> T {
        match self {
            Ok(value) => value,
            Err(err) => fail(format_args!("{what}: {:#}", err.into())),
        }
    }
}
