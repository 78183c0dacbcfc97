//! `[control]`: where the control socket is.

use std::path::PathBuf;

use crate::config::reader::{self, Section};
use crate::config::{values, Errors};

/// `[control]`: the agent's control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// An absolute path that fits a unix socket's `sun_path`.
    pub socket: PathBuf,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: PathBuf::from("/run/gateway/control.sock"),
        }
    }
}

/// Reads `[control]`: `socket`.
pub(crate) fn read(section: &mut Section, errors: &mut Errors) -> Option<Control> {
    let socket = section.optional("socket", Control::default().socket, errors, |value| {
        values::socket_path(&reader::string(value)?)
    });
    Some(Control { socket: socket? })
}
