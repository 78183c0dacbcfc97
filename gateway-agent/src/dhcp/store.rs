//! The lease store: a redb file, written in one transaction per change set and committed with
//! immediate durability (fsync) before the server says DHCPACK, so an acknowledged lease
//! survives `kill -9` and power loss.
//!
//! Rows: `leases` maps a client key (tag byte + MAC or client identifier) to a JSON
//! [`StoredLease`]; a lease is live while its expiry is in the future, so expiry needs no write
//! at all, and a release is a write of "expires now". `quarantine` maps an address (u32) to a
//! JSON [`StoredQuarantine`].

use crate::mac::MacAddr;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::config::ClientKey;

use super::hostname::key_bytes;

const LEASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("leases");
const QUARANTINE: TableDefinition<u32, &[u8]> = TableDefinition::new("quarantine");

/// One lease row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredLease {
    pub address: Ipv4Addr,
    pub mac: MacAddr,
    #[serde(default)]
    pub client_id: Option<Vec<u8>>,
    #[serde(default)]
    pub hostname: Option<String>,
    /// Unix seconds; in the past for released and expired leases (kept so a returning client
    /// gets its old address back).
    pub expires: u64,
}

/// One quarantined (declined) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredQuarantine {
    /// Unix seconds.
    pub until: u64,
    /// Who declined it.
    pub mac: MacAddr,
}

/// A change to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreOp {
    Put(ClientKey, StoredLease),
    Delete(ClientKey),
    Quarantine(Ipv4Addr, StoredQuarantine),
    Unquarantine(Ipv4Addr),
}

/// Everything in the store.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub leases: Vec<(ClientKey, StoredLease)>,
    pub quarantine: Vec<(Ipv4Addr, StoredQuarantine)>,
    /// Lease rows that could not be read; removed by the next [`Store::apply`] of a cleanup.
    pub unreadable: Vec<Vec<u8>>,
}

