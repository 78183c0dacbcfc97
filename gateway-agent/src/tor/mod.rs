//! The embedded Tor client (arti): one [`Tor`] handle per agent, bootstrapped in the
//! background with retries, shared by the SOCKS server, the DNS forwarder ([`TorUpstream`])
//! and the `tor` egress connector ([`TorConnector`]).
//!
//! Its relay connections are ordinary sockets: they leave by the default route, which is the
//! outside interface's (the inside never has one). Until it has bootstrapped it refuses every
//! stream and lookup ([`EgressError::NotReady`]); nothing falls back to a direct connection.

pub mod config;
mod connector;
mod dns_upstream;
pub mod health;
pub mod in_use;
mod isolation;
pub(crate) mod service;

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arti_client::config::TorClientConfigBuilder;
use arti_client::{BootstrapBehavior, ErrorKind, HasKind, StreamPrefs, TorClient};
use futures::future::BoxFuture;
use futures::StreamExt;
use serde::Serialize;
use tokio::task::JoinHandle;
use tor_rtcompat::PreferredRuntime;

use crate::egress::{EgressError, Isolation};
pub use connector::TorConnector;
pub use dns_upstream::TorUpstream;
pub use isolation::{IsolationGroups, MAX_ISOLATION_GROUPS};
pub use service::SERVICE;

/// The first pause after a failed bootstrap; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest pause between bootstrap attempts.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// A stream or lookup that takes longer fails, and counts as Tor being unreachable
/// ([`health`]): arti's own circuit retries last a minute, which a client would spend
/// hanging. Onion services are slower to reach and get [`ONION_TIMEOUT`].
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The same for a stream to an onion service; running out says nothing about the network.
const ONION_TIMEOUT: Duration = Duration::from_secs(90);

/// What the Tor client needs from the configuration.
#[derive(Debug, Clone)]
pub struct TorSettings {
    /// Where arti keeps its state (`state/`: guards, keys) and cache (`cache/`: directory).
    /// Created 0700 if missing; arti refuses directories others may write.
    pub state_dir: PathBuf,
    /// An arti TOML file merged into the defaults (a private network's authorities and
    /// fallbacks, path rules, address filter). Its `storage` directories are overridden by
    /// `state_dir`.
    pub arti_config: Option<PathBuf>,
    /// When given, bootstrap waits until it reads `true` (the uplink has an address): an
    /// attempt without a route fails and arti's back-off then delays Tor long after the
    /// uplink comes up.
    pub network_up: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Bootstrap progress, for `status` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct TorStatus {
    /// Whether the client can open streams now.
    pub bootstrapped: bool,
    /// Rough progress, 0–100.
    pub percent: u8,
    /// arti's own description of where it is (or what blocks it).
    pub progress: String,
    /// The last bootstrap error, cleared by success.
    pub last_error: Option<String>,
    /// Bootstrap attempts so far.
    pub attempts: u64,
    /// Distinct isolation groups (circuits that may not be shared) currently tracked.
    pub isolation_groups: u64,
    /// Isolation groups created since start.
    pub isolation_groups_created: u64,
    /// Streams open through Tor now.
    pub streams_open: u64,
    /// Isolation groups with an open stream: each holds at least one circuit.
    pub circuits_in_use: u64,
    /// Whether the last attempts reached the Tor network ([`health`]); while not, streams
    /// and lookups are refused at once, with a probe every few seconds.
    pub reachable: bool,
    /// For how long it has been unreachable, in seconds.
    pub unreachable_secs: Option<u64>,
}

/// Name lookups through Tor exits, as the SOCKS RESOLVE extensions and the DNS forwarder
/// need them. A trait so that both can be tested without a Tor network.
pub trait Resolve: Send + Sync {
    /// Addresses for `name` (an exit resolves it).
    fn resolve<'a>(
        &'a self,
        name: &'a str,
        isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<Vec<IpAddr>, EgressError>>;

