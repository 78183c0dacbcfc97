//! `cargo xtask …`: see `cargo xtask --help`.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use xtask::lab::tor as lab_tor;
use xtask::{bench, build, deps, hints, lab, package, process};

mod fuzz;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test the gateway")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain and lab packages (idempotent).
    Deps,
    /// Build the eBPF object the agent embeds.
    BuildEbpf,
    /// Build everything; prints the agent binary's path last.
    Build {
        /// Optimised build.
        #[arg(long)]
        release: bool,
    },
    /// Run the agent: in the lab by default, or on this host's NICs with --config.
    Run {
        /// A config naming real interfaces; without it the lab is used.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The network-namespace lab.
    Lab {
        /// Work on the lab with this prefix (namespaces `<prefix>-up`, …) instead of the default
        /// one, e.g. one a test left behind, or a second lab beside the default.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Work on this gateway slot of the lab (namespaces `gw.N`, `lan.N`, `c1.N`, `c2.N` on
        /// the same uplink) instead of slot 0 (`gw`, `lan`, `c1`, `c2`). `down` with a slot
        /// removes only that slot; without one, the whole lab.
        #[arg(long)]
        slot: Option<u8>,
        #[command(subcommand)]
        action: LabAction,
    },
    /// Benchmarks against the established peer, side by side: `dns` (vs dnsmasq), `dhcp`
    /// (vs Kea), `tor` (vs a C-tor client), `registry` (vs docker-registry), `proxy` (vs
    /// Squid) or `dataplane` (the inside XDP program vs nftables); results in
    /// bench/RESULTS.md.
    Bench {
        /// `dns`, `dhcp`, `tor`, `registry`, `proxy` or `dataplane`.
        which: String,
    },
    /// Run the libFuzzer targets in fuzz/ (nightly, cargo-fuzz); see README "Fuzzing".
    Fuzz {
        /// One target (a file in fuzz/fuzz_targets/); all of them, one after another, if
        /// omitted.
        target: Option<String>,
        /// How long to run each target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Build the release agent as a Debian package (target/debian/gateway-agent_*.deb): the
    /// binary, the systemd unit, the example config as a conffile, completions, man pages.
    Package,
    /// Build everything, check formatting and lints, run every test, and run each fuzz target
    /// briefly.
    Test {
        /// Extra arguments for `cargo test`, like `--test lab_dataplane -- --nocapture`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum LabAction {
    /// Create the lab (idempotent).
    Up {
        /// Also start the NAS: SeaweedFS on the uplink bridge (192.0.2.2:8333, bucket
        /// `gateway`), for `[registry.storage] backend = "s3"`.
        #[arg(long)]
        nas: bool,
    },
    /// Remove the lab; `--all` removes every lab, including test labs left by a crash.
    Down {
        #[arg(long)]
        all: bool,
    },
    /// Describe the lab.
    Status {
        /// The machine-readable contract for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The lab's private Tor network (in `up`).
    Tor {
        #[command(subcommand)]
        action: TorAction,
    },
}

#[derive(Subcommand)]
enum TorAction {
    /// Start the nodes that do not run, with the keys they have (idempotent).
    Start {
        /// Wait until a fresh consensus lists every node.
        #[arg(long)]
        wait: bool,
    },
    /// Stop every node; keys and state stay.
    Stop,
    /// Nodes, consensus, onion address.
    Status {
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Task::Deps => deps::ensure_all().and_then(|()| package::ensure_test_root().map(|_| ())),
        Task::BuildEbpf => build::build_ebpf(true).map(|_| ()),
        Task::Build { release } => {
            let agent = build::build_all(release)?;
            println!("{}", agent.display());
            Ok(())
        }
        Task::Run { config } => run_agent(config),
        Task::Lab {
            prefix,
            slot,
            action,
        } => {
            deps::require_root("the lab")?;
            deps::ensure_lab_packages()?;
            let lab = lab::Lab::new(&prefix).with_slot(slot.unwrap_or(0));
            match action {
                LabAction::Up { nas } => {
                    lab.up()?;
                    if nas {
                        lab.start_nas()?;
                        eprintln!(
                            "lab: the NAS is up; in the agent config:\n  [registry.storage]\n  \
                             backend = \"s3\"\n  endpoint = \"{}\"\n  bucket = \"{}\"\n  \
                             credentials = \"{}\"",
                            lab.nas_endpoint(),
                            lab::NAS_BUCKET,
                            lab.nas_credentials().display()
                        );
                    }
                    wait_for_tor_network(&lab);
                    Ok(())
                }
                LabAction::Down { all: true } => lab::down_all(),
                LabAction::Down { all: false } if lab.slot() > 0 => lab.down_slot(),
                LabAction::Down { all: false } => lab.down(),
                LabAction::Status { json } => {
                    let status = lab.status()?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&status)?);
                    } else {
                        lab::print_human(&status);
                    }
                    Ok(())
                }
                LabAction::Tor { action } => lab_tor_action(&lab, action),
            }
        }
        Task::Fuzz { target, seconds } => fuzz::run(target.as_deref(), seconds),
        Task::Test { args } => test(&args),
        Task::Package => package::run(),
        Task::Bench { which } => bench::run(&which),
    }
}

