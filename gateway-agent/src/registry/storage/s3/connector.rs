//! The `storage` connector: the only way the agent reaches the S3 store, and good for nothing
//! else. It is not an [`egress`](crate::egress) connector: the store is the network's own (a
//! NAS on the uplink LAN, say), which `direct` refuses on purpose, so this one reaches exactly
//! one place and no service but the registries' storage holds it.
//!
//! - One destination: the endpoint's scheme, host and port, at one address: the endpoint's own
//!   when it is an IP, else `registry.storage.address`. No name is ever looked up (no DNS
//!   query for the store leaves, over Tor or otherwise), no proxy from the environment is
//!   used, no redirect is followed, and a request for any other authority is refused before a
//!   socket opens.
//! - Bound to the outside device when the agent runs (the store is on the uplink side, never
//!   the inside); `check-config --probe-storage` and the offline CLI leave routing to the host.
//! - `https` endpoints: TLS 1.2 or 1.3 against the configured CA only when one is given (the
//!   system roots otherwise); `http` ones only because the config says `http://`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
};
use object_store::ClientOptions;
use tokio::sync::watch;

use crate::uplink::UplinkStatus;

/// How long connecting to the store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for the uplink's first address (the lease at start).
const UPLINK_WAIT: Duration = Duration::from_secs(30);
/// Idle connections kept to the store (multipart parts go up several at once).
const IDLE_PER_HOST: usize = 8;

/// Where the connector may go, from `registry.storage`.
#[derive(Debug, Clone)]
pub struct StorageTarget {
    /// `http` or `https`.
    pub scheme: String,
    /// The endpoint's host as written (a name or an IP), for TLS and the `Host` header.
    pub host: String,
    pub port: u16,
    /// The one address it connects to.
    pub address: IpAddr,
}

impl StorageTarget {
    /// The target of `endpoint` (`http(s)://host[:port]`), at `address` when the host is a
    /// name. Errors name the key to fix.
    pub fn parse(endpoint: &str, address: Option<IpAddr>) -> Result<StorageTarget, TargetError> {
        let bad_endpoint = |problem: String| TargetError {
            key: "endpoint",
            problem: format!("{endpoint:?} {problem}"),
        };
        let url = reqwest::Url::parse(endpoint).map_err(|e| bad_endpoint(e.to_string()))?;
        let scheme = url.scheme().to_owned();
        if scheme != "http" && scheme != "https" {
            return Err(bad_endpoint("is not an http:// or https:// URL".into()));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| bad_endpoint("has no port".into()))?;
        let (host, own) = match url.host() {
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(url::Host::Ipv6(ip)) => (format!("[{ip}]"), Some(IpAddr::V6(ip))),
            Some(url::Host::Domain(name)) => (name.to_owned(), None),
            None => return Err(bad_endpoint("has no host".into())),
        };
        let bad_address = |problem: String| TargetError {
            key: "address",
            problem,
        };
        let address = match (own, address) {
            (Some(own), None) => own,
            (Some(own), Some(given)) if own == given => own,
            (Some(own), Some(given)) => {
                return Err(bad_address(format!(
                    "{given} is not the endpoint's own address {own}; leave it out when the \
                     endpoint is an IP"
                )))
            }
            (None, Some(given)) => given,
            (None, None) => {
                return Err(bad_address(format!(
                    "missing; the endpoint names a host ({host}) and the agent never looks the \
                     store up: give its IP address"
                )))
            }
        };
        Ok(StorageTarget {
            scheme,
            host,
            port,
            address,
        })
    }

    /// `scheme://host:port`, as request URIs start.
    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Why an endpoint and address make no target: the key under `[registry.storage]` and what
/// is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registry.storage.{key}: {problem}")]
pub struct TargetError {
    pub key: &'static str,
    pub problem: String,
}

/// The uplink the connector leaves from while the agent runs: its macvlan and its status
/// (whose address streams leave from).
#[derive(Clone)]
pub struct UplinkBinding {
    pub device: String,
    pub status: watch::Receiver<UplinkStatus>,
}

impl std::fmt::Debug for UplinkBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkBinding")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Builds the one HTTP client the S3 backend uses.
#[derive(Debug, Clone)]
pub struct StorageConnector {
    target: StorageTarget,
    /// Where streams leave from (`None`: the host's routing decides: the offline CLI).
    uplink: Option<UplinkBinding>,
    /// PEM roots for `https`, instead of the system's.
    ca: Option<Vec<u8>>,
}

impl StorageConnector {
    pub fn new(target: StorageTarget, uplink: Option<UplinkBinding>, ca: Option<Vec<u8>>) -> Self {
        StorageConnector { target, uplink, ca }
    }

