//! The TLS acceptor's tests: real handshakes over loopback with certificates made here
//! (a CA, a server, clients valid, revoked and foreign), and reloads.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::Response;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, SupportedProtocolVersion};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::*;
use crate::net::http::{serve_connection, HttpSettings};

/// Bounds every wait, so a broken server fails a test instead of hanging it.
const BOUND: Duration = Duration::from_secs(5);

/// A CA with its files in a temporary directory.
struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A client certificate and its key, as a client holds them.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Writes the CA certificate and a server certificate for `localhost`; settings for
    /// them with `client_auth`.
    fn server_settings(&self, client_auth: ClientAuth) -> TlsSettings {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_chain = self.write("server.pem", cert.pem());
        let key = self.write("server.key", key.serialize_pem());
        TlsSettings {
            client_auth,
            handshake_timeout: BOUND,
            ..TlsSettings::new(cert_chain, key)
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.write("ca.pem", self.ca.pem())
    }

    /// A client certificate with subject CN `name` and serial number `serial`.
    fn client(&self, name: &str, serial: u8) -> Identity {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from_slice(&[serial]));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Identity {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }

    /// Writes CRL number `number` revoking the certificates with these serials.
    fn write_crl(&self, number: u8, revoked: &[u8]) -> PathBuf {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(4000, 1, 1),
            crl_number: SerialNumber::from_slice(&[number]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&[*serial]),
                    revocation_time: date_time_ymd(2024, 1, 2),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.ca).unwrap();
        self.write("crl.pem", crl.pem().unwrap())
    }

    fn client_ca(&self, crl: Option<PathBuf>) -> ClientCa {
        ClientCa {
            ca: self.ca_file(),
            crl,
        }
    }
}

/// A rustls client of `version` that trusts `pki`'s CA, with `identity` if given.
fn client_config(
    pki: &Pki,
    identity: Option<&Identity>,
    version: &'static SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key().into())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn tls13(pki: &Pki, identity: Option<&Identity>) -> Arc<ClientConfig> {
    client_config(pki, identity, &rustls::version::TLS13)
}

/// What a client got.
#[derive(Debug)]
enum Outcome {
    /// Its own handshake failed.
    HandshakeFailed(io::Error),
    /// Its handshake finished (under TLS 1.3 before the server checked its certificate)
    /// but its request got nothing back.
    NoResponse,
    /// The bytes it got, and the ALPN protocol agreed on.
    Response(String, Option<Vec<u8>>),
}

impl Outcome {
    fn body(&self) -> &str {
        match self {
            Outcome::Response(text, _) => text.split("\r\n\r\n").nth(1).unwrap_or(""),
            _ => panic!("expected a response, got {self:?}"),
        }
    }
}

/// Connects with `config`, sends one GET and reads until the server closes.
async fn fetch(addr: SocketAddr, config: Arc<ClientConfig>) -> Outcome {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let server_name = ServerName::try_from("localhost").unwrap();
    let connecting = connector.connect(server_name, tcp);
    let mut tls = match tokio::time::timeout(BOUND, connecting).await.unwrap() {
        Ok(tls) => tls,
        Err(error) => return Outcome::HandshakeFailed(error),
    };
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if tls.write_all(request).await.is_err() || tls.flush().await.is_err() {
        return Outcome::NoResponse;
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(BOUND, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open past {BOUND:?}"),
        }
    }
    if received.is_empty() {
        Outcome::NoResponse
    } else {
        Outcome::Response(String::from_utf8_lossy(&received).into_owned(), alpn)
    }
}

/// An HTTPS server on loopback answering `client <name>`; reports each handshake.
struct Server {
    addr: SocketAddr,
    handshakes: mpsc::UnboundedReceiver<Result<Option<String>, HandshakeError>>,
    _shutdown: watch::Sender<()>,
}

