//! A stand-in for Tor's name lookups in unit tests of the modules that use [`Resolve`] (SOCKS
//! RESOLVE, DNS over Tor): answers from a small table and records what it was asked.

use std::net::IpAddr;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::Resolve;
use crate::egress::{EgressError, Isolation};

/// `origin.example` has both families (IPv6 listed first, so callers' preference for IPv4 is
/// tested), `v4only.example` and `v6only.example` one each; `192.0.2.77` is `doc.example`.
/// Anything else is not found; while not `ready`, everything is not ready.
pub(crate) struct FakeResolver {
    /// Whether lookups are answered (a bootstrapped Tor) or refused as not ready.
    pub ready: bool,
    /// `"<name> <isolation>"` or `"ptr <addr>"`, per lookup.
    pub asked: Mutex<Vec<String>>,
}

impl FakeResolver {
    /// A resolver that answers (`ready`) or refuses every lookup as not ready.
    pub fn new(ready: bool) -> Self {
        FakeResolver {
            ready,
            asked: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, entry: String) {
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }
}

impl Resolve for FakeResolver {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
        isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<Vec<IpAddr>, EgressError>> {
        Box::pin(async move {
            self.record(format!("{name} {}", isolation.0));
            if !self.ready {
                return Err(EgressError::NotReady("not bootstrapped".into()));
            }
            let addrs: &[&str] = match name {
                "origin.example" => &["2001:db8::10", "203.0.113.10"],
                "v4only.example" => &["203.0.113.11"],
                "v6only.example" => &["2001:db8::11"],
                _ => return Err(EgressError::NotFound(name.to_owned())),
            };
            Ok(addrs.iter().filter_map(|a| a.parse().ok()).collect())
        })
    }

    fn resolve_ptr<'a>(
        &'a self,
        addr: IpAddr,
        _isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<Vec<String>, EgressError>> {
        Box::pin(async move {
            self.record(format!("ptr {addr}"));
            if !self.ready {
                return Err(EgressError::NotReady("not bootstrapped".into()));
            }
            if addr == IpAddr::from([192, 0, 2, 77]) {
                Ok(vec!["doc.example".to_owned()])
            } else {
                Err(EgressError::NotFound(addr.to_string()))
            }
        })
    }
}
