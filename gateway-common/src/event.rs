//! What the inside program reports to the agent through the `EVENTS` ring buffer: a MAC seen
//! for the first time, a spoof attempt, a policy refusal. The drop counters stay exact; events
//! say *who*, and the program thins them (at most [`EVENTS_PER_SECOND`] per CPU) so a flood
//! cannot turn into a flood of records.

/// What happened.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The first frame from a MAC since the dataplane started (or since the per-client table
    /// evicted it).
    NewClient = 0,
    /// A frame whose source address, ARP sender or DHCP `chaddr` is not the sender's own.
    Spoof = 1,
    /// A frame the client's policy does not allow.
    PolicyDrop = 2,
}

impl EventKind {
    /// Every kind, in value order.
    pub const ALL: &'static [EventKind] = &[
        EventKind::NewClient,
        EventKind::Spoof,
        EventKind::PolicyDrop,
    ];

    /// The stable name shown by the CLI and in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::NewClient => "new_client",
            EventKind::Spoof => "spoof",
            EventKind::PolicyDrop => "policy_drop",
        }
    }

    /// The kind with value `value`, if any.
    pub const fn from_u32(value: u32) -> Option<EventKind> {
        match value {
            0 => Some(EventKind::NewClient),
            1 => Some(EventKind::Spoof),
            2 => Some(EventKind::PolicyDrop),
            _ => None,
        }
    }
}

/// `Event::reason` when the event is not a drop.
pub const NO_REASON: u32 = u32::MAX;

/// One record in `EVENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// An [`EventKind`] value.
    pub kind: u32,
    /// The [`crate::DropReason`] index of the drop, or [`NO_REASON`].
    pub reason: u32,
    /// The frame's source MAC.
    pub mac: [u8; 6],
    /// Always zero.
    pub _pad: [u8; 2],
    /// The IPv4 source (or ARP sender) the frame claimed, 0 if none (network-order encoding).
    /// Never the destination: events say who, not where to.
    pub ipv4: u32,
    /// Always zero.
    pub _pad2: u32,
}

/// Size of the `EVENTS` ring buffer in bytes (a power of two, a multiple of the page size):
/// about 2000 records of 32 bytes with the ring's header.
pub const EVENTS_RING_BYTES: u32 = 64 * 1024;

/// At most this many events per second per CPU reach the ring; the rest are counted in
/// `EVENT_STATS[EVENT_STAT_THINNED]`.
pub const EVENTS_PER_SECOND: u32 = 256;

/// `EVENT_STATS` index: events the program did not send, over the per-second budget.
pub const EVENT_STAT_THINNED: u32 = 0;
/// `EVENT_STATS` index: events lost because the ring was full (the agent fell behind).
pub const EVENT_STAT_LOST: u32 = 1;
/// Number of `EVENT_STATS` slots.
pub const EVENT_STATS_LEN: u32 = 2;

/// Per-CPU state of the event budget (`EVENT_BUDGET`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    /// Start of the current one-second window (ns since boot).
    pub window_ns: u64,
    /// Events sent in that window.
    pub sent: u32,
    /// Always zero.
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, explicit padding, no invalid bit patterns.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::EventBudget {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<Event>(), 24);
        assert_eq!(core::mem::size_of::<EventBudget>(), 16);
    }

    #[test]
    fn kinds_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_u32(*kind as u32), Some(*kind));
        }
        assert_eq!(EventKind::from_u32(EventKind::ALL.len() as u32), None);
    }
}
