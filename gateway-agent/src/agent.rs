//! `gateway-agent run`: bring the dataplane, the services, the control socket and the metrics
//! endpoint up, wait for a signal, and take everything down again in reverse order.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::Arc,
    time::Instant,
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};

use crate::{
    config::{Config, DnsUpstream, Egress},
    control::{
        protocol::AgentStatus,
        server::{ControlServer, ControlState},
    },
    dataplane::{inspect, Dataplane},
    dhcp::{DhcpServer, DhcpServerSettings},
    dns::{self, DnsServer, DnsServerSettings, LocalZone, TorUpstream, UplinkUpstream, Upstream},
    egress::{Connector, DirectConnector, DirectSettings, TorConnector},
    http_proxy::{HttpProxy, HttpProxySettings},
    lease_events::LeaseSink,
    metrics::{MetricsServer, MetricsSource},
    net,
    socks::{SocksServer, SocksSettings},
    systemd,
    tor::{Tor, TorSettings},
    uplink::{Uplink, UplinkSettings, UplinkStatus},
};

/// The DHCP client port the server answers to.
const DHCP_CLIENT_PORT: u16 = 68;

/// How long a `direct` stream may take to connect.
const DIRECT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the uplink forwarder waits for an upstream answer.
const UPLINK_DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(cfg: Config, config_path: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(cfg, config_path))
}

/// Everything that runs, in start order; stopped in reverse.
#[derive(Default)]
struct Running {
    uplink: Option<Uplink>,
    dataplane: Option<Dataplane>,
    tor: Option<Tor>,
    dns: Option<DnsServer>,
    dhcp: Option<DhcpServer>,
    socks: Option<SocksServer>,
    http_proxy: Option<HttpProxy>,
    control: Option<ControlServer>,
    metrics: Option<MetricsServer>,
}

impl Running {
    async fn stop(mut self) -> Result<()> {
        if let Some(metrics) = self.metrics.take() {
            metrics.stop().await;
        }
        if let Some(control) = self.control.take() {
            control.stop();
        }
        if let Some(proxy) = self.http_proxy.take() {
            proxy.stop().await;
        }
        if let Some(socks) = self.socks.take() {
            socks.stop().await;
        }
        if let Some(dhcp) = self.dhcp.take() {
            dhcp.stop().await;
        }
        if let Some(dns) = self.dns.take() {
            dns.stop().await;
        }
        if let Some(tor) = self.tor.take() {
            tor.stop();
        }
        // Release the uplink lease while the egress guard is still in place; the dataplane
        // goes last so the inside stays closed until the very end.
        if let Some(uplink) = self.uplink.take() {
            uplink.stop().await;
        }
        match self.dataplane.take() {
            Some(dataplane) => dataplane.shutdown().context("detaching the dataplane"),
            None => Ok(()),
        }
    }
}