/// The open lease store.
pub(crate) struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store at `path`, creating its directory. Only root may read it:
    /// it lists every client's MAC and name.
    pub(crate) fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let db = Database::create(path)
            .with_context(|| format!("opening the lease store {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting permissions on {}", path.display()))?;
        let store = Store {
            db,
            path: path.to_owned(),
        };
        // Create the tables, so reads never meet a missing one.
        store.apply(&[])?;
        Ok(store)
    }

    /// Reads every row.
    pub(crate) fn load(&self) -> Result<Loaded> {
        let context = || format!("reading the lease store {}", self.path.display());
        let txn = self.db.begin_read().with_context(context)?;
        let mut loaded = Loaded::default();
        let leases = txn.open_table(LEASES).with_context(context)?;
        for row in leases.iter().with_context(context)? {
            let (key, value) = row.with_context(context)?;
            let (key, value) = (key.value(), value.value());
            match (
                decode_key(key),
                serde_json::from_slice::<StoredLease>(value),
            ) {
                (Some(client), Ok(lease)) => loaded.leases.push((client, lease)),
                _ => loaded.unreadable.push(key.to_vec()),
            }
        }
        let quarantine = txn.open_table(QUARANTINE).with_context(context)?;
        for row in quarantine.iter().with_context(context)? {
            let (address, value) = row.with_context(context)?;
            // An unreadable quarantine row only ever ends a quarantine early; skip it.
            if let Ok(entry) = serde_json::from_slice(value.value()) {
                loaded
                    .quarantine
                    .push((Ipv4Addr::from(address.value()), entry));
            }
        }
        Ok(loaded)
    }

    /// Applies `ops` in one transaction; when this returns `Ok` they are on disk.
    pub(crate) fn apply(&self, ops: &[StoreOp]) -> Result<()> {
        self.write(|leases, quarantine| {
            for op in ops {
                match op {
                    StoreOp::Put(key, lease) => {
                        let value = serde_json::to_vec(lease).context("encoding a lease")?;
                        leases.insert(key_bytes(key).as_slice(), value.as_slice())?;
                    }
                    StoreOp::Delete(key) => {
                        leases.remove(key_bytes(key).as_slice())?;
                    }
                    StoreOp::Quarantine(address, entry) => {
                        let value = serde_json::to_vec(entry).context("encoding a quarantine")?;
                        quarantine.insert(u32::from(*address), value.as_slice())?;
                    }
                    StoreOp::Unquarantine(address) => {
                        quarantine.remove(u32::from(*address))?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Removes lease rows by their raw key (the unreadable ones).
    pub(crate) fn delete_raw(&self, keys: &[Vec<u8>]) -> Result<()> {
        self.write(|leases, _| {
            for key in keys {
                leases.remove(key.as_slice())?;
            }
            Ok(())
        })
    }

    fn write(
        &self,
        body: impl FnOnce(&mut redb::Table<&[u8], &[u8]>, &mut redb::Table<u32, &[u8]>) -> Result<()>,
    ) -> Result<()> {
        let context = || format!("writing the lease store {}", self.path.display());
        let mut txn = self.db.begin_write().with_context(context)?;
        txn.set_durability(Durability::Immediate)
            .with_context(context)?;
        {
            let mut leases = txn.open_table(LEASES).with_context(context)?;
            let mut quarantine = txn.open_table(QUARANTINE).with_context(context)?;
            body(&mut leases, &mut quarantine).with_context(context)?;
        }
        txn.commit().with_context(context)
    }
}

fn decode_key(bytes: &[u8]) -> Option<ClientKey> {
    match bytes.split_first()? {
        (0, mac) => Some(ClientKey::Mac(MacAddr::from_slice(mac)?)),
        (1, id) if !id.is_empty() => Some(ClientKey::ClientId(id.to_vec())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;

    fn lease(last: u8, expires: u64) -> StoredLease {
        StoredLease {
            address: Ipv4Addr::new(198, 51, 100, last),
            mac: MacAddr::new([2, 0, 0, 0, 0, last]),
            client_id: Some(vec![0xff, 1, 2, 3]),
            hostname: Some(format!("host{last}")),
            expires,
        }
    }

    #[test]
    fn round_trip_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/leases.redb");
        let store = Store::open(&path).unwrap();
        let mac_key = ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, 100]));
        let id_key = ClientKey::ClientId(vec![0xff, 1, 2, 3]);
        let quarantined = StoredQuarantine {
            until: 99,
            mac: MacAddr::new([2, 0, 0, 0, 0, 7]),
        };
        store
            .apply(&[
                StoreOp::Put(mac_key.clone(), lease(100, 10)),
                StoreOp::Put(id_key.clone(), lease(101, 20)),
                StoreOp::Quarantine(Ipv4Addr::new(198, 51, 100, 150), quarantined),
            ])
            .unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.leases.len(), 2);
        assert!(loaded.leases.contains(&(mac_key.clone(), lease(100, 10))));
        assert!(loaded.leases.contains(&(id_key, lease(101, 20))));
        assert_eq!(
            loaded.quarantine,
            vec![(Ipv4Addr::new(198, 51, 100, 150), quarantined)]
        );
        store
            .apply(&[
                StoreOp::Delete(mac_key),
                StoreOp::Unquarantine(Ipv4Addr::new(198, 51, 100, 150)),
            ])
            .unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.leases.len(), 1);
        assert!(loaded.quarantine.is_empty());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unreadable_rows_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("leases.redb")).unwrap();
        store
            .write(|leases, _| {
                leases.insert(&b"\x07junk"[..], &b"{}"[..])?;
                leases.insert(&b"\x00\x02\x00\x00\x00\x00\x01"[..], &b"not json"[..])?;
                Ok(())
            })
            .unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.leases.is_empty());
        assert_eq!(loaded.unreadable.len(), 2);
        store.delete_raw(&loaded.unreadable).unwrap();
        assert!(store.load().unwrap().unreadable.is_empty());
    }

    /// The child half of [`survives_sigkill_after_commit`]: commits, says so, waits to die.
    #[test]
    fn sigkill_child() {
        let Ok(path) = std::env::var("GATEWAY_DHCP_STORE_CHILD") else {
            return; // run only as the child
        };
        let store = Store::open(Path::new(&path)).unwrap();
        for last in 100..110 {
            store
                .apply(&[StoreOp::Put(
                    ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, last])),
                    lease(last, 4_000_000_000),
                )])
                .unwrap();
        }
        println!("COMMITTED");
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    /// Committed leases are there after the writer is SIGKILLed: no clean shutdown, the redb
    /// file left as a crash leaves it.
    #[test]
    fn survives_sigkill_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.redb");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "dhcp::store::tests::sigkill_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("GATEWAY_DHCP_STORE_CHILD", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let committed = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("COMMITTED"));
        // SIGKILL, by the pid we started.
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let status = child.wait().unwrap();
        assert!(committed, "the child never committed");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );

        let store = Store::open(&path).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.leases.len(), 10);
        for last in 100..110 {
            assert!(loaded.leases.contains(&(
                ClientKey::Mac(MacAddr::new([2, 0, 0, 0, 0, last])),
                lease(last, 4_000_000_000)
            )));
        }
    }
}
