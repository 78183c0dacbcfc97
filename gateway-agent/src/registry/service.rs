//! The registry as an entry of the service list: on the inside address (port 443), TLS 1.3
//! with a client certificate from the gateway CA, which it makes at its first start (with the
//! server certificate) when there is none yet. Its view shows the store and the API's counters,
//! and answers `gc`, `ls` and `du` for the CLI while it holds the store.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::admin;
use super::api::{Api, ApiStats};
use super::server::{RegistryServer, ServerSettings};
use super::storage::{Limits, Storage};
use crate::config::Config;
use crate::metrics::{Exposition, Kind};
use crate::net::listener::{ListenerReader, ListenerStats};
use crate::net::tls::{ClientAuth, ClientCa, TlsAcceptor, TlsSettings};
use crate::pki::Pki;
use crate::service::{self, inside_listen, BoxFuture, Entry, Handles, Running, ServiceView};

/// The registry's entry in the service list.
pub const SERVICE: Entry = Entry {
    name: "registry",
    start,
};

/// Connections served at once (image pulls open several each).
const MAX_CONNECTIONS: usize = 512;

/// The store directory `cfg` names.
pub fn store_dir(cfg: &Config) -> PathBuf {
    cfg.registry
        .dir
        .clone()
        .unwrap_or_else(|| cfg.state.dir.join("registry"))
}

/// The limits `cfg` sets.
pub fn limits(cfg: &Config) -> Limits {
    Limits {
        max_blob_bytes: cfg.registry.max_blob_size,
        max_manifest_bytes: cfg.registry.max_manifest_size,
        upload_expiry: cfg.registry.upload_expiry.as_duration(),
    }
}

/// The zone without its trailing dot, for certificate names.
pub fn zone(cfg: &Config) -> String {
    cfg.dns.zone.to_string().trim_end_matches('.').to_owned()
}

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        let cfg = handles.cfg.clone();
        if !cfg.services.registry.enabled {
            return Ok(None);
        }
        let state = handles.state_dir()?;
        let acceptor = server_tls(&cfg, &state).await?;
        let dir = store_dir(&cfg);
        let store = super::store::open(
            &cfg,
            super::store::Part::Registry,
            dir.clone(),
            limits(&cfg),
            handles.storage_uplink(),
        )?;
        let api = Arc::new(Api::new(store.clone(), Arc::new(cfg.registry.clone())));
        let settings = ServerSettings {
            listen: inside_listen(&cfg, cfg.services.registry.port),
            inside: cfg.inside,
            max_connections: MAX_CONNECTIONS,
        };
        let server = RegistryServer::start(settings, acceptor, api.clone())
            .await
            .context("starting the registry")?;
        tracing::info!(
            "registry on https://{} (store {})",
            server.local_addr(),
            dir.display()
        );
        let (listener, handshake_failures) = server.reader();
        let view = Arc::new(RegistryView {
            api,
            store,
            listener,
            handshake_failures,
            gc_grace: cfg.registry.gc_grace.as_duration(),
            usage: Mutex::new(None),
        });
        Ok(Some(Running::stopped_by(view, move || server.stop())))
    })
}

/// The TLS acceptor the registry and the mirror share: TLS 1.3, a client certificate from the
/// gateway CA required, the CRL checked. At the first start (or when the zone or the inside
/// address changed) the CA and the server certificate are made first.
pub(crate) async fn server_tls(cfg: &Config, state: &std::path::Path) -> Result<TlsAcceptor> {
    let pki = Pki::under(state);
    let zone = zone(cfg);
    let inside = cfg.inside.address;
    let made = {
        let pki = pki.clone();
        tokio::task::spawn_blocking(move || pki.ensure_server(&zone, inside))
            .await
            .context("making the registry's certificates")??
    };
    if made {
        tracing::info!(
            "registry: wrote what was missing or stale of the gateway CA, the server \
             certificate (registry.<zone>, mirror.<zone>, the inside address) and the CRL in \
             {} (issue client certificates with `gateway-agent pki issue-client NAME --out \
             DIR`)",
            pki.dir().display()
        );
    }
    TlsAcceptor::new(TlsSettings {
        client_auth: ClientAuth::Required(ClientCa {
            ca: pki.ca_cert(),
            crl: Some(pki.crl()),
        }),
        ..TlsSettings::new(pki.server_cert(), pki.server_key())
    })
    .context("the registry's TLS files")
}

/// What `status --json` shows under `registry`.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryStatus {
    pub repositories: usize,
    pub blobs: usize,
    pub bytes: u64,
    #[serde(flatten)]
    pub api: ApiStats,
    pub connections: ListenerStats,
    /// Handshakes that failed (no certificate, unknown CA, revoked, not TLS 1.3).
    pub handshake_failures: u64,
}

struct RegistryView {
    api: Arc<Api>,
    store: Arc<dyn Storage>,
    listener: ListenerReader,
    handshake_failures: Arc<AtomicU64>,
    gc_grace: std::time::Duration,
    /// The store's sizes, when they were read, and the API's write count then.
    usage: Mutex<Option<(Instant, u64, admin::Usage)>>,
}