    /// A client whose streams leave from `local` (on the uplink device) when given.
    fn client(&self, local: Option<Ipv4Addr>) -> Result<reqwest::Client, String> {
        let target = &self.target;
        let host = target.host.trim_start_matches('[').trim_end_matches(']');
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .https_only(target.scheme == "https")
            // The address is pinned: reqwest asks no resolver for this host.
            .resolve(host, SocketAddr::new(target.address, target.port))
            .user_agent(concat!("gateway-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(uplink) = &self.uplink {
            builder = builder.interface(&uplink.device);
        }
        if let Some(local) = local {
            builder = builder.local_address(IpAddr::V4(local));
        }
        if target.scheme == "https" {
            builder = builder
                .use_rustls_tls()
                .min_tls_version(reqwest::tls::Version::TLS_1_2);
            if let Some(pem) = &self.ca {
                let roots = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| format!("registry.storage.ca: {e}"))?;
                if roots.is_empty() {
                    return Err("registry.storage.ca: no PEM certificate in it".into());
                }
                builder = builder.tls_built_in_root_certs(false);
                for root in roots {
                    builder = builder.add_root_certificate(root);
                }
            }
        }
        builder
            .build()
            .map_err(|e| format!("the storage connector: {e}"))
    }
}

impl HttpConnector for StorageConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        // Built once here, so a bad CA file fails at open, not at the first request.
        let local = self
            .uplink
            .as_ref()
            .and_then(|uplink| uplink.status.borrow().address);
        let client = self
            .client(local)
            .map_err(|message| object_store::Error::Generic {
                store: "S3",
                source: message.into(),
            })?;
        Ok(HttpClient::new(OneDestination {
            connector: self.clone(),
            scheme: self.target.scheme.clone(),
            authority: self.target.authority(),
            current: Mutex::new((local, client)),
        }))
    }
}

/// The client, refusing every request that is not for the store, and opening none while the
/// uplink has no address.
#[derive(Debug)]
struct OneDestination {
    connector: StorageConnector,
    scheme: String,
    authority: String,
    /// The client for the uplink address it was built for (rebuilt when the address changes).
    current: Mutex<(Option<Ipv4Addr>, reqwest::Client)>,
}

/// A request for somewhere other than the store.
#[derive(Debug, thiserror::Error)]
#[error("the storage connector only reaches {0}; refused a request for {1}")]
struct Refused(String, String);

/// The client could not be made (a CA that stopped parsing, say).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unbuildable(String);

/// No uplink address to leave from.
#[derive(Debug, thiserror::Error)]
#[error("the uplink has no address (yet): the S3 store is reached from the uplink only")]
struct NoUplink;

impl OneDestination {
    fn allows(&self, uri: &http::Uri) -> bool {
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("http") => Some(80),
            Some("https") => Some(443),
            _ => None,
        });
        let authority = match (uri.host(), port) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => return false,
        };
        uri.scheme_str() == Some(self.scheme.as_str()) && authority == self.authority
    }

    /// The client for now: leaving from the uplink's current address (waiting a while for
    /// one, as at start before the first lease), or routed by the host without an uplink.
    async fn client(&self) -> Result<reqwest::Client, HttpError> {
        let local = match &self.connector.uplink {
            None => None,
            Some(uplink) => {
                let mut status = uplink.status.clone();
                let waited =
                    tokio::time::timeout(UPLINK_WAIT, status.wait_for(|s| s.address.is_some()))
                        .await;
                match waited {
                    Ok(Ok(status)) => status.address,
                    _ => return Err(HttpError::new(HttpErrorKind::Connect, NoUplink)),
                }
            }
        };
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 != local {
            let client = self
                .connector
                .client(local)
                .map_err(|message| HttpError::new(HttpErrorKind::Connect, Unbuildable(message)))?;
            *current = (local, client);
        }
        Ok(current.1.clone())
    }
}

