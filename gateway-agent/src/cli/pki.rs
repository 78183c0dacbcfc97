//! `gateway-agent pki init|issue-server|issue-client|list|revoke`: the gateway CA's files
//! under `<state.dir>/pki`, worked on directly (the agent only reads them; a running registry
//! notices a new CRL by itself).

use std::path::PathBuf;

use anyhow::Result;

use super::table;
use crate::config::Config;
use crate::pki::Pki;

/// One `pki` verb.
pub enum Verb {
    Init {
        force: bool,
    },
    IssueServer {
        force: bool,
    },
    IssueClient {
        name: String,
        out: PathBuf,
        force: bool,
    },
    List {
        json: bool,
    },
    Revoke {
        name: String,
    },
}

/// Runs `verb` on the PKI under `cfg`'s state directory.
pub fn run(cfg: &Config, verb: Verb) -> Result<()> {
    let pki = Pki::under(&cfg.state.dir);
    let zone = cfg.dns.zone.to_string();
    let zone = zone.trim_end_matches('.');
    match verb {
        Verb::Init { force } => {
            pki.init(force)?;
            println!("CA written to {}", pki.ca_cert().display());
        }
        Verb::IssueServer { force } => {
            pki.issue_server(zone, cfg.inside.address, force)?;
            println!(
                "server certificate for registry.{zone}, mirror.{zone} and {} written to {}",
                cfg.inside.address,
                pki.server_cert().display()
            );
        }
        Verb::IssueClient { name, out, force } => {
            pki.issue_client(&name, &out, force)?;
            println!(
                "client certificate for {name:?} written to {} (client.cert, client.key, ca.crt)",
                out.display()
            );
        }
        Verb::List { json } => {
            let issued = pki.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&issued)?);
            } else {
                let rows: Vec<Vec<String>> = issued
                    .iter()
                    .map(|cert| {
                        vec![
                            cert.name.clone(),
                            cert.serial.clone(),
                            cert.not_after.clone(),
                            if cert.revoked { "revoked" } else { "valid" }.to_owned(),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table::render(&["name", "serial", "expires", "state"], &rows)
                );
            }
        }
        Verb::Revoke { name } => {
            pki.revoke(&name)?;
            println!(
                "{name:?} revoked; {} rewritten (a running registry reloads it within seconds)",
                pki.crl().display()
            );
        }
    }
    Ok(())
}
