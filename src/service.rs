//! systemd integration: the notify protocol and the health verdict behind the watchdog.
//!
//! - `READY=1` once the queue is open and the inputs started;
//! - `STATUS=` with link state and backlog, refreshed every few seconds;
//! - `WATCHDOG=1` every third of `WatchdogSec`, **only while the gateway makes progress**:
//!   no queue operation has been stuck for more than half the watchdog period, and the MQTT
//!   poller has run within its own deadline. A wedged pipeline or uplink stops the pings and
//!   systemd restarts the service; a blocked runtime stops them by itself;
//! - `STOPPING=1` when shutdown begins; on a reload (SIGHUP) `RELOADING=1` instead, and
//!   `READY=1` again once the components run with the new config.
//!
//! Outside systemd (`$NOTIFY_SOCKET` unset) every call is a no-op.

use crate::metrics::Metrics;
use crate::reading::now_ms;
use sd_notify::NotifyState;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

fn notify(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed.");
    }
}

/// A reload is under way: the components stop to start again, not the service.
static RELOADING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn ready() {
    RELOADING.store(false, Relaxed);
    notify(&[NotifyState::Ready]);
}

/// The gateway's components stop now; STOPPING=1, unless they stop for a reload.
pub fn stopping() {
    if !RELOADING.load(Relaxed) {
        notify(&[NotifyState::Stopping]);
    }
}

/// SIGTERM or SIGINT: the stop that follows is the service's, even in the middle of a
/// reload.
pub fn stop_requested() {
    RELOADING.store(false, Relaxed);
}

/// A reload begins (RELOADING=1 with the monotonic time systemd asks for); the next
/// [`stopping`] is part of it, and [`ready`] ends it.
pub fn reloading() {
    RELOADING.store(true, Relaxed);
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// How long the MQTT poller may go without running before the gateway counts as wedged.
pub fn poller_deadline(
    keep_alive: Duration,
    backoff_max: Duration,
    connect_timeout: Duration,
) -> Duration {
    keep_alive.max(backoff_max + connect_timeout) * 2 + Duration::from_secs(5)
}

/// Why the gateway is not making progress, if it is not.
pub fn wedged(
    m: &Metrics,
    now: u64,
    stuck_after: Duration,
    poller_deadline: Duration,
) -> Option<String> {
    let stuck = stuck_after.as_millis() as u64;
    for (what, since) in [
        ("queue commit", &m.commit_since),
        ("queue read/delete", &m.uplink_db_since),
    ] {
        let since = since.load(Relaxed);
        if since != 0 && now.saturating_sub(since) > stuck {
            return Some(format!("{what} running for {} ms", now - since));
        }
    }
    let beat = m.poller_beat.load(Relaxed);
    if beat != 0 && now.saturating_sub(beat) > poller_deadline.as_millis() as u64 {
        return Some(format!("MQTT poller silent for {} ms", now - beat));
    }
    None
}

/// Sends STATUS and, while healthy, WATCHDOG pings, until `cancel`.
pub async fn supervise(
    metrics: Arc<Metrics>,
    poller_deadline: Duration,
    cancel: CancellationToken,
) {
    let watchdog = sd_notify::watchdog_enabled();
    let period = watchdog.map_or(Duration::from_secs(10), |w| {
        (w / 3).min(Duration::from_secs(10))
    });
    let stuck_after = watchdog.map_or(Duration::from_secs(60), |w| w / 2);
    let mut tick = tokio::time::interval(period);
    let mut was_wedged = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let verdict = wedged(&metrics, now_ms(), stuck_after, poller_deadline);
        let status = format!(
            "{}; pending {}, oldest {:.0}s, dropped {}, dead {}{}",
            if metrics.online.load(Relaxed) {
                "online"
            } else {
                "offline"
            },
            metrics.pending_estimate(),
            metrics.oldest_age_s.load(Relaxed),
            Metrics::get(&metrics.dropped),
            Metrics::get(&metrics.dead),
            verdict
                .as_deref()
                .map(|w| format!("; WEDGED: {w}"))
                .unwrap_or_default(),
        );
        let mut states = vec![NotifyState::Status(&status)];
        match &verdict {
            None => {
                was_wedged = false;
                if watchdog.is_some() {
                    states.push(NotifyState::Watchdog);
                }
            }
            Some(why) if !was_wedged => {
                error!(reason = %why, "No progress; withholding watchdog pings so systemd restarts the service.");
                was_wedged = true;
            }
            Some(_) => {}
        }
        notify(&states);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_queue_or_a_silent_poller_is_a_wedge() {
        let m = Metrics::default();
        let s = Duration::from_secs(5);
        let p = Duration::from_secs(30);
        assert_eq!(wedged(&m, 100_000, s, p), None);
        m.commit_since.store(96_000, Relaxed);
        assert_eq!(wedged(&m, 100_000, s, p), None);
        m.commit_since.store(94_000, Relaxed);
        assert!(wedged(&m, 100_000, s, p).unwrap().contains("queue commit"));
        m.commit_since.store(0, Relaxed);
        m.uplink_db_since.store(90_000, Relaxed);
        assert!(wedged(&m, 100_000, s, p).unwrap().contains("read/delete"));
        m.uplink_db_since.store(0, Relaxed);
        m.poller_beat.store(71_000, Relaxed);
        assert_eq!(wedged(&m, 100_000, s, p), None);
        m.poller_beat.store(69_000, Relaxed);
        assert!(wedged(&m, 100_000, s, p).unwrap().contains("poller"));
    }

    #[test]
    fn poller_deadline_covers_keep_alive_and_reconnects() {
        let d = poller_deadline(
            Duration::from_secs(60),
            Duration::from_secs(30),
            Duration::from_secs(10),
        );
        assert_eq!(d, Duration::from_secs(125));
        let d = poller_deadline(
            Duration::from_secs(5),
            Duration::from_secs(60),
            Duration::from_secs(10),
        );
        assert_eq!(d, Duration::from_secs(145));
    }
}
