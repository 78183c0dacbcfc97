//! The inside program's events (`EVENTS` ring buffer): a new MAC, a spoof attempt, a policy
//! refusal. The agent drains the ring, counts each kind, keeps the last [`JOURNAL_LEN`] for
//! `gateway-agent maps events [--follow]` (through the control socket) and logs them, at most
//! one line per kind per [`LOG_INTERVAL`] with the number it left out.
//!
//! Events name the client (MAC, the address it claimed), never where it was going: they are
//! not a connection log.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::Ebpf;
use gateway_common::{
    event::{Event, EventKind, EVENT_STAT_LOST, EVENT_STAT_THINNED, NO_REASON},
    maps::names,
    DropReason,
};
use serde::{Deserialize, Serialize};
use tokio::{io::unix::AsyncFd, task::JoinHandle};

use crate::mac::MacAddr;

/// Events kept for `maps events`.
pub const JOURNAL_LEN: usize = 1024;
/// The shortest gap between two log lines of one kind.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One event as the CLI and the control socket show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Position in the agent's sequence (1, 2, …): ask for events after it.
    pub seq: u64,
    /// When the agent read it (RFC 3339, UTC).
    pub at: String,
    /// `new_client`, `spoof` or `policy_drop`.
    pub kind: String,
    /// The frame's source MAC.
    pub mac: String,
    /// The IPv4 source or ARP sender the frame claimed, if any.
    pub ipv4: Option<Ipv4Addr>,
    /// The drop reason, for spoofs and refusals.
    pub reason: Option<String>,
}

/// What `events` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPage {
    /// Events after the asked sequence number, oldest first.
    pub events: Vec<EventRecord>,
    /// Ask for events after this next time.
    pub last: u64,
    /// Events after the asked number that the journal no longer holds.
    pub missed: u64,
    /// Events by kind since the agent started.
    pub counts: Vec<(String, u64)>,
    /// Events the program did not send, over its per-CPU budget.
    pub thinned: u64,
    /// Events lost because the ring was full.
    pub lost: u64,
}

/// One decoded ring record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// What happened.
    pub kind: EventKind,
    /// The drop reason, if it was a drop.
    pub reason: Option<DropReason>,
    /// Who.
    pub mac: MacAddr,
    /// The address claimed.
    pub ipv4: Option<Ipv4Addr>,
}

/// Decodes one record; `None` for a record of the wrong size or an unknown kind (an object
/// from another build), which is skipped.
pub fn decode(bytes: &[u8]) -> Option<Decoded> {
    if bytes.len() != std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: the length is checked; Event is plain old data, read unaligned.
    let event: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = EventKind::from_u32(event.kind)?;
    let reason = match event.reason {
        NO_REASON => None,
        index => Some(DropReason::from_index(index)?),
    };
    let ipv4 = (event.ipv4 != 0).then(|| Ipv4Addr::from(event.ipv4.to_ne_bytes()));
    Some(Decoded {
        kind,
        reason,
        mac: MacAddr::from(event.mac),
        ipv4,
    })
}

/// The recent events and the counts: sans-I/O, the caller passes the times.
#[derive(Debug, Default)]
pub struct Journal {
    recent: VecDeque<EventRecord>,
    last: u64,
    counts: [u64; EventKind::ALL.len()],
    throttle: [Throttle; EventKind::ALL.len()],
}

#[derive(Debug, Default, Clone, Copy)]
struct Throttle {
    last_line: Option<Instant>,
    held: u64,
}

/// A log line the journal lets through: the event and how many of its kind were left out
/// since the last line.
#[derive(Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The event.
    pub record: EventRecord,
    /// Events of the same kind not logged since the previous line.
    pub left_out: u64,
}

