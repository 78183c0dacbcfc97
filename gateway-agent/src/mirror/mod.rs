//! The registry mirror: a pull-through cache of upstream OCI registries (Docker Hub by
//! default) on the inside address, port 5000, TLS 1.3 with client certificates from the
//! gateway CA, pull only. Every upstream byte goes through the service's connector (Tor unless
//! `mirror.egress = "direct"`); each blob is fetched once however many clients ask, and
//! streamed to all of them as it arrives; cached content keeps being served while the upstream
//! or Tor is unreachable.
//!
//! - [`config`]: `[mirror]` and `[[mirror.upstreams]]`;
//! - [`upstream`]: the HTTP client for one upstream (connector, TLS, redirects), with the
//!   bearer-token dance of [`auth`];
//! - [`tags`]: when a cached tag is re-checked upstream (`HEAD` after the TTL);
//! - [`cache`]: one upstream's cache over the private registry's storage: manifests in;
//! - [`flight`]: blobs in, one fetch per blob, streamed to every waiting client, verified;
//! - [`error`]: what a failed fetch looks like to the client (`503` when offline);
//! - [`api`]: the requests: which upstream, fetch, then answered by the registry's API;
//! - [`pulls`]: when each cached image was last pulled; [`lease`]: which blobs a pull is
//!   using right now; [`admin`]: `ls`, `du`, `gc`, `purge` and the eviction that keeps the
//!   cache under `mirror.max_size`, on the registry's GC, sparing what a pull uses;
//! - `server`: TLS, the listener, reloads, eviction; [`service`]: the entry in the service list.

pub mod admin;
pub mod api;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod flight;
pub mod lease;
pub mod pulls;
mod server;
pub mod service;
pub mod tags;
pub mod upstream;

pub use server::{MirrorServer, ServerSettings};
pub use service::SERVICE;
