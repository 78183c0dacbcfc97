//! `gateway-agent mirror ls|du|gc|purge IMAGE|evict`: through the running agent's control
//! socket when one answers (the caches are the agent's while it runs), directly on the
//! caches otherwise.

use anyhow::{bail, Result};
use serde_json::Value;

use super::progress::Progress;
use super::table;
use crate::config::Config;
use crate::control::{
    client,
    protocol::{Request, Response},
};
use crate::mirror::admin::{Evicted, Purged};
use crate::mirror::service::{open_shelves, run as run_on};
use crate::registry::admin::{GcReport, RepoListing, Usage};

/// Runs `operation` with `args` and prints its result.
pub fn run(cfg: &Config, operation: &str, args: Value, json: bool) -> Result<()> {
    let progress = match operation {
        "gc" => Some(Progress::start(
            "mirror gc: marking and sweeping the caches",
        )),
        "du" => Some(Progress::start("mirror du: adding up the caches")),
        "evict" => Some(Progress::start("mirror evict: evicting and sweeping")),
        "purge" => Some(Progress::start(
            "mirror purge: removing the image and sweeping",
        )),
        _ => None,
    };
    let value = if client::agent_answers(&cfg.control.socket) {
        let request = Request::Operate {
            service: "mirror".into(),
            operation: operation.into(),
            args,
        };
        // GC, du and eviction walk the whole cache.
        let timeout = std::time::Duration::from_secs(600);
        match client::request_within(&cfg.control.socket, &request, timeout)? {
            Response::Operated { value } => value,
            Response::Error { message } => bail!("the agent refused mirror {operation}: {message}"),
            other => bail!("the agent answered something else: {other:?}"),
        }
    } else {
        let dir = crate::mirror::service::cache_dir(cfg);
        if !dir.exists() {
            bail!(
                "no mirror cache at {} (mirror.dir): the agent makes it when the mirror first \
                 starts; no agent answers on {} to ask instead (`systemctl status \
                 gateway-agent`)",
                dir.display(),
                cfg.control.socket.display()
            );
        }
        let shelves = open_shelves(cfg)?;
        run_on(
            &shelves,
            &cfg.mirror.default,
            cfg.mirror.max_size,
            operation,
            &args,
        )?
    };
    drop(progress);
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match operation {
        "purge" => {
            let purged: Purged = serde_json::from_value(value.clone())?;
            println!(
                "{} of {}: {} manifests removed, {} blobs swept ({} bytes)",
                value["repository"].as_str().unwrap_or(""),
                value["upstream"].as_str().unwrap_or(""),
                purged.manifests,
                purged.gc.swept,
                purged.gc.swept_bytes
            );
        }
        "evict" => {
            let evicted: Evicted = serde_json::from_value(value)?;
            println!(
                "{} images evicted ({} -> {} bytes){}",
                evicted.images.len(),
                evicted.bytes_before,
                evicted.bytes_after,
                if evicted.images.is_empty() {
                    String::new()
                } else {
                    format!(": {}", evicted.images.join(", "))
                }
            );
            if !evicted.spared.is_empty() {
                println!("kept while pulls use them: {}", evicted.spared.join(", "));
            }
        }
        _ => print_per_upstream(operation, value)?,
    }
    Ok(())
}

/// `ls`, `du` and `gc`: one result per upstream.
fn print_per_upstream(operation: &str, value: Value) -> Result<()> {
    let Value::Object(by_upstream) = value else {
        bail!("the agent answered {value}, not one result per upstream");
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (upstream, value) in by_upstream {
        match operation {
            "gc" => {
                let report: GcReport = serde_json::from_value(value)?;
                rows.push(vec![
                    upstream,
                    report.marked.to_string(),
                    report.swept.to_string(),
                    report.swept_bytes.to_string(),
                ]);
            }
            "ls" => {
                let repos: Vec<RepoListing> = serde_json::from_value(value)?;
                for repo in repos {
                    if repo.tags.is_empty() {
                        rows.push(vec![
                            upstream.clone(),
                            repo.repository.clone(),
                            "-".into(),
                            "-".into(),
                        ]);
                    }
                    for (tag, digest) in repo.tags {
                        rows.push(vec![upstream.clone(), repo.repository.clone(), tag, digest]);
                    }
                }
            }
            _ => {
                let usage: Usage = serde_json::from_value(value)?;
                for (repo, bytes) in usage.repositories {
                    rows.push(vec![upstream.clone(), repo, bytes.to_string()]);
                }
                rows.push(vec![
                    upstream,
                    format!("(cache: {} blobs)", usage.blobs),
                    usage.bytes.to_string(),
                ]);
            }
        }
    }
    let header: &[&str] = match operation {
        "gc" => &["upstream", "referenced", "swept", "swept bytes"],
        "ls" => &["upstream", "repository", "tag", "digest"],
        _ => &["upstream", "repository", "bytes"],
    };
    println!("{}", table::render(header, &rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cache_and_no_agent_names_the_key_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[interfaces]\noutside = \"eth0\"\ninside = \"eth1\"\n[inside]\naddress = \
             \"198.51.100.1/24\"\n[state]\ndir = \"{0}/state\"\n[control]\nsocket = \
             \"{0}/control.sock\"\n",
            dir.path().display()
        );
        let cfg = crate::config::parse(&text).unwrap();
        let err = run(&cfg, "ls", Value::Null, false).unwrap_err().to_string();
        assert!(err.contains("mirror.dir"), "{err}");
        assert!(err.contains("control.sock"), "{err}");
        assert!(
            !dir.path().join("state").exists(),
            "a read made the state directory"
        );
    }
}
