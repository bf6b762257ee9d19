//! The pump: reads the oldest rows ahead, hands them to the client as messages while the
//! window has room, and has the rows the broker confirmed released or deleted.
//!
//! Each round of its loop takes one look at the session (under its lock) and does what is
//! due, in this order, then waits for something to change:
//! 1. **follow** the session: a new connection (epoch) starts the cursors over;
//! 2. **read**: start the next read if the read-ahead has room ([`Store::read`]); decided
//!    before the sending, which takes as long as a read, so reads and sends overlap;
//! 3. **send** what fits ([`Pump::send`]): the window, the pacer, batches, the on_demand
//!    window's end;
//! 4. **confirm** the rows confirmed, or reclaim released ones when idle; **bury** dead
//!    letters;
//! 5. **wait** for a trip, a PUBACK or CONNACK (`wake`), a commit, a due time, or the end.
//!
//! **Architecture Invariant:** a request is registered in the session under the same lock
//! that hands it to the client, so the order of registrations is the order the client sees.
//! **Invariant:** when confirmations fall behind the broker (a window's worth of rows
//! waiting), nothing more is sent: what a crash can duplicate stays within three windows
//! (in flight, being confirmed, confirmed meanwhile), and so does memory.
//! **Invariant:** the pump ends only when cancelled.

use super::cursors::{Cursors, Lanes};
use super::dead::Burials;
use super::outbound::{cut, Cut};
use super::pacer::Pacer;
use super::session::Session;
use super::store::{Done, Store, CONFIRM_CHUNK, READ_CHUNK};
use super::{now, rfc3339, Handle};
use crate::config::{Connection, MqttConfig, Protocol, Qos};
use crate::metrics::Metrics;
use crate::pipeline::SharedQueue;
use crate::queue::QueueError;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

/// Where the pump stands in an on_demand window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    SleepSent,
    Disconnecting,
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
}

/// Sends until cancelled. Rows are read ahead (a window's worth of messages, at least two
/// reads' worth of rows), so SQLite is read in bulk rather than once per acknowledgement.
/// With `live_first`, rows committed after the connection came up go before the backlog.
pub(super) async fn pump(
    cfg: Arc<MqttConfig>,
    handle: Handle,
    queue: SharedQueue,
    mut committed: watch::Receiver<i64>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    damaged: CancellationToken,
) {
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
                p.handle.session().acked.extend(unsaved);
                p.metrics.uplink_db_since.store(0, Relaxed);
                return;
            }
        }
    }
}

impl Pump {
    fn on_error(&self, e: &QueueError) {
        crate::gateway::stop_if_damaged(e, &self.damaged);
    }

    fn pause_db(&mut self) {
        self.db_pause = Some(now() + DB_PAUSE);
    }