impl Journal {
    /// Records `event`, read at `wall` (`now` for the log throttle); a line to log, if the
    /// kind's interval has passed.
    pub fn push(&mut self, event: Decoded, wall: SystemTime, now: Instant) -> Option<LogLine> {
        self.last += 1;
        let record = EventRecord {
            seq: self.last,
            at: rfc3339(wall),
            kind: event.kind.name().to_string(),
            mac: event.mac.to_string(),
            ipv4: event.ipv4,
            reason: event.reason.map(|r| r.name().to_string()),
        };
        if self.recent.len() == JOURNAL_LEN {
            self.recent.pop_front();
        }
        self.recent.push_back(record.clone());
        let kind = event.kind as usize;
        self.counts[kind] += 1;
        let throttle = &mut self.throttle[kind];
        let due = throttle
            .last_line
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_INTERVAL);
        if !due {
            throttle.held += 1;
            return None;
        }
        throttle.last_line = Some(now);
        let left_out = std::mem::take(&mut throttle.held);
        Some(LogLine { record, left_out })
    }

    /// The events after `after`, with the counts (the program's `thinned` and `lost` are
    /// the caller's to fill).
    pub fn page(&self, after: u64) -> EventPage {
        let oldest = self.recent.front().map_or(self.last + 1, |r| r.seq);
        let missed = oldest.saturating_sub(after.saturating_add(1));
        EventPage {
            events: self
                .recent
                .iter()
                .filter(|r| r.seq > after)
                .cloned()
                .collect(),
            last: self.last,
            missed: if after >= self.last { 0 } else { missed },
            counts: EventKind::ALL
                .iter()
                .map(|k| (k.name().to_string(), self.counts[*k as usize]))
                .collect(),
            thinned: 0,
            lost: 0,
        }
    }

    /// Events of each kind so far.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        EventKind::ALL
            .iter()
            .map(|k| (k.name(), self.counts[*k as usize]))
            .collect()
    }
}

fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "-".into())
}

/// The running agent's events: the journal and the program's own counts.
#[derive(Clone)]
pub struct EventFeed {
    journal: Arc<Mutex<Journal>>,
    stats: Arc<PerCpuArray<MapData, u64>>,
}

impl EventFeed {
    /// The events after `after`.
    pub fn page(&self, after: u64) -> EventPage {
        let mut page = self.lock().page(after);
        page.thinned = self.stat(EVENT_STAT_THINNED);
        page.lost = self.stat(EVENT_STAT_LOST);
        page
    }

