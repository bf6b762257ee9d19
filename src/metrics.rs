//! Counters shared by the running parts, read by health reports, the systemd status line
//! and the shutdown summary. Plain atomics: no locks on the hot path. The link state is set
//! through [`Metrics::set_online`], which also wakes the status line's writer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Metrics {
    pub readings: AtomicU64,
    pub bad_frames: AtomicU64,
    pub committed: AtomicU64,
    pub dropped: AtomicU64,
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub connects: AtomicU64,
    /// Whether the broker link is up; read it freely, set it with [`Metrics::set_online`].
    pub online: AtomicBool,
    /// Signalled when `online` changes (one stored permit: a change is never missed).
    link_changed: Notify,
    /// Bumped whenever the pipeline or the uplink makes progress.
    pub progress: AtomicU64,
    /// When (service::now_ms) the queue commit in flight started; 0 when none is.
    pub commit_since: AtomicU64,
    /// When the uplink's queue read/delete in flight started; 0 when none is.
    pub uplink_db_since: AtomicU64,
    /// When the MQTT poller last ran (service::now_ms).
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

    /// Records the broker link's state; a change wakes [`Metrics::link_changed`], so that the
    /// systemd status line follows the link instead of waiting for its next refresh.
    pub fn set_online(&self, online: bool) {
        if self.online.swap(online, Relaxed) != online {
            self.link_changed.notify_one();
        }
    }

    /// Resolves once the link state has changed since the last call returned (or since the
    /// start, for the first call).
    pub async fn link_changed(&self) {
        self.link_changed.notified().await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Waker};

    /// Whether `f` completes at its first poll.
    fn completes_at_once(f: impl Future<Output = ()>) -> bool {
        let mut f = std::pin::pin!(f);
        f.as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready()
    }

    #[test]
    fn a_change_of_the_link_wakes_the_waiter_and_a_repeat_does_not() {
        let m = Metrics::default();
        assert!(!completes_at_once(m.link_changed()), "nothing changed yet");
        m.set_online(true);
        assert!(m.online.load(Relaxed));
        assert!(
            completes_at_once(m.link_changed()),
            "kept for a waiter to come"
        );
        m.set_online(true);
        assert!(!completes_at_once(m.link_changed()), "no change, no wake");
        m.set_online(false);
        assert!(!m.online.load(Relaxed));
        assert!(completes_at_once(m.link_changed()));
    }
}
