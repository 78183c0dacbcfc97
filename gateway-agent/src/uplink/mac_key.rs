//! The secret that keys the uplink macvlan's MAC: without it, the macvlan's MAC cannot be
//! traced back to the NIC's own (a public function of the NIC's MAC could be reversed by
//! anyone who guesses the vendor prefix). Kept in the state dir so the MAC, and with it the
//! upstream lease, is the same on every start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ring::rand::{SecureRandom, SystemRandom};

/// Length of the key in bytes.
const KEY_LEN: usize = 32;
/// Its file in the state dir.
const FILE: &str = "uplink-mac.key";

/// The key in `state_dir`, made (0600, written atomically) on first use.
pub fn load_or_create(state_dir: &Path) -> Result<[u8; KEY_LEN]> {
    let path = state_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let Ok(key) = <[u8; KEY_LEN]>::try_from(bytes.as_slice()) else {
                bail!(
                    "{} holds {} bytes, not {KEY_LEN}; remove it to have a new key made (the \
                     uplink MAC, and so its upstream lease, will change)",
                    path.display(),
                    bytes.len()
                );
            };
            Ok(key)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => create(state_dir, &path),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

fn create(state_dir: &Path, path: &PathBuf) -> Result<[u8; KEY_LEN]> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating the state dir {}", state_dir.display()))?;
    let tmp = state_dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(&key)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    std::fs::File::open(state_dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("syncing {}", state_dir.display()))?;
    tracing::info!(path = %path.display(), "made the key for the uplink macvlan's MAC");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_the_same_afterwards() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(dir.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), first);
    }

    #[test]
    fn a_short_key_is_an_error_not_a_new_mac() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"short").unwrap();
        let err = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not 32"), "{err}");
    }
}
