//! The pump's two trips to the SQLite threads: the read ahead, on a read-only connection of
//! its own when it has one (WAL lets it read while the writer works), and the confirmation
//! of delivered rows (released or deleted), or a reclaim of released ones, on the shared
//! queue.
//!
//! **Invariant:** at most one trip of each kind is under way, and they run side by side; a
//! read never waits for a confirmation. A trip's start is kept for the watchdog.

use super::cursors::ReadPlan;
use crate::queue::threads::{Panicked, Trip};
use crate::queue::{lock, SharedQueue};
use crate::queue::{Confirmed, Fetched, QueueError, Reader};
use tracing::warn;

/// The most rows one read takes: a read is a round trip to a SQLite thread, which the pump
/// waits for once the rows read before are sent; one read still holds under a MiB.
pub const READ_CHUNK: usize = 4096;

/// The most confirmed rows one transaction takes: every page it touches stays in SQLite's
/// cache until it commits.
pub const CONFIRM_CHUNK: usize = 4096;

/// A read on a SQLite thread; hands back the pump's own connection.
type ReadTrip = Trip<(Option<Reader>, Result<Fetched, QueueError>)>;

/// A confirmation (or reclaim): its result, the rows (handed back to the session if it
/// failed), and whether released rows are left to reclaim.
pub type Confirming = (Result<usize, QueueError>, Confirmed, bool);

/// A trip that came back.
pub enum Done {
    Read(ReadPlan, Result<Result<Fetched, QueueError>, Panicked>),
    Confirmed(Result<Confirming, Panicked>),
}

/// The pump's trips under way, each with when it started (ms, for the watchdog).
pub struct Store {
    queue: SharedQueue,
    reader: Option<Reader>,
    reading: Option<(ReadTrip, (ReadPlan, u64))>,
    confirming: Option<(Trip<Confirming>, u64)>,
}

impl Store {
    /// Opens the pump's own connection for reads; without one, reads go through the shared
    /// queue.
    pub async fn open(queue: SharedQueue) -> Store {
        let q = queue.clone();
        let reader = match crate::queue::threads::spawn(move || lock(&q).reader()).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                warn!(error = %e, "Cannot open a second connection to the queue; reads share the writer's.");
                None
            }
            Err(_) => None,
        };
        Store {
            queue,
            reader,
            reading: None,
            confirming: None,
        }
    }

    pub fn reading(&self) -> bool {
        self.reading.is_some()
    }

    pub fn confirming(&self) -> bool {
        self.confirming.is_some()
    }

    /// When the oldest trip under way started (ms), if one is.
    pub fn since(&self) -> Option<u64> {
        let r = self.reading.as_ref().map(|r| r.1 .1);
        let c = self.confirming.as_ref().map(|c| c.1);
        r.into_iter().chain(c).min()
    }

    /// Starts the read of `plan`.
    pub fn read(&mut self, plan: ReadPlan) {
        let q = self.queue.clone();
        let own = self.reader.take();
        let (after, upto, want) = (plan.after, plan.upto(), plan.want);
        let task = crate::queue::threads::spawn(move || match own {
            Some(r) => {
                let rows = r.fetch(after, upto, want);
                (Some(r), rows)
            }
            None => (None, lock(&q).fetch(after, upto, want)),
        });
        self.reading = Some((task, (plan, crate::reading::now_ms())));
    }

    /// Starts releasing or deleting `rows`, sized as read.
    pub fn confirm(&mut self, rows: Confirmed) {
        let q = self.queue.clone();
        let task = crate::queue::threads::spawn(move || {
            let mut q = lock(&q);
            let result = q.ack_known(&rows);
            (result, rows, q.reclaimable())
        });
        self.confirming = Some((task, crate::reading::now_ms()));
    }

    /// Starts freeing a chunk of released rows.
    pub fn reclaim(&mut self) {
        let q = self.queue.clone();
        let task = crate::queue::threads::spawn(move || {
            let mut q = lock(&q);
            let result = q.reclaim(CONFIRM_CHUNK).map(|_| 0);
            (result, Confirmed::default(), q.reclaimable())
        });
        self.confirming = Some((task, crate::reading::now_ms()));
    }

    /// The next trip to come back (pending for ever while none is under way). Cancel-safe:
    /// a trip not yet back stays under way.
    pub async fn done(&mut self) -> Done {
        tokio::select! {
            r = finished(&mut self.confirming) => {
                self.confirming = None;
                Done::Confirmed(r)
            }
            r = finished(&mut self.reading) => {
                let plan = self.reading.take().map(|r| r.1 .0).expect("a read was under way");
                Done::Read(plan, r.map(|(own, rows)| {
                    self.reader = own;
                    rows
                }))
            }
        }
    }

    /// Waits for the trips under way (at shutdown): a read holds a read transaction, which
    /// would keep the last checkpoint (and the queue's clean mark) from completing. Returns
    /// the errors met, and the rows a failed confirmation leaves confirmed.
    pub async fn settle(&mut self) -> (Vec<QueueError>, Confirmed) {
        let mut errors = Vec::new();
        let mut unsaved = Confirmed::default();
        if let Some((task, _)) = self.confirming.take() {
            if let Ok((Err(e), rows, _)) = task.await {
                errors.push(e);
                unsaved = rows;
            }
        }
        if let Some((task, _)) = self.reading.take() {
            if let Ok((_, Err(e))) = task.await {
                errors.push(e);
            }
        }
        (errors, unsaved)
    }
}

/// Waits for a trip that may not be there (then forever).
async fn finished<T, P>(task: &mut Option<(Trip<T>, P)>) -> Result<T, Panicked> {
    match task {
        Some((t, _)) => t.await,
        None => std::future::pending().await,
    }
}
