//! The CLI verbs that are more than a call into a module: formatting and the "is an agent
//! there?" checks.

pub mod cache;
pub mod clients;
pub mod leases;
pub mod maps;
pub mod mirror;
pub mod pki;
pub mod progress;
pub mod registry;
pub mod status;
pub mod table;
