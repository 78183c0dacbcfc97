//! Files that hold a secret (the mirror's upstream credentials, the S3 store's keys): root's
//! (the agent's user's) alone, one line `name:secret`. Errors start with the config key.

use std::path::Path;

/// The first line of `path` (config key `key`), which must be readable and writable by its
/// owner only, owned by the agent's user, and look like `shape` (`user:password`).
pub fn read_private_line(path: &Path, key: &str, shape: &str) -> Result<String, String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta =
        std::fs::metadata(path).map_err(|error| format!("{key}: {}: {error}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{key}: {} may be read by others (mode {:04o}); chmod 600 it",
            path.display(),
            mode & 0o7777
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!(
            "{key}: {} belongs to uid {}, not to the agent's user (uid {me}); chown it",
            path.display(),
            meta.uid()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("{key}: reading {}: {error}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim().to_owned();
    match line.split_once(':') {
        Some((name, secret)) if !name.is_empty() && !secret.is_empty() => Ok(line),
        _ => Err(format!(
            "{key}: {} must hold one line `{shape}`",
            path.display()
        )),
    }
}
