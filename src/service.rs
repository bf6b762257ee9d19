//! systemd integration: the notify protocol and the health verdict behind the watchdog.
//!
//! - `READY=1` once the queue is open and the inputs started;
//! - `STATUS=` with link state and backlog, refreshed every few seconds and at once when the
//!   link goes up or down ([`Metrics::set_online`]);
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
    supervise_with(metrics, poller_deadline, watchdog, cancel, notify).await
}

/// [`supervise`] with the watchdog period given and the messages handed to `send`.
/// STATUS and, while healthy, a WATCHDOG ping every third of the period (at most 10 s);
/// STATUS alone whenever the link changes.
async fn supervise_with(
    metrics: Arc<Metrics>,
    poller_deadline: Duration,
    watchdog: Option<Duration>,
    cancel: CancellationToken,
    mut send: impl FnMut(&[NotifyState]),
) {
    let period = watchdog.map_or(Duration::from_secs(10), |w| {
        (w / 3).min(Duration::from_secs(10))
    });
    let stuck_after = watchdog.map_or(Duration::from_secs(60), |w| w / 2);
    let mut tick = tokio::time::interval(period);
    let mut was_wedged = false;
    loop {
        let ping = tokio::select! {
            _ = tick.tick() => true,
            _ = metrics.link_changed() => false,
            _ = cancel.cancelled() => return,
        };
        let verdict = wedged(&metrics, now_ms(), stuck_after, poller_deadline);
        let status = status_line(&metrics, verdict.as_deref());
        let mut states = vec![NotifyState::Status(&status)];
        match &verdict {
            None => {
                was_wedged = false;
                if watchdog.is_some() && ping {
                    states.push(NotifyState::Watchdog);
                }
            }
            Some(why) if !was_wedged => {
                error!(reason = %why, "No progress; withholding watchdog pings so systemd restarts the service.");
                was_wedged = true;
            }
            Some(_) => {}
        }
        send(&states);
    }
}

/// What `systemctl status` shows: link, backlog, drops, dead letters, and a wedge if any.
fn status_line(metrics: &Metrics, wedge: Option<&str>) -> String {
    format!(
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
        wedge.map(|w| format!("; WEDGED: {w}")).unwrap_or_default(),
    )
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

    /// The status line changes when the link does, not at the next tick (10 s here).
    #[tokio::test]
    async fn the_status_line_follows_the_link_at_once() {
        let metrics = Arc::new(Metrics::default());
        let sent = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let cancel = CancellationToken::new();
        let sink = sent.clone();
        let supervisor = tokio::spawn(supervise_with(
            metrics.clone(),
            Duration::from_secs(60),
            Some(Duration::from_secs(30)),
            cancel.clone(),
            move |states| {
                let line = states.iter().map(|s| s.to_string()).collect::<Vec<_>>();
                sink.lock().unwrap().push(line.join("\n"));
            },
        ));
        let seen = |what: &str| sent.lock().unwrap().iter().any(|s| s.contains(what));
        let wait_for = |what: &'static str| {
            let seen = &seen;
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while !seen(what) {
                    assert!(std::time::Instant::now() < deadline, "no {what:?}");
                    tokio::task::yield_now().await;
                }
            }
        };
        wait_for("STATUS=offline; pending 0").await;
        let start = std::time::Instant::now();
        metrics.set_online(true);
        wait_for("STATUS=online; pending 0").await;
        metrics.set_online(false);
        let n = sent.lock().unwrap().len();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sent.lock().unwrap().len() == n {
            assert!(
                std::time::Instant::now() < deadline,
                "no status after going offline"
            );
            tokio::task::yield_now().await;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "before the next tick"
        );
        let sent_now = sent.lock().unwrap().clone();
        let last = sent_now.last().unwrap();
        assert!(last.starts_with("STATUS=offline"), "{sent_now:?}");
        assert!(
            !sent_now[1..].iter().any(|s| s.contains("WATCHDOG=1")),
            "a link change sends STATUS only: {sent_now:?}"
        );
        cancel.cancel();
        supervisor.await.unwrap();
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
