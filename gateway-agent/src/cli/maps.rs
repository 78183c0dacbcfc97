//! `gateway-agent maps …`: the pinned maps, read directly, with a plain word when no agent is
//! behind them.

use std::path::Path;

use anyhow::{Context, Result};

use super::table;
use crate::{
    control::client,
    dataplane::{events::EventPage, inspect, pins::PinLayout},
};

/// Which map view to print.
#[derive(Debug, Clone)]
pub enum View {
    /// Every map with type and size.
    List,
    /// Drop counters by reason.
    Drops,
    /// Per-client counters.
    Clients,
    /// One map's decoded contents.
    Dump(String),
}

/// Prints `view` of the maps pinned under `pin_dir`.
pub fn run(pin_dir: &Path, socket: &Path, view: View, json: bool) -> Result<()> {
    let pins = PinLayout::new(pin_dir);
    let agent = client::agent_answers(socket);
    let result = print(&pins, &view, json);
    if !agent {
        // Said on stderr so `--json` output stays parseable.
        if result.is_ok() {
            eprintln!(
                "note: no agent is answering on {}; these maps are a stopped run's, whose \
                 programs stay attached until `gateway-agent dataplane detach`",
                socket.display()
            );
        } else {
            eprintln!(
                "no agent is answering on {} either (`systemctl status gateway-agent`)",
                socket.display()
            );
        }
    }
    result
}

fn print(pins: &PinLayout, view: &View, json: bool) -> Result<()> {
    match view {
        View::List => {
            let maps = inspect::list(pins)?;
            if json {
                return print_json(&maps);
            }
            let rows: Vec<Vec<String>> = maps
                .iter()
                .map(|m| {
                    vec![
                        m.name.clone(),
                        m.map_type.clone(),
                        m.entries.to_string(),
                        m.max_entries.to_string(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table::render(&["name", "type", "entries", "max_entries"], &rows)
            );
        }
        View::Drops => {
            let drops = inspect::drops(pins)?;
            if json {
                let map: serde_json::Map<String, serde_json::Value> = drops
                    .iter()
                    .map(|d| (d.reason.to_string(), d.count.into()))
                    .collect();
                return print_json(&map);
            }
            let rows: Vec<Vec<String>> = drops
                .iter()
                .map(|d| vec![d.reason.to_string(), d.count.to_string()])
                .collect();
            println!("{}", table::render(&["reason", "count"], &rows));
        }
        View::Clients => {
            let clients = inspect::clients(pins)?;
            if json {
                return print_json(&clients);
            }
            let rows: Vec<Vec<String>> = clients
                .iter()
                .map(|c| {
                    vec![
                        c.mac.clone(),
                        c.ip.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into()),
                        c.packets.to_string(),
                        c.bytes.to_string(),
                        c.dropped.to_string(),
                        c.idle_secs
                            .map(|s| format!("{s}s"))
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            println!(
                "{}",
                table::render(&["mac", "ip", "packets", "bytes", "dropped", "idle"], &rows)
            );
        }
        View::Dump(name) => {
            let value = inspect::dump(pins, name)?;
            if json {
                return print_json(&value);
            }
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
    }
    Ok(())
}

/// Prints the running agent's recent events; with `follow`, keeps asking for new ones every
/// half second until the agent goes away (an error) or the user interrupts.
pub fn events(socket: &Path, follow: bool, json: bool) -> Result<()> {
    let mut after = 0;
    let mut first = true;
    loop {
        let value = client::operate(
            socket,
            "dataplane",
            "events",
            serde_json::json!({ "after": after }),
        )
        .context("events come from the running agent")?;
        let page: EventPage =
            serde_json::from_value(value).context("the agent's events are not readable")?;
        if page.missed > 0 && !first {
            eprintln!(
                "({} events came and went before they could be shown)",
                page.missed
            );
        }
        if !json && first && (page.thinned > 0 || page.lost > 0) {
            eprintln!(
                "note: the program left out {} events over its budget and lost {} to a full ring",
                page.thinned, page.lost
            );
        }
        for event in &page.events {
            if json {
                print_json(event)?;
            } else {
                println!(
                    "{}  {:<11}  {}  {:<15}  {}",
                    event.at,
                    event.kind,
                    event.mac,
                    event
                        .ipv4
                        .map(|ip| ip.to_string())
                        .unwrap_or_else(|| "-".into()),
                    event.reason.as_deref().unwrap_or("-"),
                );
            }
        }
        after = page.last;
        first = false;
        if !follow {
            return Ok(());
        }
        use std::io::Write;
        std::io::stdout().flush().context("writing events")?;
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string(value).context("encoding JSON output")?
    );
    Ok(())
}
