//! `gateway-agent`: the gateway's daemon (`run`) and its command-line interface.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use gateway_agent::{
    agent,
    cli::{cache, leases, maps, status},
    config::{self, Config},
    dataplane, logging,
};

/// Default config location on an installed system.
const DEFAULT_CONFIG: &str = "/etc/gateway/gateway.toml";

#[derive(Parser)]
#[command(
    name = "gateway-agent",
    version,
    about = "Privacy gateway agent and CLI"
)]
struct Cli {
    /// Config file; tells every verb where the pins and the control socket are.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Hits, misses, bytes saved, objects and size.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Every stored URL (what the inside clients fetched: root only).
    Ls {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove one URL's object (`http://host[:port]/path`).
    Purge {
        /// The URL as the clients asked for it.
        url: String,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: load and attach the dataplane, serve the control socket.
    Run,
    /// Validate a config file and report every error with its key.
    CheckConfig {
        /// The file to check (default: --config).
        file: Option<PathBuf>,
    },
    /// The DHCP leases (asks the control socket).
    Leases {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The HTTP proxy's cache (asks the control socket).
    Cache {
        #[command(subcommand)]
        action: CacheCommand,
    },
    /// The running agent's status (asks the control socket).
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The dataplane's programs, which stay attached while no agent runs.
    Dataplane {
        #[command(subcommand)]
        action: DataplaneCommand,
    },
    /// Inspect the dataplane's pinned maps.
    Maps {
        #[command(subcommand)]
        view: MapsCommand,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DataplaneCommand {
    /// Detach every program and remove the pins: the only way to an unfiltered inside.
    /// Refused while an agent answers on the control socket.
    Detach,
}

#[derive(Subcommand)]
enum MapsCommand {
    /// Every map: name, type, entries.
    List,
    /// Drop counters by reason, summed over CPUs.
    Drops,
    /// Per-client counters: MAC, IP if known, packets, bytes.
    Clients,
    /// One map's decoded contents.
    Dump {
        /// Map name (see `maps list`).
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file.unwrap_or(cli.config)),
        Command::Run => {
            let Some(cfg) = load_checked(&cli.config) else {
                return ExitCode::FAILURE;
            };
            logging::init(&cfg.log.level);
            report(agent::run(cfg, &cli.config))
        }
        Command::Leases { json } => {
            let Some(cfg) = load(&cli.config) else {
                return ExitCode::FAILURE;
            };
            report(leases::run(&cfg.control.socket, json))
        }
        Command::Cache { action } => {
            let Some(cfg) = load(&cli.config) else {
                return ExitCode::FAILURE;
            };
            let socket = &cfg.control.socket;
            report(match action {
                CacheCommand::Stats { json } => cache::stats(socket, json),
                CacheCommand::Ls { json } => cache::ls(socket, json),
                CacheCommand::Purge { url } => cache::purge(socket, &url),
            })
        }
        Command::Status { json } => {
            let Some(cfg) = load(&cli.config) else {
                return ExitCode::FAILURE;
            };
            report(status::run(&cfg.control.socket, json))
        }
        Command::Dataplane {
            action: DataplaneCommand::Detach,
        } => {
            let Some(cfg) = load(&cli.config) else {
                return ExitCode::FAILURE;
            };
            report(
                dataplane::detach::run(&cfg.dataplane.bpf_pin_dir, &cfg.control.socket).map(
                    |detached| {
                        for link in &detached.links {
                            println!("detached {link}");
                        }
                        println!(
                            "removed {} map pins; the inside is unfiltered until the agent starts",
                            detached.maps
                        );
                    },
                ),
            )
        }
        Command::Maps { view, json } => {
            let Some(cfg) = load(&cli.config) else {
                return ExitCode::FAILURE;
            };
            let view = match view {
                MapsCommand::List => maps::View::List,
                MapsCommand::Drops => maps::View::Drops,
                MapsCommand::Clients => maps::View::Clients,
                MapsCommand::Dump { name } => maps::View::Dump(name),
            };
            report(maps::run(
                &cfg.dataplane.bpf_pin_dir,
                &cfg.control.socket,
                view,
                json,
            ))
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match load_checked(file) {
        Some(_) => {
            println!("{}: OK", file.display());
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

/// Loads and validates `path`, printing every error; `None` if there were any.
fn load(path: &std::path::Path) -> Option<Config> {
    match config::load(path) {
        Ok(cfg) => Some(cfg),
        Err(errors) => {
            for err in &errors.0 {
                eprintln!("{}: {err}", path.display());
            }
            None
        }
    }
}

/// [`load`] plus the checks only this host can answer (do the interfaces exist?).
fn load_checked(path: &std::path::Path) -> Option<Config> {
    let cfg = load(path)?;
    let host_errors = config::check_host(&cfg);
    if host_errors.is_empty() {
        return Some(cfg);
    }
    for err in &host_errors {
        eprintln!("{}: {err}", path.display());
    }
    None
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
