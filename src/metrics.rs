//! Counters shared by the running parts, read by health reports, the systemd status line
//! and the shutdown summary. Plain atomics: no locks on the hot path. The link state is set
//! through [`Metrics::set_online`], which also wakes the status line's writer. Failed
//! requests of polled devices (Modbus) are counted per device in [`Metrics::devices`], a map
//! behind a lock taken once per failed request, never on the readings' path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Metrics {
    pub readings: AtomicU64,
    pub bad_frames: AtomicU64,
    /// NMEA: proprietary sentences (`$P...`), skipped.
    pub proprietary_frames: AtomicU64,
    /// NMEA: AIS, queries and sentence types not decoded, skipped.
    pub unsupported_frames: AtomicU64,
    /// NMEA: sentences held back by `min_interval`.
    pub limited_frames: AtomicU64,
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
    /// Messages the broker acknowledged before their commit: sent from memory, never
    /// written (each also counted in `acked`, never in `committed`).
    pub unwritten: AtomicU64,
    pub pending_unwritten: AtomicU64,
    /// Readings not published because no field moved past its deadband (report by
    /// exception, `src/transform.rs`): the operator's choice, not a loss.
    pub held_back: AtomicU64,
    /// Failed requests to polled devices, all devices together (see `devices`).
    pub device_failures: AtomicU64,
    /// Failed requests per polled device, by input and device name.
    pub devices: Mutex<BTreeMap<DeviceKey, DeviceFailures>>,
}

/// A polled device: its input's name and its own.
pub type DeviceKey = (Arc<str>, Arc<str>);

/// What went wrong with the requests to one polled device (a Modbus slave).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeviceFailures {
    /// No answer within the request's timeout: a slave gone silent, or an answer with a
    /// wrong CRC (tokio-modbus skips such a frame and waits for a good one).
    pub timeouts: u64,
    /// Exception responses (an illegal address, a busy slave).
    pub exceptions: u64,
    /// Answers that arrived but were wrong: another unit's or function's, the wrong count of
    /// values, or bytes the frame decoder gave up on (then the bus is reopened).
    pub errors: u64,
}

/// One failed request, for [`Metrics::device_failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceFailure {
    Timeout,
    Exception,
    Error,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    /// Counts one failed request to `device` of `input`.
    pub fn device_failed(&self, input: &Arc<str>, device: &Arc<str>, failure: DeviceFailure) {
        Metrics::add(&self.device_failures, 1);
        let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let d = devices.entry((input.clone(), device.clone())).or_default();
        match failure {
            DeviceFailure::Timeout => d.timeouts += 1,
            DeviceFailure::Exception => d.exceptions += 1,
            DeviceFailure::Error => d.errors += 1,
        }
    }

    /// The failures counted per device, as `("input/device", failures)`.
    pub fn device_failures(&self) -> Vec<(String, DeviceFailures)> {
        let devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        devices
            .iter()
            .map(|((i, d), f)| (format!("{i}/{d}"), *f))
            .collect()
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
        self.pending_unwritten
            .store(self.unwritten.load(Relaxed), Relaxed);
        self.pending.store(pending, Relaxed);
    }

    /// The backlog now: the last count, plus commits, minus acknowledgements since.
    pub fn pending_estimate(&self) -> u64 {
        let added = self
            .committed
            .load(Relaxed)
            .saturating_sub(self.pending_committed.load(Relaxed));
        let unwritten = self
            .unwritten
            .load(Relaxed)
            .saturating_sub(self.pending_unwritten.load(Relaxed));
        let removed = self
            .acked
            .load(Relaxed)
            .saturating_sub(self.pending_acked.load(Relaxed))
            .saturating_sub(unwritten)
            + self
                .dead
                .load(Relaxed)
                .saturating_sub(self.pending_dead.load(Relaxed));
        (self.pending.load(Relaxed) + added).saturating_sub(removed)
    }
}

/// What a process has written to storage (`/proc/PID/io` `write_bytes`: what reached the
/// block layer, the SD card's wear) and how long it has run, in seconds; None where /proc
/// does not tell (another user's process, not Linux).
pub fn disk_writes(pid: u32) -> Option<(u64, f64)> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let written = io
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')';
    // the start time (in clock ticks after boot, USER_HZ = 100) is the 20th of them.
    let started: f64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((written, (uptime - started / 100.0).max(0.0)))
}

/// `written` bytes over `secs` seconds, as bytes a day (None before a minute has passed:
/// the start's own writes would dominate).
pub fn per_day(written: u64, secs: f64) -> Option<u64> {
    (secs >= 60.0).then(|| (written as f64 / secs * 86_400.0) as u64)
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

    #[test]
    fn this_process_has_an_age_and_a_write_count() {
        let (_, secs) = disk_writes(std::process::id()).expect("Linux /proc");
        assert!((0.0..86_400.0).contains(&secs), "{secs}");
        assert_eq!(per_day(1000, 30.0), None);
        assert_eq!(per_day(1000, 86_400.0), Some(1000));
    }
}