    /// Events by kind, and the program's thinned and lost counts.
    pub fn counts(&self) -> (Vec<(&'static str, u64)>, u64, u64) {
        let counts = self.lock().counts();
        (
            counts,
            self.stat(EVENT_STAT_THINNED),
            self.stat(EVENT_STAT_LOST),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stat(&self, index: u32) -> u64 {
        self.stats
            .get(&index, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

/// Starts draining the ring of `ebpf`'s object.
pub fn spawn(ebpf: &mut Ebpf) -> Result<(JoinHandle<()>, EventFeed)> {
    let ring = ebpf
        .take_map(names::EVENTS)
        .ok_or_else(|| anyhow!("the eBPF object has no {} map", names::EVENTS))?;
    let ring = RingBuf::try_from(ring).context("EVENTS is not a ring buffer")?;
    let stats = ebpf
        .take_map(names::EVENT_STATS)
        .ok_or_else(|| anyhow!("the eBPF object has no {} map", names::EVENT_STATS))?;
    let stats = PerCpuArray::try_from(stats).context("EVENT_STATS is not a per-CPU array")?;
    let feed = EventFeed {
        journal: Arc::new(Mutex::new(Journal::default())),
        stats: Arc::new(stats),
    };
    // SAFETY: the ring owns its fd for as long as the AsyncFd owns the ring, and as_raw_fd
    // always returns that same fd.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .context("registering the events ring buffer with tokio")?;
    let journal = feed.journal.clone();
    let task = tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(guard) => guard,
                Err(err) => {
                    tracing::error!("events ring buffer: {err}");
                    return;
                }
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                let Some(event) = decode(&item) else {
                    continue;
                };
                let line = journal.lock().unwrap_or_else(|p| p.into_inner()).push(
                    event,
                    SystemTime::now(),
                    Instant::now(),
                );
                if let Some(line) = line {
                    log(&line);
                }
            }
            guard.clear_ready();
        }
    });
    Ok((task, feed))
}

fn log(line: &LogLine) {
    let r = &line.record;
    let claimed = r
        .ipv4
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "-".into());
    let reason = r.reason.as_deref().unwrap_or("-");
    match r.kind.as_str() {
        "new_client" => tracing::info!(
            mac = %r.mac, ipv4 = %claimed, left_out = line.left_out,
            "dataplane: a new client"
        ),
        "spoof" => tracing::warn!(
            mac = %r.mac, claimed = %claimed, reason, left_out = line.left_out,
            "dataplane: a spoof attempt, dropped"
        ),
        _ => tracing::info!(
            mac = %r.mac, reason, left_out = line.left_out,
            "dataplane: refused by the client's policy"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: u32, reason: u32, ipv4: [u8; 4]) -> Vec<u8> {
        let event = Event {
            kind,
            reason,
            mac: [2, 0, 0, 0, 0, 7],
            _pad: [0; 2],
            ipv4: u32::from_ne_bytes(ipv4),
            _pad2: 0,
        };
        // SAFETY: Event is repr(C) plain old data.
        unsafe {
            std::slice::from_raw_parts(
                (&event as *const Event).cast::<u8>(),
                std::mem::size_of::<Event>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_records_and_skips_foreign_ones() {
        let spoof = decode(&raw(
            EventKind::Spoof as u32,
            DropReason::SpoofedSource as u32,
            [198, 51, 100, 7],
        ))
        .unwrap();
        assert_eq!(spoof.kind, EventKind::Spoof);
        assert_eq!(spoof.reason, Some(DropReason::SpoofedSource));
        assert_eq!(spoof.ipv4, Some(Ipv4Addr::new(198, 51, 100, 7)));
        assert_eq!(spoof.mac.to_string(), "02:00:00:00:00:07");
        let new = decode(&raw(EventKind::NewClient as u32, NO_REASON, [0; 4])).unwrap();
        assert_eq!((new.reason, new.ipv4), (None, None));
        assert_eq!(decode(&raw(99, NO_REASON, [0; 4])), None, "unknown kind");
        assert_eq!(decode(&raw(1, 9999, [0; 4])), None, "unknown reason");
        assert_eq!(decode(&[0; 8]), None, "short record");
    }

    fn event(kind: EventKind) -> Decoded {
        Decoded {
            kind,
            reason: None,
            mac: MacAddr::from([2, 0, 0, 0, 0, 1]),
            ipv4: None,
        }
    }

    #[test]
    fn logs_one_line_per_kind_per_interval_and_says_what_it_left_out() {
        let mut journal = Journal::default();
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let first = journal.push(event(EventKind::Spoof), wall, t0).unwrap();
        assert_eq!(first.left_out, 0);
        for i in 1..=5 {
            let at = t0 + Duration::from_millis(100 * i);
            assert!(journal.push(event(EventKind::Spoof), wall, at).is_none());
        }
        // Another kind has its own interval.
        assert!(journal
            .push(
                event(EventKind::NewClient),
                wall,
                t0 + Duration::from_millis(200)
            )
            .is_some());
        let next = journal
            .push(event(EventKind::Spoof), wall, t0 + LOG_INTERVAL)
            .unwrap();
        assert_eq!(next.left_out, 5);
        let counts = journal.counts();
        assert!(counts.contains(&("spoof", 7)), "{counts:?}");
        assert!(counts.contains(&("new_client", 1)), "{counts:?}");
    }

    #[test]
    fn pages_follow_the_sequence_and_report_what_fell_out() {
        let mut journal = Journal::default();
        let now = Instant::now();
        for _ in 0..3 {
            journal.push(event(EventKind::PolicyDrop), SystemTime::UNIX_EPOCH, now);
        }
        let page = journal.page(1);
        assert_eq!(
            page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!((page.last, page.missed), (3, 0));
        assert_eq!(page.events[0].at, "1970-01-01T00:00:00Z");
        assert!(journal.page(3).events.is_empty());
        for _ in 0..JOURNAL_LEN {
            journal.push(event(EventKind::PolicyDrop), SystemTime::UNIX_EPOCH, now);
        }
        let page = journal.page(0);
        assert_eq!(page.events.len(), JOURNAL_LEN);
        assert_eq!(page.missed, 3, "the first three fell out of the journal");
        assert_eq!(page.events[0].seq, 4);
    }
}
