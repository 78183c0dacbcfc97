//! The private OCI registry (distribution-spec v1.1): the grammar of names, tags and digests
//! ([`names`]), the store behind a small interface ([`storage`]).

pub mod names;
pub mod storage;
