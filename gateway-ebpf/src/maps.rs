//! The maps the programs share with the agent. Names are pinned by the agent; see
//! `gateway_common::maps::names`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruPerCpuHashMap, PerCpuArray, RingBuf, SockMap},
};
use gateway_common::{
    drop_reason::DROP_REASON_COUNT,
    event::{EventBudget, EVENTS_RING_BYTES, EVENT_STATS_LEN},
    maps::{
        steer, ClientStats, DataplaneConfig, LeaseValue, MacKey, PortKey, MAX_CLIENTS, MAX_LEASES,
        MAX_OPEN_PORTS,
    },
};

/// Written once by the agent before any program is attached.
#[map(name = "CONFIG")]
pub static CONFIG: Array<DataplaneConfig> = Array::with_max_entries(1, 0);

/// (protocol, port) pairs open on the gateway's inside address.
#[map(name = "OPEN_PORTS")]
pub static OPEN_PORTS: HashMap<PortKey, u8> = HashMap::with_max_entries(MAX_OPEN_PORTS, 0);

/// Drop counters by reason.
#[map(name = "DROPS")]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASON_COUNT, 0);

/// Per-client (source MAC) counters; LRU so a MAC flood evicts instead of filling memory.
#[map(name = "CLIENT_STATS")]
pub static CLIENT_STATS: LruPerCpuHashMap<MacKey, ClientStats> =
    LruPerCpuHashMap::with_max_entries(MAX_CLIENTS, 0);

/// Live DHCP leases by MAC, kept by the agent: the IP source guard and the ARP guard read them.
#[map(name = "LEASES")]
pub static LEASES: HashMap<MacKey, LeaseValue> = HashMap::with_max_entries(MAX_LEASES, 0);

/// The same leases by address.
#[map(name = "LEASES_BY_IP")]
pub static LEASES_BY_IP: HashMap<u32, MacKey> = HashMap::with_max_entries(MAX_LEASES, 0);

/// Clients whose policy is not the default (`gateway_common::maps::policy`), by MAC.
#[map(name = "CLIENT_POLICY")]
pub static CLIENT_POLICY: HashMap<MacKey, u32> = HashMap::with_max_entries(MAX_LEASES, 0);

/// The sockets steered inside traffic goes to, by `steer` slot; filled by the agent.
#[map(name = "STEER_SOCKETS")]
pub static STEER_SOCKETS: SockMap = SockMap::with_max_entries(steer::SLOTS, 0);

/// Events for the agent (`crate::events`): who was new, who spoofed, who was refused.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Events thinned by the budget or lost to a full ring, per CPU.
#[map(name = "EVENT_STATS")]
pub static EVENT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EVENT_STATS_LEN, 0);

/// Each CPU's event budget for the current second. Not pinned.
#[map(name = "EVENT_BUDGET")]
pub static EVENT_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);

/// When each CPU last logged a guard record (ns since boot): guard logs are rate limited, so a
/// sender who can trigger them cannot flood the journal. Not pinned: a restart starts afresh.
#[map(name = "LOG_LIMIT")]
pub static LOG_LIMIT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The address leased to `mac`, if it has a lease.
#[inline(always)]
pub fn leased_ipv4(mac: [u8; 6]) -> Option<u32> {
    // SAFETY: the value is copied out at once; the agent replaces entries whole.
    unsafe { LEASES.get(&MacKey::new(mac)) }.map(|lease| lease.ipv4)
}

/// The policy of the client with `mac`: its own, else the configured default.
#[inline(always)]
pub fn client_policy(mac: [u8; 6], cfg: &DataplaneConfig) -> u32 {
    // SAFETY: a u32 copied out at once.
    unsafe { CLIENT_POLICY.get(&MacKey::new(mac)) }
        .copied()
        .unwrap_or(cfg.default_policy)
}

/// The agent's settings, if it has written them.
#[inline(always)]
pub fn config() -> Option<&'static DataplaneConfig> {
    match CONFIG.get(0) {
        Some(cfg) if cfg.flags & gateway_common::maps::CONFIG_FLAG_READY != 0 => Some(cfg),
        _ => None,
    }
}
