//! The lab's NAS: SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one
//! process) in a namespace of its own (`nas`) on the uplink bridge at [`NAS_IP`], like an
//! object store on a home network, for the registries' S3 backend shared by several gateways.
//! One identity (its keys in [`Lab::nas_credentials`], the file the agent reads) and one bucket.
//! Its telemetry is off: by default it reports to a public server, which the lab never reaches.
//! Started on demand ([`Lab::start_nas`]; `cargo xtask lab up --nas`), stopped with the lab.
//!
//! [`weed_mini_script`] and [`wait_writable`] are the launcher the S3 unit tests use too.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::layout::Lab;
use super::topology::{ip, ns_exists};
use crate::process;

/// The NAS's address on the uplink LAN (below the modem's DHCP range and the slots' spares).
pub const NAS_IP: &str = "192.0.2.2";
/// Its S3 port.
pub const NAS_S3_PORT: u16 = 8333;
/// The bucket the lab's gateways share.
pub const NAS_BUCKET: &str = "gateway";
/// The lab's S3 identity (lab-only keys).
pub const NAS_ACCESS_KEY: &str = "GATEWAYLABKEY";
pub const NAS_SECRET_KEY: &str = "gateway-lab-secret-key";

/// `weed mini` for `sh -c`, run in `dir` (data in `dir/data`, identities in `dir/s3.json`),
/// serving on `bind_ip`, with `bucket` made. weed's gRPC Unix sockets are
/// `/tmp/seaweedfs-<role>-grpc-<port>.sock` whatever the network namespace, so two at once
/// would talk to each other's servers: the script gives it a /tmp of its own (a tmpfs in a
/// mount namespace of its own: run it under `unshare --mount`), and `dir` must not be under
/// /tmp. `extra` is more of weed's flags (TLS, say). Volumes of 64 MiB, up to 64 of them:
/// 4 GiB, grown only as written (the registry benchmark's three rounds of both servers write
/// about 2 GiB; 16 volumes filled up and the store answered 500).
pub fn weed_mini_script(bind_ip: &str, bucket: &str, extra: &str) -> String {
    format!(
        "mount --make-rprivate / && mount -t tmpfs gateway-weed /tmp && exec {} mini \
         -dir=data -ip={bind_ip} -ip.bind={bind_ip} -master.telemetry=false \
         -admin.ui=false -webdav=false -volume.max=64 -master.volumeSizeLimitMB=64 \
         -s3.config=s3.json -bucket={bucket} {extra}",
        crate::deps::weed_bin().display()
    )
}

