//! The PKI against the real TLS acceptor: an issued client is let in, a revoked one is
//! refused after a reload, and files are guarded against overwrites.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::net::tls::{ClientAuth, ClientCa, TlsAcceptor, TlsSettings};

const INSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn ready_pki() -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::under(dir.path());
    assert!(pki.ensure_server("home.arpa", INSIDE).unwrap());
    assert!(
        !pki.ensure_server("home.arpa", INSIDE).unwrap(),
        "made once"
    );
    (dir, pki)
}

fn acceptor(pki: &Pki) -> TlsAcceptor {
    TlsAcceptor::new(TlsSettings {
        client_auth: ClientAuth::Required(ClientCa {
            ca: pki.ca_cert(),
            crl: Some(pki.crl()),
        }),
        ..TlsSettings::new(pki.server_cert(), pki.server_key())
    })
    .unwrap()
}

/// A TLS 1.3 handshake to `registry.home.arpa` with the bundle in `bundle`; whether the
/// server accepted the client's certificate.
async fn accepted(acceptor: &TlsAcceptor, bundle: &Path) -> bool {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = acceptor.clone();
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match server.accept(tcp).await {
            Ok(mut accepted) => {
                let _ = accepted.stream.write_all(b"ok").await;
                let _ = accepted.stream.shutdown().await;
                accepted.client_name
            }
            Err(_) => None,
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(bundle.join("ca.crt")).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_file(bundle.join("client.cert")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(bundle.join("client.key")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("registry.home.arpa").unwrap();
    let mut got = Vec::new();
    if let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        let _ = tls.read_to_end(&mut got).await;
    }
    let client_name = served.await.unwrap();
    assert_eq!(got == b"ok", client_name.is_some());
    got == b"ok"
}

#[tokio::test]
async fn an_issued_client_is_let_in_until_it_is_revoked() {
    let (dir, pki) = ready_pki();
    let bundle = dir.path().join("ci");
    pki.issue_client("ci", &bundle, false).unwrap();
    let mode = fs::metadata(bundle.join("client.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = fs::metadata(pki.dir().join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let acceptor = acceptor(&pki);
    assert!(accepted(&acceptor, &bundle).await);

    pki.revoke("ci").unwrap();
    assert!(
        accepted(&acceptor, &bundle).await,
        "the old CRL until a reload"
    );
    acceptor.reload().unwrap();
    assert!(!accepted(&acceptor, &bundle).await, "revoked");

    let listed = pki.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "ci");
    assert!(listed[0].revoked);
    // The name is free again once revoked.
    pki.issue_client("ci", &dir.path().join("ci2"), false)
        .unwrap();
    assert!(accepted(&acceptor, &dir.path().join("ci2")).await);
    assert_eq!(pki.list().unwrap().len(), 2);
}

#[tokio::test]
async fn another_cas_client_is_refused() {
    let (dir, pki) = ready_pki();
    let other = Pki::under(&dir.path().join("other"));
    other.init(false).unwrap();
    other
        .issue_client("ci", &dir.path().join("foreign"), false)
        .unwrap();
    assert!(!accepted(&acceptor(&pki), &dir.path().join("foreign")).await);
}

#[test]
fn the_server_certificate_follows_the_zone_and_address() {
    let (_dir, pki) = ready_pki();
    let before = fs::read(pki.server_cert()).unwrap();
    assert!(!pki.ensure_server("home.arpa", INSIDE).unwrap());
    assert!(
        pki.ensure_server("lan.example", INSIDE).unwrap(),
        "another zone"
    );
    assert!(pki
        .ensure_server("lan.example", Ipv4Addr::new(10, 0, 0, 1))
        .unwrap());
    assert!(!pki
        .ensure_server("lan.example", Ipv4Addr::new(10, 0, 0, 1))
        .unwrap());
    assert_ne!(fs::read(pki.server_cert()).unwrap(), before);
}

#[test]
fn nothing_is_overwritten_without_force() {
    let (dir, pki) = ready_pki();
    let error = pki.init(false).unwrap_err().to_string();
    assert!(error.contains("ca.crt exists; pass --force"), "{error}");
    let error = pki
        .issue_server("home.arpa", INSIDE, false)
        .unwrap_err()
        .to_string();
    assert!(error.contains("server.crt exists"), "{error}");
    let out = dir.path().join("bundle");
    pki.issue_client("a", &out, false).unwrap();
    let error = pki.issue_client("a", &out, false).unwrap_err().to_string();
    assert!(error.contains("already issued"), "{error}");
    let error = pki.issue_client("b", &out, false).unwrap_err().to_string();
    assert!(error.contains("client.cert exists"), "{error}");
    pki.issue_client("b", &out, true).unwrap();
}

#[tokio::test]
async fn a_forced_reissue_keeps_the_old_certificate_revocable() {
    let (dir, pki) = ready_pki();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    pki.issue_client("host.lan", &first, false).unwrap();
    pki.issue_client("host.lan", &second, true).unwrap();
    let listed = pki.list().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .all(|cert| cert.name == "host.lan" && !cert.revoked));
    let acceptor = acceptor(&pki);
    assert!(accepted(&acceptor, &first).await);
    pki.revoke("host.lan").unwrap();
    acceptor.reload().unwrap();
    assert!(
        !accepted(&acceptor, &first).await,
        "the replaced one is revoked too"
    );
    assert!(!accepted(&acceptor, &second).await);
    assert!(pki.list().unwrap().iter().all(|cert| cert.revoked));
    // A new CA starts with no records.
    pki.init(true).unwrap();
    assert!(pki.list().unwrap().is_empty());
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::under(dir.path());
    let error = pki
        .issue_client("ci", &dir.path().join("x"), false)
        .unwrap_err()
        .to_string();
    assert!(error.contains("pki init"), "{error}");
    pki.init(false).unwrap();
    for bad in ["", "UPPER", "../x", "a/b", &"a".repeat(65)] {
        let error = pki
            .issue_client(bad, &dir.path().join("x"), false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("is not a client name"), "{bad}: {error}");
    }
    let error = pki.revoke("nobody").unwrap_err().to_string();
    assert!(error.contains("no valid certificate was issued"), "{error}");
}