    /// Names for `addr` (PTR at an exit).
    fn resolve_ptr<'a>(
        &'a self,
        addr: IpAddr,
        isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<Vec<String>, EgressError>>;
}

/// The running Tor client. Cheap to clone; the background tasks stop with [`Tor::stop`] or
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Tor {
    inner: Arc<Inner>,
}

struct Inner {
    client: Arc<TorClient<PreferredRuntime>>,
    status: Mutex<TorStatus>,
    groups: Mutex<IsolationGroups>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    health: health::Health,
    in_use: Arc<in_use::InUse>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Tor {
    /// Creates the client without bootstrapping and starts bootstrapping in the background,
    /// retrying with back-off while the network is unreachable. Must run inside the tokio
    /// runtime. Fails only on local problems: the config file, the state directory.
    pub fn start(settings: TorSettings) -> Result<Tor> {
        // arti's rustls backend needs a process-wide provider; another service may have
        // installed one already, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = client_config(&settings)?;
        let client = TorClient::builder()
            .config(config)
            .bootstrap_behavior(BootstrapBehavior::Manual)
            .create_unbootstrapped()
            .context("creating the Tor client")?;
        let inner = Arc::new(Inner {
            client,
            status: Mutex::new(TorStatus::default()),
            groups: Mutex::new(IsolationGroups::new(MAX_ISOLATION_GROUPS)),
            tasks: Mutex::new(Vec::new()),
            health: health::Health::default(),
            in_use: Arc::default(),
        });
        let weak = Arc::downgrade(&inner);
        let events = inner.client.bootstrap_events();
        let watcher = tokio::spawn(watch_progress(weak.clone(), events));
        let bootstrapper = tokio::spawn(bootstrap_loop(weak, settings.network_up.clone()));
        lock(&inner.tasks).extend([watcher, bootstrapper]);
        tracing::info!(state_dir = %settings.state_dir.display(), "Tor client started; bootstrapping");
        Ok(Tor { inner })
    }

    /// Bootstrap progress and isolation counters now.
    pub fn status(&self) -> TorStatus {
        let mut status = lock(&self.inner.status).clone();
        status.bootstrapped = self.is_ready();
        let groups = lock(&self.inner.groups);
        status.isolation_groups = groups.len() as u64;
        status.isolation_groups_created = groups.created();
        (status.streams_open, status.circuits_in_use) = self.inner.in_use.counts();
        let since = self.inner.health.unreachable_since();
        status.reachable = since.is_none();
        status.unreachable_secs = since.map(|at| at.elapsed().as_secs());
        status
    }

    /// Whether streams and lookups may be attempted now.
    pub fn is_ready(&self) -> bool {
        lock(&self.inner.status).bootstrapped
            && self.inner.client.bootstrap_status().ready_for_traffic()
    }

    /// The isolation group number `isolation` maps to (for logs and tests).
    pub fn isolation_group(&self, isolation: &Isolation) -> u64 {
        lock(&self.inner.groups).get(isolation).1
    }

    /// Stream preferences for a stream or lookup under `isolation`.
    pub(crate) fn prefs(&self, isolation: &Isolation) -> StreamPrefs {
        self.prefs_in(isolation).0
    }

    /// [`Tor::prefs`] and the group number.
    pub(crate) fn prefs_in(&self, isolation: &Isolation) -> (StreamPrefs, u64) {
        let (token, group, fresh) = {
            let mut groups = lock(&self.inner.groups);
            let fresh = !groups.contains(isolation);
            let (token, group) = groups.get(isolation);
            (token, group, fresh)
        };
        if fresh {
            // The key names a client address; DEBUG only, like the per-query logs.
            tracing::debug!(key = %isolation.0, group, "new Tor isolation group");
        }
        let mut prefs = StreamPrefs::new();
        prefs.set_isolation(token);
        (prefs, group)
    }

    /// Counts a stream of `group` as open until the guard drops.
    pub(crate) fn stream_opened(&self, group: u64) -> in_use::StreamGuard {
        self.inner.in_use.open(group)
    }

    /// The client, for the egress connector.
    pub(crate) fn client(&self) -> &TorClient<PreferredRuntime> {
        &self.inner.client
    }

    /// Refuses unless bootstrapped.
    pub(crate) fn check_ready(&self) -> Result<(), EgressError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(EgressError::NotReady("Tor is not bootstrapped".to_owned()))
        }
    }

