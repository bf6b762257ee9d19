//! The pipeline: readings in, messages committed to the queue in batches (group commit).
//!
//! A batch closes at `commit_every` messages or `commit_linger` after its first message,
//! whichever comes first, and is committed in one transaction on a SQLite thread (`queue::threads`). One batch
//! commits while the next one fills, so mapping and SQLite overlap; a second full batch waits
//! for the first commit, and the reading channel is bounded, so a slow disk pushes back on
//! inputs instead of growing memory.
//!
//! **Invariant:** the pipeline is the queue's only writer of new rows and numbers messages
//! with consecutive sequence numbers (= row ids) from [`crate::queue::Queue::next_id`] on;
//! a number skipped by a commit (acknowledged from memory, see `queue::Live`) leaves a gap
//! in the row ids, never in what consumers receive.
//!
//! The live path: each message is offered to the uplink when it is mapped (only while the
//! uplink takes them, and only under sequence numbers already reserved in the queue file,
//! `reserve_ahead`); a commit skips what the broker acknowledged before it started. A
//! batch holding a message that could not be offered is committed at once when the uplink
//! takes again, so that message does not hold up the ones behind it for a linger.
//! **Invariant:** the pipeline ends only when every input has dropped its sender, after
//! committing what it holds: shutdown loses no reading that reached the pipeline.
//! **Invariant:** a message MQTT cannot carry as configured ([`Mapper::unsendable`]) is
//! committed and moved to the dead letters by the same trip to the SQLite thread, before
//! the uplink is told it exists: the uplink never tries it, nothing waits behind it.
//!
//! Each reading first goes through its input's per-field transforms ([`crate::transform`]:
//! drop, scale, rename); one its deadbands hold back is counted (`held_back`) and mapped to
//! nothing.
//!
//! A reload hands over a new [`Routing`] (mapper and group commit) on a watch channel; it
//! applies from the next reading on, and at once to a reading from an input slot the
//! running mapper does not know yet (an input the reload started).

use crate::discovery::Announcer;
use crate::mapping::{Mapper, NewMessage};
use crate::metrics::Metrics;
use crate::queue::threads::{self, Trip};
use crate::queue::{lock, Appended, Live, QueueError, SharedQueue, SEQ_BLOCK};
use crate::reading::Reading;
use crate::transform::{self, Gate};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tracing::{debug, error};

/// How batches close.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    pub every: usize,
    pub linger: Duration,
}

/// How readings become committed messages; a reload sends a new one.
#[derive(Debug, Clone)]
pub struct Routing {
    pub mapper: Mapper,
    pub commit: GroupCommit,
}

impl Routing {
    /// A routing no reload changes (benchmarks, tests).
    pub fn fixed(mapper: Mapper, commit: GroupCommit) -> watch::Receiver<Routing> {
        watch::channel(Routing { mapper, commit }).1
    }
}

/// A message refused at mapping time: its sequence number, topic, size and why.
#[derive(Debug, Clone)]
struct Refused {
    seq: i64,
    topic: String,
    bytes: usize,
    reason: String,
}

/// A batch committing on a SQLite thread; gives back its result, the refused messages it
/// moved to the dead letters, its emptied buffer, and the last id it carried.
type Done = (
    Result<(Appended, Vec<Refused>), QueueError>,
    Vec<NewMessage>,
    i64,
);
type Joined = Result<Done, threads::Panicked>;

struct Committer {
    queue: SharedQueue,
    committed: watch::Sender<i64>,
    metrics: Arc<Metrics>,
    in_flight: Option<Trip<Done>>,
    spare: Vec<NewMessage>,
    /// Drops by the size policy not logged yet (refused new, evicted old), and when the
    /// last line was: one line a minute while the queue stays full, not one a commit.
    unlogged: (u64, u64),
    last_logged: Option<Instant>,
    /// Refused messages of this batch (moved with it to the SQLite thread), and the log's
    /// rate limit for them.
    refused: Vec<Refused>,
    refused_log: RateLog,
    /// The live path, when an uplink takes messages before their commit.
    live: Option<Arc<Live>>,
    /// Readings held back by deadbands since the last commit: counted in the queue file by
    /// the next one.
    held_back: u64,
}

