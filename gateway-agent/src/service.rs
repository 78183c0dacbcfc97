//! The lifecycle every service implements, and the handles they share.
//!
//! A service is one entry in the agent's list ([`crate::agent::SERVICES`]): a name and a start
//! function that reads the service's own config table and the [`Handles`] earlier entries left
//! (the uplink's device and status, the dataplane's pins, the Tor client, the local zone, …),
//! and returns a [`Running`] service, or nothing when the config leaves it off. A running
//! service shows itself through a [`ServiceView`] (its status under its name in `status --json`,
//! its lines in `gateway-agent status`, its metric families, the control-socket operations it
//! declares) and stops within [`STOP_BOUND`]. The agent starts the list in order and stops it in
//! reverse; status, metrics and the CLI iterate the views and name no service.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::sync::watch;

use crate::config::Config;
use crate::control::protocol::{AgentStatus, SummaryLine};
use crate::dataplane::{lease_maps::LeaseMaps, pins::PinLayout, steering::SteerSlots};
use crate::dns::answered::AnsweredNames;
use crate::dns::{LocalZone, UplinkUpstream};
use crate::egress::{Connector, Upstream};
use crate::metrics::Exposition;
use crate::tor::{Tor, TorConnector};
use crate::uplink::{follow, UplinkStatus};

/// How long one service may take to stop before the agent gives up on it and goes on with the
/// next (whatever it still holds is dropped).
pub const STOP_BOUND: Duration = Duration::from_secs(10);

/// A boxed future, as the list's function pointers return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Starts a service from the config and the handles; `None`: the config leaves it off.
pub type StartFn = for<'a> fn(&'a mut Handles) -> BoxFuture<'a, Result<Option<Running>>>;

/// One entry of the service list.
#[derive(Clone, Copy)]
pub struct Entry {
    /// Its name: the key of its status, the `service` label of its metrics, the control
    /// socket's address for its operations.
    pub name: &'static str,
    /// How it starts.
    pub start: StartFn,
}

/// What a running service shows, read while it runs (by the control socket, the metrics
/// endpoint) and after it has moved into the agent's list.
pub trait ServiceView: Send + Sync {
    /// The entry's name.
    fn name(&self) -> &'static str;
    /// Its status snapshot, shown under its name in `gateway-agent status --json`.
    fn status(&self) -> Value;
    /// Its lines in `gateway-agent status` (none: nothing worth a line).
    fn summary(&self) -> Vec<String>;
    /// Its metric families on the metrics page (aggregates only, never a client).
    fn metrics(&self, out: &mut Exposition);
    /// The control-socket operations it answers (CLI verbs on state the agent holds open).
    fn operations(&self) -> &'static [&'static str] {
        &[]
    }
    /// Runs `operation` (one of [`ServiceView::operations`]) with `args`.
    fn operate(&self, operation: &str, args: Value) -> BoxFuture<'_, Result<Value>> {
        let _ = args;
        let message = format!("the {} service has no operation {operation:?}", self.name());
        Box::pin(async move { Err(anyhow::anyhow!(message)) })
    }
}

/// The usual view: a snapshot read on demand, shown as JSON, summarised and rendered by two
/// plain functions of it. Services whose view is nothing more use this instead of their own
/// [`ServiceView`] implementation.
pub struct SnapshotView<S> {
    name: &'static str,
    read: Box<dyn Fn() -> S + Send + Sync>,
    summary: fn(&S) -> Vec<String>,
    metrics: fn(&mut Exposition, &S),
    operations: &'static [&'static str],
    operate: Option<OperateFn>,
}

/// Runs one control-socket operation of a [`SnapshotView`]: its name and arguments.
pub type OperateFn = Box<dyn Fn(&str, Value) -> BoxFuture<'static, Result<Value>> + Send + Sync>;

impl<S> SnapshotView<S> {
    /// A view called `name` of what `read` returns.
    pub fn new(
        name: &'static str,
        read: impl Fn() -> S + Send + Sync + 'static,
        summary: fn(&S) -> Vec<String>,
        metrics: fn(&mut Exposition, &S),
    ) -> Self {
        SnapshotView {
            name,
            read: Box::new(read),
            summary,
            metrics,
            operations: &[],
            operate: None,
        }
    }

