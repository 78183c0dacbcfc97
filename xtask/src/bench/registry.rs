//! `cargo xtask bench registry`: the agent's private registry against Debian's
//! `docker-registry` (distribution 2.8), one after the other on the gateway's inside address
//! with the same TLS settings (TLS 1.3, client certificates from the agent's CA, the agent's
//! server certificate) and the same client (`registry_load.py`: one keep-alive connection from
//! c1). Blob push and pull throughput for a 256 MiB blob and for 200 small ones, and each
//! server's peak memory; on the filesystem, then on S3 (the lab's NAS, SeaweedFS) for both.

use std::path::{Path, PathBuf};

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
/// Runs of each server per backend (they take turns).
const ROUNDS: u32 = 3;

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
    ensure_client_address(lab)?;
    let big = state.join("bench-big.blob");
    let script = state.join("registry_load.py");
    std::fs::write(&script, LOAD_SCRIPT).context("writing the load script")?;
    let bench = Bench {
        lab,
        agent,
        script,
        big,
    };
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();

    // The filesystem, each in the lab's state dir; the two take turns, each round on content
    // of its own (nothing a round pushes is there already).
    let root = state.join("distribution");
    let (mut agent_fs, mut distribution_fs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        bench.write_big(round)?;
        agent_fs.push(bench.agent("gateway-agent", "", round)?);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).context("creating distribution's storage")?;
        distribution_fs.push(bench.distribution(
            "docker-registry 2.8",
            &format!("  filesystem:\n    rootdirectory: {}\n", root.display()),
            None,
            round,
        )?);
    }

    // S3: the lab's NAS, each under a key prefix of its own (fresh every run and round).
    lab.start_nas()?;
    let (mut agent_s3, mut distribution_s3) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        bench.write_big(round)?;
        agent_s3.push(bench.agent(
            "gateway-agent (S3)",
            &format!(
                "[registry.storage]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\n\
                 credentials = \"{}\"\nprefix = \"bench-agent-{run}-{round}\"\n",
                lab.nas_endpoint(),
                lab::NAS_BUCKET,
                lab.nas_credentials().display()
            ),
            round,
        )?);
        distribution_s3.push(bench.distribution(
            "docker-registry 2.8 (S3)",
            &format!(
                "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: us-east-1\n    \
                 regionendpoint: {}\n    bucket: {}\n    \
                 rootdirectory: /bench-distribution-{run}-{round}\n    \
                 secure: false\n    v4auth: true\n    chunksize: {}\n  redirect:\n    \
                 disable: true\n",
                lab::NAS_ACCESS_KEY,
                lab::NAS_SECRET_KEY,
                lab.nas_endpoint(),
                lab::NAS_BUCKET,
                8 << 20
            ),
            Some(lab.spare_uplink_ip()),
            round,
        )?);
    }
    let _ = std::fs::remove_file(&bench.big);
    let runs = [&agent_fs, &distribution_fs, &agent_s3, &distribution_s3];
    let every_run: String = runs.iter().map(|r| every_run(r)).collect();
    let mut fs_rows = medians(&agent_fs);
    fs_rows.extend(medians(&distribution_fs));
    let mut s3_rows = medians(&agent_s3);
    s3_rows.extend(medians(&distribution_s3));

    let mut notes = format!(
        "From c1, one keep-alive TLS 1.3 connection with a client certificate (Python's http.client \
         and ssl, `registry_load.py`): a {} MiB blob pushed (POST, then one PUT) and pulled, then \
         {SMALL_COUNT} blobs of {} KiB pushed and pulled one by one. Both servers on \
         198.51.100.1:443 with the agent's server certificate, requiring client certificates from \
         its CA, TLS 1.3 minimum (distribution has no CRL support); the agent first, with its XDP \
         program attached, then distribution after the agent stopped; `sync` before each run. \
         On the filesystem the agent fsyncs every blob before it answers 201; distribution does \
         not. Rates are MB/s for the big blob and blobs/s for the small ones. The two take \
         turns, {ROUNDS} runs each (agent, distribution, agent, …), each run on content of its \
         own and, on S3, under a prefix of its own; the table gives medians and each server's \
         highest peak.\n\n\
         Filesystem: the lab's state dir for both. S3: the lab's NAS, SeaweedFS {} (`weed mini`, \
         one process) in its own namespace on the uplink bridge, the same bucket for both under \
         key prefixes of their own; the agent through its storage connector (8 MiB parts, 4 in \
         flight; its read cache on, but every pull here is a blob's first read, so it comes from \
         the store), distribution's s3-aws driver with 8 MiB chunks and redirects off (the \
         inside cannot reach the store), from a static uplink address on the gateway.\n\n\
         Filesystem:",
        BIG_BYTES >> 20,
        SMALL_BYTES >> 10,
        deps::SEAWEEDFS_VERSION,
    );
    notes.push_str(&results::ratio_lines(
        &fs_rows,
        "gateway-agent ",
        "distribution",
    ));
    notes.push_str("\n\nS3:");
    notes.push_str(&results::ratio_lines(
        &s3_rows,
        "gateway-agent (S3) ",
        "distribution",
    ));
    notes.push_str("\n\nEvery run (min–max, then each in order):\n");
    notes.push_str(&every_run);
    fs_rows.extend(s3_rows);
    Ok(("Registry (blob push and pull)".into(), fs_rows, notes))
}

/// What every run of the benchmark shares.
struct Bench<'a> {
    lab: &'a lab::Lab,
    agent: &'a Path,
    script: PathBuf,
    big: PathBuf,
}