/// Up to ten lines a minute one by one, then a count, summed up at the next minute.
#[derive(Debug, Default)]
struct RateLog {
    since: Option<Instant>,
    logged: u32,
    held: u64,
}

impl RateLog {
    /// Whether to log this one; counts it otherwise.
    fn one(&mut self) -> bool {
        if self.since.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY) {
            self.flush();
            self.since = Some(Instant::now());
            self.logged = 0;
        }
        self.logged += 1;
        if self.logged > 10 {
            self.held += 1;
        }
        self.logged <= 10
    }

    fn flush(&mut self) {
        let more = std::mem::take(&mut self.held);
        if more > 0 {
            error!(
                more,
                "More messages MQTT cannot carry as configured moved to the dead letters."
            );
        }
    }
}

/// How often drops by the size policy are summed up in the log while they go on.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

impl Drop for Committer {
    fn drop(&mut self) {
        self.log_drops();
        self.refused_log.flush();
    }
}

impl Committer {
    /// Reports a finished commit: counts, logs drops, tells the uplink.
    fn report(&mut self, joined: Joined) -> Result<(), QueueError> {
        let (result, mut buffer, last_id) = joined.expect("queue append does not panic");
        self.metrics.commit_since.store(0, Relaxed);
        buffer.clear();
        self.spare = buffer;
        let (appended, refused) = result?;
        for r in &refused {
            if self.refused_log.one() {
                error!(seq = r.seq, topic = %r.topic, bytes = r.bytes, reason = %r.reason, "Message refused at mapping time: MQTT cannot carry it as configured; moved to the dead letters.");
            }
        }
        Metrics::add(&self.metrics.dead, refused.len() as u64);
        let lost = appended.dropped_new + appended.evicted_old;
        if lost > 0 {
            self.unlogged.0 += appended.dropped_new;
            self.unlogged.1 += appended.evicted_old;
            if self
                .last_logged
                .is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY)
            {
                self.log_drops();
            }
            Metrics::add(&self.metrics.dropped, lost);
        }
        if appended.stored > 0 {
            Metrics::add(&self.metrics.committed, appended.stored as u64);
            Metrics::add(&self.metrics.progress, 1);
        }
        // Also when every message was delivered from memory: the uplink's view moves on.
        if last_id > *self.committed.borrow() {
            self.committed.send_replace(last_id);
        }
        Ok(())
    }

    /// Logs the drops not logged yet, if any.
    fn log_drops(&mut self) {
        let (refused_new, evicted_old) = std::mem::take(&mut self.unlogged);
        if refused_new + evicted_old > 0 {
            error!(
                refused_new,
                evicted_old, "Queue full: messages dropped by the size policy."
            );
            self.last_logged = Some(Instant::now());
        }
    }

    /// Waits for the commit in flight, if any, and reports it.
    async fn finish(&mut self) -> Result<(), QueueError> {
        match self.in_flight.take() {
            Some(handle) => self.report(handle.await),
            None => Ok(()),
        }
    }

    /// Starts committing `batch` (after the previous commit finished); leaves an empty
    /// buffer in its place.
    async fn start(&mut self, batch: &mut Vec<NewMessage>) -> Result<(), QueueError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.finish().await?;
        let mut msgs = std::mem::replace(batch, std::mem::take(&mut self.spare));
        let refused = std::mem::take(&mut self.refused);
        let (first, last) = (msgs[0].seq, msgs[msgs.len() - 1].seq);
        // What the broker acknowledged from memory is not written.
        let mut unwritten = 0;
        if let Some(live) = &self.live {
            let handed = live.hand(first, last);
            if !handed.skip.is_empty() {
                msgs.retain(|m| !handed.skip.contains(&m.seq));
                unwritten = handed.skip.len() as u64;
                Metrics::add(&self.metrics.unwritten, unwritten);
                Metrics::add(&self.metrics.progress, 1);
            }
        }
        let q = self.queue.clone();
        let now = crate::reading::now_ms();
        self.metrics.commit_since.store(now, Relaxed);
        let held_back = std::mem::take(&mut self.held_back);
        self.in_flight = Some(threads::spawn(move || {
            let mut q = lock(&q);
            q.count_unwritten(unwritten);
            q.count_held_back(held_back);
            // Numbers of messages never written are not handed out again.
            let stored_last = msgs.last().map_or(0, |m| m.seq);
            let r = q.append(&msgs);
            let r = match r {
                Ok(a) if stored_last < last => q.pass(last).map(|()| a),
                r => r,
            };
            let r = r.and_then(|appended| {
                let mut buried = Vec::new();
                for r in refused {
                    // A message the size policy refused is not there to bury.
                    if !q.bury(&[r.seq], &r.reason, now as i64)?.buried.is_empty() {
                        buried.push(r);
                    }
                }
                Ok((appended, buried))
            });
            let last = q.next_id() - 1;
            (r, msgs, last)
        }));
        Ok(())
    }
}

