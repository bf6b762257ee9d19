//! The pump: reads the oldest rows ahead, hands them to the client as messages while the
//! window has room, and has the rows the broker confirmed released or deleted.
//!
//! Each round of its loop takes one look at the session (under its lock) and does what is
//! due, in this order, then waits for something to change:
//! 1. **follow** the session: a new connection (epoch) starts the cursors over;
//! 2. **read**: start the next read if the read-ahead has room ([`Store::read`]); decided
//!    before the sending, which takes as long as a read, so reads and sends overlap;
//! 3. **send** what fits ([`send`]): the window, the pacer, batches;
//! 4. **confirm** the rows confirmed, or reclaim released ones when idle; end an on_demand
//!    window once everything sent is confirmed; **bury** dead letters;
//! 5. **wait** for a trip ([`done`]), a PUBACK or CONNACK (`wake`), a commit, a due time,
//!    or the end.
//!
//! **Architecture Invariant:** a request is registered in the session under the same lock
//! that hands it to the client, so the order of registrations is the order the client sees.
//! **Invariant:** when confirmations fall behind the broker (a window's worth of rows
//! waiting), nothing more is sent: what a crash can duplicate stays within three windows
//! (in flight, being confirmed, confirmed meanwhile), and so does memory.
//! **Invariant:** the pump ends only when cancelled.

mod done;
mod send;

use super::cursors::{Cursors, Lanes};
use super::dead::Burials;
use super::outbound::{outbound, unsendable};
use super::pacer::Pacer;
use super::read_ahead::Waiting;
use super::session::Session;
use super::store::{Done, Store, CONFIRM_CHUNK, READ_CHUNK};
use super::{now, Handle};
use crate::config::{Connection, MqttConfig};
use crate::metrics::Metrics;
use crate::queue::{Confirmed, Live, QueueError, SharedQueue};
use send::Closing;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What one look at the session found, for the steps of a round.
struct Look {
    now: Instant,
    /// No trip failed within [`DB_PAUSE`].
    db_ready: bool,
    /// The last row this connection may send.
    last: i64,
    window: usize,
    /// The most rows read ahead.
    read_ahead: usize,
    /// The most confirmed rows waiting for their confirmation trip before sending stops.
    confirmed_max: usize,
    deletes_pending: bool,
    /// The queue is to be read from the start and confirmed rows are not gone yet.
    read_blocked: bool,
}

/// Resolves when the pipeline offers a message (never without a live path).
async fn offered(live: &Option<Arc<Live>>) {
    match live {
        Some(live) => live.offered.notified().await,
        None => std::future::pending().await,
    }
}

/// After a failed trip, no new one for this long.
const DB_PAUSE: Duration = Duration::from_secs(1);

struct Pump {
    cfg: Arc<MqttConfig>,
    handle: Handle,
    queue: SharedQueue,
    metrics: Arc<Metrics>,
    damaged: CancellationToken,
    per_message: usize,
    max_delay: Duration,
    on_demand: bool,
    pacer: Option<Pacer>,
    cursors: Cursors,
    lanes: Lanes,
    closing: Closing,
    store: Store,
    burials: Burials,
    /// Released rows may be on disk (unknown at start): reclaim them when idle.
    reclaim_left: bool,
    /// After a failed trip, no new one before this.
    db_pause: Option<Instant>,
    /// Messages offered before their commit, and the last one this connection took.
    live: Option<Arc<Live>>,
    live_taken: i64,
    /// Rows taken from memory and confirmed while their commit was under way: confirmed in
    /// the queue once the commit is done.
    live_held: Confirmed,
}

