//! The server with real TLS and a real client (curl) on loopback: a bundle from `pki` gets
//! answers; no certificate, TLS 1.2 and a revoked certificate (after `pki revoke`, without a
//! restart) get no HTTP response at all.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use super::*;
use crate::config::Registry;
use crate::net::tls::{ClientAuth, ClientCa, TlsSettings};
use crate::pki::Pki;
use crate::registry::storage::{FsStorage, Limits};

/// curl's exit status and what it printed (`-i`: the status line and headers too).
fn curl(port: u16, bundle: Option<&Path>, ca: &Path, extra: &[&str]) -> (bool, String) {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-i", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("registry.home.arpa:{port}:127.0.0.1")]);
    if let Some(bundle) = bundle {
        command
            .arg("--cert")
            .arg(bundle.join("client.cert"))
            .arg("--key")
            .arg(bundle.join("client.key"));
    }
    let output = command
        .args(extra)
        .arg(format!("https://registry.home.arpa:{port}/v2/"))
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_valid_certificates_over_tls_13_get_http() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: no curl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::under(dir.path());
    pki.ensure_server("home.arpa", Ipv4Addr::LOCALHOST).unwrap();
    pki.issue_client("ci", &dir.path().join("ci"), false)
        .unwrap();
    let other = Pki::under(&dir.path().join("other"));
    other.init(false).unwrap();
    other
        .issue_client("ci", &dir.path().join("foreign"), false)
        .unwrap();

    let acceptor = TlsAcceptor::new(TlsSettings {
        client_auth: ClientAuth::Required(ClientCa {
            ca: pki.ca_cert(),
            crl: Some(pki.crl()),
        }),
        ..TlsSettings::new(pki.server_cert(), pki.server_key())
    })
    .unwrap();
    let store = Arc::new(FsStorage::open(dir.path().join("store"), Limits::default()).unwrap());
    let api = Arc::new(Api::new(store, Arc::new(Registry::default())));
    let settings = ServerSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        inside: Inside {
            address: Ipv4Addr::LOCALHOST,
            prefix_len: 8,
        },
        max_connections: 16,
    };
    let server = RegistryServer::start(settings, acceptor, api)
        .await
        .unwrap();
    let port = server.local_addr().port();
    let ca = pki.ca_cert();
    let bundle = dir.path().join("ci");

    let run = |bundle: Option<std::path::PathBuf>, extra: &'static [&'static str]| {
        let ca = ca.clone();
        tokio::task::spawn_blocking(move || curl(port, bundle.as_deref(), &ca, extra))
    };
    let (ok, out) = run(Some(bundle.clone()), &[]).await.unwrap();
    assert!(ok && out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("docker-distribution-api-version: registry/2.0"),
        "{out}"
    );

    const NONE: &[&str] = &[];
    const TLS12: &[&str] = &["--tls-max", "1.2"];
    for (who, bundle, extra) in [
        ("no certificate", None, NONE),
        ("another CA's", Some(dir.path().join("foreign")), NONE),
        ("TLS 1.2", Some(bundle.clone()), TLS12),
    ] {
        let (ok, out) = run(bundle, extra).await.unwrap();
        assert!(!ok && !out.contains("HTTP/"), "{who}: {out}");
    }

    pki.revoke("ci").unwrap();
    // The housekeeping task notices the new CRL within a poll or two.
    let mut refused = false;
    for _ in 0..50 {
        let (ok, out) = run(Some(bundle.clone()), &[]).await.unwrap();
        if !ok && !out.contains("HTTP/") {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        refused,
        "a revoked certificate is refused without a restart"
    );
    // The server counts a refused handshake when its side finishes, which can be a moment
    // after curl has given up.
    let (_, failures) = server.reader();
    for _ in 0..50 {
        if failures.load(Ordering::Relaxed) >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        failures.load(Ordering::Relaxed) >= 4,
        "refused handshakes counted: {}",
        failures.load(Ordering::Relaxed)
    );
    server.stop().await;
}