    /// One look at the session: steps 1 to 4. Returns when to look again at the latest
    /// (besides the wake-ups).
    fn round(&mut self, committed: i64) -> Option<Instant> {
        let now = now();
        let db_ready = self.db_pause.is_none_or(|t| now >= t);
        let session = self.handle.session.clone();
        let mut f = super::locked(&session);
        // 1. Follow the session.
        if self.cursors.follow(f.epoch) {
            // A new connection: every row left in the queue is unconfirmed.
            self.lanes.clear();
            self.closing = Closing::Open;
        }
        let mut last = committed;
        if f.online {
            self.cursors.take_split(last, self.cfg.live_first);
        }
        if self.on_demand {
            last = self.cursors.window_end(last);
        }
        // 2. Read: room for the next read as well as the rows of the one just arrived.
        let window = f.window() as usize;
        let read_ahead = (window * self.per_message).clamp(2 * READ_CHUNK, 20_000);
        let room = read_ahead.saturating_sub(self.lanes.len());
        // Confirmed rows must be gone before the queue is read again from the start.
        let deletes_pending = self.store.confirming() || !f.acked.is_empty();
        let read_blocked = self.cursors.reread() && deletes_pending;
        if db_ready
            && room > 0
            && self.cursors.behind(last)
            && !self.store.reading()
            && !read_blocked
        {
            self.store
                .read(self.cursors.plan(last, room.min(READ_CHUNK)));
        }
        // 3. Send.
        let confirmed_max = window * self.per_message;
        let mut wait_until = self.send(&mut f, now, read_ahead, confirmed_max);
        // A batch's due time matters only while it could be sent; otherwise what unblocks
        // the sending (CONNACK, PUBACK, a finished confirmation) wakes the pump. A due time
        // already past means the sending is blocked: waiting for it would spin.
        let could_send =
            f.can_send() && self.closing == Closing::Open && f.acked.len() < confirmed_max;
        if wait_until.is_none() && self.per_message > 1 && could_send {
            wait_until = self.lanes.next_due(now);
        }
        if let Some(t) = self.db_pause.filter(|_| !db_ready) {
            wait_until = Some(wait_until.map_or(t, |w| w.min(t)));
        }
        // Nothing left to send or to read (with what was just sent counted out).
        let more_to_read = self.lanes.len() < read_ahead && self.cursors.behind(last);
        let idle = self.lanes.is_empty() && !more_to_read;
        // The sending made room for a read that could not start before it: look again at
        // once rather than at the next acknowledgement.
        if !self.store.reading() && db_ready && more_to_read && !read_blocked {
            wait_until = Some(now);
        }
        // 4. Confirm a window's worth at a time, or at once when there is nothing else to do
        // or the queue is about to be read from the start; reclaim when idle (when nothing
        // is pending, the last confirmation truncated released rows already).
        let free = db_ready && !self.store.confirming();
        if free && !f.acked.is_empty() && (self.cursors.reread() || f.acked.len() >= window || idle)
        {
            self.store.confirm(f.acked.take_first(CONFIRM_CHUNK));
        } else if free && f.acked.is_empty() && idle && self.reclaim_left {
            self.store.reclaim();
        }
        // on_demand: everything sent, confirmed and released ends the window.
        if self.on_demand && f.online && idle && !deletes_pending && f.in_flight() == 0 {
            self.close_window(&mut f);
        }
        drop(f);
        // Dead letters leave the outbox on a trip of their own.
        if !self.burials.busy() && self.db_pause.is_none_or(|t| super::now() >= t) {
            let dead = std::mem::take(&mut self.handle.session().dead);
            self.burials.start(&self.queue, dead);
        }
        // The watchdog looks at the oldest trip still under way.
        let since = self
            .store
            .since()
            .into_iter()
            .chain(self.burials.since())
            .min();
        self.metrics
            .uplink_db_since
            .store(since.unwrap_or(0), Relaxed);
        wait_until
    }

    /// Step 3: hands messages to the client while the window has room, the pacer allows,
    /// and confirmations keep up. Returns when the pacer allows the next one, if it held
    /// one back.
    fn send(
        &mut self,
        f: &mut Session,
        now: Instant,
        read_ahead: usize,
        confirmed_max: usize,
    ) -> Option<Instant> {
        let now_ms = crate::service::now_ms() as i64;
        let v5 = self.cfg.protocol == Protocol::V5;
        while f.can_send() && self.closing == Closing::Open && f.acked.len() < confirmed_max {
            // Backlog waiting beyond what is read ahead, an on_demand window, or a full
            // read-ahead: send partial batches rather than wait for them to fill.
            let force = self.on_demand || self.lanes.len() >= read_ahead;
            // A suspect goes one row at a time, before anything else (see strikes.rs).
            let per = if f.alone() { 1 } else { self.per_message };
            let mut rows = self.lanes.next(per, now, force, f.alone())?;
            if let Some(p) = self.pacer.as_mut() {
                if let Err(at) = p.take(now) {
                    self.lanes.unshift(&self.cursors, rows);
                    return Some(at);
                }
            }
            let (lanes, cursors) = (&mut self.lanes, &self.cursors);
            let put_back = |rest| lanes.unshift(cursors, rest);
            let (mut out, item) = match cut(&self.cfg, &mut rows, f.max_packet, now_ms, put_back) {
                Cut::Send(out, item) => (out, item),
                Cut::Condemn(id, why) => {
                    f.condemn(vec![id], why);
                    continue;
                }
            };
            if v5 {
                if let Some((alias, known)) = f.alias(&out.topic) {
                    out.alias = Some(alias);
                    out.alias_only = known;
                }
            }
            let new_alias = (out.alias.is_some() && !out.alias_only).then(|| out.topic.clone());
            if self.handle.client.try_publish(out).is_err() {
                debug!("rumqttc's request channel is full; will retry.");
                if let Some(topic) = new_alias {
                    f.unalias(&topic);
                }
                self.lanes.unshift(&self.cursors, rows);
                return None;
            }
            f.on_sent(item);
        }
        None
    }

