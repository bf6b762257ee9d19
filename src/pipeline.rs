//! The pipeline: readings in, messages committed to the queue in batches (group commit).
//!
//! A batch closes at `commit_every` messages or `commit_linger` after its first message,
//! whichever comes first, and is committed in one transaction on a SQLite thread (`trips`). One batch
//! commits while the next one fills, so mapping and SQLite overlap; a second full batch waits
//! for the first commit, and the reading channel is bounded, so a slow disk pushes back on
//! inputs instead of growing memory.
//!
//! **Invariant:** the pipeline is the queue's only writer of new rows and numbers messages
//! with consecutive sequence numbers (= row ids) from [`Queue::next_id`] on.
//! **Invariant:** the pipeline ends only when every input has dropped its sender, after
//! committing what it holds: shutdown loses no reading that reached the pipeline.

use crate::mapping::{Mapper, NewMessage};
use crate::metrics::Metrics;
use crate::queue::{Appended, Queue, QueueError};
use crate::reading::Reading;
use crate::trips::Trip;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error};

pub type SharedQueue = Arc<Mutex<Queue>>;

/// How batches close.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    pub every: usize,
    pub linger: Duration,
}

/// A batch committing on a SQLite thread; gives back its result, its emptied buffer, and
/// the last id it carried.
type Done = (Result<Appended, QueueError>, Vec<NewMessage>, i64);
type Joined = Result<Done, crate::trips::Panicked>;

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
}

/// How often drops by the size policy are summed up in the log while they go on.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

impl Drop for Committer {
    fn drop(&mut self) {
        self.log_drops();
    }
}

impl Committer {
    /// Reports a finished commit: counts, logs drops, tells the uplink.
    fn report(&mut self, joined: Joined) -> Result<(), QueueError> {
        let (result, mut buffer, last_id) = joined.expect("queue append does not panic");
        self.metrics.commit_since.store(0, Relaxed);
        buffer.clear();
        self.spare = buffer;
        let appended = result?;
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
        let msgs = std::mem::replace(batch, std::mem::take(&mut self.spare));
        let q = self.queue.clone();
        self.metrics
            .commit_since
            .store(crate::service::now_ms(), Relaxed);
        self.in_flight = Some(crate::trips::spawn(move || {
            let mut q = lock(&q);
            let r = q.append(&msgs);
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
    mapper: Mapper,
    queue: SharedQueue,
    commit: GroupCommit,
    committed: watch::Sender<i64>,
    metrics: Arc<Metrics>,
) -> Result<(), QueueError> {
    let mut next_seq = lock(&queue).next_id();
    let mut batch: Vec<NewMessage> = Vec::with_capacity(commit.every);
    let mut c = Committer {
        queue,
        committed,
        metrics: metrics.clone(),
        in_flight: None,
        spare: Vec::with_capacity(commit.every),
        unlogged: (0, 0),
        last_logged: None,
    };
    let mut deadline: Option<Instant> = None;
    let mut inbox: Vec<Reading> = Vec::with_capacity(256);
    loop {
        let linger = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            n = readings.recv_many(&mut inbox, 256) => {
                if n == 0 {
                    break; // every sender is gone
                }
            }
            _ = tokio::time::sleep_until(linger), if deadline.is_some() => {
                c.start(&mut batch).await?;
                deadline = None;
                continue;
            }
            done = joined(&mut c.in_flight) => {
                c.report(done)?;
                continue;
            }
        }
        Metrics::add(&metrics.readings, inbox.len() as u64);
        for reading in inbox.drain(..) {
            mapper.map(&reading, &mut next_seq, &mut batch);
            if batch.len() >= commit.every {
                c.start(&mut batch).await?;
                deadline = None;
            }
        }
        if deadline.is_none() && !batch.is_empty() {
            deadline = Some(Instant::now() + commit.linger);
        }
    }
    c.start(&mut batch).await?;
    c.finish().await?;
    debug!("Pipeline drained; all inputs closed.");
    Ok(())
}

/// Locks the queue. A poisoned lock means a panic inside a queue call; the queue's own
/// state is in SQLite, so continuing is safe.
pub fn lock(q: &SharedQueue) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}
