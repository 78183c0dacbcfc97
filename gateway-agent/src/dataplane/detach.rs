//! `gateway-agent dataplane detach`: the one way to an unfiltered inside. It removes the link
//! pins (which detaches the programs) and the map pins, and refuses while an agent answers on
//! the control socket: a running agent owns its dataplane.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{attach, pins::PinLayout};
use crate::control::client;

/// What `detach` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Detached {
    /// Link pins removed, by name (`<program>@<interface>`).
    pub links: Vec<String>,
    /// Map pins removed.
    pub maps: usize,
}

/// Detaches every program pinned under `pin_dir`, unless an agent answers on `socket`.
pub fn run(pin_dir: &Path, socket: &Path) -> Result<Detached> {
    if client::agent_answers(socket) {
        bail!(
            "an agent is answering on {}: stop it first (a running agent owns its dataplane, \
             and a stopped one leaves it attached on purpose)",
            socket.display()
        );
    }
    let pins = PinLayout::new(pin_dir);
    let mut detached = Detached::default();
    for (name, path) in attach::link_pins(&pins)? {
        std::fs::remove_file(&path)
            .with_context(|| format!("removing the link pin {}", path.display()))?;
        detached.links.push(name);
    }
    detached.maps = pins.remove_maps()?;
    Ok(detached)
}
