//! Messages on the control socket.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

/// A request line.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum Request {
    /// The agent's status.
    Status,
    /// An operation a running service declares (`leases` of `dhcp`, say).
    Operate {
        /// The service's name in the list.
        service: String,
        /// One of the operations it declares.
        operation: String,
        /// The operation's arguments.
        #[serde(default)]
        args: serde_json::Value,
    },
}

/// A response line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(Box<AgentStatus>),
    /// Answer to [`Request::Operate`]. (A struct variant: an internally tagged enum cannot
    /// carry a bare value.)
    Operated {
        /// What the operation returned.
        value: serde_json::Value,
    },
    /// The request could not be understood or served.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// What `gateway-agent status` shows: the agent itself, then each running service's snapshot
/// under its name (`dns`, `dhcp`, `tor`, …) and its summary lines.
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
    /// The lines `gateway-agent status` prints, in the service list's order.
    #[serde(default)]
    pub summary: Vec<SummaryLine>,
    /// Each running service's status by name; a service that does not run is absent.
    #[serde(flatten)]
    pub services: BTreeMap<String, serde_json::Value>,
}

/// One line of a service's summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SummaryLine {
    /// The service's name.
    pub service: String,
    /// The line.
    pub line: String,
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
            Response::Operated {
                value: serde_json::to_value(vec![lease]).unwrap_or_default(),
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
        let leases = Request::Operate {
            service: "dhcp".into(),
            operation: "leases".into(),
            args: serde_json::Value::Null,
        };
        for request in [Request::Status, leases] {
            let text = serde_json::to_string(&request).unwrap_or_default();
            assert_eq!(serde_json::from_str::<Request>(&text).ok(), Some(request));
        }
    }
}
