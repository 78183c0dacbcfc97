//! The network-namespace lab: a modem with a stand-in internet (`up`), the gateway host (`gw`),
//! the inside LAN bridge (`lan`) and clients (`c1`, `c2`), all in namespaces so that nothing
//! touches the host's own interfaces. Documentation address ranges only.
//!
//! Everything a lab makes is derived from its prefix (namespace names, the state dir, the bpffs
//! mount), so [`Lab::down`] cleans up after a crash without any in-memory state, and labs with
//! different prefixes (parallel tests) never touch each other.
//!
//! The base also runs nginx beside the Python origin, plain and over TLS with a lab CA
//! (`web_origin.rs`), for the HTTP cache's tests.
//!
//! The base can also have a NAS on the uplink bridge (`nas.rs`): SeaweedFS, the S3 store the
//! registries of several gateway slots share, started on demand ([`Lab::start_nas`]).
//!
//! The base also has the upstream registries for the gateway's mirror (`upstream.rs`), started
//! on demand: `lab up` starts them, tests that need them call [`Lab::start_upstream`].
//!
//! **Gateway slots.** A lab's shared part (its *base*) is the `up` namespace: the uplink bridge,
//! the modem's dnsmasq, the origin and the Tor network. A *gateway slot* is one gateway host
//! with its own inside LAN: namespaces `gw`, `lan`, `c1`, `c2` for slot 0 (what `lab up`
//! makes), `gw.N`, `lan.N`, `c1.N`, `c2.N` for slot N (1..=[`MAX_SLOT`]), each prefixed like
//! the rest of the lab. Every slot's `outside0` is a port (`gw<N>` in `up`) on the same uplink
//! bridge, so the modem's DHCP server gives each gateway its own uplink address; every slot has
//! its own inside bridge (the inside subnet repeats), its own files under
//! [`Lab::gateway_dir`] (agent config, bpffs pin dir, control socket, agent state, the clients'
//! DHCP files). A [`Lab`] value is a view of one slot: [`Lab::ns`] maps the slot roles to that
//! slot's namespaces and `up` to the shared one. The tests run many slots in one lab
//! ([`Lab::up_base`], [`Lab::up_slot`], [`Lab::down_slot`]).

mod clients;
mod daemons;
mod layout;
mod lifecycle;
mod nas;
mod status;
mod topology;
pub mod tor;
mod upstream;
mod web_origin;

pub use clients::{DhcpClient, CLIENTS};
pub use layout::*;
pub use lifecycle::down_all;
pub use nas::{
    wait_writable as wait_seaweedfs_writable, weed_mini_script,
    write_identity as write_seaweedfs_identity, NAS_ACCESS_KEY, NAS_BUCKET, NAS_IP, NAS_S3_PORT,
    NAS_SECRET_KEY,
};
pub use status::{print_human, LabStatus};
pub use upstream::{
    SeededImage, OTHER_HOST, OTHER_NS, REGISTRY_PORT, TOKEN_HOST, UPSTREAM_HOST, UPSTREAM_NS,
};
pub use web_origin::{BIG_BYTES as WEB_BIG_BYTES, ROGUE_HOST, ROGUE_IP, WEB_HOST, WEB_IP};