    /// on_demand, everything sent and confirmed: says the link sleeps until the next
    /// window, then disconnects.
    fn close_window(&mut self, f: &mut Session) {
        match self.closing {
            Closing::Open => {
                let next = f.next_window.map(rfc3339).unwrap_or_default();
                let payload = self.cfg.sleep_payload.replace("{next}", &next).into_bytes();
                let topic = &self.cfg.availability_topic;
                if self
                    .handle
                    .control_locked(f, topic, Qos::AtLeastOnce, true, payload)
                {
                    self.closing = Closing::SleepSent;
                }
            }
            Closing::SleepSent => {
                if self.handle.client.try_disconnect().is_ok() {
                    self.closing = Closing::Disconnecting;
                }
            }
            Closing::Disconnecting => {}
        }
    }

    /// A read came back: its rows join their lane, unless condemned.
    fn on_read(
        &mut self,
        plan: super::cursors::ReadPlan,
        r: Result<Result<crate::queue::Fetched, QueueError>, crate::trips::Panicked>,
    ) {
        let fetched = match r {
            Ok(Ok(fetched)) => fetched,
            Ok(Err(e)) => {
                self.on_error(&e);
                error!(error = %e, "Queue read failed; retrying in 1s.");
                return self.pause_db();
            }
            Err(e) => {
                error!(error = %e, "Queue read task failed; retrying in 1s.");
                return self.pause_db();
            }
        };
        let session = self.handle.session.clone();
        let mut f = super::locked(&session);
        if plan.epoch != f.epoch {
            return; // read under an older connection: the next round starts over
        }
        let hi = self.cursors.advance(&plan, &fetched);
        let (now, now_ms) = (now(), crate::service::now_ms() as i64);
        // Suspects this read should have met and did not are gone from the queue (expired,
        // evicted, purged): no reason to stay alone any more.
        if let Some(s) = f.suspect() {
            let gone: Vec<i64> = s
                .ids
                .iter()
                .copied()
                .filter(|id| *id > plan.after && *id <= hi)
                .filter(|id| {
                    !fetched.rows.iter().any(|r| r.id == *id)
                        && !fetched.unreadable.iter().any(|u| u.0 == *id)
                })
                .collect();
            f.forget_suspects(&gone);
        }
        // Rows on their way to the dead letters are not sent again.
        let condemned: std::collections::HashSet<i64> = f
            .dead
            .iter()
            .flat_map(|c| c.ids.iter().copied())
            .chain(self.burials.ids().iter().copied())
            .collect();
        for row in fetched.rows {
            if !condemned.contains(&row.id) {
                self.lanes.push(&plan, row, now, now_ms, self.max_delay);
            }
        }
        for (id, e) in fetched.unreadable {
            if !condemned.contains(&id) {
                f.condemn(
                    vec![id],
                    format!("it cannot be read back from the queue: {e}"),
                );
            }
        }
    }

    /// A confirmation (or reclaim) came back.
    fn on_confirmed(&mut self, r: Result<super::store::Confirming, crate::trips::Panicked>) {
        match r {
            Ok((Ok(_), _, left)) => {
                self.reclaim_left = left;
                Metrics::add(&self.metrics.progress, 1);
            }
            // A failed reclaim (nothing confirmed was in it) is optional work: it waits for
            // the next confirmation instead of pausing the queue.
            Ok((Err(e), unsaved, _)) if unsaved.is_empty() => {
                self.on_error(&e);
                warn!(error = %e, "Could not reclaim released rows; trying again after the next confirmation.");
                self.reclaim_left = false;
            }
            Ok((Err(e), unsaved, _)) => {
                self.on_error(&e);
                warn!(error = %e, "Queue delete failed; the rows stay confirmed in memory, retrying in 1s.");
                self.handle.session().acked.extend(unsaved);
                self.pause_db();
            }
            Err(e) => {
                error!(error = %e, "Queue delete task failed; retrying in 1s.");
                self.pause_db();
            }
        }
    }
}
