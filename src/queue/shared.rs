//! The queue as the running gateway shares it: one owner behind a std `Mutex` (never held
//! across an `.await`; the work runs on the SQLite threads, [`super::threads`]), and the
//! alarm a damaged file raises.

use super::{Queue, QueueError};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;
use tracing::error;

/// The queue shared by the pipeline, the uplink and housekeeping.
pub type SharedQueue = Arc<Mutex<Queue>>;

/// Locks the queue. A poisoned lock means a panic inside a queue call; the queue's own
/// state is in SQLite, so continuing is safe.
pub fn lock(q: &SharedQueue) -> MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}

/// A damaged queue file cannot be mended while running: on such an error, logs it and
/// cancels `damaged`, which stops the gateway with an error (its restart checks the file).
pub fn stop_if_damaged(e: &QueueError, damaged: &CancellationToken) {
    if e.is_corrupt() && !damaged.is_cancelled() {
        error!(error = %e, "The queue file is damaged; stopping so that the restart checks it.");
        damaged.cancel();
    }
}
