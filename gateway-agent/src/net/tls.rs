//! TLS 1.3 for the inside services: one acceptor built from PEM files (server chain and key,
//! optionally a client CA and its CRL), reloadable while it serves.
//!
//! Only TLS 1.3: one protocol version, with no legacy cipher suites or renegotiation to
//! configure or test. Under TLS 1.3 a client considers the handshake done before the
//! server has checked its certificate, so a refused client sees its first read fail rather
//! than its connect; whatever it sent is never handed to a service.
//!
//! [`TlsAcceptor::reload`] re-reads every file and swaps the configuration in one step.
//! Handshakes in progress and established connections keep the configuration they started
//! with; a reload that fails leaves the current one in place. Each configuration has its own
//! session cache, so a session resumed after a reload was established under the new CRL.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

/// Where the TLS material is and how clients are treated.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM file: the server's certificate, then any intermediates.
    pub cert_chain: PathBuf,
    /// PEM file: the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Whether clients present certificates, and which CA issues them.
    pub client_auth: ClientAuth,
    /// ALPN protocols offered, most preferred first (`http/1.1`); empty means no ALPN.
    pub alpn: Vec<String>,
    /// A handshake not finished within this is dropped.
    pub handshake_timeout: Duration,
}

impl TlsSettings {
    /// `cert_chain` and `key` without client certificates, ALPN `http/1.1`, 10 s handshakes.
    pub fn new(cert_chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsSettings {
            cert_chain: cert_chain.into(),
            key: key.into(),
            client_auth: ClientAuth::None,
            alpn: vec!["http/1.1".to_owned()],
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Client certificate policy.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No certificate is asked for.
    None,
    /// A client may present a certificate; if it does, it must verify against the CA.
    Optional(ClientCa),
    /// Every client must present a certificate that verifies against the CA.
    Required(ClientCa),
    /// Every client must present a certificate that verifies against the CA and whose name
    /// (as [`Accepted::client_name`] reads it) is one of `names`: anyone else fails the
    /// handshake (the status page on the inside address, for its admins only).
    RequiredNamed { ca: ClientCa, names: Vec<String> },
}

impl ClientAuth {
    /// The CA client certificates are checked against, if any are asked for.
    pub fn ca(&self) -> Option<&ClientCa> {
        match self {
            ClientAuth::None => None,
            ClientAuth::Optional(ca) | ClientAuth::Required(ca) => Some(ca),
            ClientAuth::RequiredNamed { ca, .. } => Some(ca),
        }
    }
}

/// The CA that issues client certificates, and what it revoked.
#[derive(Debug, Clone)]
pub struct ClientCa {
    /// PEM file: the CA certificate(s) client certificates must chain to.
    pub ca: PathBuf,
    /// PEM file: one or more CRLs. With a CRL every certificate in a client's chain must be
    /// covered by one of them (fail closed: a certificate of unknown status is refused).
    pub crl: Option<PathBuf>,
}

/// A finished handshake.
pub struct Accepted<IO> {
    /// The TLS stream, ready for the service.
    pub stream: TlsStream<IO>,
    /// The verified client certificate's subject Common Name, else its first DNS name; `None`
    /// without a client certificate (or with one that names neither).
    pub client_name: Option<String>,
}

/// Why a handshake did not finish.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client took longer than the handshake timeout.
    #[error("TLS handshake not finished within {0:?}")]
    Timeout(Duration),
    /// The handshake failed: protocol, certificate, or the connection itself.
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] io::Error),
}

impl HandshakeError {
    /// The TLS-level cause (e.g. a revoked or unknown client certificate), if there is one
    /// rather than a plain I/O error.
    pub fn tls_error(&self) -> Option<&rustls::Error> {
        match self {
            HandshakeError::Timeout(_) => None,
            HandshakeError::Failed(error) => error.get_ref()?.downcast_ref::<rustls::Error>(),
        }
    }
}

/// A TLS 1.3 acceptor whose configuration can be reloaded. Clones share the configuration, so
/// a reload through one is seen by all.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: Arc<Inner>,
}