impl Server {
    async fn start(acceptor: TlsAcceptor) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (report, handshakes) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown) = watch::channel(());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (acceptor, report, shutdown) =
                    (acceptor.clone(), report.clone(), shutdown.clone());
                tokio::spawn(async move {
                    let accepted = match acceptor.accept(stream).await {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            let _ = report.send(Err(error));
                            return;
                        }
                    };
                    let _ = report.send(Ok(accepted.client_name.clone()));
                    let name = accepted.client_name.unwrap_or("anonymous".to_owned());
                    let service = service_fn(move |_request| {
                        let body = format!("client {name}");
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                    });
                    let _ = serve_connection(
                        accepted.stream,
                        service,
                        HttpSettings::default(),
                        shutdown,
                    )
                    .await;
                });
            }
        });
        Server {
            addr,
            handshakes,
            _shutdown: shutdown_tx,
        }
    }

    /// The server's side of the next handshake.
    async fn handshake(&mut self) -> Result<Option<String>, HandshakeError> {
        tokio::time::timeout(BOUND, self.handshakes.recv())
            .await
            .expect("a handshake ended")
            .unwrap()
    }

    /// The next handshake failed with this TLS error.
    async fn refused(&mut self) -> rustls::Error {
        match self.handshake().await {
            Ok(name) => panic!("handshake accepted, client {name:?}"),
            Err(error) => error
                .tls_error()
                .cloned()
                .unwrap_or_else(|| panic!("not a TLS error: {error}")),
        }
    }
}

async fn started(settings: TlsSettings) -> (TlsAcceptor, Server) {
    let acceptor = TlsAcceptor::new(settings).unwrap();
    let server = Server::start(acceptor.clone()).await;
    (acceptor, server)
}

#[tokio::test]
async fn a_tls12_client_is_refused() {
    let pki = Pki::new("gateway test CA");
    let (_acceptor, mut server) = started(pki.server_settings(ClientAuth::None)).await;
    let outcome = fetch(
        server.addr,
        client_config(&pki, None, &rustls::version::TLS12),
    )
    .await;
    let Outcome::HandshakeFailed(client_error) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        client_error
            .get_ref()
            .and_then(|error| error.downcast_ref::<rustls::Error>()),
        Some(&rustls::Error::AlertReceived(
            rustls::AlertDescription::ProtocolVersion
        ))
    );
    let error = server.refused().await;
    assert!(
        matches!(error, rustls::Error::PeerIncompatible(_)),
        "{error:?}"
    );
    // The same server speaks TLS 1.3.
    let outcome = fetch(server.addr, tls13(&pki, None)).await;
    assert_eq!(outcome.body(), "client anonymous");
}

#[tokio::test]
async fn a_valid_client_certificate_is_served_and_named() {
    let pki = Pki::new("gateway test CA");
    let settings = pki.server_settings(ClientAuth::Required(pki.client_ca(None)));
    let (_acceptor, mut server) = started(settings).await;
    let laptop = pki.client("laptop", 1);
    let outcome = fetch(server.addr, tls13(&pki, Some(&laptop))).await;
    let Outcome::Response(ref text, ref alpn) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(outcome.body(), "client laptop");
    assert_eq!(server.handshake().await.unwrap().as_deref(), Some("laptop"));
}