    /// The same view, answering `operations` with `operate` (only names from the list reach
    /// it).
    pub fn with_operations(
        mut self,
        operations: &'static [&'static str],
        operate: impl Fn(&str, Value) -> BoxFuture<'static, Result<Value>> + Send + Sync + 'static,
    ) -> Self {
        self.operations = operations;
        self.operate = Some(Box::new(operate));
        self
    }

    /// The snapshot now.
    pub fn read(&self) -> S {
        (self.read)()
    }
}

impl<S: serde::Serialize> ServiceView for SnapshotView<S> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn status(&self) -> Value {
        to_json(&self.read())
    }
    fn summary(&self) -> Vec<String> {
        (self.summary)(&self.read())
    }
    fn metrics(&self, out: &mut Exposition) {
        (self.metrics)(out, &self.read())
    }
    fn operations(&self) -> &'static [&'static str] {
        self.operations
    }
    fn operate(&self, operation: &str, args: Value) -> BoxFuture<'_, Result<Value>> {
        match &self.operate {
            Some(operate) if self.operations.contains(&operation) => operate(operation, args),
            _ => {
                let message = format!("the {} service has no operation {operation:?}", self.name);
                Box::pin(async move { Err(anyhow::anyhow!(message)) })
            }
        }
    }
}

type StopFn = Box<dyn FnOnce() -> BoxFuture<'static, Result<()>> + Send>;

/// A started service: its view and how to stop it.
pub struct Running {
    view: Arc<dyn ServiceView>,
    stop: StopFn,
    last: bool,
}

impl Running {
    /// A running service shown by `view`, stopped by `stop`.
    pub fn new<F>(view: Arc<dyn ServiceView>, stop: impl FnOnce() -> F + Send + 'static) -> Self
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        Running {
            view,
            stop: Box::new(move || Box::pin(stop())),
            last: false,
        }
    }

    /// Stopped after every other service, whatever its place in the list: what keeps the
    /// inside closed (the dataplane) goes last, so the uplink's DHCPRELEASE still leaves
    /// through the egress guard.
    pub fn stopped_last(mut self) -> Self {
        self.last = true;
        self
    }

    /// Whether [`Running::stopped_last`] marked it.
    pub fn is_stopped_last(&self) -> bool {
        self.last
    }

    /// A running service whose stop cannot fail (most servers: they log what goes wrong).
    pub fn stopped_by<F>(
        view: Arc<dyn ServiceView>,
        stop: impl FnOnce() -> F + Send + 'static,
    ) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Running::new(view, move || async move {
            stop().await;
            Ok(())
        })
    }

    /// What it shows.
    pub fn view(&self) -> Arc<dyn ServiceView> {
        self.view.clone()
    }

    /// Stops it, waiting at most `bound`; past that it is dropped, which aborts its tasks.
    pub async fn stop_within(self, bound: Duration) -> Result<()> {
        let name = self.view.name();
        match tokio::time::timeout(bound, (self.stop)()).await {
            Ok(result) => result.with_context(|| format!("stopping {name}")),
            Err(_) => {
                tracing::warn!("{name} did not stop within {bound:?}; dropped");
                Ok(())
            }
        }
    }
}

/// The uplink as later services need it.
#[derive(Clone)]
pub struct UplinkHandles {
    /// The macvlan the agent's own traffic leaves from.
    pub device: String,
    /// The resolvers of the current uplink lease.
    pub dns_servers: watch::Receiver<Vec<Ipv4Addr>>,
    /// Its status (address, lease, state).
    pub status: watch::Receiver<UplinkStatus>,
}

/// The dataplane as later services need it.
pub struct DataplaneHandles {
    /// Where its maps are pinned.
    pub pins: PinLayout,
    /// The lease maps, for the DHCP server (taken once).
    pub lease_maps: Option<LeaseMaps>,
    /// The steering slots, for the transparent listener.
    pub steer: SteerSlots,
}

/// What services share, filled in as the list starts: each entry may use what the entries
/// before it left.
pub struct Handles {
    /// The whole config (each service reads its own table).
    pub cfg: Arc<Config>,
    /// The file it came from, for `status`.
    pub config_path: PathBuf,
    /// When the agent started.
    pub started: Instant,
    /// The names in the service list, running or not (for `gateway_service_running`).
    pub known: Vec<&'static str>,
    /// The views of the services started so far, in start order.
    pub views: Vec<Arc<dyn ServiceView>>,
    /// The uplink, once started.
    pub uplink: Option<UplinkHandles>,
    /// The dataplane, once started.
    pub dataplane: Option<DataplaneHandles>,
    /// The Tor client, when enabled.
    pub tor: Option<Tor>,
    zone: Option<Arc<LocalZone>>,
    answered: Option<Arc<AnsweredNames>>,
}

