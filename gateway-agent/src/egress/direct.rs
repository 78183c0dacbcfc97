//! The `direct` connector: clear-text TCP out of the outside interface (SO_BINDTODEVICE), only
//! ever an explicit choice. Names are resolved by the uplink's DNS forwarder handed in, never
//! by the host's resolver; without one, names are refused. Streams leave from the uplink
//! address, and none opens while the uplink has none. Never a destination: the inside, the
//! gateway's own uplink address, the uplink subnet and its router (the modem's admin page),
//! multicast and broadcast; private, loopback, link-local and CGNAT space unless allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::TcpSocket;
use tokio::sync::watch;

use super::{
    BoxStream, Connector, EgressError, Host, Isolation, Target, Upstream, UpstreamAnswer,
    UpstreamError,
};
use crate::config::Inside;
use crate::uplink::UplinkStatus;

/// What the `direct` connector needs.
#[derive(Clone)]
pub struct DirectSettings {
    /// The outside device streams are bound to.
    pub device: String,
    /// The inside subnet: never a destination.
    pub inside: Inside,
    /// The uplink's address, subnet and router: streams leave from the address, and none of
    /// the three is ever a destination.
    pub uplink: watch::Receiver<UplinkStatus>,
    /// Allow private, loopback, link-local and CGNAT destinations (other than the uplink's
    /// own subnet, which stays refused).
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
            let uplink = self.settings.uplink.borrow();
            if uplink.router == Some(v4) {
                return Err(EgressError::Refused(format!("{ip} is the uplink's router")));
            }
            if let (Some(address), Some(prefix_len)) = (uplink.address, uplink.prefix_len) {
                if address == v4 {
                    return Err(EgressError::Refused(format!("{ip} is the gateway's own")));
                }
                if same_subnet(address, v4, prefix_len) {
                    return Err(EgressError::Refused(format!(
                        "{ip} is on the uplink's own subnet"
                    )));
                }
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
        // Bound to the uplink address as well as the device: before the uplink has a lease a
        // stream must not leave at all, let alone with another source.
        let Some(source) = self.settings.uplink.borrow().address else {
            return Err(EgressError::NotReady(
                "the uplink has no address yet".to_owned(),
            ));
        };
        let SocketAddr::V4(_) = addr else {
            return Err(EgressError::Unreachable(format!(
                "{addr}: the uplink has no IPv6 address"
            )));
        };
        let socket =
            TcpSocket::new_v4().map_err(|err| EgressError::Failed(format!("socket: {err}")))?;
        socket
            .bind_device(Some(self.settings.device.as_bytes()))
            .map_err(|err| {
                EgressError::NotReady(format!("binding to {}: {err}", self.settings.device))
            })?;
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .map_err(|err| EgressError::NotReady(format!("binding to {source}: {err}")))?;
        match tokio::time::timeout(self.settings.connect_timeout, socket.connect(addr)).await {
            Ok(Ok(stream)) => {
                // Relayed requests are small writes that should not wait for an ACK.
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream) as BoxStream)
            }
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

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
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

    fn uplink(address: Option<&str>) -> watch::Receiver<UplinkStatus> {
        let status = UplinkStatus {
            address: address.map(|a| a.parse().unwrap()),
            prefix_len: address.map(|_| 24),
            router: address.map(|_| "192.0.2.1".parse().unwrap()),
            ..UplinkStatus::default()
        };
        watch::channel(status).1
    }

    fn connector(allow_private: bool, resolver: Option<Arc<dyn Upstream>>) -> DirectConnector {
        with_uplink(allow_private, resolver, Some("192.0.2.50"))
    }

    fn with_uplink(
        allow_private: bool,
        resolver: Option<Arc<dyn Upstream>>,
        address: Option<&str>,
    ) -> DirectConnector {
        DirectConnector::new(DirectSettings {
            device: "lo".to_owned(),
            uplink: uplink(address),
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
            // The uplink: its router, the gateway's own address, anything on its subnet.
            "192.0.2.1",
            "192.0.2.50",
            "192.0.2.77",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(
                matches!(c.policy(ip), Err(EgressError::Refused(_))),
                "{bad}"
            );
        }
        for good in ["203.0.113.10", "198.18.0.1", "2001:db8::1"] {
            assert_eq!(c.policy(good.parse().unwrap()), Ok(()), "{good}");
        }
        let lenient = connector(true, None);
        assert_eq!(lenient.policy("10.1.2.3".parse().unwrap()), Ok(()));
        assert!(
            lenient.policy("198.51.100.20".parse().unwrap()).is_err(),
            "inside stays refused"
        );
        assert!(
            lenient.policy("192.0.2.1".parse().unwrap()).is_err(),
            "the uplink's router stays refused"
        );
    }

    #[tokio::test]
    async fn nothing_leaves_while_the_uplink_has_no_address() {
        let c = with_uplink(false, None, None);
        let target = Target {
            host: Host::Ip("203.0.113.10".parse().unwrap()),
            port: 80,
        };
        let result = c.connect(&target, &Isolation("x".into())).await;
        assert!(
            matches!(result, Err(EgressError::NotReady(_))),
            "{:?}",
            result.err()
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
