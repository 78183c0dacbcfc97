//! The systemd unit in `dist/`: `systemd-analyze verify` accepts it without a single warning,
//! and it starts the agent the way README.md says.
//!
//! `systemd-analyze verify` works offline (PID 1 need not be systemd), but it rejects a unit
//! whose `Exec*=` binary does not exist, and `/usr/local/bin/gateway-agent` is not installed
//! here. So the unit is verified as a copy in a temporary directory with the binary in its
//! `Exec*=` lines replaced by `true`; every other line is verified as shipped. (`--root=DIR`
//! does not help: it makes verify look for every unit it depends on, sysinit.target included,
//! under DIR as well.)

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{SystemTime, UNIX_EPOCH},
};

use gateway_tests::{fail, OrFail};

/// What the unit runs.
const BINARY: &str = "/usr/local/bin/gateway-agent";
/// The config it runs with.
const CONFIG: &str = "/etc/gateway/gateway.toml";
/// The unit's file name; systemd derives the unit name from it, and its warnings name it.
const UNIT: &str = "gateway-agent.service";

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("dist")
        .join(UNIT)
}

fn unit_text() -> String {
    let path = unit_path();
    fs::read_to_string(&path).or_fail(format_args!("reading {}", path.display()))
}

/// The values of every `key=` line, in order (comments and other keys skipped).
fn values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#') && !line.starts_with(';'))
        .filter_map(|line| line.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// `true`, at a path that exists: the stand-in for the agent binary.
fn stand_in_binary() -> &'static str {
    ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or_else(|| fail("neither /usr/bin/true nor /bin/true exists"))
}

/// The unit with `BINARY` replaced in its `Exec*=` lines; panics unless there were at least two
/// (ExecStartPre and ExecStart), so the copy cannot silently drift from what it stands for.
fn with_stand_in_binary(text: &str) -> String {
    let stand_in = stand_in_binary();
    let mut replaced = 0;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.trim_start().starts_with("Exec") && line.contains(BINARY) {
            replaced += 1;
            out.push_str(&line.replace(BINARY, stand_in));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert!(
        replaced >= 2,
        "expected ExecStartPre= and ExecStart= lines running {BINARY}, found {replaced}"
    );
    out
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("gateway-unit-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).or_fail(format_args!("creating {}", dir.display()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `systemd-analyze verify` on `text` saved as `<temp dir>/gateway-agent.service`; returns
/// its output and the stderr lines about this unit.
fn verify(tag: &str, text: &str) -> (Output, Vec<String>) {
    let dir = TempDir::new(tag);
    let path = dir.0.join(UNIT);
    fs::write(&path, text).or_fail(format_args!("writing {}", path.display()));
    let output = match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
    {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => fail(
            "systemd-analyze is not installed, so the unit cannot be verified. It is in Debian's \
             `systemd` package: `apt-get install systemd` or `cargo xtask deps` (CI runs that).",
        ),
        Err(err) => fail(format_args!("running systemd-analyze verify: {err}")),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Warnings name the unit (`gateway-agent.service: …`) or its file
    // (`/tmp/…/gateway-agent.service:12: …`); anything else is about units installed on this
    // host, not ours.
    let about_unit = stderr
        .lines()
        .filter(|line| line.contains(UNIT))
        .map(str::to_string)
        .collect();
    (output, about_unit)
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let (output, warnings) = verify("ok", &with_stand_in_binary(&unit_text()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "systemd-analyze verify {} failed ({}):\n{stderr}",
        unit_path().display(),
        output.status
    );
    assert!(
        warnings.is_empty(),
        "systemd-analyze verify warns about {}:\n{}",
        unit_path().display(),
        warnings.join("\n")
    );
}

/// Guards the check above: verify reports unknown keys and bad values only as warnings (exit
/// status 0), so the test must read stderr, and must recognise them as being about the unit.
#[test]
fn systemd_analyze_verify_flags_a_broken_copy() {
    let broken = with_stand_in_binary(&unit_text()).replace(
        "[Service]\n",
        "[Service]\nNoSuchKey=1\nMemoryDenyWriteExecute=perhaps\n",
    );
    let (output, warnings) = verify("broken", &broken);
    assert!(
        warnings.iter().any(|w| w.contains("NoSuchKey"))
            && warnings.iter().any(|w| w.contains("perhaps")),
        "systemd-analyze verify did not report the planted errors as being about {UNIT}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn unit_runs_the_agent_after_checking_its_config() {
    let text = unit_text();
    assert_eq!(
        values(&text, "ExecStart"),
        [format!("{BINARY} --config {CONFIG} run")],
        "ExecStart= must run the agent with the installed config"
    );
    let pre = values(&text, "ExecStartPre");
    assert!(
        pre.iter().any(|cmd| {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            words.first() == Some(&BINARY)
                && words.contains(&"check-config")
                && words.contains(&CONFIG)
        }),
        "no ExecStartPre= runs `{BINARY} check-config` on {CONFIG}; found {pre:?}"
    );
    assert_eq!(values(&text, "Type"), ["notify"], "the agent sends READY=1");
    assert_eq!(values(&text, "Restart"), ["on-failure"]);
}

#[test]
fn unit_grants_only_the_capabilities_the_agent_needs() {
    let text = unit_text();
    let expected = [
        "CAP_BPF",
        "CAP_NET_ADMIN",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_PERFMON",
        "CAP_SYS_RESOURCE",
    ];
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let values = values(&text, key);
        let mut caps: Vec<&str> = values.iter().flat_map(|v| v.split_whitespace()).collect();
        caps.sort_unstable();
        assert_eq!(caps, expected, "{key}=");
    }
}
