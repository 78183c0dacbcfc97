//! The private OCI registry (distribution-spec v1.1): the grammar of names, tags and digests
//! ([`names`]), manifests as the registry reads them ([`manifest`]), the store behind a small
//! interface ([`storage`]) and its `[registry]` table ([`config`]).

pub mod admin;
pub mod api;
pub mod config;
pub mod manifest;
pub mod names;
mod server;
pub mod service;
pub mod storage;

pub use service::SERVICE;
