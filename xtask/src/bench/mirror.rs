//! `cargo xtask bench registry`, its second part: a cached pull from the gateway's mirror
//! against Debian's `docker-registry` (distribution 2.8) configured as a pull-through proxy
//! (`proxy.remoteurl`) for the same upstream (the lab's `registry.hub.test`), one after the
//! other on 198.51.100.1:5000 with the same TLS settings and the same client
//! (`mirror_load.py`: one keep-alive connection from c1, the manifest and every blob by
//! digest, each checked). Two images: one 256 MiB layer, and 100 small layers.
//!
//! The mirror is filled by one pull through the upstream first (`mirror.egress = "direct"`:
//! Tor is not what is measured); distribution's cache is filled by copying the upstream's
//! storage into its own (it serves content it holds without asking the remote), so both
//! measured pulls come from a full cache.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::server::{
    bench_config, client_reservation, ensure_client_address, lease_client_address, Server,
};
use super::{results, Measurement, Report};
use crate::{lab, process};

/// The big layer.
const BIG_BYTES: usize = 256 << 20;
/// The small layers: how many, and how big.
const SMALL_COUNT: usize = 100;
const SMALL_BYTES: usize = 64 << 10;

const LOAD_SCRIPT: &str = include_str!("mirror_load.py");

pub(super) fn run(lab: &lab::Lab, agent: &Path) -> Result<Report> {
    let state = lab.state_dir();
    let client = lab.ns("c1");
    let gw = lab.ns("gw");
    lab.start_upstream()?;
    eprintln!("bench: building the mirror benchmark's images in the upstream");
    let big = lab.seed_upstream_image(lab::UPSTREAM_NS, "bench/big", "1", &[("big", BIG_BYTES)])?;
    let names: Vec<String> = (0..SMALL_COUNT).map(|i| format!("s{i}")).collect();
    let files: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), SMALL_BYTES)).collect();
    let small = lab.seed_upstream_image(lab::UPSTREAM_NS, "bench/small", "1", &files)?;
    ensure_client_address(lab)?;
    let config = bench_config(
        lab,
        &format!(
            "[tor]\nenabled = false\n[dns]\nupstream = \"none\"\n[mirror]\ndefault = \"{}\"\n\
             egress = \"direct\"\n{}",
            lab::UPSTREAM_NS,
            client_reservation(lab)?
        ),
    )?;
    let script = state.join("mirror_load.py");
    std::fs::write(&script, LOAD_SCRIPT).context("writing the load script")?;
    let bundle = state.join("bench-mirror-client");
    let pki = state.join("state/pki");
    let images = [("256 MiB layer", &big), ("100 small layers", &small)];

    let mut rows = Vec::new();
    {
        let server = Server::agent(&gw, agent, &config)?;
        lease_client_address(lab)?;
        let issued = process::ns_run_ok(
            &gw,
            &agent.display().to_string(),
            [
                "--config",
                &config.display().to_string(),
                "pki",
                "issue-client",
                "bench",
                "--out",
                &bundle.display().to_string(),
                "--force",
            ],
        );
        if !issued {
            bail!("issuing the benchmark's client certificate failed");
        }
        // The fill: until the uplink is up, the first pull fails.
        for (_, image) in images {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match load(&client, &script, &bundle, image) {
                    Ok(_) => break,
                    Err(error) if Instant::now() < deadline => {
                        eprintln!("bench: filling the mirror: {error:#}; again");
                        std::thread::sleep(Duration::from_secs(2));
                    }
                    Err(error) => return Err(error.context("filling the mirror")),
                }
            }
        }
        for (what, image) in images {
            let result = load(&client, &script, &bundle, image)?;
            rows.push(measurement(
                "gateway-agent mirror",
                what,
                &result,
                server.rss_kib("VmHWM"),
            ));
        }
    }
    {
        let root = state.join("distribution-proxy");
        let _ = std::fs::remove_dir_all(&root);
        process::run(
            "cp",
            [
                "-a".to_owned(),
                lab.upstream_root(lab::UPSTREAM_NS).display().to_string(),
                root.display().to_string(),
            ],
        )
        .context("filling distribution's cache")?;
        let yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
             http:\n  addr: {ip}:5000\n  tls:\n    certificate: {pki}/server.crt\n    \
             key: {pki}/server.key\n    clientcas:\n      - {pki}/ca.crt\n    minimumtls: tls1.3\n\
             proxy:\n  remoteurl: http://{host}:{port}\n",
            root = root.display(),
            ip = lab::GATEWAY_INSIDE_IP,
            pki = pki.display(),
            host = lab::UPSTREAM_HOST,
            port = lab::REGISTRY_PORT,
        );
        // distribution reaches its remote from `gw` itself: with the agent gone (and its
        // programs detached), outside0 gets the slot's spare uplink address, a default route
        // and ARP answers back for the run.
        let outside = format!("{}/24", lab.spare_uplink_ip());
        let uplink = [
            vec!["sysctl", "-qw", "net.ipv4.conf.outside0.arp_ignore=0"],
            vec!["ip", "addr", "replace", &outside, "dev", "outside0"],
            vec![
                "ip",
                "route",
                "replace",
                "default",
                "via",
                lab::MODEM_IP,
                "dev",
                "outside0",
            ],
        ];
        for command in &uplink {
            process::ns_run(&gw, command[0], &command[1..])
                .context("giving gw an uplink address for distribution's remote")?;
        }
        let yaml_path = state.join("distribution-proxy.yml");
        std::fs::write(&yaml_path, yaml).context("writing distribution's config")?;
        let server = Server::spawn(
            &gw,
            &[
                "docker-registry".into(),
                "serve".into(),
                yaml_path.display().to_string(),
            ],
        )?;
        std::thread::sleep(Duration::from_secs(2));
        for (what, image) in images {
            let result = load(&client, &script, &bundle, image)?;
            rows.push(measurement(
                "docker-registry 2.8 proxy",
                what,
                &result,
                server.rss_kib("VmHWM"),
            ));
        }
        drop(server);
        let _ = std::fs::remove_dir_all(&root);
        let _ = process::ns_run(&gw, "ip", ["route", "del", "default", "dev", "outside0"]);
        let _ = process::ns_run(
            &gw,
            "ip",
            ["addr", "del", outside.as_str(), "dev", "outside0"],
        );
    }
    let mut notes = format!(
        "From c1, one keep-alive TLS 1.3 connection with a client certificate (Python's \
         http.client and ssl, `mirror_load.py`): an image pulled by digest (the manifest, then \
         every blob, each hashed) from a full cache: one with a {} MiB layer, one with \
         {SMALL_COUNT} layers of {} KiB. The gateway's mirror (filled by one pull through the \
         lab's upstream, `mirror.egress = \"direct\"`) and distribution 2.8 as a pull-through \
         proxy of the same upstream (its storage a copy of the upstream's; `gw` reaches the \
         upstream from a static uplink address while it runs), one after the other \
         on 198.51.100.1:5000 with the agent's server certificate, client certificates from its \
         CA, TLS 1.3 minimum. Rates are MB/s for the big layer and blobs/s for the small ones.",
        BIG_BYTES >> 20,
        SMALL_BYTES >> 10
    );
    notes.push('\n');
    notes.push_str(&results::ratio_lines(
        &rows,
        "gateway-agent mirror ",
        "distribution",
    ));
    Ok(("Registry mirror (cached pull)".into(), rows, notes))
}