struct Inner {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    /// Reads the files `settings` names; an error names the file and what is wrong with it.
    pub fn new(settings: TlsSettings) -> Result<TlsAcceptor> {
        let config = load(&settings)?;
        Ok(TlsAcceptor {
            inner: Arc::new(Inner {
                settings,
                current: RwLock::new(config),
            }),
        })
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &TlsSettings {
        &self.inner.settings
    }

    /// Re-reads every file (certificate chain, key, CA, CRL) and uses the result for new
    /// handshakes. On error the configuration in use stays.
    pub fn reload(&self) -> Result<()> {
        let config = load(&self.inner.settings)?;
        // The lock only guards a pointer swap, so a poisoned lock still holds a whole value.
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// Runs the server side of a handshake on `stream`, within the handshake timeout.
    pub async fn accept<IO>(&self, stream: IO) -> Result<Accepted<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.current();
        let timeout = self.inner.settings.handshake_timeout;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let stream = tokio::time::timeout(timeout, acceptor.accept(stream))
            .await
            .map_err(|_| HandshakeError::Timeout(timeout))?
            .map_err(HandshakeError::Failed)?;
        let client_name = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(client_name);
        Ok(Accepted {
            stream,
            client_name,
        })
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The name a (verified) client certificate gives: subject CN, else the first DNS SAN.
fn client_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = match x509_parser::parse_x509_certificate(cert) {
        Ok(parsed) => parsed,
        Err(error) => {
            // rustls' verifier accepted it, so this is a gap between two parsers, not an attack;
            // the client is served without a name.
            tracing::debug!(%error, "client certificate: cannot read its name");
            return None;
        }
    };
    let common_name = cert
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok());
    if let Some(name) = common_name {
        return Some(name.to_owned());
    }
    let san = cert.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
        _ => None,
    })
}

/// Builds a server configuration from the files `settings` names.
fn load(settings: &TlsSettings) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs(&settings.cert_chain)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .with_context(|| format!("reading the private key from {}", settings.key.display()))?;
    let verifier = client_verifier(&settings.client_auth, provider.clone())?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "the key in {} does not fit the certificate in {}",
                settings.key.display(),
                settings.cert_chain.display()
            )
        })?;
    config.alpn_protocols = settings
        .alpn
        .iter()
        .map(|protocol| protocol.as_bytes().to_vec())
        .collect();
    Ok(Arc::new(config))
}

fn client_verifier(
    auth: &ClientAuth,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>> {
    let (ca, required, names) = match auth {
        ClientAuth::None => return Ok(WebPkiClientVerifier::no_client_auth()),
        ClientAuth::Optional(ca) => (ca, false, None),
        ClientAuth::Required(ca) => (ca, true, None),
        ClientAuth::RequiredNamed { ca, names } => (ca, true, Some(names)),
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certs(&ca.ca)? {
        roots
            .add(cert)
            .with_context(|| format!("{}: not a usable CA certificate", ca.ca.display()))?;
    }
    let crls = match &ca.crl {
        Some(path) => read_crls(path)?,
        None => Vec::new(),
    };
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).with_crls(crls);
    if !required {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder.build().map_err(|error| {
        let file = match (&error, &ca.crl) {
            (VerifierBuilderError::InvalidCrl(_), Some(crl)) => crl,
            _ => &ca.ca,
        };
        anyhow!("{}: {error}", file.display())
    })?;
    Ok(match names {
        None => verifier,
        Some(names) => Arc::new(NamedClients {
            inner: verifier,
            names: names.clone(),
        }),
    })
}

/// A client verifier that, after the CA's checks, also wants the certificate's name in a list.
#[derive(Debug)]
struct NamedClients {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl ClientCertVerifier for NamedClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match client_name(end_entity) {
            Some(name) if self.names.contains(&name) => Ok(verified),
            _ => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Every certificate in a PEM file; none is an error.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no CERTIFICATE in it", path.display());
    }
    Ok(certs)
}

/// Every CRL in a PEM file. None is an error: an empty file more likely means a truncated
/// write than "nothing revoked", and the latter is an empty CRL, not no CRL.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|crls| crls.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading CRLs from {}", path.display()))?;
    if crls.is_empty() {
        bail!("{}: no X509 CRL in it", path.display());
    }
    Ok(crls)
}

#[cfg(test)]
mod tests;