/// Resolves when the commit in flight is done (never, if there is none).
async fn joined(in_flight: &mut Option<Trip<Done>>) -> Joined {
    match in_flight.as_mut() {
        Some(h) => {
            let r = h.await;
            *in_flight = None;
            r
        }
        None => std::future::pending().await,
    }
}

/// Runs until `readings` closes. `committed` is told the last committed row id as soon as
/// each commit finishes.
pub async fn run(
    mut readings: mpsc::Receiver<Reading>,
    mut routing: watch::Receiver<Routing>,
    queue: SharedQueue,
    committed: watch::Sender<i64>,
    metrics: Arc<Metrics>,
    live: Option<Arc<Live>>,
    status_online: Arc<Notify>,
) -> Result<(), QueueError> {
    let Routing {
        mut mapper,
        mut commit,
    } = routing.borrow_and_update().clone();
    let mut next_seq = lock(&queue).next_id();
    if let Some(live) = &live {
        // The first block at once: the first readings need not wait for their commit.
        let mut q = lock(&queue);
        let reserved = q.reserve_seq(next_seq + SEQ_BLOCK).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Could not reserve sequence numbers; readings wait for their commit.");
            q.seq_reserved()
        });
        live.set_reserved(reserved);
    }
    let mut batch: Vec<NewMessage> = Vec::with_capacity(commit.every);
    let mut c = Committer {
        queue,
        committed,
        metrics: metrics.clone(),
        in_flight: None,
        spare: Vec::with_capacity(commit.every),
        unlogged: (0, 0),
        last_logged: None,
        refused: Vec::new(),
        refused_log: RateLog::default(),
        live: live.clone(),
        held_back: 0,
    };
    // Report by exception: the last published values of each input and device.
    let mut gate = Gate::default();
    let mut deadline: Option<Instant> = None;
    // The batch holds a message the live path did not offer.
    let mut unoffered = false;
    // When each message of the batch was mapped, and where the run of messages offered to
    // the live path that ends the batch starts.
    let mut mapped: Vec<Instant> = Vec::new();
    let mut offered_from: Option<usize> = None;
    let mut inbox: Vec<Reading> = Vec::with_capacity(256);
    // Home Assistant discovery: the entities announced so far.
    let mut announcer = Announcer::default();
    loop {
        let linger = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            n = readings.recv_many(&mut inbox, 256) => {
                if n == 0 {
                    break; // every sender is gone
                }
            }
            _ = tokio::time::sleep_until(linger), if deadline.is_some() => {
                // Messages offered to the uplink whose own linger has not ended wait for
                // the next commit: their acknowledgement, a moment away, spares the write.
                let young = mapped.partition_point(|t| *t + commit.linger <= Instant::now());
                let keep = offered_from.map_or(batch.len(), |o| o.max(young));
                let mut rest = batch.split_off(keep);
                let rest_mapped = mapped.split_off(keep);
                c.start(&mut batch).await?;
                batch.append(&mut rest);
                mapped = rest_mapped;
                offered_from = (!batch.is_empty()).then_some(0);
                deadline = mapped.first().map(|t| *t + commit.linger);
                continue;
            }
            done = joined(&mut c.in_flight) => {
                c.report(done)?;
                continue;
            }
            Ok(()) = routing.changed() => {
                Routing { mapper, commit } = routing.borrow_and_update().clone();
                continue;
            }
            _ = status_online.notified(), if mapper.discovers() => {
                // Home Assistant came online: every config again, before what follows.
                mapper.announce_again(&announcer, &mut next_seq, &mut batch);
                unoffered = true;
                offered_from = None;
                mapped.resize(batch.len(), Instant::now());
                deadline = deadline.or_else(|| mapped.first().map(|t| *t + commit.linger));
                continue;
            }
        }
        Metrics::add(&metrics.readings, inbox.len() as u64);
        for mut reading in inbox.drain(..) {
            if !mapper.knows(reading.input) {
                // From an input a reload started: its routing was sent before it was.
                Routing { mapper, commit } = routing.borrow_and_update().clone();
            }
            if let Some(rules) = mapper.fields(reading.input) {
                if !transform::apply(&mut gate, rules, &mut reading) {
                    Metrics::add(&metrics.held_back, 1);
                    c.held_back += 1;
                    continue;
                }
            }
            let from = batch.len();
            mapper.announce(&reading, &mut announcer, &mut next_seq, &mut batch);
            mapper.map(&reading, &mut next_seq, &mut batch);
            let refused = c.refused.len();
            for m in &batch[from..] {
                if let Some(reason) = mapper.unsendable(m) {
                    c.refused.push(Refused {
                        seq: m.seq,
                        topic: m.topic.chars().take(200).collect(),
                        bytes: m.topic.len() + m.payload.len(),
                        reason,
                    });
                }
            }
            // Offered to the uplink at once (a refused one is not: it and what follows
            // wait for their commit).
            let mut flush = false;
            if let Some(live) = &live {
                let offered = match c.refused.len() == refused {
                    true => {
                        reserve_ahead(&c.queue, live, next_seq);
                        live.offer(&batch[from..])
                    }
                    false => 0,
                };
                unoffered |= offered < batch.len() - from;
                offered_from = match offered == batch.len() - from {
                    true => offered_from.or(Some(from)),
                    false => None,
                };
                // The uplink takes again (the link came back): what it could not take
                // holds up what it could, so it is committed now, not a linger later.
                flush = unoffered && live.wanted();
            }
            mapped.resize(batch.len(), Instant::now());
            if batch.len() >= commit.every || flush {
                unoffered = false;
                c.start(&mut batch).await?;
                mapped.clear();
                offered_from = None;
                deadline = None;
            }
        }
        if deadline.is_none() && !batch.is_empty() {
            deadline = mapped.first().map(|t| *t + commit.linger);
        }
    }
    c.start(&mut batch).await?;
    c.finish().await?;
    if c.held_back > 0 {
        // Nothing left to commit: the count waits in the queue for the next write or the
        // clean stop.
        let (q, n) = (c.queue.clone(), std::mem::take(&mut c.held_back));
        if threads::spawn(move || lock(&q).count_held_back(n))
            .await
            .is_err()
        {
            tracing::warn!(
                held_back = n,
                "Could not count readings held back in the queue file."
            );
        }
    }
    debug!("Pipeline drained; all inputs closed.");
    Ok(())
}

