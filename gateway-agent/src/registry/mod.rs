//! The private OCI registry (distribution-spec v1.1) on the inside address, TLS 1.3 with client
//! certificates from the gateway CA ([`crate::pki`]):
//!
//! - [`names`]: the grammar of repository names, tags and digests;
//! - [`manifest`]: what a manifest references, read with `oci-spec`'s types;
//! - [`api`]: the HTTP API (routing, blobs and uploads, manifests, listings, errors);
//! - [`storage`]: the store behind a small trait, and its filesystem backend;
//! - [`admin`]: GC, `ls` and `du`, for the control socket and the CLI;
//! - `server`: TLS, the listener, and the reloads that make `pki revoke` take effect;
//! - [`service`]: its entry in the service list, its view and metrics;
//! - [`config`]: the `[registry]` table.

pub mod admin;
pub mod api;
pub mod config;
pub mod manifest;
pub mod names;
pub(crate) mod server;
pub mod service;
pub mod storage;
pub mod store;

pub use service::SERVICE;
