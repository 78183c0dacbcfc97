//! The last outside lease, kept in the state directory so the next start can confirm it with
//! INIT-REBOOT instead of discovering from scratch.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// File name under the state directory.
pub const FILE_NAME: &str = "uplink-lease.json";

/// What is remembered of a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLease {
    pub address: Ipv4Addr,
    pub server: Ipv4Addr,
    /// Seconds since the Unix epoch; `None` for an infinite lease.
    pub expires_unix: Option<u64>,
    /// Given back (DHCPRELEASE) or lost: only worth suggesting, not confirming.
    pub released: bool,
}

/// The lease file of one state directory.
#[derive(Debug, Clone)]
pub struct SavedLeaseFile {
    path: PathBuf,
}

impl SavedLeaseFile {
    pub fn new(state_dir: &Path) -> Self {
        SavedLeaseFile {
            path: state_dir.join(FILE_NAME),
        }
    }

    #[cfg(test)]
    fn path(&self) -> &Path {
        &self.path
    }

    /// The stored lease; `None` if there is none or it cannot be read (a lost hint costs only
    /// a DISCOVER, so this never fails).
    pub fn load(&self) -> Option<SavedLease> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => {
                tracing::warn!("ignoring {}: {err}", self.path.display());
                return None;
            }
        };
        match serde_json::from_str(&text) {
            Ok(lease) => Some(lease),
            Err(err) => {
                tracing::warn!("ignoring {}: {err}", self.path.display());
                None
            }
        }
    }

    /// Writes `lease` atomically (temporary file, fsync, rename).
    pub fn store(&self, lease: &SavedLease) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
        let text = serde_json::to_string_pretty(lease).context("serialising the uplink lease")?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            // The rename itself is durable only once the directory is synced.
            std::fs::File::open(dir)?.sync_all()
        };
        write().with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let file = SavedLeaseFile::new(&dir.path().join("sub"));
        assert_eq!(file.load(), None);
        let lease = SavedLease {
            address: Ipv4Addr::new(192, 0, 2, 150),
            server: Ipv4Addr::new(192, 0, 2, 1),
            expires_unix: Some(1_700_000_000),
            released: false,
        };
        file.store(&lease).unwrap();
        assert_eq!(file.load(), Some(lease));
        std::fs::write(file.path(), "not json").unwrap();
        assert_eq!(file.load(), None);
    }
}
