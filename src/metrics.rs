//! Counters shared by the running parts, read by health reports, the systemd status line
//! and the shutdown summary. Plain atomics: no locks on the hot path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Metrics {
    pub readings: AtomicU64,
    pub bad_frames: AtomicU64,
    pub committed: AtomicU64,
    pub dropped: AtomicU64,
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub connects: AtomicU64,
    pub online: AtomicBool,
    /// Bumped whenever the pipeline or the uplink makes progress.
    pub progress: AtomicU64,
    /// When (`reading::now_ms`) the queue commit in flight started; 0 when none is.
    pub commit_since: AtomicU64,
    /// When the uplink's queue read/delete in flight started; 0 when none is.
    pub uplink_db_since: AtomicU64,
    /// When the MQTT poller last ran (`reading::now_ms`).
    pub poller_beat: AtomicU64,
    /// The backlog as housekeeping last read it, with `committed` and `acked` at that moment
    /// (for the systemd status line, see [`Metrics::pending_estimate`]).
    pub pending: AtomicU64,
    pub pending_committed: AtomicU64,
    pub pending_acked: AtomicU64,
    pub oldest_age_s: AtomicU64,
    /// Messages moved to the dead letters by this run.
    pub dead: AtomicU64,
    pub pending_dead: AtomicU64,
    /// Connections the broker accepted and then dropped before they proved stable.
    pub flaps: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    /// Records the backlog that housekeeping counted.
    pub fn set_pending(&self, pending: u64) {
        self.pending_committed
            .store(self.committed.load(Relaxed), Relaxed);
        self.pending_acked.store(self.acked.load(Relaxed), Relaxed);
        self.pending_dead.store(self.dead.load(Relaxed), Relaxed);
        self.pending.store(pending, Relaxed);
    }

    /// The backlog now: the last count, plus commits, minus acknowledgements since.
    pub fn pending_estimate(&self) -> u64 {
        let added = self
            .committed
            .load(Relaxed)
            .saturating_sub(self.pending_committed.load(Relaxed));
        let removed = self
            .acked
            .load(Relaxed)
            .saturating_sub(self.pending_acked.load(Relaxed))
            + self
                .dead
                .load(Relaxed)
                .saturating_sub(self.pending_dead.load(Relaxed));
        (self.pending.load(Relaxed) + added).saturating_sub(removed)
    }
}