async fn serve(cfg: Config, config_path: &Path) -> Result<()> {
    let started = Instant::now();
    // Install the handlers before attaching, so a signal during start-up is not lost.
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    let mut running = Running::default();
    if let Err(err) = start(&cfg, config_path, started, &mut running).await {
        // Do not leave programs or sockets behind for an agent that never ran.
        if let Err(stop) = running.stop().await {
            tracing::error!("stopping after a failed start: {stop:#}");
        }
        return Err(err);
    }
    systemd::notify("READY=1");
    tracing::info!(
        inside = %cfg.interfaces.inside,
        outside = %cfg.interfaces.outside,
        control = %cfg.control.socket.display(),
        "gateway agent running"
    );

    let which = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!("{which}: stopping");
    systemd::notify("STOPPING=1");
    running.stop().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn start(
    cfg: &Config,
    config_path: &Path,
    started: Instant,
    running: &mut Running,
) -> Result<()> {
    net::forwarding::ensure_off()?;
    // The macvlan first: the egress guard attaches to it. Its lease arrives asynchronously.
    let uplink = Uplink::start(UplinkSettings {
        parent: cfg.interfaces.outside.clone(),
        address: cfg.outside.address,
        uplink: cfg.uplink.clone(),
        state_dir: cfg.state.dir.clone(),
    })
    .await
    .context("starting the uplink")?;
    let outside_device = uplink.device().to_owned();
    let uplink_dns = uplink.dns_servers();
    let uplink_status = uplink.status_watch();
    running.uplink = Some(uplink);
    let dataplane = Dataplane::start(cfg, &outside_device).context("starting the dataplane")?;
    let dataplane_status = dataplane.status();
    running.dataplane = Some(dataplane);

    if cfg.tor.enabled {
        // Bootstraps in the background; until it is done every Tor user refuses (fail closed).
        let tor = Tor::start(TorSettings {
            state_dir: state_dir(cfg)?.join("tor"),
            arti_config: cfg.tor.arti_config.clone(),
            network_up: Some(follow_uplink_up(uplink_status.clone())),
        })
        .context("starting the Tor client")?;
        running.tor = Some(tor);
    }

    let zone = Arc::new(
        LocalZone::new(
            &cfg.dns.zone,
            cfg.inside,
            cfg.inside.address,
            &dns::SERVICE_NAMES[..],
            &cfg.dhcp.reservations,
            cfg.dns.local_ttl,
        )
        .context("building the local DNS zone")?,
    );
    if cfg.services.dns.enabled {
        let upstream = dns_upstream(
            cfg,
            &outside_device,
            uplink_dns.clone(),
            uplink_status.clone(),
            running.tor.as_ref(),
        );
        let settings = DnsServerSettings {
            listen: cfg.inside.address,
            port: cfg.services.dns.port,
            inside: cfg.inside,
            dns: cfg.dns.clone(),
            gateway_ip: cfg.inside.address,
            log_queries: cfg.log.queries,
        };
        let server = DnsServer::start(settings, zone.clone(), upstream)
            .await
            .context("starting the DNS server")?;
        running.dns = Some(server);
    }

    if cfg.services.dhcp.enabled {
        // Leases reach the zone (names) and the dataplane (lease maps) before the ACK leaves.
        let lease_maps = running
            .dataplane
            .as_ref()
            .context("the dataplane runs before DHCP")?
            .lease_maps()
            .context("opening the dataplane's lease maps")?;
        let sinks: Vec<Arc<dyn LeaseSink>> = vec![zone.clone(), Arc::new(lease_maps)];
        let settings = DhcpServerSettings {
            interface: cfg.interfaces.inside.clone(),
            server_ip: cfg.inside.address,
            inside: cfg.inside,
            port: cfg.services.dhcp.port,
            client_port: DHCP_CLIENT_PORT,
            dhcp: cfg.dhcp.clone(),
            zone: cfg.dns.zone.clone(),
            reserved_names: dns::SERVICE_NAMES.iter().map(|n| n.to_string()).collect(),
            store_path: state_dir(cfg)?.join("dhcp-leases.redb"),
            log_queries: cfg.log.queries,
        };
        let server = DhcpServer::start(settings, sinks)
            .await
            .context("starting the DHCP server")?;
        running.dhcp = Some(server);
    }

    let tor_connector = running
        .tor
        .as_ref()
        .map(|tor| Arc::new(TorConnector::new(tor.clone())) as Arc<dyn Connector>);
    if cfg.services.socks.enabled {
        if let (Some(tor), Some(connector)) = (&running.tor, &tor_connector) {
            let mut settings =
                SocksSettings::new((cfg.inside.address, cfg.services.socks.port).into());
            settings.log_queries = cfg.log.queries;
            let server = SocksServer::start(settings, connector.clone(), Arc::new(tor.clone()))
                .await
                .context("starting the SOCKS server")?;
            running.socks = Some(server);
        }
    }
    if cfg.services.http_proxy.enabled {
        let connector = match cfg.http_proxy.egress {
            Egress::Tor => tor_connector.clone(),
            Egress::Direct => {
                tracing::warn!(
                    "http_proxy.egress = \"direct\": proxied requests leave in clear text from \
                     the uplink address, not through Tor"
                );
                let resolver = uplink_resolver(
                    cfg,
                    &outside_device,
                    uplink_dns.clone(),
                    uplink_status.clone(),
                );
                Some(Arc::new(DirectConnector::new(DirectSettings {
                    device: outside_device.clone(),
                    inside: cfg.inside,
                    allow_private: false,
                    resolver: Some(resolver),
                    connect_timeout: DIRECT_CONNECT_TIMEOUT,
                })) as Arc<dyn Connector>)
            }
        };
        match connector {
            Some(connector) => {
                let mut settings = HttpProxySettings::new(
                    (cfg.inside.address, cfg.services.http_proxy.port).into(),
                    cfg.inside,
                );
                settings.connect_ports = cfg.http_proxy.connect_ports.clone();
                settings.log_queries = cfg.log.queries;
                let proxy = HttpProxy::start(settings, connector)
                    .await
                    .context("starting the HTTP proxy")?;
                running.http_proxy = Some(proxy);
            }
            // Without Tor the port stays closed rather than open to the clearnet.
            None => tracing::warn!(
                "the HTTP proxy's egress is Tor and tor.enabled = false: not started \
                 (http_proxy.egress = \"direct\" is the explicit clearnet choice)"
            ),
        }
    }

    let base = AgentStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        uptime_secs: 0,
        config: config_path.display().to_string(),
        outside_interface: cfg.interfaces.outside.clone(),
        inside_interface: cfg.interfaces.inside.clone(),
        inside_address: cfg.inside.cidr(),
        dataplane: dataplane_status,
        dns: None,
        dhcp: None,
        uplink: None,
        tor: None,
        socks: None,
        http_proxy: None,
    };
    let dns_stats = running.dns.as_ref().map(DnsServer::stats_reader);
    let dhcp = running.dhcp.as_ref().map(DhcpServer::reader);
    let dhcp_stats = dhcp.clone();
    let tor = running.tor.clone();
    let socks_stats = running.socks.as_ref().map(SocksServer::stats_reader);
    let proxy_stats = running.http_proxy.as_ref().map(HttpProxy::stats_reader);
    // One status for the control socket and the metrics endpoint: no second stats path.
    let status: Arc<dyn Fn() -> AgentStatus + Send + Sync> = Arc::new(move || {
        let mut status = base.clone();
        status.uptime_secs = started.elapsed().as_secs();
        status.dns = dns_stats.as_ref().map(|reader| reader.stats());
        status.dhcp = dhcp_stats.as_ref().map(|reader| reader.stats());
        status.tor = tor.as_ref().map(Tor::status);
        status.socks = socks_stats.as_ref().map(|reader| reader.stats());
        status.http_proxy = proxy_stats.as_ref().map(|reader| reader.stats());
        status.uplink = Some(uplink_status.borrow().clone());
        status
    });
    let control = ControlServer::start(
        &cfg.control.socket,
        ControlState {
            status: status.clone(),
            leases: dhcp.map(|reader| {
                Box::new(move || reader.leases()) as Box<dyn Fn() -> _ + Send + Sync>
            }),
        },
    )
    .await?;
    running.control = Some(control);

    if cfg.metrics.enabled {
        let pins = running
            .dataplane
            .as_ref()
            .context("the dataplane runs before the metrics endpoint")?
            .pins();
        let source = MetricsSource::new(status, Box::new(move || inspect::drops(&pins)));
        let metrics = MetricsServer::start(cfg.metrics.listen, source)
            .await
            .context("starting the metrics endpoint")?;
        tracing::info!("metrics on http://{}/metrics", metrics.local_addr());
        running.metrics = Some(metrics);
    }
    Ok(())
}

