//! Messages on the control socket.

use serde::{Deserialize, Serialize};

use crate::dataplane::DataplaneStatus;

/// A request line.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum Request {
    /// The agent's status.
    Status,
    /// The DHCP server's leases.
    Leases,
}

/// A response line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(Box<AgentStatus>),
    /// Answer to [`Request::Leases`]. (A struct variant: an internally tagged enum cannot
    /// carry a bare sequence.)
    Leases {
        /// The leases.
        leases: Vec<crate::dhcp::LeaseRecord>,
    },
    /// The request could not be understood or served.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// What `gateway-agent status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Agent version.
    pub version: String,
    /// Process id.
    pub pid: u32,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The config file the agent runs with.
    pub config: String,
    /// Outside interface.
    pub outside_interface: String,
    /// Inside interface.
    pub inside_interface: String,
    /// The gateway's inside address, CIDR.
    pub inside_address: String,
    /// Attached programs.
    pub dataplane: DataplaneStatus,
    /// The DNS server's counters, if it runs.
    #[serde(default)]
    pub dns: Option<crate::dns::DnsStats>,
    /// The DHCP server's counters, if it runs.
    #[serde(default)]
    pub dhcp: Option<crate::dhcp::DhcpStats>,
    /// Tor bootstrap and isolation groups, if Tor is enabled.
    #[serde(default)]
    pub tor: Option<crate::tor::TorStatus>,
    /// The SOCKS server's counters, if it runs.
    #[serde(default)]
    pub socks: Option<crate::socks::SocksStats>,
    /// The HTTP proxy's counters, if it runs.
    #[serde(default)]
    pub http_proxy: Option<crate::http_proxy::HttpProxyStats>,
    /// The uplink: macvlan, lease, state.
    #[serde(default)]
    pub uplink: Option<crate::uplink::UplinkStatus>,
}

/// Longest request line accepted; anything longer is a broken or hostile client.
pub const MAX_REQUEST_BYTES: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_response_round_trips() {
        let lease = crate::dhcp::LeaseRecord {
            address: std::net::Ipv4Addr::new(198, 51, 100, 100),
            mac: "02:00:00:00:00:01".into(),
            client_id: Some("01020000000001".into()),
            hostname: Some("c1".into()),
            expires_unix: 1,
            state: "bound".into(),
        };
        let responses = [
            Response::Leases {
                leases: vec![lease],
            },
            Response::Error {
                message: "no".into(),
            },
        ];
        for response in responses {
            let text = serde_json::to_string(&response).unwrap_or_else(|e| panic!("{e}"));
            let back: Response = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                serde_json::to_string(&back).unwrap_or_default(),
                text,
                "{text}"
            );
        }
        for request in [Request::Status, Request::Leases] {
            let text = serde_json::to_string(&request).unwrap_or_default();
            assert_eq!(serde_json::from_str::<Request>(&text).ok(), Some(request));
        }
    }
}
