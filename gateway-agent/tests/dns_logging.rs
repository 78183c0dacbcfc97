//! No per-query logging unless configured: at the agent's usual INFO level, neither our
//! handler nor hickory-server (which logs every response at INFO) may name clients or
//! queries, unless `log_queries` is on. Its own test binary: it installs the global subscriber.

// Clippy's allow-*-in-tests covers #[test] functions only, not the setup helpers in this
// file; a test whose setup fails should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use gateway_agent::config::{Dns, Inside, Seconds};
use gateway_agent::dns::{DnsServer, DnsServerSettings, LocalZone, SERVICE_NAMES};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

async fn ask(log_queries: bool, name: &str) {
    let inside = Inside {
        address: Ipv4Addr::LOCALHOST,
        prefix_len: 8,
    };
    let zone = Arc::new(
        LocalZone::new(
            &"home.arpa".parse().expect("a domain name"),
            inside,
            Ipv4Addr::LOCALHOST,
            &SERVICE_NAMES,
            &[],
            Seconds::new(60),
        )
        .expect("zone"),
    );
    let settings = DnsServerSettings {
        listen: Ipv4Addr::LOCALHOST,
        port: 0,
        inside,
        dns: Dns::default(),
        gateway_ip: Ipv4Addr::LOCALHOST,
        log_queries,
        answered: None,
    };
    let server = DnsServer::start(settings, zone, None).await.expect("start");
    let addr = server.local_addr();
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+tries=1", "+time=3", name])
        .output()
        .await
        .expect("run dig");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("status: NXDOMAIN"),
        "the query was answered"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_logged_only_when_configured() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    ask(false, "quiet-name.home.arpa").await;
    let text = capture.text();
    assert!(
        text.contains("DNS server listening"),
        "the capture works: {text}"
    );
    assert!(!text.contains("quiet-name"), "a query was logged:\n{text}");
    assert!(!text.contains("src:"), "hickory logged a request:\n{text}");

    ask(true, "loud-name.home.arpa").await;
    let text = capture.text();
    assert!(
        text.contains("loud-name.home.arpa"),
        "log_queries on:\n{text}"
    );
    assert!(!text.contains("src:"), "hickory logged a request:\n{text}");
}