/// Keeps the sequence numbers the live path may offer ahead of `next_seq` by half a block:
/// when they run short, records the next block in the queue file on a SQLite thread. An
/// offer above them waits for its commit instead (see `queue::Live`).
fn reserve_ahead(queue: &SharedQueue, live: &Arc<Live>, next_seq: i64) {
    use std::sync::atomic::Ordering;
    if !live.wanted() || live.reserved() >= next_seq + SEQ_BLOCK / 2 {
        return;
    }
    if live.reserving.swap(true, Ordering::AcqRel) {
        return;
    }
    let (q, l) = (queue.clone(), live.clone());
    // Not awaited: the trip sets the new bound itself when it is written.
    drop(threads::spawn(move || {
        match lock(&q).reserve_seq(next_seq + SEQ_BLOCK) {
            Ok(upto) => l.set_reserved(upto),
            Err(e) => {
                tracing::warn!(error = %e, "Could not reserve sequence numbers; readings wait for their commit.")
            }
        }
        l.reserving.store(false, Ordering::Release);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::queue::{Queue, QueueOptions};
    use crate::reading::{Stamp, Value};
    use std::path::Path;
    use std::sync::Mutex;

    fn config(max_message_size: &str) -> Config {
        let text = format!(
            "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n\
             max_message_size = \"{max_message_size}\"\n\
             [[synthetic]]\nname = \"a\"\nrate = 1.0\nfields = [\"x\"]\ntopic = \"t/a\"\n"
        );
        Config::parse(Path::new("p.toml"), &text).unwrap()
    }

    fn reading(text: &str) -> Reading {
        Reading {
            input: 0,
            stamp: Stamp::now(),
            at: std::time::Instant::now(),
            device: None,
            sentence: None,
            fields: vec![(Arc::from("x"), Value::Text(text.into()))],
        }
    }

    /// A message larger than `[mqtt] max_message_size` goes to the dead letters in the
    /// commit that stores it, counted, before the uplink is told of it; the ones around it
    /// stay pending, in order.
    #[tokio::test]
    async fn a_message_mqtt_cannot_carry_is_a_dead_letter_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let opts = QueueOptions {
            max_size: 1 << 30,
            when_full: crate::config::WhenFull::DropOldest,
            synchronous_full: false,
        };
        let queue: SharedQueue = Arc::new(Mutex::new(Queue::open(&path, opts).unwrap()));
        let config = config("200B");
        let routing = Routing::fixed(
            Mapper::new(&config),
            GroupCommit {
                every: 16,
                linger: Duration::from_millis(1),
            },
        );
        let (tx, rx) = mpsc::channel(16);
        let (committed, seen) = watch::channel(0);
        let metrics = Arc::new(Metrics::default());
        let p = tokio::spawn(run(
            rx,
            routing,
            queue.clone(),
            committed,
            metrics.clone(),
            None,
            Default::default(),
        ));
        for text in ["small", &"x".repeat(300), "small again"] {
            tx.send(reading(text)).await.unwrap();
        }
        drop(tx);
        p.await.unwrap().unwrap();
        assert_eq!(*seen.borrow(), 3);
        assert_eq!(Metrics::get(&metrics.dead), 1);
        let q = lock(&queue);
        let ids: Vec<i64> = q.fetch_after(0, 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 3]);
        let dead = q.reader().unwrap().dead_after(0, 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].id, 2);
        assert!(
            dead[0].reason.contains("max_message_size allows 200"),
            "{}",
            dead[0].reason
        );
    }

    /// An input's transforms apply before mapping: a reading its deadband holds back maps
    /// to nothing and is counted, in memory and (with the commit, or at the clean stop
    /// when it came last) in the queue file.
    #[tokio::test]
    async fn readings_a_deadband_holds_back_are_counted_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let opts = QueueOptions {
            max_size: 1 << 30,
            when_full: crate::config::WhenFull::DropOldest,
            synchronous_full: false,
        };
        let queue = Queue::open(&dir.path().join("queue.db"), opts).unwrap();
        let queue: SharedQueue = Arc::new(Mutex::new(queue));
        let text = "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n\
             [[synthetic]]\nname = \"a\"\nrate = 1.0\ntopic = \"t/a\"\n\
             fields.x = { rename = \"temp\", scale = 2, deadband = 0.5 }\nfields.y = { drop = true }\n";
        let config = Config::parse(Path::new("p.toml"), text).unwrap();
        // A commit per message: the last reading, held back, comes after the last commit.
        let commit = GroupCommit {
            every: 1,
            linger: Duration::from_secs(1),
        };
        let routing = Routing::fixed(Mapper::new(&config), commit);
        let (tx, rx) = mpsc::channel(16);
        let (committed, _seen) = watch::channel(0);
        let metrics = Arc::new(Metrics::default());
        let p = tokio::spawn(run(
            rx,
            routing,
            queue.clone(),
            committed,
            metrics.clone(),
            None,
            Default::default(),
        ));
        let t0 = std::time::Instant::now();
        for (i, x) in [10.0, 10.1, 10.3, 10.35].into_iter().enumerate() {
            let mut r = reading("");
            r.at = t0 + Duration::from_secs(i as u64);
            r.fields = vec![
                (Arc::from("x"), Value::Float(x)),
                (Arc::from("y"), Value::Int(1)),
            ];
            tx.send(r).await.unwrap();
        }
        drop(tx);
        p.await.unwrap().unwrap();
        assert_eq!(Metrics::get(&metrics.held_back), 2);
        let mut q = lock(&queue);
        let rows = q.fetch_after(0, 10).unwrap();
        let temps: Vec<f64> = rows
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                assert!(v.get("x").is_none() && v.get("y").is_none(), "{v}");
                v["temp"].as_f64().unwrap()
            })
            .collect();
        assert_eq!(temps, [20.0, 20.6]);
        // 20.2 was counted with the commit; 20.7 came after it and waits for the stop.
        assert_eq!(q.stats(0).unwrap().held_back, 1);
        assert!(q.mark_clean().unwrap());
        assert_eq!(q.stats(0).unwrap().held_back, 2);
    }

    /// A batch commits `commit_linger` after its first message, or at once when it reaches
    /// `commit_every`. Time is paused: the commit's own trip runs on a SQLite thread while
    /// the clock has no timer but the linger to jump to.
    #[tokio::test(start_paused = true)]
    async fn a_batch_commits_after_the_linger_or_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let opts = QueueOptions {
            max_size: 64 << 20,
            when_full: crate::config::WhenFull::DropOldest,
            synchronous_full: false,
        };
        let queue = Queue::open(&dir.path().join("queue.db"), opts).unwrap();
        let queue: SharedQueue = Arc::new(Mutex::new(queue));
        let (tx, rx) = mpsc::channel(256);
        let (committed_tx, mut committed) = watch::channel(0);
        let linger = Duration::from_millis(500);
        let commit = GroupCommit { every: 10, linger };
        let routing = Routing::fixed(Mapper::new(&config("1MiB")), commit);
        let metrics = Arc::new(Metrics::default());
        let run = run(
            rx,
            routing,
            queue.clone(),
            committed_tx,
            metrics.clone(),
            None,
            Default::default(),
        );
        let pipeline = tokio::spawn(run);

        // Three readings wait for the linger, then commit together.
        let start = Instant::now();
        for _ in 0..3 {
            tx.send(reading("x")).await.unwrap();
        }
        committed.changed().await.unwrap();
        assert_eq!(
            start.elapsed(),
            linger,
            "the first batch committed after the linger"
        );
        assert_eq!(Metrics::get(&metrics.committed), 3);

        // A full batch does not wait.
        let start = Instant::now();
        for _ in 0..10 {
            tx.send(reading("x")).await.unwrap();
        }
        committed.changed().await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a full batch committed at once"
        );
        assert_eq!(Metrics::get(&metrics.committed), 13);

        drop(tx);
        pipeline.await.unwrap().unwrap();
        assert_eq!(lock(&queue).next_id() - 1, *committed.borrow());
    }

    /// At the end of a linger, a message offered to the live path whose own linger has not
    /// ended waits for the next commit (its acknowledgement may still spare the write); the
    /// ones before it are committed. Each is committed within a linger of its mapping.
    #[tokio::test(start_paused = true)]
    async fn young_messages_offered_live_wait_for_their_own_linger() {
        let dir = tempfile::tempdir().unwrap();
        let opts = QueueOptions {
            max_size: 1 << 30,
            when_full: crate::config::WhenFull::DropOldest,
            synchronous_full: false,
        };
        let q = Queue::open(&dir.path().join("queue.db"), opts).unwrap();
        let queue: SharedQueue = Arc::new(Mutex::new(q));
        let config = config("1MiB");
        let linger = Duration::from_secs(1);
        let routing = Routing::fixed(Mapper::new(&config), GroupCommit { every: 100, linger });
        let live = Live::shared();
        live.set_taking(true);
        let (tx, rx) = mpsc::channel(16);
        let (committed, mut seen) = watch::channel(0);
        let metrics = Arc::new(Metrics::default());
        let p = tokio::spawn(run(
            rx,
            routing,
            queue,
            committed,
            metrics,
            Some(live),
            Default::default(),
        ));
        let t0 = Instant::now();
        tx.send(reading("a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        tx.send(reading("b")).await.unwrap();
        // The watch may fold two commits into one change: what counts is when b's came.
        while *seen.borrow_and_update() < 2 {
            seen.changed().await.unwrap();
        }
        let b_committed = t0.elapsed();
        drop(tx);
        p.await.unwrap().unwrap();
        // Without the wait, b went with a at 1 s.
        assert!(
            b_committed >= Duration::from_millis(1850)
                && b_committed <= Duration::from_millis(1950),
            "b committed after {b_committed:?}"
        );
    }
}
