//! The private OCI registry (distribution-spec v1.1): the grammar of names, tags and digests
//! ([`names`]), manifests as the registry reads them ([`manifest`]), the store behind a small
//! interface ([`storage`]) and its `[registry]` table ([`config`]).

pub mod api;
pub mod config;
pub mod manifest;
pub mod names;
pub mod storage;