/// Writes `dir/s3.json`, the one identity `weed mini` accepts, and makes `dir/data`.
pub fn write_identity(dir: &Path, access: &str, secret: &str) -> Result<()> {
    if dir.starts_with("/tmp") {
        bail!(
            "SeaweedFS gets a /tmp of its own, so its folder cannot be under /tmp: {}",
            dir.display()
        );
    }
    fs::create_dir_all(dir.join("data"))
        .with_context(|| format!("creating {}", dir.join("data").display()))?;
    let identities = serde_json::json!({"identities": [{
        "name": "gateway",
        "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]});
    fs::write(dir.join("s3.json"), identities.to_string()).context("writing s3.json")
}

/// Waits until a signed write into `bucket` at `endpoint` succeeds from namespace `ns`: the
/// bucket is made, and the volume server joins the master, seconds after the port opens.
pub fn wait_writable(
    ns: &str,
    endpoint: &str,
    bucket: &str,
    access: &str,
    secret: &str,
    timeout: Duration,
) -> Result<()> {
    let url = format!("{endpoint}/{bucket}/gateway-probe");
    let user = format!("{access}:{secret}");
    // S3 wants the payload's hash among the signed headers; curl leaves it out.
    let signed = |extra: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", ns, "curl", "-sf", "-m", "5"])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .args(["--user", &user])
            .args(extra)
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|out| out.status.success())
    };
    let deadline = Instant::now() + timeout;
    while !signed(&["-X", "PUT", "--data-binary", "probe"]) {
        if Instant::now() > deadline {
            bail!("SeaweedFS at {endpoint} never accepted a write into bucket {bucket}");
        }
        thread::sleep(Duration::from_millis(250));
    }
    let _ = signed(&["-X", "DELETE"]);
    Ok(())
}

impl Lab {
    /// The NAS's folder: its data, log, identity and the credentials file for the agents.
    pub fn nas_dir(&self) -> PathBuf {
        self.state_dir().join("nas")
    }

    /// `http://192.0.2.2:8333`.
    pub fn nas_endpoint(&self) -> String {
        format!("http://{NAS_IP}:{NAS_S3_PORT}")
    }

    /// The root-only file with the NAS's keys, as `registry.storage.credentials` wants it.
    pub fn nas_credentials(&self) -> PathBuf {
        self.nas_dir().join("credentials")
    }

    /// Starts the NAS unless it runs: its namespace on the uplink bridge, SeaweedFS, the bucket.
    /// The lab's base must be up.
    pub fn start_nas(&self) -> Result<()> {
        crate::deps::ensure_seaweedfs()?;
        let nas = self.ns("nas");
        let dir = self.nas_dir();
        let pid_file = dir.join("weed.pid");
        if self.nas_alive(&pid_file) {
            return Ok(());
        }
        if !ns_exists(&self.ns("up")) {
            bail!("{}: the lab is not up", self.label());
        }
        if !ns_exists(&nas) {
            self.write_resolv_conf(&nas, "nas")?;
            process::run("ip", ["netns", "add", &nas])?;
            ip(&nas, &["link", "set", "lo", "up"])?;
            let up = self.ns("up");
            ip(
                &up,
                &[
                    "link", "add", "nas0", "type", "veth", "peer", "name", "eth0", "netns", &nas,
                ],
            )?;
            ip(&up, &["link", "set", "nas0", "master", "br0", "up"])?;
            ip(
                &nas,
                &["addr", "add", &format!("{NAS_IP}/24"), "dev", "eth0"],
            )?;
            ip(&nas, &["link", "set", "eth0", "up"])?;
        }
        write_identity(&dir, NAS_ACCESS_KEY, NAS_SECRET_KEY)?;
        let credentials = self.nas_credentials();
        fs::write(&credentials, format!("{NAS_ACCESS_KEY}:{NAS_SECRET_KEY}\n"))
            .with_context(|| format!("writing {}", credentials.display()))?;
        fs::set_permissions(&credentials, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 600 {}", credentials.display()))?;

        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("weed.log"))
            .context("opening the NAS's log")?;
        let err = log.try_clone().context("duplicating a log handle")?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &nas, "unshare", "--mount", "sh", "-c"])
            .arg(weed_mini_script(NAS_IP, NAS_BUCKET, ""))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        eprintln!(
            "{}: starting the NAS (SeaweedFS S3 at {}, bucket {NAS_BUCKET})",
            self.label(),
            self.nas_endpoint()
        );
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting `{}`", process::describe(&cmd)))?;
        fs::write(&pid_file, format!("{}\n", child.id()))
            .with_context(|| format!("writing {}", pid_file.display()))?;
        thread::spawn(move || child.wait());
        wait_writable(
            &nas,
            &self.nas_endpoint(),
            NAS_BUCKET,
            NAS_ACCESS_KEY,
            NAS_SECRET_KEY,
            Duration::from_secs(90),
        )
        .with_context(|| format!("its log: {}", dir.join("weed.log").display()))
    }

    /// Whether the NAS's SeaweedFS runs (in the `nas` namespace).
    fn nas_alive(&self, pid_file: &Path) -> bool {
        let Some(pid) = process::read_pid(pid_file) else {
            return false;
        };
        process::ns_pids(&self.ns("nas")).contains(&pid)
    }
}
