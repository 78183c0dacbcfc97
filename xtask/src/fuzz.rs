//! `cargo xtask fuzz [TARGET] [--seconds N]`: the libFuzzer targets in `fuzz/` (cargo-fuzz),
//! and the short run of each that `cargo xtask test` does.
//!
//! A target is a file in `fuzz/fuzz_targets/` (plus its `[[bin]]` in `fuzz/Cargo.toml`); every
//! one found there is run. Builds go to `<target dir>/fuzz`, with debug assertions on (a
//! `debug_assert!` a peer can reach is a bug too) and no sanitizer: the targets are safe Rust,
//! and this machine's nightly has no sanitizer runtimes to spare. New interesting inputs land
//! in `fuzz/corpus/<target>/` (not committed); `fuzz/seeds/<target>/` holds the committed seeds;
//! a crash is written to `fuzz/artifacts/<target>/` and fails the run.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use xtask::{build, process};

/// How long `cargo xtask test` runs each target.
pub const SMOKE_SECONDS: u64 = 15;

/// Runs `target` (or every target) for `seconds` each.
pub fn run(target: Option<&str>, seconds: u64) -> Result<()> {
    let targets = targets()?;
    let chosen: Vec<&String> = match target {
        Some(name) => match targets.iter().find(|t| t.as_str() == name) {
            Some(found) => vec![found],
            None => bail!(
                "no fuzz target {name:?}; the targets are: {}",
                targets.join(", ")
            ),
        },
        None => targets.iter().collect(),
    };
    prepare()?;
    for name in chosen {
        eprintln!("xtask: fuzzing {name} for {seconds} s");
        fuzz_one(name, seconds)?;
    }
    Ok(())
}

/// The short run of every target inside `cargo xtask test`.
pub fn smoke() -> Result<()> {
    run(None, SMOKE_SECONDS)
}

/// The targets: the files in `fuzz/fuzz_targets/`, by name.
pub fn targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "rs") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_owned());
            }
        }
    }
    names.sort();
    if names.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(names)
}

fn fuzz_dir() -> PathBuf {
    build::workspace_root().join("fuzz")
}

/// Nightly, cargo-fuzz and the eBPF object the agent embeds (its build script wants it).
fn prepare() -> Result<()> {
    let toolchains = process::output("rustup", ["toolchain", "list"])?;
    if !toolchains.lines().any(|line| line.starts_with("nightly")) {
        bail!(
            "fuzzing needs a nightly toolchain (libFuzzer's instrumentation); \
             install one with `rustup toolchain install nightly`"
        );
    }
    if !process::run_ok("cargo", ["+nightly", "fuzz", "--version"]) {
        eprintln!("xtask: installing cargo-fuzz");
        process::run("cargo", ["install", "cargo-fuzz", "--locked"])?;
    }
    if !build::ebpf_object_path().is_file() {
        build::build_ebpf(false)?;
    }
    Ok(())
}

fn fuzz_one(name: &str, seconds: u64) -> Result<()> {
    let corpus = fuzz_dir().join("corpus").join(name);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = fuzz_dir().join("seeds").join(name);
    let mut cmd = Command::new("cargo");
    cmd.current_dir(build::workspace_root())
        .args(["+nightly", "fuzz", "run", "--sanitizer", "none"])
        .arg("--debug-assertions")
        .arg("--target-dir")
        .arg(build::target_dir().join("fuzz"))
        .arg(name)
        .arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .env("GATEWAY_EBPF_OBJECT", build::ebpf_object_path());
    process::run_visible(&mut cmd).with_context(|| {
        format!(
            "fuzz target {name} failed; a crashing input is in {}",
            fuzz_dir().join("artifacts").join(name).display()
        )
    })
}
