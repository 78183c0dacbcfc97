//! The lab's upstream registries in `up`, for the gateway's mirror: Debian's `docker-registry`
//! (distribution 2.8) with `auth.token`, so anonymous pulls are refused, behind a token service
//! that behaves like Docker Hub's (`xtask/lab/token_service.py`: a `401` with
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…`, a token for the scope). Two of them,
//! under two names, for the mirror's `?ns=`: `registry.hub.test` (the mirror's default
//! upstream in `config/lab.toml`) and `registry.other.test`, both plain HTTP on port 5000 (the
//! stand-in internet is the lab's; an exit relay is the only thing between).
//!
//! The images are built here, with tar(1) and gzip(1), and written straight into
//! distribution's storage layout; what was seeded is in `upstream/images.json` for the tests.
//! Started on demand ([`Lab::start_upstream`]; `cargo xtask lab up` does it), stopped with the
//! lab like every process in `up`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::layout::{lab_script, Lab};
use super::topology::ip;
use crate::process;

/// The default upstream's name as image references spell it (the mirror's `?ns=`).
pub const UPSTREAM_NS: &str = "hub.test";
/// Its registry's host name and address.
pub const UPSTREAM_HOST: &str = "registry.hub.test";
pub const UPSTREAM_IP: &str = "203.0.113.60";
/// The token service's host name and address (port 80).
pub const TOKEN_HOST: &str = "auth.hub.test";
pub const TOKEN_IP: &str = "203.0.113.61";
/// The second upstream.
pub const OTHER_NS: &str = "other.test";
pub const OTHER_HOST: &str = "registry.other.test";
pub const OTHER_IP: &str = "203.0.113.62";
/// The registries' port.
pub const REGISTRY_PORT: u16 = 5000;
/// What the token service signs as (`iss`) and the registries expect.
const ISSUER: &str = "token.hub.test";

/// The names the modem's dnsmasq answers for the upstreams.
pub const HOST_RECORDS: [(&str, &str); 3] = [
    (UPSTREAM_HOST, UPSTREAM_IP),
    (TOKEN_HOST, TOKEN_IP),
    (OTHER_HOST, OTHER_IP),
];

/// One seeded image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeededImage {
    /// The upstream's `?ns=` name.
    pub upstream: String,
    /// `repository:tag` as the upstream (and the mirror's cache) names it.
    pub reference: String,
    /// The manifest's digest.
    pub digest: String,
    /// The config's and the layers' digests.
    pub blobs: Vec<String>,
    /// The layers' total size.
    pub bytes: u64,
}

/// An upstream registry process.
struct Registry {
    ns: &'static str,
    host: &'static str,
    ip: &'static str,
    /// Its images.
    images: &'static [ImageSpec],
}

/// An image to seed: repository, tag, and its layers as (file name, size in bytes), one file
/// of random bytes each.
type ImageSpec = (&'static str, &'static str, &'static [(&'static str, usize)]);

const REGISTRIES: [Registry; 2] = [
    Registry {
        ns: UPSTREAM_NS,
        host: UPSTREAM_HOST,
        ip: UPSTREAM_IP,
        images: &[
            (
                "library/hello",
                "1",
                &[("hello", 2000), ("etc-data", 60_000), ("lib-data", 300_000)],
            ),
            // Large enough that two clients pulling at once overlap (the lab's Tor moves about
            // 1 MB/s with a debug agent), small enough to keep the test short.
            ("library/big", "1", &[("big.bin", 8 << 20), ("small", 1000)]),
            // Its layer is the one a test kills the agent in the middle of.
            ("library/crash", "1", &[("crash.bin", 4 << 20)]),
            // Never pulled by the tests before the upstream goes away.
            ("library/spare", "1", &[("spare", 3000)]),
            // Its tag is moved upstream by a test (re-seeded with other bytes).
            ("library/moving", "1", &[("moving", 4000)]),
        ],
    },
    Registry {
        ns: OTHER_NS,
        host: OTHER_HOST,
        ip: OTHER_IP,
        images: &[("team/tool", "1.0", &[("tool", 5000), ("share", 40_000)])],
    },
];

impl Lab {
    /// The upstreams' directory (state, logs, the seeded images).
    pub fn upstream_dir(&self) -> PathBuf {
        self.state_dir().join("upstream")
    }

    /// The access log of the registry behind `ns` (one line per request, with the peer's
    /// address).
    pub fn upstream_log(&self, ns: &str) -> PathBuf {
        self.upstream_dir().join(format!("{ns}.log"))
    }

    /// What [`Lab::start_upstream`] seeded (empty before).
    pub fn upstream_images(&self) -> Vec<SeededImage> {
        fs::read(self.upstream_dir().join("images.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Starts the token service and both registries in `up` unless they run, seeding the
    /// images the first time. The lab's base must be up.
    pub fn start_upstream(&self) -> Result<()> {
        crate::bench::registry::ensure_package()?;
        crate::deps::ensure_packages(&["python3-cryptography"], "for the lab's token service")?;
        let dir = self.upstream_dir();
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let up = self.ns("up");
        for (_, address) in HOST_RECORDS {
            ip(
                &up,
                &["addr", "replace", &format!("{address}/24"), "dev", "inet0"],
            )?;
        }
        let python = "/usr/bin/python3";
        let script = lab_script("token_service.py");
        process::run(
            python,
            [script.as_os_str(), "init".as_ref(), dir.as_os_str()],
        )
        .context("making the token service's key")?;
        if !dir.join("images.json").exists() {
            let mut seeded = Vec::new();
            for registry in &REGISTRIES {
                seeded.extend(seed(&dir, registry)?);
            }
            let json = serde_json::to_vec_pretty(&seeded).context("encoding images.json")?;
            fs::write(dir.join("images.json"), json).context("writing images.json")?;
        }
        if !self.daemon_alive("upstream/token.pid") {
            let args = [
                script.display().to_string(),
                "serve".into(),
                TOKEN_IP.into(),
                "80".into(),
                dir.display().to_string(),
                ISSUER.into(),
                dir.join("token.log").display().to_string(),
            ];
            self.spawn_up(
                python,
                &args,
                &dir.join("token.out"),
                &dir.join("token.pid"),
            )?;
        }
        for registry in &REGISTRIES {
            let pid = format!("upstream/{}.pid", registry.ns);
            if self.daemon_alive(&pid) {
                continue;
            }
            let config = dir.join(format!("{}.yml", registry.ns));
            fs::write(&config, registry_config(&dir, registry))
                .with_context(|| format!("writing {}", config.display()))?;
            self.spawn_up(
                "docker-registry",
                &["serve".into(), config.display().to_string()],
                &self.upstream_log(registry.ns),
                &self.state_dir().join(&pid),
            )?;
        }
        self.wait_upstream()
    }

    /// Stops the registry behind `ns` (the token service stays), as an outage would.
    pub fn stop_upstream(&self, ns: &str) -> Result<()> {
        let pid_file = self.state_dir().join(format!("upstream/{ns}.pid"));
        if let Some(pid) = process::read_pid(&pid_file) {
            if self.daemon_alive(format!("upstream/{ns}.pid")) {
                process::stop_processes(&[pid].into_iter().collect());
            }
        }
        let _ = fs::remove_file(pid_file);
        Ok(())
    }

    /// Runs `program args` in `up` in its own process group, output to `log`, its pid in
    /// `pid_file`.
    fn spawn_up(&self, program: &str, args: &[String], log: &Path, pid_file: &Path) -> Result<()> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone().context("duplicating a log handle")?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns("up"), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting `{}`", process::describe(&cmd)))?;
        fs::write(pid_file, format!("{}\n", child.id()))
            .with_context(|| format!("writing {}", pid_file.display()))?;
        thread::spawn(move || child.wait());
        Ok(())
    }

    /// Waits until the token service and both registries accept connections.
    fn wait_upstream(&self) -> Result<()> {
        let up = self.ns("up");
        let deadline = Instant::now() + Duration::from_secs(10);
        let targets = [
            (TOKEN_IP, 80),
            (UPSTREAM_IP, REGISTRY_PORT),
            (OTHER_IP, REGISTRY_PORT),
        ];
        for (address, port) in targets {
            loop {
                let probe = format!("exec 3<>/dev/tcp/{address}/{port}");
                if process::ns_run_ok(&up, "bash", ["-c", &probe]) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "the lab's upstream {address}:{port} does not accept connections (logs in {})",
                        self.upstream_dir().display()
                    );
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// distribution's config for `registry`: its storage under `dir`, tokens from the lab's
/// token service required.
fn registry_config(dir: &Path, registry: &Registry) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: {root}\n\
         http:\n  addr: {ip}:{REGISTRY_PORT}\n  secret: lab-{ns}\n\
         auth:\n  token:\n    realm: http://{TOKEN_HOST}/token\n    service: {host}\n    \
         issuer: {ISSUER}\n    rootcertbundle: {cert}\n",
        root = dir.join(format!("{}-root", registry.ns)).display(),
        ip = registry.ip,
        ns = registry.ns,
        host = registry.host,
        cert = dir.join("token.crt").display(),
    )
}

fn sha256(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Writes `data` as a blob of distribution's store at `root`; its digest.
fn put_blob(root: &Path, data: &[u8]) -> Result<String> {
    let digest = sha256(data);
    let hex = &digest[7..];
    let dir = root
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(dir.join("data"), data).context("writing a blob")?;
    Ok(digest)
}

fn link(path: PathBuf, digest: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(&path, digest).with_context(|| format!("writing {}", path.display()))
}

/// A gzipped tar holding one file `name` of `size` random bytes: (the tar's digest, the
/// gzipped bytes).
fn layer(work: &Path, name: &str, size: usize) -> Result<(String, Vec<u8>)> {
    let src = work.join(format!("layer-{name}"));
    fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    let mut data = vec![0u8; size];
    {
        use std::io::Read;
        fs::File::open("/dev/urandom")
            .and_then(|mut random| random.read_exact(&mut data))
            .context("reading /dev/urandom")?;
    }
    fs::write(src.join(name), &data).context("writing a layer's file")?;
    let tar = Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
        ])
        .arg(&src)
        .args(["-cf", "-", "."])
        .output()
        .context("running tar")?;
    if !tar.status.success() {
        bail!("tar failed: {}", String::from_utf8_lossy(&tar.stderr));
    }
    let tar_file = work.join(format!("layer-{name}.tar"));
    fs::write(&tar_file, &tar.stdout).context("writing a layer's tar")?;
    let gzip = Command::new("gzip")
        .args(["-n", "-1", "-c"])
        .arg(&tar_file)
        .output()
        .context("running gzip")?;
    if !gzip.status.success() {
        bail!("gzip failed: {}", String::from_utf8_lossy(&gzip.stderr));
    }
    fs::remove_dir_all(&src).ok();
    fs::remove_file(&tar_file).ok();
    Ok((sha256(&tar.stdout), gzip.stdout))
}

/// Builds `registry`'s images and writes them into its store under `dir`.
fn seed(dir: &Path, registry: &Registry) -> Result<Vec<SeededImage>> {
    registry
        .images
        .iter()
        .map(|(repo, tag, files)| seed_one(dir, registry.ns, repo, tag, files))
        .collect()
}

/// Builds `repo:tag` with one layer per file (name, random bytes) and writes it into the
/// store of upstream `ns` under `dir`.
fn seed_one(
    dir: &Path,
    ns: &str,
    repo: &str,
    tag: &str,
    files: &[(&str, usize)],
) -> Result<SeededImage> {
    let root = dir.join(format!("{ns}-root"));
    let work = dir.join("build");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let repo_dir = root.join("docker/registry/v2/repositories").join(repo);
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    let mut bytes = 0u64;
    for (name, size) in files.iter() {
        let (diff_id, gz) = layer(&work, name, *size)?;
        let digest = put_blob(&root, &gz)?;
        diff_ids.push(diff_id);
        bytes += gz.len() as u64;
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": gz.len(),
        }));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": [format!("/{}", files.first().map_or("true", |f| f.0))]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .context("encoding an image config")?;
    let config_digest = put_blob(&root, &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers,
    }))
    .context("encoding a manifest")?;
    let digest = put_blob(&root, &manifest)?;
    let mut blobs = vec![config_digest];
    blobs.extend(
        layers
            .iter()
            .filter_map(|l| l["digest"].as_str().map(str::to_owned)),
    );
    for blob in &blobs {
        link(
            repo_dir
                .join("_layers/sha256")
                .join(&blob[7..])
                .join("link"),
            blob,
        )?;
    }
    let hex = &digest[7..];
    link(
        repo_dir
            .join("_manifests/revisions/sha256")
            .join(hex)
            .join("link"),
        &digest,
    )?;
    let tag_dir = repo_dir.join("_manifests/tags").join(tag);
    link(tag_dir.join("current/link"), &digest)?;
    link(tag_dir.join("index/sha256").join(hex).join("link"), &digest)?;
    fs::remove_dir_all(&work).ok();
    Ok(SeededImage {
        upstream: ns.to_owned(),
        reference: format!("{repo}:{tag}"),
        digest,
        blobs,
        bytes,
    })
}

impl Lab {
    /// Builds one more image into the running upstream `ns` (the benchmark's), beside the
    /// seeded ones; distribution reads its storage as it is, so it serves it at once.
    pub fn seed_upstream_image(
        &self,
        ns: &str,
        repo: &str,
        tag: &str,
        files: &[(&str, usize)],
    ) -> Result<SeededImage> {
        seed_one(&self.upstream_dir(), ns, repo, tag, files)
    }

    /// Where the upstream `ns` keeps its storage (distribution's `rootdirectory`).
    pub fn upstream_root(&self, ns: &str) -> PathBuf {
        self.upstream_dir().join(format!("{ns}-root"))
    }
}
