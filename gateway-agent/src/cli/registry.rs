//! `gateway-agent registry gc|ls|du`: through the running agent's control socket when one
//! answers (the store is the agent's while it runs), directly on the store otherwise.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::progress::Progress;
use super::table;
use crate::config::Config;
use crate::control::{
    client,
    protocol::{Request, Response},
};
use crate::registry::admin::{GcReport, RepoListing, Usage};
use crate::registry::service::{limits, run as run_on, store_dir};

/// Runs `operation` (`gc`, `ls` or `du`) and prints its result.
pub fn run(cfg: &Config, operation: &str, json: bool) -> Result<()> {
    let progress = match operation {
        "gc" => Some(Progress::start(
            "registry gc: marking and sweeping the store",
        )),
        "du" => Some(Progress::start("registry du: adding up the store")),
        _ => None,
    };
    let value = if client::agent_answers(&cfg.control.socket) {
        let request = Request::Operate {
            service: "registry".into(),
            operation: operation.into(),
            args: Value::Null,
        };
        // GC and du walk the whole store.
        let timeout = std::time::Duration::from_secs(600);
        match client::request_within(&cfg.control.socket, &request, timeout)? {
            Response::Operated { value } => value,
            Response::Error { message } => {
                bail!("the agent refused registry {operation}: {message}")
            }
            other => bail!("the agent answered something else: {other:?}"),
        }
    } else {
        let dir = store_dir(cfg);
        let on_disk = cfg.registry.storage == crate::registry::config::StorageChoice::Filesystem;
        if on_disk && !dir.exists() {
            bail!(
                "no registry store at {} (registry.dir): the agent makes it when the registry \
                 first starts; no agent answers on {} to ask instead (`systemctl status \
                 gateway-agent`)",
                dir.display(),
                cfg.control.socket.display()
            );
        }
        let store = crate::registry::store::open(
            cfg,
            crate::registry::store::Part::Registry,
            dir.clone(),
            limits(cfg),
            None,
        )
        .with_context(|| {
            format!(
                "opening the registry's store (registry.dir {})",
                dir.display()
            )
        })?;
        run_on(&*store, operation, cfg.registry.gc_grace.as_duration())?
    };
    drop(progress);
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match operation {
        "gc" => {
            let report: GcReport = serde_json::from_value(value)?;
            println!(
                "{} referenced, {} swept ({} bytes), {} unreferenced but younger than the grace \
                 period, {} abandoned uploads removed",
                report.marked,
                report.swept,
                report.swept_bytes,
                report.young,
                report.uploads_expired
            );
        }
        "ls" => {
            let repos: Vec<RepoListing> = serde_json::from_value(value)?;
            let rows: Vec<Vec<String>> = repos
                .iter()
                .flat_map(|repo| {
                    let tags: Vec<Vec<String>> = repo
                        .tags
                        .iter()
                        .map(|(tag, digest)| {
                            vec![repo.repository.clone(), tag.clone(), digest.clone()]
                        })
                        .collect();
                    if tags.is_empty() {
                        vec![vec![repo.repository.clone(), "-".into(), "-".into()]]
                    } else {
                        tags
                    }
                })
                .collect();
            println!("{}", table::render(&["repository", "tag", "digest"], &rows));
        }
        _ => {
            let usage: Usage = serde_json::from_value(value)?;
            let mut rows: Vec<Vec<String>> = usage
                .repositories
                .iter()
                .map(|(repo, bytes)| vec![repo.clone(), bytes.to_string()])
                .collect();
            rows.push(vec![
                format!("(store: {} blobs)", usage.blobs),
                usage.bytes.to_string(),
            ]);
            println!("{}", table::render(&["repository", "bytes"], &rows));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_store_and_no_agent_names_the_key_and_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[interfaces]\noutside = \"eth0\"\ninside = \"eth1\"\n[inside]\naddress = \
             \"198.51.100.1/24\"\n[state]\ndir = \"{0}/state\"\n[control]\nsocket = \
             \"{0}/control.sock\"\n",
            dir.path().display()
        );
        let cfg = crate::config::parse(&text).unwrap();
        let err = run(&cfg, "gc", false).unwrap_err().to_string();
        assert!(err.contains("registry.dir"), "{err}");
        assert!(
            err.contains(&format!("{}/state/registry", dir.path().display())),
            "{err}"
        );
        assert!(err.contains("control.sock"), "{err}");
    }
}