/// The state directory, created (owner only) if missing: leases live here.
fn state_dir(cfg: &Config) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = cfg.state.dir.clone();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating the state directory {} (state.dir)", dir.display()))?;
    Ok(dir)
}

/// The forwarder for non-local names: none unless the config chose one.
fn dns_upstream(
    cfg: &Config,
    outside_device: &str,
    lease_servers: watch::Receiver<Vec<Ipv4Addr>>,
    uplink: watch::Receiver<UplinkStatus>,
    tor: Option<&Tor>,
) -> Option<Arc<dyn Upstream>> {
    match cfg.dns.upstream {
        DnsUpstream::None => None,
        // The config rejects dns.upstream = "tor" without Tor; None here would only SERVFAIL.
        DnsUpstream::Tor => {
            tor.map(|tor| Arc::new(TorUpstream::new(Arc::new(tor.clone()))) as Arc<dyn Upstream>)
        }
        DnsUpstream::Uplink => Some(uplink_resolver(cfg, outside_device, lease_servers, uplink)),
    }
}

/// The uplink's resolvers (`dns.upstream_servers`, else the ones the uplink lease names), asked
/// from the uplink address through the outside interface.
fn uplink_resolver(
    cfg: &Config,
    outside_device: &str,
    lease_servers: watch::Receiver<Vec<Ipv4Addr>>,
    uplink: watch::Receiver<UplinkStatus>,
) -> Arc<dyn Upstream> {
    let servers = if cfg.dns.upstream_servers.is_empty() {
        follow_lease_servers(lease_servers)
    } else {
        // A fixed list never changes; the receiver keeps the value after the sender goes.
        watch::channel(cfg.dns.upstream_servers.clone()).1
    };
    Arc::new(
        UplinkUpstream::new(servers, Some(outside_device.to_owned()), UPLINK_DNS_TIMEOUT)
            .with_source(follow_uplink_address(uplink)),
    )
}

/// Whether the uplink has an address (a lease, or a static one).
fn follow_uplink_up(mut uplink: watch::Receiver<UplinkStatus>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(uplink.borrow_and_update().address.is_some());
    tokio::spawn(async move {
        while uplink.changed().await.is_ok() {
            let up = uplink.borrow_and_update().address.is_some();
            tx.send_if_modified(|current| std::mem::replace(current, up) != up);
            if tx.is_closed() {
                break;
            }
        }
    });
    rx
}

/// The uplink's current address (none until it has a lease).
fn follow_uplink_address(
    mut uplink: watch::Receiver<UplinkStatus>,
) -> watch::Receiver<Option<Ipv4Addr>> {
    let (tx, rx) = watch::channel(uplink.borrow_and_update().address);
    tokio::spawn(async move {
        while uplink.changed().await.is_ok() {
            let address = uplink.borrow_and_update().address;
            tx.send_if_modified(|current| {
                let changed = *current != address;
                *current = address;
                changed
            });
            if tx.is_closed() {
                break;
            }
        }
    });
    rx
}

/// The resolvers of the current uplink lease, as DNS server addresses.
fn follow_lease_servers(
    mut lease: watch::Receiver<Vec<Ipv4Addr>>,
) -> watch::Receiver<Vec<SocketAddr>> {
    let to_sockets =
        |ips: &[Ipv4Addr]| -> Vec<SocketAddr> { ips.iter().map(|ip| (*ip, 53).into()).collect() };
    let (tx, rx) = watch::channel(to_sockets(&lease.borrow_and_update()));
    tokio::spawn(async move {
        while lease.changed().await.is_ok() {
            let servers = to_sockets(&lease.borrow_and_update());
            if tx.send(servers).is_err() {
                break;
            }
        }
    });
    rx
}
