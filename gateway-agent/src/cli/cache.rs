//! `gateway-agent cache stats|ls|purge URL`: the HTTP proxy's cache, through the running agent.

use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use super::progress::Progress;
use super::table;
use crate::control::client;
use crate::http_proxy::{CacheListed, CacheStats};

fn operate(socket: &Path, operation: &str, args: Value) -> Result<Value> {
    client::operate(socket, "http_proxy", operation, args)
}

/// Prints the cache's counters and sizes.
pub fn stats(socket: &Path, json: bool) -> Result<()> {
    let value = operate(socket, "cache_stats", Value::Null)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let stats: CacheStats = serde_json::from_value(value)
        .map_err(|err| anyhow::anyhow!("the agent's cache stats are not readable: {err}"))?;
    let asked = stats.hits + stats.misses + stats.revalidated + stats.stale_served;
    let ratio = if asked == 0 {
        0.0
    } else {
        (stats.hits + stats.revalidated + stats.stale_served) as f64 * 100.0 / asked as f64
    };
    println!(
        "hits         {} ({ratio:.1}% of cacheable requests served from the cache)",
        stats.hits
    );
    println!("misses       {}", stats.misses);
    println!("revalidated  {}", stats.revalidated);
    println!("stale served {}", stats.stale_served);
    println!("collapsed    {}", stats.collapsed);
    println!("bytes saved  {}", stats.bytes_saved);
    println!(
        "objects      {} ({} stored, {} evicted, {} corrupt dropped)",
        stats.entries, stats.stored, stats.evicted, stats.corrupt
    );
    println!(
        "size         {} of {} bytes",
        stats.size_bytes, stats.max_bytes
    );
    Ok(())
}

/// Removes one URL's object.
pub fn purge(socket: &Path, url: &str) -> Result<()> {
    let progress = Progress::start("cache purge: removing the object");
    let value = operate(socket, "cache_purge", json!({ "url": url }));
    drop(progress);
    let value = value?;
    let shown = value["url"].as_str().unwrap_or(url);
    if value["purged"].as_bool() == Some(true) {
        println!("purged {shown}");
    } else {
        println!("{shown} was not cached");
    }
    Ok(())
}

/// Lists every stored URL. Root only in practice (the control socket is), and it should stay
/// so: the list says what the inside clients fetched.
pub fn ls(socket: &Path, json: bool) -> Result<()> {
    let value = operate(socket, "cache_ls", Value::Null)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let listed: Vec<CacheListed> = serde_json::from_value(value)
        .map_err(|err| anyhow::anyhow!("the agent's cache list is not readable: {err}"))?;
    let now = crate::clock::unix_now();
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|l| {
            vec![
                l.size.to_string(),
                format!("{}s", now.saturating_sub(l.stored_unix)),
                l.url.clone(),
            ]
        })
        .collect();
    println!("{}", table::render(&["bytes", "stored", "url"], &rows));
    Ok(())
}