impl Handles {
    /// What the registries' storage connector leaves from: the uplink, once started.
    pub fn storage_uplink(&self) -> Option<crate::registry::storage::s3::UplinkBinding> {
        self.uplink
            .as_ref()
            .map(|uplink| crate::registry::storage::s3::UplinkBinding {
                device: uplink.device.clone(),
                status: uplink.status.clone(),
            })
    }

    /// Handles for a start of `cfg`: nothing running yet.
    pub fn new(cfg: Arc<Config>, config_path: PathBuf, known: Vec<&'static str>) -> Self {
        Handles {
            cfg,
            config_path,
            started: Instant::now(),
            known,
            views: Vec::new(),
            uplink: None,
            dataplane: None,
            tor: None,
            zone: None,
            answered: None,
        }
    }

    /// The uplink, or an error naming `who` needs it.
    pub fn uplink(&self, who: &str) -> Result<&UplinkHandles> {
        self.uplink
            .as_ref()
            .with_context(|| format!("{who} needs the uplink, which starts before it"))
    }

    /// The dataplane, or an error naming `who` needs it.
    pub fn dataplane(&mut self, who: &str) -> Result<&mut DataplaneHandles> {
        self.dataplane
            .as_mut()
            .with_context(|| format!("{who} needs the dataplane, which starts before it"))
    }

    /// The local DNS zone (leases, reservations, service names), built on first use: DNS
    /// answers from it and DHCP fills it.
    pub fn zone(&mut self) -> Result<Arc<LocalZone>> {
        if let Some(zone) = &self.zone {
            return Ok(zone.clone());
        }
        let cfg = &self.cfg;
        let zone = Arc::new(
            LocalZone::new(
                &cfg.dns.zone,
                cfg.inside,
                cfg.inside.address,
                &crate::dns::SERVICE_NAMES[..],
                &cfg.dhcp.reservations,
                cfg.dns.local_ttl,
            )
            .context("building the local DNS zone")?,
        );
        self.zone = Some(zone.clone());
        Ok(zone)
    }

    /// What the DNS server told each client (onion virtual addresses, recent answers), shared
    /// with the transparent listener, which connects to those addresses by name.
    pub fn answered(&mut self) -> Arc<AnsweredNames> {
        let range = self.cfg.dns.onion_virtual_range;
        self.answered
            .get_or_insert_with(|| Arc::new(AnsweredNames::new(range)))
            .clone()
    }

    /// The state directory, created (owner only) if missing.
    pub fn state_dir(&self) -> Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = self.cfg.state.dir.clone();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| {
                format!("creating the state directory {} (state.dir)", dir.display())
            })?;
        Ok(dir)
    }

    /// A connector through Tor, when Tor is enabled (it refuses until bootstrapped).
    pub fn tor_connector(&self) -> Option<Arc<dyn Connector>> {
        self.tor
            .as_ref()
            .map(|tor| Arc::new(TorConnector::new(tor.clone())) as Arc<dyn Connector>)
    }

    /// The uplink's resolvers (`dns.upstream_servers`, else the ones the uplink lease names),
    /// asked from the uplink address through the outside interface.
    pub fn uplink_resolver(&self, who: &str) -> Result<Arc<dyn Upstream>> {
        let uplink = self.uplink(who)?;
        let servers = if self.cfg.dns.upstream_servers.is_empty() {
            follow::lease_servers(uplink.dns_servers.clone())
        } else {
            // A fixed list never changes; the receiver keeps the value after the sender goes.
            watch::channel(self.cfg.dns.upstream_servers.clone()).1
        };
        Ok(Arc::new(
            UplinkUpstream::new(servers, Some(uplink.device.clone()), UPLINK_DNS_TIMEOUT)
                .with_source(follow::address(uplink.status.clone())),
        ))
    }

    /// The status source for the control socket and the metrics endpoint: the services
    /// started so far.
    pub fn status_source(&self) -> Arc<StatusSource> {
        let cfg = &self.cfg;
        Arc::new(StatusSource {
            base: AgentStatus {
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                uptime_secs: 0,
                config: self.config_path.display().to_string(),
                outside_interface: cfg.interfaces.outside.clone(),
                inside_interface: cfg.interfaces.inside.clone(),
                inside_address: cfg.inside.cidr(),
                summary: Vec::new(),
                services: Default::default(),
            },
            started: self.started,
            known: self.known.clone(),
            views: self.views.clone(),
        })
    }
}

