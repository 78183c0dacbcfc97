//! `cargo xtask bench registry`: the agent's private registry against Debian's
//! `docker-registry` (distribution 2.8), one after the other on the gateway's inside address
//! with the same TLS settings (TLS 1.3, client certificates from the agent's CA, the agent's
//! server certificate) and the same client (`registry_load.py`: one keep-alive connection from
//! c1). Blob push and pull throughput for a 256 MiB blob and for 200 small ones, and each
//! server's peak memory.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::server::{
    bench_config, client_reservation, ensure_client_address, lease_client_address, Server,
};
use super::{results, Measurement, Report};
use crate::{deps, lab, process};

/// The big blob.
const BIG_BYTES: usize = 256 << 20;
/// The small blobs: how many, and how big.
const SMALL_COUNT: u32 = 200;
const SMALL_BYTES: u32 = 64 << 10;

const LOAD_SCRIPT: &str = include_str!("registry_load.py");

/// Debian's distribution 2.8.
pub const PACKAGE: &str = "docker-registry";

/// Installs docker-registry if missing; its system service (a registry on the host's port
/// 5000) is switched off, as the benchmark runs its own in the lab.
pub fn ensure_package() -> Result<()> {
    let was_missing = !deps::is_installed(PACKAGE);
    deps::ensure_packages(&[PACKAGE], "for the registry benchmark")?;
    if was_missing && Path::new("/run/systemd/system").exists() {
        if let Err(err) = process::run("systemctl", ["disable", "--now", "docker-registry.service"])
        {
            eprintln!("xtask: warning: {err:#}");
        }
    }
    Ok(())
}

pub(super) fn run(lab: &lab::Lab, agent: &Path) -> Result<Report> {
    let state = lab.state_dir();
    let client = lab.ns("c1");
    let gw = lab.ns("gw");
    ensure_client_address(lab)?;
    // The IP source guard passes only leased sources: c1 takes a reserved lease first.
    let config = bench_config(
        lab,
        &format!(
            "[tor]\nenabled = false\n[dns]\nupstream = \"none\"\n[[registry.access]]\nclient = \
             \"bench\"\npush = [\"\"]\n{}",
            client_reservation(lab)?
        ),
    )?;
    let big = state.join("bench-big.blob");
    let data: Vec<u8> = (0..BIG_BYTES as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&big, data).context("writing the big blob")?;
    let script = state.join("registry_load.py");
    std::fs::write(&script, LOAD_SCRIPT).context("writing the load script")?;
    let bundle = state.join("bench-client");
    let pki = state.join("state/pki");

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
        let result = load(&client, &script, &bundle, &big, "agent")?;
        rows.extend(measurements(
            "gateway-agent",
            &result,
            server.rss_kib("VmHWM"),
        ));
    }
    {
        let root = state.join("distribution");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).context("creating distribution's storage")?;
        let yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: {ip}:443\n  tls:\n    certificate: {pki}/server.crt\n    \
             key: {pki}/server.key\n    clientcas:\n      - {pki}/ca.crt\n    minimumtls: tls1.3\n",
            root = root.display(),
            ip = lab::GATEWAY_INSIDE_IP,
            pki = pki.display(),
        );
        let yaml_path = state.join("distribution.yml");
        std::fs::write(&yaml_path, yaml).context("writing distribution's config")?;
        let server = Server::spawn(
            &gw,
            &[
                "docker-registry".into(),
                "serve".into(),
                yaml_path.display().to_string(),
            ],
        )?;
        std::thread::sleep(std::time::Duration::from_secs(2));
        let result = load(&client, &script, &bundle, &big, "distribution")?;
        rows.extend(measurements(
            "docker-registry 2.8",
            &result,
            server.rss_kib("VmHWM"),
        ));
    }
    let _ = std::fs::remove_file(&big);
    let mut notes = format!(
        "From c1, one keep-alive TLS 1.3 connection with a client certificate (Python's http.client \
         and ssl, `registry_load.py`): a {} MiB blob pushed (POST, then one PUT) and pulled, then \
         {SMALL_COUNT} blobs of {} KiB pushed and pulled one by one. Both servers on \
         198.51.100.1:443 with the agent's server certificate, requiring client certificates from \
         its CA, TLS 1.3 minimum (distribution has no CRL support); the agent first, with its XDP \
         program attached, then distribution after the agent stopped. Filesystem storage in the \
         lab's state dir for both. Rates are MB/s for the big blob and blobs/s for the small ones.",
        BIG_BYTES >> 20,
        SMALL_BYTES >> 10
    );
    notes.push('\n');
    notes.push_str(&results::ratio_lines(
        &rows,
        "gateway-agent ",
        "distribution",
    ));
    Ok(("Registry (blob push and pull)".into(), rows, notes))
}

/// Runs the load script from `client`; its JSON.
fn load(
    client: &str,
    script: &Path,
    bundle: &Path,
    big: &Path,
    repo: &str,
) -> Result<serde_json::Value> {
    let out = process::ns_output(
        client,
        "python3",
        [
            script.display().to_string(),
            lab::GATEWAY_INSIDE_IP.to_string(),
            bundle.join("client.cert").display().to_string(),
            bundle.join("client.key").display().to_string(),
            bundle.join("ca.crt").display().to_string(),
            big.display().to_string(),
            format!("bench/{repo}"),
            SMALL_COUNT.to_string(),
            SMALL_BYTES.to_string(),
        ],
    )
    .context("running the registry load script")?;
    serde_json::from_str(out.trim()).with_context(|| format!("the load script printed {out:?}"))
}

fn measurements(server: &str, result: &serde_json::Value, rss: Option<u64>) -> Vec<Measurement> {
    [
        ("push 256 MiB (MB/s)", "big_push_mb_s"),
        ("pull 256 MiB (MB/s)", "big_pull_mb_s"),
        ("push small (blobs/s)", "small_push_per_s"),
        ("pull small (blobs/s)", "small_pull_per_s"),
    ]
    .iter()
    .map(|(what, key)| Measurement {
        server: format!("{server} {what}"),
        rate: result[key].as_f64().unwrap_or(0.0),
        peak_rss_kib: rss,
        ..Measurement::default()
    })
    .collect()
}
