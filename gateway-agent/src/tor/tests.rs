//! Fail closed without a Tor network: the client starts, is not ready, and every user of it
//! refuses. The arti config names a private network at an unreachable address, so the test
//! never touches the real Tor network.

use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::egress::{Connector, Host, Target, Upstream, UpstreamError};
use crate::socks::{SocksServer, SocksSettings};

/// One authority, one fallback on a closed local port.
const NOWHERE: &str = r#"
[tor_network]
authorities = { v3idents = ["0000000000000000000000000000000000000000"] }
fallback_caches = [
  { rsa_identity = "0000000000000000000000000000000000000001", ed_identity = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", orports = ["127.0.0.1:1"] },
]
"#;

fn settings(dir: &Path) -> TorSettings {
    let arti = dir.join("arti.toml");
    std::fs::write(&arti, NOWHERE).unwrap();
    TorSettings {
        network_up: None,
        state_dir: dir.join("tor"),
        arti_config: Some(arti),
    }
}

#[tokio::test]
async fn unbootstrapped_tor_refuses_everything() {
    let dir = tempfile::tempdir().unwrap();
    let tor = Tor::start(settings(dir.path())).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(dir.path().join("tor/state").is_dir() && dir.path().join("tor/cache").is_dir());
    let status = tor.status();
    assert!(!status.bootstrapped, "{status:?}");
    assert!(!tor.is_ready());

    let iso = Isolation("client:198.51.100.10".into());
    let connector = TorConnector::new(tor.clone());
    let target = Target {
        host: Host::Name("origin.example".into()),
        port: 80,
    };
    assert!(matches!(
        connector.connect(&target, &iso).await,
        Err(EgressError::NotReady(_))
    ));
    assert!(matches!(
        tor.resolve("origin.example", &iso).await,
        Err(EgressError::NotReady(_))
    ));
    assert!(matches!(
        tor.resolve_ptr("192.0.2.1".parse().unwrap(), &iso).await,
        Err(EgressError::NotReady(_))
    ));

    let upstream = TorUpstream::new(Arc::new(tor.clone()));
    let name = Name::from_ascii("origin.example.").unwrap();
    assert!(matches!(
        upstream.lookup(&name, RecordType::A).await,
        Err(UpstreamError::Failed(_))
    ));

    // SOCKS over the real Tor handle: a failure code, never a stream.
    let socks = SocksServer::start(
        SocksSettings::new(
            "127.0.0.1:0".parse().unwrap(),
            crate::config::Inside {
                address: std::net::Ipv4Addr::LOCALHOST,
                prefix_len: 8,
            },
        ),
        Arc::new(connector),
        Arc::new(tor.clone()),
    )
    .await
    .unwrap();
    for cmd in [1u8, 0xf0] {
        let mut c = TcpStream::connect(socks.local_addr()).await.unwrap();
        c.write_all(&[5, 1, 0]).await.unwrap();
        let mut reply = [0; 2];
        c.read_exact(&mut reply).await.unwrap();
        let mut req = vec![5, cmd, 0, 3, 14];
        req.extend(b"origin.example");
        req.extend(80u16.to_be_bytes());
        c.write_all(&req).await.unwrap();
        let mut reply = [0; 10];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut reply))
            .await
            .expect("reply in time")
            .unwrap();
        assert_eq!(reply[1], 1, "general failure for command {cmd:#x}");
    }
    assert_eq!(socks.stats().failures.get("not_ready"), Some(&2));
    socks.stop().await;
    tor.stop();
    assert!(!tor.status().bootstrapped);
}

#[tokio::test]
async fn a_bad_arti_config_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let arti = dir.path().join("arti.toml");
    std::fs::write(&arti, "[tor_network]\nauthorities = 5\n").unwrap();
    let err = Tor::start(TorSettings {
        network_up: None,
        state_dir: dir.path().join("tor"),
        arti_config: Some(arti.clone()),
    })
    .err()
    .expect("a bad config is an error");
    assert!(
        format!("{err:#}").contains(&arti.display().to_string()),
        "{err:#}"
    );
    let missing = Tor::start(TorSettings {
        network_up: None,
        state_dir: dir.path().join("tor"),
        arti_config: Some(dir.path().join("missing.toml")),
    })
    .err()
    .expect("a missing config is an error");
    assert!(
        format!("{missing:#}").contains("missing.toml"),
        "{missing:#}"
    );
}