/// How long the uplink forwarder waits for an upstream answer.
const UPLINK_DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// The agent's status, assembled from the running services' views on every read: one source
/// for `status` and the metrics page, no second set of counters.
pub struct StatusSource {
    base: AgentStatus,
    started: Instant,
    known: Vec<&'static str>,
    views: Vec<Arc<dyn ServiceView>>,
}

impl StatusSource {
    /// A source over `views` (for tests and tools that assemble their own).
    pub fn new(
        base: AgentStatus,
        known: Vec<&'static str>,
        views: Vec<Arc<dyn ServiceView>>,
    ) -> Self {
        StatusSource {
            base,
            started: Instant::now(),
            known,
            views,
        }
    }

    /// The same source over other `views` (the metrics endpoint adds its own).
    pub fn with_views(self: Arc<Self>, views: Vec<Arc<dyn ServiceView>>) -> Arc<Self> {
        Arc::new(StatusSource {
            base: self.base.clone(),
            started: self.started,
            known: self.known.clone(),
            views,
        })
    }

    /// The status now.
    pub fn status(&self) -> AgentStatus {
        let mut status = self.base.clone();
        // The base's uptime is where the clock started from (0 for the agent itself).
        status.uptime_secs = self.base.uptime_secs + self.started.elapsed().as_secs();
        for view in &self.views {
            status
                .services
                .insert(view.name().to_owned(), view.status());
            status
                .summary
                .extend(view.summary().into_iter().map(|line| SummaryLine {
                    service: view.name().to_owned(),
                    line,
                }));
        }
        status
    }

    /// The running services' views, in start order.
    pub fn views(&self) -> &[Arc<dyn ServiceView>] {
        &self.views
    }

    /// Every service name in the list, running or not.
    pub fn known(&self) -> &[&'static str] {
        &self.known
    }

    /// The view of the service called `name`, if it runs.
    pub fn view(&self, name: &str) -> Option<&Arc<dyn ServiceView>> {
        self.views.iter().find(|view| view.name() == name)
    }
}

/// A listen address on the gateway's inside address.
pub fn inside_listen(cfg: &Config, port: u16) -> SocketAddr {
    (cfg.inside.address, port).into()
}

/// A status snapshot as JSON; a type that cannot be shown is a bug, shown as null.
pub fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;

    impl ServiceView for Quiet {
        fn name(&self) -> &'static str {
            "quiet"
        }
        fn status(&self) -> Value {
            serde_json::json!({"n": 1})
        }
        fn summary(&self) -> Vec<String> {
            vec!["one line".into()]
        }
        fn metrics(&self, _: &mut Exposition) {}
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_stop_that_hangs_is_given_up_after_the_bound() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let running = Running::new(Arc::new(Quiet), move || async move {
            let _keep = tx;
            std::future::pending::<()>().await;
            Ok(())
        });
        let started = tokio::time::Instant::now();
        assert!(running.stop_within(STOP_BOUND).await.is_ok());
        assert_eq!(started.elapsed(), STOP_BOUND, "waited exactly the bound");
        assert!(
            rx.await.is_err(),
            "the hung stop was dropped with what it held"
        );
    }

    #[tokio::test]
    async fn a_failed_stop_names_the_service() {
        let running = Running::new(Arc::new(Quiet), || async { anyhow::bail!("stuck") });
        let err = running.stop_within(STOP_BOUND).await.unwrap_err();
        assert_eq!(format!("{err:#}"), "stopping quiet: stuck");
    }

    #[test]
    fn status_shows_each_view_under_its_name() {
        let base = AgentStatus {
            version: "0".into(),
            pid: 1,
            uptime_secs: 0,
            config: "c".into(),
            outside_interface: "o".into(),
            inside_interface: "i".into(),
            inside_address: "198.51.100.1/24".into(),
            summary: Vec::new(),
            services: Default::default(),
        };
        let source = StatusSource::new(base, vec!["quiet", "off"], vec![Arc::new(Quiet)]);
        let json = serde_json::to_value(source.status()).unwrap();
        assert_eq!(json["quiet"]["n"], 1);
        assert!(json["off"].is_null());
        assert_eq!(json["summary"][0]["line"], "one line");
        let back: AgentStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.services["quiet"]["n"], 1);
    }
}