#[tokio::test]
async fn required_a_client_without_a_certificate_gets_no_response() {
    let pki = Pki::new("gateway test CA");
    let settings = pki.server_settings(ClientAuth::Required(pki.client_ca(None)));
    let (_acceptor, mut server) = started(settings).await;
    let outcome = fetch(server.addr, tls13(&pki, None)).await;
    assert!(matches!(outcome, Outcome::NoResponse), "{outcome:?}");
    let error = server.refused().await;
    assert_eq!(error, rustls::Error::NoCertificatesPresented);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_gets_no_response() {
    let pki = Pki::new("gateway test CA");
    let other = Pki::new("someone else's CA");
    let settings = pki.server_settings(ClientAuth::Required(pki.client_ca(None)));
    let (_acceptor, mut server) = started(settings).await;
    let stranger = other.client("laptop", 1);
    let outcome = fetch(server.addr, tls13(&pki, Some(&stranger))).await;
    assert!(matches!(outcome, Outcome::NoResponse), "{outcome:?}");
    let error = server.refused().await;
    assert_eq!(
        error,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[tokio::test]
async fn required_named_serves_only_the_names_listed() {
    let pki = Pki::new("gateway test CA");
    let settings = pki.server_settings(ClientAuth::RequiredNamed {
        ca: pki.client_ca(None),
        names: vec!["admin".to_owned()],
    });
    let (_acceptor, mut server) = started(settings).await;

    let outcome = fetch(server.addr, tls13(&pki, Some(&pki.client("laptop", 1)))).await;
    assert!(matches!(outcome, Outcome::NoResponse), "{outcome:?}");
    assert_eq!(
        server.refused().await,
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
    );
    let outcome = fetch(server.addr, tls13(&pki, None)).await;
    assert!(matches!(outcome, Outcome::NoResponse), "{outcome:?}");
    assert_eq!(
        server.refused().await,
        rustls::Error::NoCertificatesPresented
    );

    let outcome = fetch(server.addr, tls13(&pki, Some(&pki.client("admin", 2)))).await;
    assert_eq!(outcome.body(), "client admin");
    assert_eq!(server.handshake().await.unwrap().as_deref(), Some("admin"));
}

#[tokio::test]
async fn optional_serves_anonymous_clients_and_verifies_the_others() {
    let pki = Pki::new("gateway test CA");
    let other = Pki::new("someone else's CA");
    let settings = pki.server_settings(ClientAuth::Optional(pki.client_ca(None)));
    let (_acceptor, mut server) = started(settings).await;

    let outcome = fetch(server.addr, tls13(&pki, None)).await;
    assert_eq!(outcome.body(), "client anonymous");
    assert_eq!(server.handshake().await.unwrap(), None);

    let outcome = fetch(server.addr, tls13(&pki, Some(&pki.client("phone", 1)))).await;
    assert_eq!(outcome.body(), "client phone");
    assert_eq!(server.handshake().await.unwrap().as_deref(), Some("phone"));

    let outcome = fetch(server.addr, tls13(&pki, Some(&other.client("phone", 1)))).await;
    assert!(matches!(outcome, Outcome::NoResponse), "{outcome:?}");
    assert_eq!(
        server.refused().await,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_after_a_reload() {
    let pki = Pki::new("gateway test CA");
    let crl = pki.write_crl(1, &[]);
    let settings = pki.server_settings(ClientAuth::Required(pki.client_ca(Some(crl))));
    let (acceptor, mut server) = started(settings).await;
    let (laptop, phone) = (pki.client("laptop", 1), pki.client("phone", 2));

    let outcome = fetch(server.addr, tls13(&pki, Some(&laptop))).await;
    assert_eq!(outcome.body(), "client laptop");
    assert!(server.handshake().await.is_ok());

    pki.write_crl(2, &[1]);
    // The new file alone changes nothing: the acceptor reads files only when told to.
    let outcome = fetch(server.addr, tls13(&pki, Some(&laptop))).await;
    assert_eq!(outcome.body(), "client laptop");
    assert!(server.handshake().await.is_ok());

    acceptor.reload().unwrap();
    let outcome = fetch(server.addr, tls13(&pki, Some(&laptop))).await;
    assert!(matches!(outcome, Outcome::NoResponse), "{outcome:?}");
    assert_eq!(
        server.refused().await,
        rustls::Error::InvalidCertificate(CertificateError::Revoked)
    );
    let outcome = fetch(server.addr, tls13(&pki, Some(&phone))).await;
    assert_eq!(outcome.body(), "client phone");
}

#[tokio::test]
async fn a_failed_reload_names_the_file_and_keeps_the_old_config() {
    let pki = Pki::new("gateway test CA");
    let crl = pki.write_crl(1, &[1]);
    let settings = pki.server_settings(ClientAuth::Required(pki.client_ca(Some(crl.clone()))));
    let (acceptor, mut server) = started(settings).await;
    let (revoked, phone) = (pki.client("laptop", 1), pki.client("phone", 2));
    let garbage: [&[u8]; 3] = [
        b"not a CRL at all\n",
        b"-----BEGIN X509 CRL-----\nZ2FyYmFnZQ==\n-----END X509 CRL-----\n",
        b"",
    ];
    for contents in garbage {
        std::fs::write(&crl, contents).unwrap();
        let error = format!("{:#}", acceptor.reload().unwrap_err());
        assert!(error.contains(&crl.display().to_string()), "{error}");

        // Still the old config: the good client served, the revoked one refused.
        let outcome = fetch(server.addr, tls13(&pki, Some(&phone))).await;
        assert_eq!(outcome.body(), "client phone");
        assert!(server.handshake().await.is_ok());
        let outcome = fetch(server.addr, tls13(&pki, Some(&revoked))).await;
        assert!(matches!(outcome, Outcome::NoResponse), "{outcome:?}");
        assert_eq!(
            server.refused().await,
            rustls::Error::InvalidCertificate(CertificateError::Revoked)
        );
    }
}

#[tokio::test]
async fn bad_files_are_named() {
    let pki = Pki::new("gateway test CA");
    let good = pki.server_settings(ClientAuth::Required(pki.client_ca(None)));
    let other_key = pki.write("other.key", KeyPair::generate().unwrap().serialize_pem());
    let empty = pki.write("empty.pem", "");
    let missing = pki.path("missing.pem");
    let cases: Vec<(&str, TlsSettings, Vec<&PathBuf>)> = vec![
        (
            "missing key",
            TlsSettings {
                key: missing.clone(),
                ..good.clone()
            },
            vec![&missing],
        ),
        (
            "no certificate",
            TlsSettings {
                cert_chain: empty.clone(),
                ..good.clone()
            },
            vec![&empty],
        ),
        (
            "key of another certificate",
            TlsSettings {
                key: other_key.clone(),
                ..good.clone()
            },
            vec![&other_key, &good.cert_chain],
        ),
        (
            "no CA certificate",
            TlsSettings {
                client_auth: ClientAuth::Required(ClientCa {
                    ca: empty.clone(),
                    crl: None,
                }),
                ..good.clone()
            },
            vec![&empty],
        ),
        (
            "missing CRL",
            TlsSettings {
                client_auth: ClientAuth::Optional(pki.client_ca(Some(missing.clone()))),
                ..good.clone()
            },
            vec![&missing],
        ),
    ];
    for (case, settings, named) in cases {
        let error = match TlsAcceptor::new(settings) {
            Ok(_) => panic!("{case}: accepted"),
            Err(error) => format!("{error:#}"),
        };
        for path in named {
            assert!(
                error.contains(&path.display().to_string()),
                "{case}: {error}"
            );
        }
    }
    assert!(TlsAcceptor::new(good).is_ok());
}

#[tokio::test]
async fn a_stalled_handshake_times_out() {
    let pki = Pki::new("gateway test CA");
    let settings = TlsSettings {
        handshake_timeout: Duration::from_millis(200),
        ..pki.server_settings(ClientAuth::None)
    };
    let (_acceptor, mut server) = started(settings).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let error = server.handshake().await.unwrap_err();
    assert!(matches!(error, HandshakeError::Timeout(_)), "{error}");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(BOUND, silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
}

#[test]
fn the_name_is_the_common_name_else_the_first_dns_name() {
    let pki = Pki::new("gateway test CA");
    let cert = |common_name: Option<&str>, sans: Vec<SanType>| {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(name) = common_name {
            params
                .distinguished_name
                .push(DnType::OrganizationName, "home");
            params.distinguished_name.push(DnType::CommonName, name);
        }
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &pki.ca).unwrap().der().clone()
    };
    let dns = |name: &str| SanType::DnsName(name.try_into().unwrap());
    let ip = SanType::IpAddress("127.0.0.1".parse().unwrap());
    let cases = [
        (
            cert(Some("laptop"), vec![dns("other.home.arpa")]),
            Some("laptop"),
        ),
        (
            cert(None, vec![ip.clone(), dns("printer.home.arpa"), dns("b")]),
            Some("printer.home.arpa"),
        ),
        (cert(None, vec![ip]), None),
        (cert(None, vec![]), None),
    ];
    for (der, expected) in cases {
        assert_eq!(client_name(&der).as_deref(), expected);
    }
    assert_eq!(client_name(&CertificateDer::from(vec![0x30, 0x03])), None);
}
