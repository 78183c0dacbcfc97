//! SeaweedFS, the real S3 engine, for the registries' S3 tests: `weed mini` (master, volume,
//! filer and S3 gateway in one process) in a namespace the test made, on that namespace's
//! loopback, with one identity and one bucket, its telemetry off (it reports to a public
//! server by default). Stopped (SIGKILL) on drop; its data is in the folder the test gave.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::{eventually, fail, Background, Netns, OrFail};

/// The S3 port `weed mini` serves on.
pub const S3_PORT: u16 = 8333;
/// Its S3 port over TLS, when started with a certificate.
pub const S3_TLS_PORT: u16 = 8334;

/// A running SeaweedFS.
pub struct SeaweedFs {
    _process: Background,
    /// `http://127.0.0.1:8333`, reachable from inside the namespace only.
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl SeaweedFs {
    /// Starts it in `netns` with its data under `dir` (not under `/tmp`: see below) and
    /// `bucket` created; waits until it takes writes.
    pub fn start(netns: &Netns, dir: &Path, bucket: &str) -> SeaweedFs {
        SeaweedFs::start_with(netns, dir, bucket, None)
    }

    /// [`SeaweedFs::start`], also serving S3 over TLS on [`S3_TLS_PORT`] with the PEM
    /// certificate and key files `tls` names (plain HTTP stays on [`S3_PORT`]).
    pub fn start_with(
        netns: &Netns,
        dir: &Path,
        bucket: &str,
        tls: Option<(&Path, &Path)>,
    ) -> SeaweedFs {
        let weed = xtask::deps::weed_bin();
        if !weed.exists() {
            fail(format_args!(
                "no SeaweedFS at {}: run `cargo xtask deps` (or the tests with `cargo xtask test`)",
                weed.display()
            ));
        }
        let (access, secret) = ("GATEWAYTESTKEY", "gateway-test-secret");
        xtask::lab::write_seaweedfs_identity(dir, access, secret)
            .or_fail("writing SeaweedFS's identity");
        let log = std::fs::File::create(dir.join("weed.log")).or_fail("SeaweedFS's log");
        let err = log.try_clone().or_fail("SeaweedFS's log");
        let extra = tls
            .map(|(cert, key)| {
                format!(
                    "-s3.port.https={S3_TLS_PORT} -s3.cert.file={} -s3.key.file={}",
                    cert.display(),
                    key.display()
                )
            })
            .unwrap_or_default();
        let script = xtask::lab::weed_mini_script("127.0.0.1", bucket, &extra);
        let child = netns
            .command("unshare")
            .current_dir(dir)
            .args(["--mount", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .or_fail("starting weed mini");
        let process = Background::from(child);
        let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{S3_PORT}");
        let up = eventually(Duration::from_secs(60), || {
            netns
                .command("bash")
                .args(["-c", &probe])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !up {
            let text = std::fs::read_to_string(dir.join("weed.log")).unwrap_or_default();
            fail(format_args!("SeaweedFS's S3 port never opened:\n{text}"));
        }
        let seaweed = SeaweedFs {
            _process: process,
            endpoint: format!("http://127.0.0.1:{S3_PORT}"),
            bucket: bucket.to_owned(),
            access_key_id: access.to_owned(),
            secret_access_key: secret.to_owned(),
        };
        seaweed.wait_bucket(netns);
        seaweed
    }

    /// The bucket is made, and the volume server registers with the master, a few seconds
    /// after the port opens: wait until a signed write into the bucket succeeds.
    fn wait_bucket(&self, netns: &Netns) {
        if let Err(err) = xtask::lab::wait_seaweedfs_writable(
            netns.name(),
            &self.endpoint,
            &self.bucket,
            &self.access_key_id,
            &self.secret_access_key,
            Duration::from_secs(90),
        ) {
            fail(format_args!("{err:#}"));
        }
    }
}
