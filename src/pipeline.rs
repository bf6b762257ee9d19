//! The pipeline: readings in, messages committed to the queue in batches (group commit).
//!
//! A batch closes at `commit_every` messages or `commit_linger` after its first message,
//! whichever comes first, and is committed in one transaction. While a batch commits, the
//! next one fills; the reading channel is bounded, so a slow disk pushes back on inputs
//! instead of growing memory.
//!
//! **Invariant:** the pipeline is the queue's only writer of new rows and numbers messages
//! with consecutive sequence numbers (= row ids) from [`Queue::next_id`].
//! **Invariant:** the pipeline ends only when every input has dropped its sender, after
//! committing what it holds: shutdown loses no reading that reached the pipeline.

use crate::mapping::{Mapper, NewMessage};
use crate::metrics::Metrics;
use crate::queue::{Queue, QueueError};
use crate::reading::Reading;
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

/// Runs until `readings` closes. `committed` is told the last committed row id.
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
    let mut deadline: Option<Instant> = None;
    loop {
        let reading = match deadline {
            None => readings.recv().await,
            Some(d) => tokio::select! {
                r = readings.recv() => r,
                _ = tokio::time::sleep_until(d) => {
                    next_seq = flush(&queue, &mut batch, &committed, &metrics).await?;
                    deadline = None;
                    continue;
                }
            },
        };
        let Some(reading) = reading else { break };
        Metrics::add(&metrics.readings, 1);
        mapper.map(&reading, &mut next_seq, &mut batch);
        if deadline.is_none() && !batch.is_empty() {
            deadline = Some(Instant::now() + commit.linger);
        }
        if batch.len() >= commit.every {
            next_seq = flush(&queue, &mut batch, &committed, &metrics).await?;
            deadline = None;
        }
    }
    flush(&queue, &mut batch, &committed, &metrics).await?;
    debug!("Pipeline drained; all inputs closed.");
    Ok(())
}

/// Commits `batch`; returns the next sequence number to hand out.
async fn flush(
    queue: &SharedQueue,
    batch: &mut Vec<NewMessage>,
    committed: &watch::Sender<i64>,
    metrics: &Metrics,
) -> Result<i64, QueueError> {
    let msgs = std::mem::take(batch);
    let q = queue.clone();
    let (result, next, msgs) = tokio::task::spawn_blocking(move || {
        let mut q = lock(&q);
        let r = q.append(&msgs);
        (r, q.next_id(), msgs)
    })
    .await
    .expect("queue append does not panic");
    let appended = result?;
    let lost = appended.dropped_new + appended.evicted_old;
    if lost > 0 {
        error!(
            refused_new = appended.dropped_new,
            evicted_old = appended.evicted_old,
            "Queue full: messages dropped by the size policy."
        );
        Metrics::add(&metrics.dropped, lost);
    }
    if appended.stored > 0 {
        Metrics::add(&metrics.committed, appended.stored as u64);
        Metrics::add(&metrics.progress, 1);
        committed.send_replace(next - 1);
    }
    *batch = msgs;
    batch.clear();
    Ok(next)
}

/// Locks the queue. A poisoned lock means a panic inside a queue call; the queue's own
/// state is in SQLite, so continuing is safe.
pub fn lock(q: &SharedQueue) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}