#[async_trait]
impl HttpService for OneDestination {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        if !self.allows(request.uri()) {
            let asked = request.uri().to_string();
            let allowed = format!("{}://{}", self.scheme, self.authority);
            return Err(HttpError::new(
                HttpErrorKind::Request,
                Refused(allowed, asked),
            ));
        }
        let client = self.client().await?;
        client.call(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_addresses() {
        let ip = StorageTarget::parse("http://192.0.2.2:8333", None).unwrap();
        assert_eq!((ip.host.as_str(), ip.port), ("192.0.2.2", 8333));
        assert_eq!(ip.address, "192.0.2.2".parse::<IpAddr>().unwrap());
        let named =
            StorageTarget::parse("https://nas.home.arpa", Some("192.0.2.2".parse().unwrap()))
                .unwrap();
        assert_eq!((named.scheme.as_str(), named.port), ("https", 443));
        assert_eq!(named.address, "192.0.2.2".parse::<IpAddr>().unwrap());

        let unpinned = StorageTarget::parse("https://nas.home.arpa:8333", None).unwrap_err();
        assert_eq!(unpinned.key, "address");
        assert!(unpinned.problem.starts_with("missing"), "{unpinned}");
        let other =
            StorageTarget::parse("http://192.0.2.2:8333", Some("192.0.2.3".parse().unwrap()))
                .unwrap_err();
        assert_eq!(other.key, "address");
        assert!(
            other.problem.contains("not the endpoint's own address"),
            "{other}"
        );
        let scheme = StorageTarget::parse("ftp://192.0.2.2", None).unwrap_err();
        assert_eq!(scheme.key, "endpoint", "{scheme}");
    }

    #[test]
    fn only_the_store_is_reached() {
        let target = StorageTarget::parse("http://192.0.2.2:8333", None).unwrap();
        let connector = StorageConnector::new(target.clone(), None, None);
        let service = OneDestination {
            scheme: target.scheme.clone(),
            authority: target.authority(),
            current: Mutex::new((None, connector.client(None).unwrap())),
            connector,
        };
        let allows = |uri: &str| service.allows(&uri.parse().unwrap());
        assert!(allows("http://192.0.2.2:8333/bucket/key?x-id=PutObject"));
        assert!(!allows("http://192.0.2.2:8334/bucket/key"), "another port");
        assert!(
            !allows("https://192.0.2.2:8333/bucket/key"),
            "another scheme"
        );
        assert!(
            !allows("http://203.0.113.10:8333/bucket/key"),
            "another host"
        );
        assert!(!allows("http://192.0.2.2/bucket"), "the default port is 80");
        assert!(!allows("/bucket/key"), "no authority");
    }

    #[tokio::test]
    async fn a_request_elsewhere_fails_before_connecting() {
        let target = StorageTarget::parse("http://127.0.0.1:9", None).unwrap();
        let client = StorageConnector::new(target, None, None)
            .connect(&ClientOptions::new())
            .unwrap();
        let request = http::Request::builder()
            .uri("http://203.0.113.10:80/")
            .body(object_store::client::HttpRequestBody::empty())
            .unwrap();
        let error = client.execute(request).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("only reaches http://127.0.0.1:9"),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_opens_while_the_uplink_has_no_address() {
        let (tx, rx) = watch::channel(UplinkStatus::default());
        let uplink = UplinkBinding {
            device: "lo".into(),
            status: rx,
        };
        let target = StorageTarget::parse("http://127.0.0.1:9", None).unwrap();
        let client = StorageConnector::new(target, Some(uplink), None)
            .connect(&ClientOptions::new())
            .unwrap();
        let request = || {
            http::Request::builder()
                .uri("http://127.0.0.1:9/bucket")
                .body(object_store::client::HttpRequestBody::empty())
                .unwrap()
        };
        let error = client.execute(request()).await.unwrap_err();
        assert!(error.to_string().contains("no address"), "{error}");
        // With an address it connects (port 9 refuses: a connect error, not the wait).
        tx.send_modify(|s| s.address = Some(Ipv4Addr::LOCALHOST));
        let error = client.execute(request()).await.unwrap_err();
        assert!(!error.to_string().contains("no address"), "{error}");
    }
}
