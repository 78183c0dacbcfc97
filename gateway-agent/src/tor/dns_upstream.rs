//! The `tor` forwarder: A and AAAA through Tor's `resolve`, PTR through `resolve_ptr`, at an
//! exit. Tor answers carry no TTL, so the DNS module caches them for `dns.default_ttl`; other
//! record types get NOTIMP. Not bootstrapped, or Tor unreachable: an error, so SERVFAIL — the
//! question never goes out in clear text.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::Resolve;
use crate::egress::{EgressError, Isolation, Upstream, UpstreamAnswer, UpstreamError};

/// Below the DNS module's own upstream deadline, so the error is ours and says why.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(12);

/// Forwards to Tor exits. All lookups share one isolation group, apart from client streams.
pub struct TorUpstream {
    resolver: Arc<dyn Resolve>,
    isolation: Isolation,
}

impl TorUpstream {
    /// Resolves through `resolver` (the [`crate::tor::Tor`] handle).
    pub fn new(resolver: Arc<dyn Resolve>) -> Self {
        TorUpstream {
            resolver,
            isolation: Isolation("dns".to_owned()),
        }
    }

    async fn addresses(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let text = name.to_ascii();
        let host = text.strip_suffix('.').unwrap_or(&text);
        let addrs = match self.resolver.resolve(host, &self.isolation).await {
            Ok(addrs) => addrs,
            Err(EgressError::NotFound(_)) => return Ok(UpstreamAnswer::NxDomain { soa: None }),
            Err(err) => return Err(UpstreamError::Failed(err.to_string())),
        };
        let records: Vec<Record> = addrs
            .into_iter()
            .filter_map(|addr| match (addr, rtype) {
                (IpAddr::V4(ip), RecordType::A) => Some(RData::A(A(ip))),
                (IpAddr::V6(ip), RecordType::AAAA) => Some(RData::AAAA(AAAA(ip))),
                _ => None,
            })
            .map(|rdata| Record::from_rdata(name.clone(), 0, rdata))
            .collect();
        Ok(if records.is_empty() {
            UpstreamAnswer::NoData { soa: None }
        } else {
            UpstreamAnswer::Records(records)
        })
    }

    async fn pointer(&self, name: &Name) -> Result<UpstreamAnswer, UpstreamError> {
        let Some(addr) = reverse_address(name) else {
            // A reverse name that is not a whole address (a zone cut like 2.0.192.in-addr.arpa).
            return Ok(UpstreamAnswer::NoData { soa: None });
        };
        let names = match self.resolver.resolve_ptr(addr, &self.isolation).await {
            Ok(names) => names,
            Err(EgressError::NotFound(_)) => return Ok(UpstreamAnswer::NxDomain { soa: None }),
            Err(err) => return Err(UpstreamError::Failed(err.to_string())),
        };
        let records: Vec<Record> = names
            .iter()
            .filter_map(|target| Name::from_ascii(target).ok())
            .map(|mut target| {
                target.set_fqdn(true);
                Record::from_rdata(name.clone(), 0, RData::PTR(PTR(target)))
            })
            .collect();
        Ok(if records.is_empty() {
            UpstreamAnswer::NxDomain { soa: None }
        } else {
            UpstreamAnswer::Records(records)
        })
    }
}

impl Upstream for TorUpstream {
    fn lookup(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> BoxFuture<'_, Result<UpstreamAnswer, UpstreamError>> {
        let name = name.clone();
        Box::pin(async move {
            let lookup = async {
                match rtype {
                    RecordType::A | RecordType::AAAA => self.addresses(&name, rtype).await,
                    RecordType::PTR => self.pointer(&name).await,
                    other => Err(UpstreamError::Unsupported(other)),
                }
            };
            tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
                .await
                .unwrap_or(Err(UpstreamError::Timeout))
        })
    }

    fn name(&self) -> &'static str {
        "tor"
    }

    fn gives_ttls(&self) -> bool {
        false
    }
}

/// The address a full `in-addr.arpa` / `ip6.arpa` name stands for.
fn reverse_address(name: &Name) -> Option<IpAddr> {
    let net = name.parse_arpa_name().ok()?;
    let full = match net.addr() {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    (net.prefix_len() == full).then(|| net.addr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tor::fake::FakeResolver;

    fn upstream(ready: bool) -> (Arc<FakeResolver>, TorUpstream) {
        let fake = Arc::new(FakeResolver::new(ready));
        (fake.clone(), TorUpstream::new(fake))
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    #[tokio::test]
    async fn a_and_aaaa_pick_their_family() {
        let (fake, up) = upstream(true);
        let Ok(UpstreamAnswer::Records(a)) =
            up.lookup(&name("origin.example."), RecordType::A).await
        else {
            panic!("no A records");
        };
        assert_eq!(a.len(), 1);
        assert_eq!(&a[0].data, &RData::A(A("203.0.113.10".parse().unwrap())));
        let Ok(UpstreamAnswer::Records(aaaa)) =
            up.lookup(&name("origin.example."), RecordType::AAAA).await
        else {
            panic!("no AAAA records");
        };
        assert_eq!(aaaa.len(), 1);
        assert_eq!(
            up.lookup(&name("v4only.example."), RecordType::AAAA).await,
            Ok(UpstreamAnswer::NoData { soa: None })
        );
        assert_eq!(
            up.lookup(&name("missing.example."), RecordType::A).await,
            Ok(UpstreamAnswer::NxDomain { soa: None })
        );
        // Names go to Tor without the root dot, under the DNS isolation group.
        assert_eq!(fake.asked.lock().unwrap()[0], "origin.example dns");
        assert!(!up.gives_ttls());
    }

    #[tokio::test]
    async fn ptr_through_resolve_ptr() {
        let (_, up) = upstream(true);
        let Ok(UpstreamAnswer::Records(ptr)) = up
            .lookup(&name("77.2.0.192.in-addr.arpa."), RecordType::PTR)
            .await
        else {
            panic!("no PTR records");
        };
        assert_eq!(&ptr[0].data, &RData::PTR(PTR(name("doc.example."))));
        assert_eq!(
            up.lookup(&name("2.0.192.in-addr.arpa."), RecordType::PTR)
                .await,
            Ok(UpstreamAnswer::NoData { soa: None })
        );
        assert_eq!(
            up.lookup(&name("78.2.0.192.in-addr.arpa."), RecordType::PTR)
                .await,
            Ok(UpstreamAnswer::NxDomain { soa: None })
        );
    }

    #[tokio::test]
    async fn other_types_unsupported_and_not_ready_fails() {
        let (fake, up) = upstream(true);
        assert_eq!(
            up.lookup(&name("origin.example."), RecordType::MX).await,
            Err(UpstreamError::Unsupported(RecordType::MX))
        );
        assert!(
            fake.asked.lock().unwrap().is_empty(),
            "MX never reaches Tor"
        );
        let (_, down) = upstream(false);
        assert!(matches!(
            down.lookup(&name("origin.example."), RecordType::A).await,
            Err(UpstreamError::Failed(_))
        ));
    }
}
