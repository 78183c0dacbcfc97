//! The `direct` connector: clear-text TCP out of the outside interface (SO_BINDTODEVICE), only
//! ever an explicit choice. Names are resolved by the uplink's DNS forwarder handed in, never
//! by the host's resolver; without one, names are refused. Private, loopback, link-local and
//! inside destinations are refused unless allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::TcpSocket;

use super::{
    BoxStream, Connector, EgressError, Host, Isolation, Target, Upstream, UpstreamAnswer,
    UpstreamError,
};
use crate::config::Inside;

/// What the `direct` connector needs.
#[derive(Clone)]
pub struct DirectSettings {
    /// The outside device streams are bound to.
    pub device: String,
    /// The inside subnet: never a destination.
    pub inside: Inside,
    /// Allow private, loopback, link-local and CGNAT destinations (the uplink's own LAN, say).
    pub allow_private: bool,
    /// Resolves names (the uplink forwarder); `None`: names are refused.
    pub resolver: Option<Arc<dyn Upstream>>,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
}

/// Opens clear-text streams through the outside interface.
pub struct DirectConnector {
    settings: DirectSettings,
}

impl DirectConnector {
    /// A connector with `settings`.
    pub fn new(settings: DirectSettings) -> Self {
        DirectConnector { settings }
    }

    /// Why `ip` may not be a destination, if it may not.
    fn policy(&self, ip: IpAddr) -> Result<(), EgressError> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if let IpAddr::V4(v4) = ip {
            if self.settings.inside.contains(v4) {
                return Err(EgressError::Refused(format!("{ip} is on the inside")));
            }
        }
        if is_never_routable(ip) {
            return Err(EgressError::Refused(format!(
                "{ip} is not a unicast destination"
            )));
        }
        if !self.settings.allow_private && is_private(ip) {
            return Err(EgressError::Refused(format!("{ip} is a private address")));
        }
        Ok(())
    }

    /// Addresses for `name` from the uplink resolver, A first.
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, EgressError> {
        let Some(resolver) = &self.settings.resolver else {
            return Err(EgressError::Refused(format!(
                "{name}: direct egress has no resolver; give an address"
            )));
        };
        let fqdn = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
            .map_err(|err| EgressError::NotFound(format!("{name}: {err}")))?;
        let mut addrs = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            match resolver.lookup(&fqdn, rtype).await {
                Ok(UpstreamAnswer::Records(records)) => {
                    addrs.extend(records.iter().filter_map(|r| match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                        _ => None,
                    }))
                }
                Ok(UpstreamAnswer::NoData { .. }) | Err(UpstreamError::Unsupported(_)) => {}
                Ok(UpstreamAnswer::NxDomain { .. }) => {
                    return Err(EgressError::NotFound(name.to_owned()))
                }
                Err(err) if addrs.is_empty() && rtype == RecordType::AAAA => {
                    return Err(EgressError::Unreachable(format!("resolving {name}: {err}")))
                }
                Err(_) => {}
            }
        }
        if addrs.is_empty() {
            return Err(EgressError::NotFound(name.to_owned()));
        }
        Ok(addrs)
    }

    async fn connect_addr(&self, addr: SocketAddr) -> Result<BoxStream, EgressError> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|err| EgressError::Failed(format!("socket: {err}")))?;
        socket
            .bind_device(Some(self.settings.device.as_bytes()))
            .map_err(|err| {
                EgressError::NotReady(format!("binding to {}: {err}", self.settings.device))
            })?;
        match tokio::time::timeout(self.settings.connect_timeout, socket.connect(addr)).await {
            Ok(Ok(stream)) => Ok(Box::new(stream) as BoxStream),
            Ok(Err(err)) => Err(EgressError::Unreachable(format!("{addr}: {err}"))),
            Err(_) => Err(EgressError::Unreachable(format!("{addr}: timed out"))),
        }
    }
}

impl Connector for DirectConnector {
    fn connect<'a>(
        &'a self,
        target: &'a Target,
        _isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<BoxStream, EgressError>> {
        Box::pin(async move {
            let addrs = match &target.host {
                Host::Ip(ip) => vec![*ip],
                Host::Name(name) => {
                    if super::is_onion(name) {
                        return Err(EgressError::Refused(format!(
                            "{name} is only reachable over Tor"
                        )));
                    }
                    self.resolve(name).await?
                }
            };
            // Policy on every address, before any connection: a name that resolves to an
            // inside or private address (DNS rebinding) is refused as a whole.
            for ip in &addrs {
                self.policy(*ip)?;
            }
            let mut last = EgressError::NotFound(target.to_string());
            for ip in addrs {
                match self.connect_addr(SocketAddr::new(ip, target.port)).await {
                    Ok(stream) => return Ok(stream),
                    Err(err) => last = err,
                }
            }
            Err(last)
        })
    }

    fn name(&self) -> &'static str {
        "direct"
    }
}

/// Addresses nothing may connect to: unspecified, multicast, broadcast, `0/8`.
fn is_never_routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    }
}

/// Loopback, RFC 1918, link-local, CGNAT (RFC 6598), IPv6 ULA and link-local.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local() || is_cgnat(v4),
        IpAddr::V6(v6) => v6.is_loopback() || is_unique_local(v6) || is_unicast_link_local(v6),
    }
}

fn is_cgnat(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    a == 100 && (64..128).contains(&b)
}

fn is_unique_local(v6: Ipv6Addr) -> bool {
    v6.segments()[0] & 0xfe00 == 0xfc00
}

fn is_unicast_link_local(v6: Ipv6Addr) -> bool {
    v6.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(allow_private: bool, resolver: Option<Arc<dyn Upstream>>) -> DirectConnector {
        DirectConnector::new(DirectSettings {
            device: "lo".to_owned(),
            inside: Inside {
                address: "198.51.100.1".parse().unwrap(),
                prefix_len: 24,
            },
            allow_private,
            resolver,
            connect_timeout: Duration::from_secs(2),
        })
    }

    #[test]
    fn policy_refuses_inside_private_and_unroutable() {
        let c = connector(false, None);
        for bad in [
            "198.51.100.20",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:198.51.100.7",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(
                matches!(c.policy(ip), Err(EgressError::Refused(_))),
                "{bad}"
            );
        }
        for good in ["203.0.113.10", "192.0.2.1", "2001:db8::1"] {
            assert_eq!(c.policy(good.parse().unwrap()), Ok(()), "{good}");
        }
        let lenient = connector(true, None);
        assert_eq!(lenient.policy("10.1.2.3".parse().unwrap()), Ok(()));
        assert!(
            lenient.policy("198.51.100.20".parse().unwrap()).is_err(),
            "inside stays refused"
        );
    }

    #[tokio::test]
    async fn names_without_a_resolver_and_onions_are_refused() {
        let c = connector(false, None);
        let iso = Isolation("x".into());
        for host in ["origin.example", "abcdefghijklmnop.onion"] {
            let target = Target {
                host: Host::Name(host.into()),
                port: 80,
            };
            assert!(
                matches!(c.connect(&target, &iso).await, Err(EgressError::Refused(_))),
                "{host}"
            );
        }
        let target = Target {
            host: Host::Ip("127.0.0.1".parse().unwrap()),
            port: 80,
        };
        assert!(matches!(
            c.connect(&target, &iso).await,
            Err(EgressError::Refused(_))
        ));
    }
}
