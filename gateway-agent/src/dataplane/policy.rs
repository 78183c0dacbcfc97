//! Per-client policy: what an inside client may do, kept in `state.dir/client-policy.json` and
//! in the pinned `CLIENT_POLICY` map the inside XDP program reads (only clients whose policy
//! is not `dataplane.default_policy` have an entry). The file is the truth: every start fills
//! the map from it before the programs attach.

use std::borrow::BorrowMut;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result};
use aya::maps::{HashMap as AyaHashMap, MapData};
use gateway_common::maps::{policy, MacKey};
use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The gateway's services, and TCP and DNS to any host through Tor (the default).
    Transparent,
    /// Only the gateway's own service ports: SOCKS, the HTTP proxy, DNS on its address.
    ProxyOnly,
    /// DHCP only.
    Blocked,
}

impl Policy {
    /// Every policy, for help texts.
    pub const ALL: [Policy; 3] = [Policy::Transparent, Policy::ProxyOnly, Policy::Blocked];

    /// Its name in the config, the CLI and the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Transparent => "transparent",
            Policy::ProxyOnly => "proxy-only",
            Policy::Blocked => "blocked",
        }
    }

    /// Its value in `CLIENT_POLICY` and `DataplaneConfig::default_policy`.
    pub fn value(self) -> u32 {
        match self {
            Policy::Transparent => policy::TRANSPARENT,
            Policy::ProxyOnly => policy::PROXY_ONLY,
            Policy::Blocked => policy::BLOCKED,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .ok_or_else(|| {
                format!("{text:?} is not a policy; expected \"transparent\", \"proxy-only\" or \"blocked\"")
            })
    }
}

/// The policies set per client, by MAC (`aa:bb:…`).
pub type Policies = BTreeMap<String, Policy>;

/// The state file.
pub fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("client-policy.json")
}

/// The policies in `path` (none if it does not exist). A file that cannot be read is an error:
/// starting with everyone on the default could open what was closed.
pub fn load(path: &Path) -> Result<Policies> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a client policy file", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Policies::new()),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `policies` to `path` atomically (temporary file, fsync, rename).
pub fn save(path: &Path, policies: &Policies) -> Result<()> {
    let temp = path.with_extension("json.part");
    let text = serde_json::to_vec_pretty(policies).context("encoding the client policies")?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("creating {}", temp.display()))?;
    out.write_all(&text)
        .and_then(|()| out.sync_all())
        .with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path)
        .with_context(|| format!("moving {} to {}", temp.display(), path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

/// Makes `map` hold exactly the entries of `policies` that differ from `default`.
pub fn fill<T: BorrowMut<MapData>>(
    map: &mut AyaHashMap<T, MacKey, u32>,
    policies: &Policies,
    default: Policy,
) -> Result<()> {
    let mut wanted = std::collections::HashMap::new();
    for (mac, policy) in policies {
        let mac: MacAddr = mac
            .parse()
            .map_err(|err| anyhow::anyhow!("client policy for {mac:?}: {err}"))?;
        if *policy != default {
            wanted.insert(MacKey::new(mac.octets()), policy.value());
        }
    }
    let stale: Vec<MacKey> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|key| !wanted.contains_key(key))
        .collect();
    for key in stale {
        map.remove(&key).context("removing a client policy")?;
    }
    for (key, value) in wanted {
        map.insert(key, value, 0)
            .context("writing a client policy into CLIENT_POLICY")?;
    }
    Ok(())
}

/// Sets `mac`'s policy in the state file and the pinned map at `map_pin`; a client set to
/// the default loses its entry (it then follows `dataplane.default_policy`). Returns the
/// normalised MAC.
pub fn set(
    state_dir: &Path,
    map_pin: &Path,
    mac: &str,
    policy: Policy,
    default: Policy,
) -> Result<String> {
    let mac: MacAddr = mac
        .parse()
        .map_err(|err| anyhow::anyhow!("{mac:?} is not a MAC address: {err}"))?;
    let key = mac.to_string();
    let path = file(state_dir);
    let mut policies = load(&path)?;
    if policy == default {
        policies.remove(&key);
    } else {
        policies.insert(key.clone(), policy);
    }
    // The file first: a crash in between leaves the map to the next start, which fills it
    // from the file.
    save(&path, &policies)?;
    let data = MapData::from_pin(map_pin)
        .with_context(|| format!("opening the pinned map {}", map_pin.display()))?;
    let mut map: AyaHashMap<MapData, MacKey, u32> =
        AyaHashMap::try_from(aya::maps::Map::HashMap(data))
            .context("CLIENT_POLICY is not a hash map of the expected types")?;
    fill(&mut map, &policies, default)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for policy in Policy::ALL {
            assert_eq!(policy.as_str().parse::<Policy>(), Ok(policy));
        }
        assert!("open".parse::<Policy>().is_err());
    }

    #[test]
    fn the_file_round_trips_and_a_broken_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path());
        assert!(load(&path).unwrap().is_empty(), "no file: no policies");
        let mut policies = Policies::new();
        policies.insert("02:00:00:00:00:01".into(), Policy::Blocked);
        policies.insert("02:00:00:00:00:02".into(), Policy::ProxyOnly);
        save(&path, &policies).unwrap();
        assert_eq!(load(&path).unwrap(), policies);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load(&path).is_err());
    }
}