impl Bench<'_> {
    fn bundle(&self) -> PathBuf {
        self.lab.state_dir().join("bench-client")
    }

    /// The agent with `storage` (a config table, or "" for the filesystem) under load.
    /// The big blob of `round` (each round's content is its own).
    fn write_big(&self, round: u32) -> Result<()> {
        let data: Vec<u8> = (0..BIG_BYTES as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 24) as u8) ^ (round as u8 + 1))
            .collect();
        std::fs::write(&self.big, data).context("writing the big blob")
    }

    fn agent(&self, label: &str, storage: &str, round: u32) -> Result<Vec<Measurement>> {
        let lab = self.lab;
        settle_disk()?;
        let gw = lab.ns("gw");
        // The IP source guard passes only leased sources: c1 takes a reserved lease first.
        let config = bench_config(
            lab,
            &format!(
                "[tor]\nenabled = false\n[dns]\nupstream = \"none\"\n[[registry.access]]\n\
                 client = \"bench\"\npush = [\"\"]\n{}{storage}",
                client_reservation(lab)?
            ),
        )?;
        let server = Server::agent(&gw, self.agent, &config)?;
        lease_client_address(lab)?;
        let issued = process::ns_run_ok(
            &gw,
            &self.agent.display().to_string(),
            [
                "--config",
                &config.display().to_string(),
                "pki",
                "issue-client",
                "bench",
                "--out",
                &self.bundle().display().to_string(),
                "--force",
            ],
        );
        if !issued {
            bail!("issuing the benchmark's client certificate failed");
        }
        let result = load(
            &lab.ns("c1"),
            &self.script,
            &self.bundle(),
            &self.big,
            "agent",
            round,
        )?;
        Ok(measurements(label, &result, server.rss_kib("VmHWM")))
    }

    /// distribution with `storage` (the lines under `storage:`) under load; with
    /// `uplink_ip`, the gateway's outside leg has that address meanwhile (the agent's lease
    /// went with it).
    fn distribution(
        &self,
        label: &str,
        storage: &str,
        uplink_ip: Option<String>,
        round: u32,
    ) -> Result<Vec<Measurement>> {
        let lab = self.lab;
        settle_disk()?;
        let gw = lab.ns("gw");
        let pki = lab.state_dir().join("state/pki");
        let yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n{storage}  delete:\n    enabled: true\n\
             http:\n  addr: {ip}:443\n  tls:\n    certificate: {pki}/server.crt\n    \
             key: {pki}/server.key\n    clientcas:\n      - {pki}/ca.crt\n    minimumtls: tls1.3\n",
            ip = lab::GATEWAY_INSIDE_IP,
            pki = pki.display(),
        );
        let yaml_path = lab.state_dir().join("distribution.yml");
        std::fs::write(&yaml_path, yaml).context("writing distribution's config")?;
        let address = uplink_ip.map(|ip| format!("{ip}/24"));
        if let Some(address) = &address {
            process::run(
                "ip",
                [
                    "-n",
                    &gw,
                    "addr",
                    "replace",
                    address,
                    "dev",
                    lab::OUTSIDE_IF,
                ],
            )?;
        }
        let result = (|| {
            let server = Server::spawn(
                &gw,
                &[
                    // This machine's AWS_CA_BUNDLE (the system roots) makes distribution's
                    // AWS SDK refuse its own transport; the store here is plain HTTP.
                    "env".into(),
                    "-u".into(),
                    "AWS_CA_BUNDLE".into(),
                    "docker-registry".into(),
                    "serve".into(),
                    yaml_path.display().to_string(),
                ],
            )?;
            std::thread::sleep(std::time::Duration::from_secs(2));
            let result = load(
                &lab.ns("c1"),
                &self.script,
                &self.bundle(),
                &self.big,
                "distribution",
                round,
            )?;
            Ok(measurements(label, &result, server.rss_kib("VmHWM")))
        })();
        if let Some(address) = &address {
            let _ = process::run(
                "ip",
                ["-n", &gw, "addr", "del", address, "dev", lab::OUTSIDE_IF],
            );
        }
        result
    }
}

/// Writes back what the previous run left dirty, so no run pays for another's writes (the
/// agent fsyncs each blob before it answers 201, which on ext4 can also flush others' data;
/// distribution does not fsync).
fn settle_disk() -> Result<()> {
    process::run("sync", std::iter::empty::<&str>())
}

/// Runs the load script from `client`; its JSON.
fn load(
    client: &str,
    script: &Path,
    bundle: &Path,
    big: &Path,
    repo: &str,
    round: u32,
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
            round.to_string(),
        ],
    )
    .context("running the registry load script")?;
    serde_json::from_str(out.trim()).with_context(|| format!("the load script printed {out:?}"))
}

/// Row `row`'s rate in every run.
fn rates(runs: &[Vec<Measurement>], row: usize) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| r.get(row))
        .map(|m| m.rate)
        .collect()
}

/// One row a measurement: the median rate over the runs, the highest peak.
fn medians(runs: &[Vec<Measurement>]) -> Vec<Measurement> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|row| {
            let rates = rates(runs, row);
            Measurement {
                server: first[row].server.clone(),
                rate: results::median(&rates).unwrap_or(0.0),
                peak_rss_kib: runs
                    .iter()
                    .filter_map(|r| r.get(row).and_then(|m| m.peak_rss_kib))
                    .max(),
                ..Measurement::default()
            }
        })
        .collect()
}

/// A line a row: its rate in every run.
fn every_run(runs: &[Vec<Measurement>]) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    (0..first.len())
        .map(|row| {
            let rates = rates(runs, row);
            let each: Vec<String> = rates.iter().map(|r| format!("{r:.1}")).collect();
            format!(
                "- {}: {} ({})\n",
                first[row].server,
                results::spread(&rates, 1),
                each.join(", ")
            )
        })
        .collect()
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