    /// Runs one stream or lookup attempt: refused at once while Tor is unreachable (except
    /// the probe), bounded by [`ATTEMPT_TIMEOUT`] (`onion`: [`ONION_TIMEOUT`]), its outcome
    /// noted.
    pub(crate) async fn attempt<T>(
        &self,
        onion: bool,
        attempt: impl Future<Output = Result<T, arti_client::Error>>,
    ) -> Result<T, EgressError> {
        self.check_ready()?;
        if let health::Gate::Closed(since) = self.inner.health.gate(Instant::now()) {
            return Err(EgressError::NotReady(format!(
                "Tor cannot reach its network (for {} s); trying again every {} s",
                since.elapsed().as_secs(),
                health::PROBE_INTERVAL.as_secs()
            )));
        }
        let limit = if onion {
            ONION_TIMEOUT
        } else {
            ATTEMPT_TIMEOUT
        };
        let (result, outcome) = match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(value)) => (Ok(value), health::Outcome::Carried),
            Ok(Err(err)) => (
                Err(egress_error(&err)),
                health::Outcome::of_error(err.kind()),
            ),
            Err(_) => (
                Err(EgressError::Unreachable(format!(
                    "Tor did not get through in {} s",
                    limit.as_secs()
                ))),
                if onion {
                    health::Outcome::Unknown
                } else {
                    health::Outcome::Unreachable
                },
            ),
        };
        if self.inner.health.record(outcome, Instant::now()) {
            match outcome {
                health::Outcome::Carried => tracing::info!("Tor reaches its network again"),
                _ => tracing::warn!(
                    "Tor cannot reach its network: streams and lookups are refused at once, \
                     with a probe every {} s",
                    health::PROBE_INTERVAL.as_secs()
                ),
            }
        }
        result
    }

    /// Stops the background tasks; clones that still exist refuse from then on.
    pub fn stop(&self) {
        for task in lock(&self.inner.tasks).drain(..) {
            task.abort();
        }
        lock(&self.inner.status).bootstrapped = false;
    }
}

impl Resolve for Tor {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
        isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<Vec<IpAddr>, EgressError>> {
        Box::pin(async move {
            self.check_ready()?;
            let prefs = self.prefs(isolation);
            self.attempt(false, self.client().resolve_with_prefs(name, &prefs))
                .await
        })
    }

    fn resolve_ptr<'a>(
        &'a self,
        addr: IpAddr,
        isolation: &'a Isolation,
    ) -> BoxFuture<'a, Result<Vec<String>, EgressError>> {
        Box::pin(async move {
            self.check_ready()?;
            let prefs = self.prefs(isolation);
            self.attempt(false, self.client().resolve_ptr_with_prefs(addr, &prefs))
                .await
        })
    }
}

/// Maps an arti error to what the inside client is told.
fn egress_error(err: &arti_client::Error) -> EgressError {
    let text = err.to_string();
    match err.kind() {
        // A name that cannot exist (too long, a malformed .onion) is as unreachable as one
        // that does not: 04, not a policy refusal.
        ErrorKind::RemoteHostNotFound
        | ErrorKind::OnionServiceNotFound
        | ErrorKind::InvalidStreamTarget
        | ErrorKind::OnionServiceAddressInvalid => EgressError::NotFound(text),
        ErrorKind::RemoteConnectionRefused
        | ErrorKind::RemoteNetworkFailed
        | ErrorKind::RemoteNetworkTimeout
        | ErrorKind::ExitTimeout
        | ErrorKind::RemoteStreamClosed
        | ErrorKind::RemoteStreamReset
        | ErrorKind::RemoteHostResolutionFailed
        | ErrorKind::OnionServiceNotRunning
        | ErrorKind::OnionServiceConnectionFailed => EgressError::Unreachable(text),
        ErrorKind::ExitPolicyRejected
        | ErrorKind::ForbiddenStreamTarget
        | ErrorKind::OnionServiceMissingClientAuth
        | ErrorKind::OnionServiceWrongClientAuth => EgressError::Refused(text),
        ErrorKind::BootstrapRequired
        | ErrorKind::TorAccessFailed
        | ErrorKind::TorNetworkTimeout
        | ErrorKind::LocalNetworkError
        | ErrorKind::TorDirectoryUnusable
        | ErrorKind::DirectoryExpired
        | ErrorKind::NoPath
        | ErrorKind::NoExit
        | ErrorKind::ClockSkew => EgressError::NotReady(text),
        _ => EgressError::Failed(text),
    }
}