fn lab_tor_action(lab: &lab::Lab, action: TorAction) -> Result<()> {
    match action {
        TorAction::Start { wait } => {
            if !lab.is_up() {
                bail!("the lab is not up: `cargo xtask lab up` starts it with its Tor network");
            }
            lab_tor::setup(lab)?;
            lab_tor::start(lab)?;
            if wait {
                let took =
                    lab_tor::wait_ready_showing(lab, lab_tor::READY_TIMEOUT, &mut progress())?;
                eprintln!("lab: Tor network ready after {:.1} s", took.as_secs_f64());
            } else {
                eprintln!("lab: Tor nodes run; `cargo xtask lab tor status` says when the network is ready");
            }
            Ok(())
        }
        TorAction::Stop => lab_tor::stop(lab),
        TorAction::Status { json } => {
            let status = lab_tor::status(lab);
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{status}");
            }
            Ok(())
        }
    }
}

/// Waits (bounded) for the lab's Tor network to form, showing how far it is; a network that
/// is not ready in time is a warning, not an error: the lab is up, and arti keeps retrying.
fn wait_for_tor_network(lab: &lab::Lab) {
    match lab_tor::wait_ready_showing(lab, lab_tor::READY_TIMEOUT, &mut progress()) {
        Ok(took) => eprintln!("lab: Tor network ready after {:.1} s", took.as_secs_f64()),
        Err(err) => eprintln!(
            "\nlab: warning: {err:#}\n(the agent's Tor retries; `cargo xtask lab tor status` shows \
             the nodes)"
        ),
    }
}

