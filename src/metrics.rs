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
    /// Bumped whenever the pipeline or the uplink makes progress (for the watchdog).
    pub progress: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}
