//! The server task: receive, handle, then store → sinks → reply, in that order, so a lease is
//! on disk before the client hears DHCPACK, and in DNS and the dataplane maps before the
//! client can use the address. A periodic sweep ends expired leases.
//!
//! Packets that queued up while the last batch was being written are handled together and
//! their changes committed in one transaction: one fsync for a burst (a LAN powering up, a
//! switch coming back) instead of one per client, and still none of their replies before it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::lease_events::{LeaseEvent, LeaseSink};

use super::handler::{Handler, Now, Outcome};
use super::packet::MAX_LEN;
use super::socket::DhcpSocket;
use super::store::{Store, StoreOp};

/// Most packets handled per commit.
const MAX_BATCH: usize = 64;
/// How often expired leases and offers are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// At most one error log of a kind this often (a failing disk or socket would otherwise log
/// once per packet); the counters have the totals.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Locks the handler; a panic elsewhere while it was held leaves consistent-enough state
/// (every mutation is a whole-record replace), so poisoning is ignored.
pub(crate) fn lock(handler: &Mutex<Handler>) -> MutexGuard<'_, Handler> {
    handler
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The I/O half of the server.
pub(crate) struct Server {
    handler: Arc<Mutex<Handler>>,
    store: Arc<Store>,
    socket: DhcpSocket,
    sinks: Vec<Arc<dyn LeaseSink>>,
    store_error_logged: Option<Instant>,
    send_error_logged: Option<Instant>,
}

impl Server {
    pub(crate) fn new(
        handler: Arc<Mutex<Handler>>,
        store: Arc<Store>,
        socket: DhcpSocket,
        sinks: Vec<Arc<dyn LeaseSink>>,
    ) -> Server {
        Server {
            handler,
            store,
            socket,
            sinks,
            store_error_logged: None,
            send_error_logged: None,
        }
    }

    /// Serves until `stop` fires (its sender is dropped).
    pub(crate) async fn run(mut self, mut stop: crate::net::service_task::Shutdown) {
        // One byte over the limit, so an oversized datagram shows as too long, not truncated.
        let mut buf = vec![0u8; MAX_LEN + 1];
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = sweep.tick() => {
                    let outcome = self.guarded(|handler, now| handler.sweep(now.unix));
                    self.finish(vec![outcome]).await;
                }
                received = self.socket.recv(&mut buf) => match received {
                    Ok((len, source)) => {
                        let packet = &buf[..len];
                        let mut outcomes = vec![self.guarded(|handler, now| {
                            handler.handle_packet(packet, source, now)
                        })];
                        self.drain_queued(&mut buf, &mut outcomes);
                        self.finish(outcomes).await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "receiving on the DHCP socket");
                        // Do not spin on an error that repeats.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    /// Sends `events` to every sink; a sink that panics is logged, not fatal.
    pub(crate) fn emit(&self, events: &[LeaseEvent]) {
        for event in events {
            for sink in &self.sinks {
                if catch_unwind(AssertUnwindSafe(|| sink.apply(event))).is_err() {
                    tracing::error!("a lease sink panicked; the DHCP server carries on");
                    lock(&self.handler).stats_mut().internal_errors += 1;
                }
            }
        }
    }

    /// Runs `body` on the handler; a bug that panics costs one packet, not the server.
    fn guarded(&self, body: impl FnOnce(&mut Handler, Now) -> Outcome) -> Outcome {
        let now = Now {
            unix: crate::clock::unix_now(),
            mono: Instant::now(),
        };
        let mut handler = lock(&self.handler);
        match catch_unwind(AssertUnwindSafe(|| body(&mut handler, now))) {
            Ok(outcome) => outcome,
            Err(_) => {
                handler.stats_mut().internal_errors += 1;
                tracing::error!("the DHCP handler panicked on a packet; dropped it");
                Outcome::default()
            }
        }
    }

    /// Handles the packets already queued on the socket, up to [`MAX_BATCH`] in all.
    fn drain_queued(&self, buf: &mut [u8], outcomes: &mut Vec<Outcome>) {
        while outcomes.len() < MAX_BATCH {
            match self.socket.try_recv(buf) {
                Ok(Some((len, source))) => {
                    let packet = &buf[..len];
                    outcomes.push(
                        self.guarded(|handler, now| handler.handle_packet(packet, source, now)),
                    );
                }
                Ok(None) => break,
                // A queued socket error (an ICMP error for an earlier reply, say) is consumed
                // here; it says nothing about the packets still to come.
                Err(error) => {
                    tracing::debug!(%error, "receiving on the DHCP socket");
                    break;
                }
            }
        }
    }

    /// Store (every outcome's changes, one commit), then sinks, then replies, in the order
    /// the packets came. If the batch cannot be committed, each outcome is tried alone, so a
    /// change the store refuses costs its own reply only.
    async fn finish(&mut self, outcomes: Vec<Outcome>) {
        let batch: Vec<StoreOp> = outcomes
            .iter()
            .flat_map(|outcome| outcome.store.iter().cloned())
            .collect();
        let committed = if batch.is_empty() || self.write(batch).await {
            vec![true; outcomes.len()]
        } else if outcomes.len() == 1 {
            vec![false]
        } else {
            // The failed transaction left nothing behind; commit one outcome at a time.
            let mut committed = Vec::with_capacity(outcomes.len());
            for outcome in &outcomes {
                committed.push(outcome.store.is_empty() || self.write(outcome.store.clone()).await);
            }
            committed
        };
        for (outcome, committed) in outcomes.into_iter().zip(committed) {
            if !committed {
                continue;
            }
            self.emit(&outcome.events);
            if let Some(outgoing) = outcome.reply {
                if let Err(error) = self.socket.send(&outgoing).await {
                    lock(&self.handler).stats_mut().send_errors += 1;
                    if due(&mut self.send_error_logged) {
                        tracing::warn!(%error, destination = ?outgoing.destination, "sending a DHCP reply");
                    }
                }
            }
        }
    }

    /// Commits `ops` (synced); false, counted and logged (throttled), if that failed.
    async fn write(&mut self, ops: Vec<StoreOp>) -> bool {
        let store = self.store.clone();
        let written = tokio::task::spawn_blocking(move || store.apply(&ops))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|result| result);
        match written {
            Ok(()) => true,
            Err(error) => {
                lock(&self.handler).stats_mut().store_errors += 1;
                if due(&mut self.store_error_logged) {
                    tracing::error!("writing the DHCP lease store: {error:#}; reply withheld");
                }
                false
            }
        }
    }
}

/// Whether a throttled log may be written now (and records that it was).
fn due(last: &mut Option<Instant>) -> bool {
    if last.is_some_and(|at| at.elapsed() < ERROR_LOG_INTERVAL) {
        return false;
    }
    *last = Some(Instant::now());
    true
}
