//! Events for the agent through the `EVENTS` ring buffer, within a per-CPU budget: a sender
//! who can trigger them (a MAC flood, a spoofing loop) costs the ring at most
//! `EVENTS_PER_SECOND` records a second per CPU. What the budget or a full ring cost is
//! counted, so the agent can say how much it did not see.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use gateway_common::{
    event::{Event, EventKind, EVENTS_PER_SECOND, EVENT_STAT_LOST, EVENT_STAT_THINNED},
    DropReason,
};

use crate::maps::{EVENTS, EVENT_BUDGET, EVENT_STATS};

const WINDOW_NS: u64 = 1_000_000_000;

/// Reports `kind` for the frame from `mac` that claimed `ipv4`.
#[inline(always)]
pub fn report(kind: EventKind, reason: Option<DropReason>, mac: [u8; 6], ipv4: u32) {
    if !within_budget() {
        count(EVENT_STAT_THINNED);
        return;
    }
    let event = Event {
        kind: kind as u32,
        reason: match reason {
            Some(reason) => reason as u32,
            None => gateway_common::event::NO_REASON,
        },
        mac,
        _pad: [0; 2],
        ipv4,
        _pad2: 0,
    };
    if EVENTS.output::<Event>(&event, 0).is_err() {
        count(EVENT_STAT_LOST);
    }
}

/// The event kind a drop for `reason` reports, if any.
#[inline(always)]
pub fn for_drop(reason: DropReason) -> Option<EventKind> {
    match reason {
        DropReason::SpoofedSource | DropReason::SpoofedArp | DropReason::ChaddrMismatch => {
            Some(EventKind::Spoof)
        }
        DropReason::Policy => Some(EventKind::PolicyDrop),
        _ => None,
    }
}

#[inline(always)]
fn within_budget() -> bool {
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(budget) = EVENT_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // Per-CPU slot: no other writer while this program runs on this CPU.
    unsafe {
        if now.wrapping_sub((*budget).window_ns) >= WINDOW_NS {
            (*budget).window_ns = now;
            (*budget).sent = 0;
        }
        if (*budget).sent >= EVENTS_PER_SECOND {
            return false;
        }
        (*budget).sent += 1;
    }
    true
}

#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = EVENT_STATS.get_ptr_mut(index) {
        // Per-CPU slot.
        unsafe { *counter += 1 };
    }
}
