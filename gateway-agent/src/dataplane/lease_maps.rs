//! Keeps the dataplane's lease maps (`LEASES`, `LEASES_BY_IP`) in step with the DHCP server.

use std::{net::Ipv4Addr, sync::Mutex};

use anyhow::{Context, Result};
use aya::maps::{HashMap, Map, MapData};
use gateway_common::maps::{names, LeaseValue, MacKey};

use super::pins::PinLayout;
use crate::lease_events::{LeaseEvent, LeaseInfo, LeaseSink};

/// The two lease maps, opened from their pins.
pub struct LeaseMaps {
    by_mac: Mutex<HashMap<MapData, MacKey, LeaseValue>>,
    by_ip: Mutex<HashMap<MapData, u32, MacKey>>,
}

fn encode(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

impl LeaseMaps {
    /// Opens the pinned maps of a running dataplane.
    pub fn open(pins: &PinLayout) -> Result<LeaseMaps> {
        let open = |name: &str| -> Result<Map> {
            let path = pins.map(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening pinned map {}", path.display()))?;
            Map::from_map_data(data).with_context(|| format!("opening map {name}"))
        };
        Ok(LeaseMaps {
            by_mac: Mutex::new(open(names::LEASES)?.try_into()?),
            by_ip: Mutex::new(open(names::LEASES_BY_IP)?.try_into()?),
        })
    }

    /// Both maps, always locked in this order.
    #[allow(clippy::type_complexity)]
    fn lock(
        &self,
    ) -> Result<(
        std::sync::MutexGuard<'_, HashMap<MapData, MacKey, LeaseValue>>,
        std::sync::MutexGuard<'_, HashMap<MapData, u32, MacKey>>,
    )> {
        let poisoned = || anyhow::anyhow!("a lease map lock was poisoned");
        let by_mac = self.by_mac.lock().map_err(|_| poisoned())?;
        let by_ip = self.by_ip.lock().map_err(|_| poisoned())?;
        Ok((by_mac, by_ip))
    }

    fn bind(&self, lease: &LeaseInfo) -> Result<()> {
        let key = MacKey::from(lease.mac);
        let (mut by_mac, mut by_ip) = self.lock()?;
        // A client that moved to another address leaves no stale reverse entry.
        if let Ok(old) = by_mac.get(&key, 0) {
            if old.ipv4 != encode(lease.address) {
                let _ = by_ip.remove(&old.ipv4);
            }
        }
        let value = LeaseValue {
            ipv4: encode(lease.address),
            flags: 0,
            expires_unix: lease.expires_unix,
        };
        by_mac.insert(key, value, 0).context("writing LEASES")?;
        by_ip
            .insert(encode(lease.address), key, 0)
            .context("writing LEASES_BY_IP")?;
        Ok(())
    }

    fn remove(&self, lease: &LeaseInfo) -> Result<()> {
        let key = MacKey::from(lease.mac);
        let (mut by_mac, mut by_ip) = self.lock()?;
        // Only entries that still describe this lease: a newer lease of the MAC stays.
        if by_mac
            .get(&key, 0)
            .is_ok_and(|v| v.ipv4 == encode(lease.address))
        {
            let _ = by_mac.remove(&key);
        }
        if by_ip
            .get(&encode(lease.address), 0)
            .is_ok_and(|mac| mac == key)
        {
            let _ = by_ip.remove(&encode(lease.address));
        }
        Ok(())
    }
}

impl LeaseSink for LeaseMaps {
    fn apply(&self, event: &LeaseEvent) {
        let result = match event {
            LeaseEvent::Bound(lease) => self.bind(lease),
            LeaseEvent::Removed(lease) => self.remove(lease),
        };
        if let Err(err) = result {
            tracing::error!("updating the dataplane lease maps: {err:#}");
        }
    }
}
