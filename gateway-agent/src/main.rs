//! `gateway-agent`: the gateway's daemon (`run`) and its command-line interface.

use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory, Parser, Subcommand};
use gateway_agent::{
    agent,
    cli::{cache, clients, leases, maps, mirror, pki, registry, status},
    config::{self, Config},
    console::{Console, Style},
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
enum ClientsCommand {
    /// Give a client its own policy: `transparent`, `proxy-only` (only the gateway's service
    /// ports) or `blocked` (DHCP only). Kept in state.dir; survives restarts.
    Set {
        /// The client's MAC address.
        mac: String,
        /// `transparent`, `proxy-only` or `blocked`.
        policy: gateway_agent::dataplane::policy::Policy,
    },
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
    /// Run the agent: load and attach the dataplane, serve the control socket. On a terminal
    /// it shows a live status (services, uplink lease, Tor's bootstrap, the addresses clients
    /// use) with warnings over it; under systemd, or with --plain, log lines only.
    Run {
        /// Log lines only, every `info` line included, even on a terminal.
        #[arg(long)]
        plain: bool,
    },
    /// Validate a config file and report every error with its key.
    CheckConfig {
        /// The file to check (default: --config).
        file: Option<PathBuf>,
        /// Also connect to the S3 store `registry.storage` names and list its prefix (the
        /// unit runs check-config before every start, so this is only on request).
        #[arg(long)]
        probe_storage: bool,
    },
    /// The DHCP leases (asks the control socket).
    Leases {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Inside clients: leases, policy and counters joined by MAC (asks the control socket);
    /// `clients set MAC POLICY` changes one client's policy.
    Clients {
        #[command(subcommand)]
        action: Option<ClientsCommand>,
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
    /// Shell completions from these definitions, on stdout (the package installs them).
    #[command(hide = true)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Man pages from these definitions, one per command, written into DIR.
    #[command(hide = true)]
    Manpages {
        /// Where to write `gateway-agent.1`, `gateway-agent-run.1`, …
        dir: PathBuf,
    },
    /// Inspect the dataplane's pinned maps.
    Maps {
        #[command(subcommand)]
        view: MapsCommand,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
    },
    /// The private registry's store (through the agent when it runs).
    Registry {
        #[command(subcommand)]
        verb: RegistryCommand,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
    },
    /// The registry mirror's caches (through the agent when it runs).
    Mirror {
        #[command(subcommand)]
        verb: MirrorCommand,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
    },
    /// The gateway CA: certificates for the registries and their clients.
    Pki {
        #[command(subcommand)]
        verb: PkiCommand,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Remove blobs no manifest references (older than registry.gc_grace), and abandoned uploads.
    Gc,
    /// Repositories and their tags.
    Ls,
    /// Bytes per repository and in the whole store.
    Du,
}

#[derive(Subcommand)]
enum MirrorCommand {
    /// Cached repositories and tags, per upstream.
    Ls,
    /// Bytes per repository and per upstream's cache.
    Du,
    /// Remove blobs no cached manifest references (older than an hour), and interrupted fetches.
    Gc,
    /// Remove an image (REPOSITORY:TAG) or a whole repository from the cache, and what only it used.
    Purge {
        /// `repository[:tag]`, as pulled (`alpine:3` is Docker Hub's `library/alpine:3`).
        image: String,
        /// The upstream (as `?ns=` names it); default: mirror.default.
        #[arg(long)]
        ns: Option<String>,
    },
    /// Evict the least recently pulled images until the caches fit mirror.max_size.
    Evict,
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create the CA (and an empty CRL) under state.dir/pki.
    Init {
        /// Replace an existing CA (every certificate it issued stops working).
        #[arg(long)]
        force: bool,
    },
    /// Issue the server certificate: registry.<zone>, mirror.<zone> and the inside address.
    IssueServer {
        /// Replace an existing one.
        #[arg(long)]
        force: bool,
    },
    /// Issue a client certificate into DIR as client.cert, client.key and ca.crt.
    IssueClient {
        /// The client's name (its certificate's CN, what [[registry.access]] names).
        name: String,
        /// Where to write the bundle (e.g. /etc/containers/certs.d/registry.home.arpa).
        #[arg(long)]
        out: PathBuf,
        /// Overwrite files in DIR, and issue even if NAME already has a valid certificate.
        #[arg(long)]
        force: bool,
    },
    /// Every issued client certificate.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke NAME's certificates; running registries reload the CRL without a restart.
    Revoke {
        /// The client's name.
        name: String,
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
    /// The inside program's recent events (new clients, spoof attempts, policy refusals),
    /// from the running agent.
    Events {
        /// Keep printing new events as they come, until interrupted.
        #[arg(long)]
        follow: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig {
            file,
            probe_storage,
        } => check_config(&file.unwrap_or(cli.config), probe_storage),
        Command::Completions { shell } => {
            // Into a buffer first: the generator panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "gateway-agent", &mut script);
            use std::io::Write;
            report(
                std::io::stdout()
                    .write_all(&script)
                    .map_err(|err| anyhow::anyhow!("writing the completions: {err}")),
            )
        }
        Command::Manpages { dir } => report(
            std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
                .map_err(|err| anyhow::anyhow!("writing man pages into {}: {err}", dir.display())),
        ),
        Command::Run { plain } => {
            let Some(cfg) = load_checked(&cli.config) else {
                return ExitCode::FAILURE;
            };
            let console = Console::new(Style::detect(plain));
            logging::init(&cfg.log.level, &console);
            report(agent::run(cfg, &cli.config, console))
        }
        Command::Leases { json } => {
            let Some(cfg) = load(&cli.config) else {
                return ExitCode::FAILURE;
            };
            report(leases::run(&cfg.control.socket, json))
        }
        Command::Clients { action, json } => {
            let Some(cfg) = load(&cli.config) else {
                return ExitCode::FAILURE;
            };
            let socket = &cfg.control.socket;
            report(match action {
                Some(ClientsCommand::Set { mac, policy }) => clients::set(socket, &mac, policy),
                None => clients::list(socket, &cfg.dataplane.bpf_pin_dir, json),
            })
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
            report(status::run(&cfg, json))
        }
        Command::Registry { verb, json } => {
            let Some(cfg) = load(&cli.config) else {
                return ExitCode::FAILURE;
            };
            let operation = match verb {
                RegistryCommand::Gc => "gc",
                RegistryCommand::Ls => "ls",
                RegistryCommand::Du => "du",
            };
            report(registry::run(&cfg, operation, json))
        }
        Command::Mirror { verb, json } => {
            let Some(cfg) = load(&cli.config) else {
                return ExitCode::FAILURE;
            };
            let (operation, args) = match verb {
                MirrorCommand::Ls => ("ls", serde_json::Value::Null),
                MirrorCommand::Du => ("du", serde_json::Value::Null),
                MirrorCommand::Gc => ("gc", serde_json::Value::Null),
                MirrorCommand::Evict => ("evict", serde_json::Value::Null),
                MirrorCommand::Purge { image, ns } => {
                    ("purge", serde_json::json!({ "image": image, "ns": ns }))
                }
            };
            report(mirror::run(&cfg, operation, args, json))
        }
        Command::Pki { verb } => {
            let Some(cfg) = load(&cli.config) else {
                return ExitCode::FAILURE;
            };
            let verb = match verb {
                PkiCommand::Init { force } => pki::Verb::Init { force },
                PkiCommand::IssueServer { force } => pki::Verb::IssueServer { force },
                PkiCommand::IssueClient { name, out, force } => {
                    pki::Verb::IssueClient { name, out, force }
                }
                PkiCommand::List { json } => pki::Verb::List { json },
                PkiCommand::Revoke { name } => pki::Verb::Revoke { name },
            };
            report(pki::run(&cfg, verb))
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
                        if detached.links.is_empty() && detached.maps == 0 {
                            println!(
                                "nothing was pinned under {} (dataplane.bpf_pin_dir): no \
                                 program of this config's was attached",
                                cfg.dataplane.bpf_pin_dir.display()
                            );
                            return;
                        }
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
                MapsCommand::Events { follow } => {
                    return report(maps::events(&cfg.control.socket, follow, json));
                }
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

fn check_config(file: &std::path::Path, probe_storage: bool) -> ExitCode {
    let Some(cfg) = load_checked(file) else {
        return ExitCode::FAILURE;
    };
    if probe_storage {
        match gateway_agent::registry::store::probe(&cfg) {
            Ok(line) => println!("{line}"),
            Err(error) => {
                eprintln!("{}: registry.storage: {error:#}", file.display());
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{}: OK", file.display());
    ExitCode::SUCCESS
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
