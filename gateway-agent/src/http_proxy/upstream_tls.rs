//! TLS to an `https` origin, for clients that ask the proxy in plain HTTP so their objects can
//! be cached without intercepting TLS: `http://HTTPS///host/path` (apt-cacher-ng's form; see
//! [`super::request::https_form`]). The proxy verifies the origin's certificate against the
//! system roots, or against `http_proxy.upstream_ca` alone when it is set. TLS 1.3 only, like
//! the gateway's own TLS services.

use std::{path::Path, sync::Arc};

use anyhow::{bail, Context, Result};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::egress::{BoxStream, Host};

/// Debian's bundle of the system's trusted roots (package `ca-certificates`).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A client config trusting the certificates in `ca` (a PEM file).
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading CA certificates from {}", ca.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("a certificate in {}", ca.display()))?;
        // A bundle may hold a root rustls does not accept; the others still count.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        bail!("{} holds no usable CA certificate", ca.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// TLS over `stream` to `host`, its certificate verified for that name (or address).
pub async fn connect(
    config: &Arc<ClientConfig>,
    host: &Host,
    stream: BoxStream,
) -> std::io::Result<BoxStream> {
    let name = match host {
        Host::Name(name) => ServerName::try_from(name.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
    };
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tls = connector.connect(name, stream).await?;
    Ok(Box::new(tls))
}