/// arti's config: the optional TOML file, then our state and cache directories.
fn client_config(settings: &TorSettings) -> Result<arti_client::TorClientConfig> {
    let mut builder = match &settings.arti_config {
        None => TorClientConfigBuilder::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the arti config {}", path.display()))?;
            toml::from_str::<TorClientConfigBuilder>(&text)
                .with_context(|| format!("parsing the arti config {}", path.display()))?
        }
    };
    let state = private_dir(&settings.state_dir.join("state"))?;
    let cache = private_dir(&settings.state_dir.join("cache"))?;
    builder
        .storage()
        .state_dir(arti_client::config::CfgPath::new_literal(state))
        .cache_dir(arti_client::config::CfgPath::new_literal(cache));
    builder.build().context("building the Tor client config")
}

/// Creates `dir` (and its parents) and makes it 0700, as arti requires of its storage.
fn private_dir(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    Ok(dir.to_owned())
}

/// Bootstraps until it succeeds. arti keeps the directory fresh by itself afterwards and
/// rebuilds circuits when the network comes back, so one success is enough.
async fn bootstrap_loop(
    inner: std::sync::Weak<Inner>,
    mut network_up: Option<tokio::sync::watch::Receiver<bool>>,
) {
    let mut pause = FIRST_RETRY;
    loop {
        if let Some(up) = network_up.as_mut() {
            // An error means the sender is gone: go ahead rather than wait forever.
            if up.wait_for(|up| *up).await.is_err() {
                network_up = None;
            }
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        lock(&strong.status).attempts += 1;
        let client = strong.client.clone();
        drop(strong);
        let outcome = client.bootstrap().await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        match outcome {
            Ok(()) => {
                let mut status = lock(&strong.status);
                status.bootstrapped = true;
                status.last_error = None;
                tracing::info!(attempts = status.attempts, "Tor bootstrapped");
                return;
            }
            Err(err) => {
                let text = format!("{err}");
                tracing::warn!(error = %text, retry_in = ?pause, "Tor bootstrap failed; retrying");
                lock(&strong.status).last_error = Some(text);
            }
        }
        drop(strong);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY);
    }
}

/// Mirrors arti's bootstrap events into the status, logging each 10 % step and every change
/// of readiness.
async fn watch_progress(
    inner: std::sync::Weak<Inner>,
    mut events: arti_client::status::BootstrapEvents,
) {
    let mut logged_step = None;
    let mut was_ready = false;
    while let Some(event) = events.next().await {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let percent = (event.as_frac().clamp(0.0, 1.0) * 100.0).round() as u8;
        let ready = event.ready_for_traffic();
        let progress = event.to_string();
        {
            let mut status = lock(&strong.status);
            status.percent = percent;
            status.progress = progress.clone();
        }
        let step = percent / 10;
        if logged_step != Some(step) || ready != was_ready {
            match (ready, was_ready) {
                (false, true) => {
                    tracing::warn!(percent, progress = %progress, "Tor not ready for traffic")
                }
                _ => tracing::info!(percent, ready, progress = %progress, "Tor bootstrap progress"),
            }
            logged_step = Some(step);
            was_ready = ready;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;
