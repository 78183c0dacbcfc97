//! The one piece of the systemd protocol the agent needs: telling a `Type=notify` unit that it
//! is ready. Without `NOTIFY_SOCKET` (not under systemd) it does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (like `READY=1`) to systemd, if the agent runs under it.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket: the leading '@' stands for a NUL byte.
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)
        } else {
            sock.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(err) = sent {
        tracing::warn!("could not notify systemd ({state}): {err}");
    }
}
