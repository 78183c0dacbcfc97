//! Counter updates shared by the programs.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use gateway_common::{
    event::EventKind,
    maps::{ClientStats, MacKey},
    DropReason,
};

use crate::{
    events,
    maps::{CLIENT_STATS, DROPS, LOG_LIMIT},
};

/// Counts one drop under `reason`.
#[inline(always)]
pub fn count_drop(reason: DropReason) {
    if let Some(counter) = DROPS.get_ptr_mut(reason as u32) {
        // Per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *counter += 1 };
    }
}

/// Accounts one frame from `mac` of `len` bytes; a MAC not seen before is reported as a
/// new client.
#[inline(always)]
pub fn count_client(mac: [u8; 6], len: u64, dropped: bool, ipv4_src: u32) {
    let key = MacKey::new(mac);
    let now = unsafe { bpf_ktime_get_ns() };
    match CLIENT_STATS.get_ptr_mut(&key) {
        Some(stats) => unsafe {
            (*stats).packets += 1;
            (*stats).bytes += len;
            (*stats).dropped += dropped as u64;
            (*stats).last_seen_ns = now;
            if ipv4_src != 0 {
                (*stats).last_ipv4 = ipv4_src;
            }
        },
        None => {
            let stats = ClientStats {
                packets: 1,
                bytes: len,
                dropped: dropped as u64,
                last_seen_ns: now,
                last_ipv4: ipv4_src,
                _pad: 0,
            };
            // A failed insert only loses this frame's count; never a reason to drop it.
            if CLIENT_STATS.insert(&key, &stats, 0).is_ok() {
                events::report(EventKind::NewClient, None, mac, ipv4_src);
            }
        }
    }
}

/// Minimum time between two guard log records on one CPU.
const LOG_INTERVAL_NS: u64 = 1_000_000_000;

/// Whether a guard may log now: at most one record per second per CPU. The drop counters stay
/// exact; only the log is thinned.
#[inline(always)]
pub fn log_allowed() -> bool {
    let now = unsafe { bpf_ktime_get_ns() };
    match LOG_LIMIT.get_ptr_mut(0) {
        // Per-CPU slot: no other writer while this program runs on this CPU.
        Some(last) => unsafe {
            if now.wrapping_sub(*last) >= LOG_INTERVAL_NS {
                *last = now;
                true
            } else {
                false
            }
        },
        None => false,
    }
}
