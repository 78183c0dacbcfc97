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
        if dir.starts_with("/tmp") {
            fail(format_args!(
                "SeaweedFS gets a /tmp of its own, so its folder cannot be under /tmp: {}",
                dir.display()
            ));
        }
        let weed = xtask::deps::weed_bin();
        if !weed.exists() {
            fail(format_args!(
                "no SeaweedFS at {}: run `cargo xtask deps` (or the tests with `cargo xtask test`)",
                weed.display()
            ));
        }
        let (access, secret) = ("GATEWAYTESTKEY", "gateway-test-secret");
        std::fs::create_dir_all(dir.join("data")).or_fail("making SeaweedFS's folder");
        let identities = serde_json::json!({"identities": [{
            "name": "gateway",
            "credentials": [{"accessKey": access, "secretKey": secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        let config = dir.join("s3.json");
        std::fs::write(&config, identities.to_string()).or_fail("writing SeaweedFS's identities");
        let log = std::fs::File::create(dir.join("weed.log")).or_fail("SeaweedFS's log");
        let err = log.try_clone().or_fail("SeaweedFS's log");
        // weed's gRPC Unix sockets are `/tmp/seaweedfs-<role>-grpc-<port>.sock` whatever the
        // namespace: two at once would talk to each other's servers. So it gets a /tmp of its
        // own (a tmpfs in a mount namespace of its own).
        let script = format!(
            "mount --make-rprivate / && mount -t tmpfs gateway-weed /tmp && exec {} mini \
             -dir=data -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
             -admin.ui=false -webdav=false -volume.max=16 -master.volumeSizeLimitMB=64 \
             -s3.config=s3.json -bucket={bucket}",
            weed.display()
        );
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
        let url = format!("{}/{}/gateway-test-probe", self.endpoint, self.bucket);
        let user = format!("{}:{}", self.access_key_id, self.secret_access_key);
        // S3 wants the payload's hash among the signed headers; curl leaves it out.
        let signed = |extra: &[&str]| {
            netns
                .command("curl")
                .args(["-sf", "-m", "5", "--aws-sigv4", "aws:amz:us-east-1:s3"])
                .args([
                    "-H",
                    "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                    "--user",
                    &user,
                ])
                .args(extra)
                .arg(&url)
                .output()
                .is_ok_and(|out| out.status.success())
        };
        let ready = eventually(Duration::from_secs(90), || {
            signed(&["-X", "PUT", "--data-binary", "probe"])
        });
        let _ = signed(&["-X", "DELETE"]);
        if !ready {
            fail(format_args!(
                "SeaweedFS never accepted a write into bucket {}",
                self.bucket
            ));
        }
    }
}
