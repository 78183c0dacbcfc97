//! The `tor` connector: streams through the embedded Tor client, one isolation group per
//! [`Isolation`] key. Refuses while Tor is not bootstrapped or cannot reach its network
//! ([`super::health`]); never falls back to `direct`.

use arti_client::config::BoolOrAuto;
use futures::future::BoxFuture;

use super::Tor;
use crate::egress::{is_onion, BoxStream, Connector, EgressError, Host, Isolation, Target};

/// Opens streams through Tor: names are resolved by the exit, `.onion` names reach onion
/// services.
#[derive(Clone)]
pub struct TorConnector {
    tor: Tor,
}

impl TorConnector {
    /// A connector over `tor`.
    pub fn new(tor: Tor) -> Self {
        TorConnector { tor }
    }
}

impl Connector for TorConnector {
    fn connect<'a>(
        &'a self,
        target: &'a Target,
        isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<BoxStream, EgressError>> {
        Box::pin(async move {
            self.tor.check_ready()?;
            let (mut prefs, group) = self.tor.prefs_in(isolation);
            let client = self.tor.client();
            let stream = match &target.host {
                Host::Name(name) => {
                    let onion = is_onion(name);
                    if onion {
                        prefs.connect_to_onion_services(BoolOrAuto::Explicit(true));
                    }
                    self.tor
                        .attempt(
                            onion,
                            client.connect_with_prefs((name.as_str(), target.port), &prefs),
                        )
                        .await?
                }
                Host::Ip(ip) => {
                    // An address target is what the client asked for; arti's address filter
                    // (local addresses refused unless the arti config allows them) still applies.
                    let addr = arti_client::DangerouslyIntoTorAddr::into_tor_addr_dangerously((
                        *ip,
                        target.port,
                    ))
                    .map_err(|err| EgressError::Refused(err.to_string()))?;
                    self.tor
                        .attempt(false, client.connect_with_prefs(addr, &prefs))
                        .await?
                }
            };
            let guard = self.tor.stream_opened(group);
            Ok(Box::new(super::in_use::Counted::new(stream, guard)) as BoxStream)
        })
    }

    fn name(&self) -> &'static str {
        "tor"
    }
}