/// Polls the agent's `status --json` until its Tor has bootstrapped (or it runs no Tor, or
/// `bound` passes: the agent keeps trying and says so itself).
fn wait_for_agent_tor(
    agent: &std::path::Path,
    gw: &str,
    cfg: &std::path::Path,
    bound: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + bound;
    while std::time::Instant::now() < deadline {
        let status = Command::new("ip")
            .args(["netns", "exec", gw])
            .arg(agent)
            .arg("--config")
            .arg(cfg)
            .args(["status", "--json"])
            .stderr(std::process::Stdio::null())
            .output();
        let Ok(out) = status else { return };
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        match json.get("tor").and_then(|tor| tor.get("bootstrapped")) {
            Some(serde_json::Value::Bool(false)) => {}
            _ => return,
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// A progress printer for stderr: one line redrawn in place on a terminal, a line per change
/// anywhere else (no escape codes in a log).
fn progress() -> impl FnMut(&str) {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    move |line: &str| {
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r\x1b[2Klab: {line}")
        } else {
            writeln!(err, "lab: {line}")
        };
        let _ = err.flush();
        if tty && line.contains("ready") {
            let _ = writeln!(err);
        }
    }
}

fn run_agent(config: Option<PathBuf>) -> Result<()> {
    deps::require_root("running the agent")?;
    let agent = build::build_all(false)?;
    let mut cmd = match config {
        Some(config) => {
            eprintln!(
                "xtask: running the agent on this host's interfaces with {}",
                config.display()
            );
            let mut cmd = Command::new(&agent);
            cmd.arg("--config").arg(config).arg("run");
            cmd
        }
        None => return run_in_lab(&agent),
    };
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", process::describe(&cmd)))?;
    if !status.success() {
        bail!("the agent exited with {status}");
    }
    Ok(())
}

/// Brings the lab up, runs the agent in `gw`, and starts the clients' DHCP clients once it
/// answers; returns when the agent exits (Ctrl-C).
fn run_in_lab(agent: &std::path::Path) -> Result<()> {
    deps::ensure_lab_packages()?;
    let lab = lab::Lab::default_lab();
    lab.up()?;
    // The agent's own bootstrap goes faster against a network that has formed.
    wait_for_tor_network(&lab);
    let status = lab.status()?;
    let gw = lab.ns("gw");
    let cfg = lab.agent_config();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &gw])
        .arg(agent)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .spawn()
        .context("starting the agent in the lab")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ready = Command::new("ip")
            .args(["netns", "exec", &gw])
            .arg(agent)
            .arg("--config")
            .arg(&cfg)
            .arg("status")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            break;
        }
        if let Some(exit) = child.try_wait()? {
            bail!("the agent exited with {exit}");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            bail!("the agent did not answer on its control socket within 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for (role, client) in lab::CLIENTS {
        lab.start_dhcp_client(role, client, Some(role))?;
    }
    // The hints are for a gateway whose Tor is up: wait (bounded) while its live status shows
    // the bootstrap, so they do not land in the middle of its progress bar.
    wait_for_agent_tor(agent, &gw, &cfg, std::time::Duration::from_secs(60));
    let c1 = lab.ns("c1");
    // The hints describe the config the agent runs with; a config that does not parse gets
    // the defaults' hints (the agent has said what is wrong with it).
    let agent_cfg: toml::Table = std::fs::read_to_string(&cfg)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_default();
    let side = hints::LabSide {
        gw: &gw,
        c1: &c1,
        origin_name: &status.origin_name,
        origin_ip: &status.origin_ip,
        agent,
        config: &cfg,
    };
    eprint!("{}", hints::run_hints(&side, &agent_cfg));
    let exit = child.wait().context("waiting for the agent")?;
    if !exit.success() {
        bail!("the agent exited with {exit}");
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    deps::require_root("the tests (they build network namespaces and load eBPF)")?;
    deps::ensure_all()?;
    // The package test installs into a Debian 12 root; fetched once per machine.
    package::ensure_test_root()?;
    let agent = build::build_all(false)?;
    let root = build::workspace_root();
    let cargo = |args: &[&str]| -> Result<()> {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&root)
            .args(args)
            .env("GATEWAY_EBPF_OBJECT", build::ebpf_object_path())
            .env("GATEWAY_AGENT_BIN", &agent);
        process::run_visible(&mut cmd)
    };
    eprintln!("xtask: checking formatting");
    cargo(&["fmt", "--all", "--check"])?;
    eprintln!("xtask: clippy");
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // Labs left by an earlier crashed run would only confuse the tests.
    lab::down_all()?;
    let mut args = vec!["test", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    let result = cargo(&args);
    lab::down_all()?;
    result?;
    eprintln!(
        "xtask: fuzz smoke run, {} s per target",
        fuzz::SMOKE_SECONDS
    );
    fuzz::smoke()
}
