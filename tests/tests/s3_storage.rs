//! The S3 backend as an administrator meets it, against a real SeaweedFS in a namespace of the
//! test's own: `check-config` refuses a credentials file others may read, and
//! `check-config --probe-storage` says the store answers with the right keys and gives the
//! store's own refusal, naming `registry.storage`, with a wrong secret.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use gateway_tests::seaweedfs::SeaweedFs;
use gateway_tests::{agent_bin, unique_prefix, Netns, OrFail};

/// A folder under /var/tmp (SeaweedFS gets a /tmp of its own), removed on drop.
struct Work(PathBuf);

impl Work {
    fn new() -> Work {
        let dir = PathBuf::from("/var/tmp").join(format!("gateway-s3-{}", unique_prefix()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).or_fail("making the work folder");
        Work(dir)
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Path, weed: &SeaweedFs, credentials: &Path) -> PathBuf {
    let text = format!(
        "[interfaces]\noutside = \"outside0\"\ninside = \"inside0\"\n\
         [inside]\naddress = \"198.51.100.1/24\"\n\
         [state]\ndir = \"{state}\"\n\
         [registry]\nenabled = true\n\
         [registry.storage]\nbackend = \"s3\"\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\n\
         credentials = \"{credentials}\"\nprefix = \"site\"\n",
        state = dir.join("state").display(),
        endpoint = weed.endpoint,
        bucket = weed.bucket,
        credentials = credentials.display(),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).or_fail("writing the config");
    path
}

fn write_secret(path: &Path, line: &str, mode: u32) {
    std::fs::write(path, format!("{line}\n")).or_fail("writing the credentials");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .or_fail("setting the credentials' mode");
}

fn check(ns: &Netns, cfg: &Path, probe: bool) -> Output {
    let mut cmd = ns.command(&agent_bin().display().to_string());
    cmd.arg("--config").arg(cfg).arg("check-config");
    if probe {
        cmd.arg("--probe-storage");
    }
    cmd.output().or_fail("running check-config")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn check_config_checks_the_credentials_and_probes_the_store_on_request() {
    let lab = Netns::lab();
    let ns = Netns::new(&lab, "up");
    // The interfaces the config names (check-config looks for them), as one veth pair.
    ns.ip(&[
        "link", "add", "outside0", "type", "veth", "peer", "name", "inside0",
    ]);
    let work = Work::new();
    let weed = SeaweedFs::start(&ns, &work.0.join("weed"), "gateway");
    let credentials = work.0.join("s3-credentials");
    let cfg = config(&work.0, &weed, &credentials);
    let right = format!("{}:{}", weed.access_key_id, weed.secret_access_key);

    // Readable by others: refused before anything is contacted, naming the key.
    write_secret(&credentials, &right, 0o644);
    let out = check(&ns, &cfg, false);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("registry.storage.credentials") && text(&out).contains("chmod 600"),
        "{}",
        text(&out)
    );

    // Root's alone: fine without the probe, and the store answers with it.
    write_secret(&credentials, &right, 0o600);
    let out = check(&ns, &cfg, false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("answers"),
        "probed unasked: {}",
        text(&out)
    );
    let out = check(&ns, &cfg, true);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{}/{} answers", weed.endpoint, weed.bucket)),
        "{}",
        text(&out)
    );

    // A wrong secret: the store's own refusal, under the config key.
    write_secret(
        &credentials,
        &format!("{}:wrong", weed.access_key_id),
        0o600,
    );
    let out = check(&ns, &cfg, true);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("registry.storage"), "{said}");
    assert!(
        said.contains("SignatureDoesNotMatch") || said.contains("403"),
        "{said}"
    );
}