/// Sends until cancelled. Rows are read ahead (a window's worth of messages, at least two
/// reads' worth of rows), so SQLite is read in bulk rather than once per acknowledgement.
/// With `live_first`, rows committed after the connection came up go before the backlog.
pub(super) async fn pump(cfg: Arc<MqttConfig>, handle: Handle, parts: super::Parts) {
    let super::Parts {
        queue,
        mut committed,
        live,
        metrics,
        cancel,
        damaged,
        status_online: _,
    } = parts;
    let mut p = Pump {
        per_message: cfg.batch.as_ref().map_or(1, |b| b.max_readings),
        max_delay: cfg.batch.as_ref().map_or(Duration::ZERO, |b| b.max_delay),
        on_demand: matches!(cfg.connection, Connection::OnDemand { .. }),
        pacer: cfg.replay_rate.map(|rate| Pacer::new(rate, now())),
        cursors: Cursors::default(),
        lanes: Lanes::default(),
        closing: Closing::Open,
        store: Store::open(queue.clone()).await,
        burials: Burials::default(),
        reclaim_left: true,
        db_pause: None,
        live,
        live_taken: 0,
        live_held: Confirmed::default(),
        cfg,
        handle,
        queue,
        metrics,
        damaged,
    };
    let mut pipeline_open = true;
    loop {
        let wait_until = p.round(*committed.borrow_and_update());
        let sleep = async {
            match wait_until {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = p.store.done() => match done {
                Done::Read(plan, r) => p.on_read(plan, r),
                Done::Confirmed(r) => p.on_confirmed(r),
            },
            done = p.burials.done() => {
                if let Err(failed) = p.burials.report(done, &p.metrics) {
                    if let Some(e) = &failed.error {
                        p.on_error(e);
                    }
                    p.handle.session().dead.extend(failed.rest);
                    p.pause_db();
                }
            }
            _ = p.handle.wake.notified() => {}
            _ = offered(&p.live) => {}
            r = committed.changed(), if pipeline_open => pipeline_open = r.is_ok(),
            _ = sleep => {
                if p.db_pause.is_some_and(|t| now() >= t) {
                    p.db_pause = None;
                }
            }
            _ = cancel.cancelled() => {
                // A confirmation under way finishes; rows it could not confirm go back to
                // the session for the last confirmation at shutdown.
                let (errors, unsaved) = p.store.settle().await;
                errors.iter().for_each(|e| p.on_error(e));
                p.handle.session().confirmed.extend(unsaved);
                // Committed by now: the pipeline ends before the uplink.
                p.handle.session().confirmed.extend(std::mem::take(&mut p.live_held));
                p.metrics.uplink_db_since.store(0, Relaxed);
                return;
            }
        }
    }
}

impl Pump {
    fn on_error(&self, e: &QueueError) {
        crate::queue::stop_if_damaged(e, &self.damaged);
    }

    fn pause_db(&mut self) {
        self.db_pause = Some(now() + DB_PAUSE);
    }

    /// One look at the session: steps 1 to 4. Returns when to look again at the latest
    /// (besides the wake-ups).
    fn round(&mut self, committed: i64) -> Option<Instant> {
        let session = self.handle.session.clone();
        let mut f = super::locked(&session);
        let look = self.follow(&f, committed);
        self.read(&look);
        self.take_live(&f, &look);
        let paced = self.send(&mut f, &look);
        let (wait_until, idle) = self.next_look(&f, &look, paced);
        self.settle_live(&mut f, committed);
        self.confirm(&mut f, &look, idle);
        drop(f);
        self.bury(committed);
        wait_until
    }

    /// Step 1: follows the session to its connection, and says what the round works with.
    fn follow(&mut self, f: &Session, committed: i64) -> Look {
        let now = now();
        if self.cursors.follow(f.epoch) {
            // A new connection: every row left in the queue is unconfirmed, and what was
            // taken from memory and not confirmed is read from the queue once committed.
            self.lanes.clear();
            self.closing = Closing::Open;
            self.live_taken = 0;
        }
        if let Some(live) = &self.live {
            let applies = self.per_message == 1 && !self.on_demand;
            live.set_taking(applies && f.online);
        }
        let mut last = committed;
        if f.online {
            self.cursors.take_split(last, self.cfg.live_first);
        }
        if self.on_demand {
            last = self.cursors.window_end(last);
        }
        let window = f.window() as usize;
        // Confirmed rows must be gone before the queue is read again from the start.
        let deletes_pending =
            self.store.confirming() || !f.confirmed.is_empty() || !self.live_held.is_empty();
        Look {
            now,
            db_ready: self.db_pause.is_none_or(|t| now >= t),
            last,
            window,
            // Room for the next read as well as the rows of the one just arrived.
            read_ahead: (window * self.per_message).clamp(2 * READ_CHUNK, 20_000),
            confirmed_max: window * self.per_message,
            deletes_pending,
            read_blocked: self.cursors.reread() && deletes_pending,
        }
    }

    /// Step 2: starts the next read if the read-ahead has room.
    fn read(&mut self, look: &Look) {
        let room = look.read_ahead.saturating_sub(self.lanes.len());
        if look.db_ready
            && room > 0
            && self.cursors.behind(look.last)
            && !self.store.reading()
            && !look.read_blocked
        {
            let plan = self.cursors.plan(look.last, room.min(READ_CHUNK));
            self.store.read(plan);
        }
    }

    /// After the sending: when to look again, and whether nothing is left to send or read.
    fn next_look(
        &self,
        f: &Session,
        look: &Look,
        paced: Option<Instant>,
    ) -> (Option<Instant>, bool) {
        let mut wait_until = paced;
        // A batch's due time matters only while it could be sent; otherwise what unblocks
        // the sending (CONNACK, PUBACK, a finished confirmation) wakes the pump. A due time
        // already past means the sending is blocked: waiting for it would spin.
        if wait_until.is_none() && self.per_message > 1 && self.could_send(f, look) {
            wait_until = self.lanes.next_due(look.now);
        }
        if let Some(t) = self.db_pause.filter(|_| !look.db_ready) {
            wait_until = Some(wait_until.map_or(t, |w| w.min(t)));
        }
        // Nothing left to send or to read (with what was just sent counted out).
        let more_to_read = self.lanes.len() < look.read_ahead && self.cursors.behind(look.last);
        let idle = self.lanes.is_empty() && !more_to_read;
        // The sending made room for a read that could not start before it: look again at
        // once rather than at the next acknowledgement.
        if !self.store.reading() && look.db_ready && more_to_read && !look.read_blocked {
            wait_until = Some(look.now);
        }
        (wait_until, idle)
    }

    /// Step 4: confirms a window's worth at a time, or at once when there is nothing else to
    /// do or the queue is about to be read from the start; reclaims when idle (when nothing
    /// is pending, the last confirmation truncated released rows already); ends an
    /// on_demand window once everything sent is confirmed.
    fn confirm(&mut self, f: &mut Session, look: &Look, idle: bool) {
        let free = look.db_ready && !self.store.confirming();
        let due = self.cursors.reread() || f.confirmed.len() >= look.window || idle;
        if free && !f.confirmed.is_empty() && due {
            self.store.confirm(f.confirmed.take_first(CONFIRM_CHUNK));
        } else if free && f.confirmed.is_empty() && idle && self.reclaim_left {
            self.store.reclaim();
        }
        if self.on_demand && f.online && idle && !look.deletes_pending && f.in_flight() == 0 {
            self.close_window(f);
        }
    }

    /// Step 2b, the live path: when everything committed has been sent (nothing read ahead
    /// or being read, no commit under way), takes the messages the pipeline offered, in
    /// sequence order from the next one after all sent, into the fresh lane.
    fn take_live(&mut self, f: &Session, look: &Look) {
        let Some(live) = &self.live else { return };
        let caught_up = live.wanted()
            && f.online
            && !f.alone()
            && self.closing == Closing::Open
            && look.db_ready
            && !look.read_blocked
            && self.lanes.is_empty()
            && !self.store.reading()
            && !self.cursors.behind(look.last)
            && live.handed() == look.last;
        if !caught_up {
            return;
        }
        let next = self.live_taken.max(look.last) + 1;
        let (now, now_ms) = (look.now, crate::reading::now_ms() as i64);
        let v5 = self.cfg.protocol == crate::config::Protocol::V5;
        for row in live.take(next, f.room() as usize) {
            // One this connection cannot carry is left to its commit, and the rest with
            // it: read from the queue, it becomes a dead letter there.
            let probe = [Waiting { row, due: now }];
            let (out, _) = outbound(&self.cfg, &probe, now_ms);
            if unsendable(&out, v5, f.max_packet).is_some() {
                break;
            }
            let [Waiting { row, .. }] = probe;
            self.live_taken = row.id;
            self.lanes.fresh.push(row, now, now_ms, self.max_delay);
        }
    }

    /// Rows confirmed above the last commit were taken from memory: those no commit has
    /// started on are never written (the pipeline skips them); the others wait until their
    /// commit is done to be confirmed in the queue.
    fn settle_live(&mut self, f: &mut Session, committed: i64) {
        let Some(live) = &self.live else { return };
        if !self.live_held.is_empty() {
            let later = self.live_held.take_above(committed);
            f.confirmed
                .extend(std::mem::replace(&mut self.live_held, later));
        }
        let above = f.confirmed.take_above(committed);
        if above.is_empty() {
            return;
        }
        let claimed = live.claim(above.ids().iter().copied());
        self.live_held.extend(above.without(&claimed));
    }

    /// Dead letters leave the outbox on a trip of their own; the watchdog looks at the
    /// oldest trip still under way.
    /// Rows condemned before their commit (taken from memory) wait for it.
    fn bury(&mut self, committed: i64) {
        if !self.burials.busy() && self.db_pause.is_none_or(|t| now() >= t) {
            let mut f = self.handle.session();
            let (dead, later) = std::mem::take(&mut f.dead)
                .into_iter()
                .partition(|c| c.ids.iter().all(|&id| id <= committed));
            f.dead = later;
            drop(f);
            self.burials.start(&self.queue, dead);
        }
        let since = self.store.since().into_iter().chain(self.burials.since());
        let since = since.min().unwrap_or(0);
        self.metrics.uplink_db_since.store(since, Relaxed);
    }

    /// Whether the sending may go on: the window has room, an on_demand window is open,
    /// and confirmations keep up.
    fn could_send(&self, f: &Session, look: &Look) -> bool {
        f.can_send() && self.closing == Closing::Open && f.confirmed.len() < look.confirmed_max
    }
}
