//! [`Egress`]: how a service's outbound streams leave the gateway (`<service>.egress`).

/// How a service's outbound streams leave the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Egress {
    /// Through Tor; while Tor is not bootstrapped, streams fail. The default.
    #[default]
    Tor,
    /// Clear text out of the outside interface, names resolved by the uplink's resolvers. Only
    /// ever an explicit choice.
    Direct,
}

/// `tor` or `direct`.
pub(crate) fn parse(text: &str) -> Result<Egress, String> {
    match text {
        "tor" => Ok(Egress::Tor),
        "direct" => Ok(Egress::Direct),
        other => Err(format!(
            "{other:?} is not an egress; expected \"tor\" or \"direct\""
        )),
    }
}
