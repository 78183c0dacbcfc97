//! Building the eBPF object and the agent that embeds it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::deps;

/// The workspace root. Cargo sets `CARGO_MANIFEST_DIR` for `cargo run` and `cargo test`, which
/// is a member's directory; the compile-time value is the fallback for a binary run directly.
pub fn workspace_root() -> PathBuf {
    let runtime = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let compiled = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [runtime, Some(compiled)]
        .into_iter()
        .flatten()
        .filter_map(|member| member.parent().map(Path::to_path_buf))
        .find(|root| root.join("gateway-ebpf").join("Cargo.toml").is_file())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo target directory in use: `CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("target"),
    }
}

/// Where `build-ebpf` leaves the object; the agent's build script reads it from here.
pub fn ebpf_object_path() -> PathBuf {
    target_dir().join("bpf").join("gateway.bpf.o")
}

/// Builds the eBPF crate for `bpfel-unknown-none` with Debian's rustc and its precompiled
/// `core` (docs/TOOLCHAIN.md), and copies the object to [`ebpf_object_path`].
pub fn build_ebpf(release: bool) -> Result<PathBuf> {
    deps::ensure_toolchain()?;
    let crate_dir = workspace_root().join("gateway-ebpf");
    let target = target_dir().join("bpf");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&crate_dir)
        .args(["build", "--target", "bpfel-unknown-none", "--target-dir"])
        .arg(&target)
        .env("RUSTC", "/usr/bin/rustc")
        // Only for aya-ebpf's `asm_experimental_arch`; the rest is stable Rust.
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            ["-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f"),
        )
        // rustup's proxies must not pick another toolchain for this build.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .context("running cargo build for gateway-ebpf")?;
    if !status.success() {
        bail!("building gateway-ebpf failed ({status})");
    }
    let profile = if release { "release" } else { "debug" };
    let built = target
        .join("bpfel-unknown-none")
        .join(profile)
        .join("gateway-ebpf");
    let object = ebpf_object_path();
    std::fs::copy(&built, &object)
        .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
    eprintln!("xtask: eBPF object at {}", object.display());
    Ok(object)
}

/// Builds every workspace crate (after the eBPF object) and returns the agent binary's path.
pub fn build_all(release: bool) -> Result<PathBuf> {
    cargo_build(&["--workspace", "--all-targets"], release)
}

/// Builds only the agent binary (after the eBPF object) and returns its path.
pub fn build_agent(release: bool) -> Result<PathBuf> {
    cargo_build(&["-p", "gateway-agent", "--bin", "gateway-agent"], release)
}

fn cargo_build(what: &[&str], release: bool) -> Result<PathBuf> {
    build_ebpf(true)?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root())
        .arg("build")
        .args(what)
        .env("GATEWAY_EBPF_OBJECT", ebpf_object_path());
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    Ok(agent_binary(release))
}

/// The agent binary that `build_all` produces.
pub fn agent_binary(release: bool) -> PathBuf {
    let profile = if release { "release" } else { "debug" };
    target_dir().join(profile).join("gateway-agent")
}