/// How long the store's sizes are reused while nothing is written through the API: they take
/// a walk of the store to read, and status and metrics scrapes come often. (GC and the CLI
/// without an agent change the store behind the API; the sizes catch up within this.)
const USAGE_TTL: Duration = Duration::from_secs(10);

impl RegistryView {
    fn usage(&self, writes: u64) -> admin::Usage {
        let mut cached = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        match &*cached {
            Some((read, seen, usage)) if *seen == writes && read.elapsed() < USAGE_TTL => {
                usage.clone()
            }
            _ => {
                let usage = admin::du(&*self.store).unwrap_or_default();
                *cached = Some((Instant::now(), writes, usage.clone()));
                usage
            }
        }
    }

    fn snapshot(&self) -> RegistryStatus {
        let api = self.api.stats();
        let usage = self.usage(api.writes);
        RegistryStatus {
            repositories: usage.repositories.len(),
            blobs: usage.blobs,
            bytes: usage.bytes,
            api,
            connections: self.listener.stats(),
            handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
        }
    }
}

impl ServiceView for RegistryView {
    fn name(&self) -> &'static str {
        "registry"
    }

    fn status(&self) -> Value {
        service::to_json(&self.snapshot())
    }

    fn summary(&self) -> Vec<String> {
        let s = self.snapshot();
        vec![format!(
            "{} repositories, {} blobs ({} bytes); {} pushes, {} pulls",
            s.repositories, s.blobs, s.bytes, s.api.pushes, s.api.pulls
        )]
    }

    fn metrics(&self, out: &mut Exposition) {
        metrics(out, &self.snapshot());
    }

    fn operations(&self) -> &'static [&'static str] {
        &["gc", "ls", "du"]
    }

    fn operate(&self, operation: &str, _args: Value) -> BoxFuture<'_, Result<Value>> {
        let store = self.store.clone();
        let grace = self.gc_grace;
        let operation = operation.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || run(&*store, &operation, grace))
                .await
                .context("the registry operation")?
        })
    }
}

/// Runs `operation` (`gc`, `ls`, `du`) on `store`: for the control socket and for the CLI
/// when no agent runs.
pub fn run(store: &dyn Storage, operation: &str, grace: std::time::Duration) -> Result<Value> {
    let value = match operation {
        "gc" => service::to_json(&admin::gc(store, grace)?),
        "ls" => service::to_json(&admin::ls(store)?),
        "du" => service::to_json(&admin::du(store)?),
        other => anyhow::bail!("the registry has no operation {other:?}"),
    };
    Ok(value)
}

fn metrics(out: &mut Exposition, s: &RegistryStatus) {
    out.gauge(
        "gateway_registry_repositories",
        "Repositories in the private registry.",
        s.repositories as u64,
    );
    out.gauge(
        "gateway_registry_blobs",
        "Blobs (layers, configs, manifests) in the private registry's store.",
        s.blobs as u64,
    );
    out.gauge(
        "gateway_registry_bytes",
        "Bytes the private registry's blobs take.",
        s.bytes,
    );
    out.family(
        "gateway_registry_manifests_total",
        Kind::Counter,
        "Manifests pushed and pulled.",
    )
    .sample(&[("op", "push")], s.api.pushes)
    .sample(&[("op", "pull")], s.api.pulls);
    out.family(
        "gateway_registry_blob_bytes_total",
        Kind::Counter,
        "Blob bytes received and sent.",
    )
    .sample(&[("direction", "in")], s.api.bytes_in)
    .sample(&[("direction", "out")], s.api.bytes_out);
    out.counter(
        "gateway_registry_requests_total",
        "Registry HTTP requests answered.",
        s.api.requests,
    );
    out.family(
        "gateway_registry_rejected_total",
        Kind::Counter,
        "Registry connections and requests turned away, by reason.",
    )
    .sample(&[("reason", "tls_handshake")], s.handshake_failures)
    .sample(&[("reason", "denied")], s.api.denied)
    .sample(&[("reason", "not_inside")], s.connections.not_inside)
    .sample(&[("reason", "busy")], s.connections.busy);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_families_carry_the_status() {
        let status = RegistryStatus {
            repositories: 3,
            blobs: 11,
            bytes: 4096,
            api: ApiStats {
                requests: 40,
                pushes: 5,
                pulls: 7,
                bytes_in: 100,
                bytes_out: 200,
                denied: 2,
                errors: 0,
                writes: 9,
            },
            connections: ListenerStats {
                not_inside: 1,
                ..ListenerStats::default()
            },
            handshake_failures: 4,
        };
        let mut out = Exposition::default();
        metrics(&mut out, &status);
        let page = out.finish();
        for line in [
            "gateway_registry_repositories 3",
            "gateway_registry_blobs 11",
            "gateway_registry_bytes 4096",
            "gateway_registry_manifests_total{op=\"push\"} 5",
            "gateway_registry_manifests_total{op=\"pull\"} 7",
            "gateway_registry_blob_bytes_total{direction=\"out\"} 200",
            "gateway_registry_requests_total 40",
            "gateway_registry_rejected_total{reason=\"tls_handshake\"} 4",
            "gateway_registry_rejected_total{reason=\"denied\"} 2",
            "gateway_registry_rejected_total{reason=\"not_inside\"} 1",
        ] {
            assert!(page.lines().any(|l| l == line), "{line} not in:\n{page}");
        }
    }
}