/// Runs the load script from `client` for `image`; its JSON.
fn load(
    client: &str,
    script: &Path,
    bundle: &Path,
    image: &lab::SeededImage,
) -> Result<serde_json::Value> {
    let repo = image.reference.split(':').next().unwrap_or_default();
    let out = process::ns_output(
        client,
        "python3",
        [
            script.display().to_string(),
            lab::GATEWAY_INSIDE_IP.to_string(),
            "5000".to_string(),
            bundle.join("client.cert").display().to_string(),
            bundle.join("client.key").display().to_string(),
            bundle.join("ca.crt").display().to_string(),
            repo.to_owned(),
            image.digest.clone(),
        ],
    )
    .context("running the mirror load script")?;
    serde_json::from_str(out.trim()).with_context(|| format!("the load script printed {out:?}"))
}

fn measurement(
    server: &str,
    what: &str,
    result: &serde_json::Value,
    rss: Option<u64>,
) -> Measurement {
    let seconds = result["seconds"].as_f64().unwrap_or(0.0);
    let rate = if seconds <= 0.0 {
        0.0
    } else if what.contains("small") {
        result["blobs"].as_f64().unwrap_or(0.0) / seconds
    } else {
        result["bytes"].as_f64().unwrap_or(0.0) / seconds / 1e6
    };
    let unit = if what.contains("small") {
        "blobs/s"
    } else {
        "MB/s"
    };
    Measurement {
        server: format!("{server} {what} ({unit})"),
        rate,
        peak_rss_kib: rss,
        ..Measurement::default()
    }
}
