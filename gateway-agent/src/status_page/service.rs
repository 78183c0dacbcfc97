//! The status page as an entry of the service list: it starts after the services it shows
//! (and before the control socket and the metrics endpoint), makes the gateway PKI's server
//! certificate if the registry has not, and samples the drop counters for its chart.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::chart::{self, DropHistory};
use super::csrf::Csrf;
use super::server::{self, Page, PageStats};
use crate::clock::unix_now;
use crate::dataplane::{inspect, pins::PinLayout};
use crate::metrics::{Exposition, Kind};
use crate::net::listener::{self, Clients, Connection, Listener, ListenerSettings};
use crate::net::service_task::ServiceTask;
use crate::net::tls::{ClientAuth, ClientCa, TlsAcceptor, TlsSettings};
use crate::pki::Pki;
use crate::registry::server::TlsWatch;
use crate::service::{self, Entry, Handles, Running, ServiceView};

/// The status page's entry in the service list.
pub const SERVICE: Entry = Entry {
    name: "status_page",
    start,
};

/// Browsers open a few connections each; an operator or two look at once.
const MAX_CONNECTIONS: usize = 32;
/// How often the TLS files are checked (a revoked admin is refused within this).
const RELOAD_POLL: Duration = Duration::from_secs(1);

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        let cfg = handles.cfg.clone();
        let page_cfg = cfg.status_page.clone();
        if !page_cfg.enabled {
            return Ok(None);
        }
        let on_inside = page_cfg.on_inside(&cfg.inside);
        let pki = Pki::under(&handles.state_dir()?);
        {
            let (pki, zone, inside) = (
                pki.clone(),
                crate::registry::service::zone(&cfg),
                cfg.inside.address,
            );
            tokio::task::spawn_blocking(move || pki.ensure_server(&zone, inside))
                .await
                .context("making the gateway PKI's server certificate")??;
        }
        let ca = ClientCa {
            ca: pki.ca_cert(),
            crl: Some(pki.crl()),
        };
        let client_auth = if on_inside {
            ClientAuth::RequiredNamed {
                ca,
                names: page_cfg.admins.clone(),
            }
        } else {
            ClientAuth::Optional(ca)
        };
        let acceptor = TlsAcceptor::new(TlsSettings {
            client_auth,
            ..TlsSettings::new(pki.server_cert(), pki.server_key())
        })
        .context("the status page's TLS files (the gateway PKI in state.dir/pki)")?;

        let stats = Arc::new(PageStats::default());
        let view = Arc::new(StatusPageView {
            listen: OnceLock::new(),
            admins: page_cfg.admins.len(),
            stats: stats.clone(),
        });
        let mut views = handles.views.clone();
        views.push(view.clone());
        let source = handles.status_source().with_views(views);
        let pins = handles.dataplane.as_ref().map(|d| d.pins.clone());
        let history = Arc::new(Mutex::new(DropHistory::default()));
        let mirror_urls = cfg
            .mirror
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), u.url.to_string()))
            .collect();
        let mut page = Page::new(
            source,
            page_cfg.clone(),
            pins.clone(),
            history.clone(),
            mirror_urls,
            pki,
            Csrf::new()?,
        );
        page.stats = stats;
        let page = Arc::new(page);

        let (socket, local) =
            listener::bind_tcp(page_cfg.listen, "the status page (status_page.listen)").await?;
        let _ = view.listen.set(local);
        let settings = ListenerSettings {
            name: "status page",
            clients: if on_inside {
                Clients::Inside(cfg.inside)
            } else {
                Clients::Local
            },
            max_connections: MAX_CONNECTIONS,
        };
        let tls = acceptor.clone();
        let listener = Listener::spawn(
            socket,
            settings,
            move |conn: Connection<tokio::net::TcpStream>| {
                server::serve(conn, tls.clone(), page.clone())
            },
        );
        let mut tls_watch = TlsWatch::new(acceptor);
        let housekeeping =
            ServiceTask::spawn("status page housekeeping", move |mut shutdown| async move {
                let mut reload = tokio::time::interval(RELOAD_POLL);
                let mut sample = tokio::time::interval(chart::EVERY);
                loop {
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = reload.tick() => tls_watch.check("status page"),
                        _ = sample.tick() => record(&pins, &history),
                    }
                }
            });
        let who = if on_inside {
            "admin certificates only"
        } else {
            "loopback"
        };
        tracing::info!("status page on https://{local}/ ({who})");
        Ok(Some(Running::stopped_by(view, move || async move {
            listener.stop().await;
            housekeeping.stop().await;
        })))
    })
}

/// Adds the drop counters now to the chart's history (nothing while they cannot be read).
fn record(pins: &Option<PinLayout>, history: &Mutex<DropHistory>) {
    let Some(pins) = pins else { return };
    if let Ok(drops) = inspect::drops(pins) {
        history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(unix_now(), drops);
    }
}

struct StatusPageView {
    listen: OnceLock<SocketAddr>,
    admins: usize,
    stats: Arc<PageStats>,
}

impl StatusPageView {
    fn numbers(&self) -> [(&'static str, u64); 4] {
        let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        [
            ("requests", load(&self.stats.requests)),
            ("actions", load(&self.stats.actions)),
            ("refused", load(&self.stats.refused)),
            ("handshake_failures", load(&self.stats.handshake_failures)),
        ]
    }
}

impl ServiceView for StatusPageView {
    fn name(&self) -> &'static str {
        "status_page"
    }

    fn status(&self) -> Value {
        let mut status = json!({
            "listen": self.listen.get().map(|a| a.to_string()),
            "admins": self.admins,
        });
        for (key, value) in self.numbers() {
            status[key] = json!(value);
        }
        status
    }

    fn summary(&self) -> Vec<String> {
        self.listen
            .get()
            .map(|a| vec![format!("https://{a}/")])
            .unwrap_or_default()
    }

    fn metrics(&self, out: &mut Exposition) {
        let [requests, actions, refused, handshakes] = self.numbers();
        out.counter(
            "gateway_status_page_requests_total",
            "Status page HTTP requests answered.",
            requests.1,
        );
        out.counter(
            "gateway_status_page_actions_total",
            "Admin actions done through the status page.",
            actions.1,
        );
        out.family(
            "gateway_status_page_refused_total",
            Kind::Counter,
            "Status page POSTs and handshakes turned away, by reason.",
        )
        .sample(&[("reason", "action")], refused.1)
        .sample(&[("reason", "tls_handshake")], handshakes.1);
    }
}
