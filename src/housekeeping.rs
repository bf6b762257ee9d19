//! Housekeeping, every few seconds while the gateway runs: corrects stamps taken before the
//! clock synchronised, expires messages older than `max_age`, keeps the drop counts and the
//! reserve file (`Queue::maintain`), counts the backlog for the status line, and publishes
//! the gateway's health on a retained topic.
//!
//! **Invariant:** nothing expires by age before its stamp is known: uncorrected stamps of
//! an unsynchronised clock never do, and stamps are corrected before expiry runs.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::queue::{self, lock, stop_if_damaged, threads, SharedQueue};
use crate::reading::Stamp;
use crate::uplink;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Corrects stamps taken before the clock synchronised, expires old messages and publishes
/// the gateway's health on a retained topic.
pub async fn run(
    config: Config,
    queue: SharedQueue,
    metrics: Arc<Metrics>,
    handle: uplink::Handle,
    cancel: CancellationToken,
    damaged: CancellationToken,
) {
    // Often enough for the systemd status line; the health topic keeps its own interval.
    let every = config
        .gateway
        .health_interval
        .unwrap_or(Duration::from_secs(15))
        .min(Duration::from_secs(15));
    let mut tick = tokio::time::interval(every);
    let mut last_health = None::<tokio::time::Instant>;
    let health_topic = format!("sensorgate/{}/health", config.gateway.id);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let q = queue.clone();
        let max_age = config.queue.max_age;
        let now = Stamp::now();
        let mono_now = crate::reading::mono_ms(std::time::Instant::now());
        // Stamps from before a clock synchronisation are corrected before anything expires
        // by age (uncorrected ones never do), a chunk per trip: the pipeline and the uplink
        // take their turns in between.
        let mut corrected = 0;
        let mut more = now.synced;
        while more {
            let q = queue.clone();
            let trip = threads::spawn(move || lock(&q).correct_stamps(now.wall_ms, mono_now));
            more = match trip.await {
                Ok(Ok((n, more))) => {
                    corrected += n;
                    more && !cancel.is_cancelled()
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "Housekeeping could not correct the queue's stamps.");
                    stop_if_damaged(&e, &damaged);
                    false
                }
                Err(_) => false,
            };
        }
        if corrected > 0 {
            info!(corrected, "Clock synchronised (by NTP, or a GPS fix while NTP is not); corrected the queue's stamps of messages read before, from the time since boot.");
        }
        let result = threads::spawn(move || {
            let mut q = lock(&q);
            // Drops counted in memory on a full disk, and the reserve when room returns; a
            // disk still full is no reason to skip the rest.
            match q.maintain() {
                Err(e) if e.is_corrupt() => return Err(e),
                _ => {}
            }
            let expired = match max_age {
                // A clock that was never synchronised cannot say what is old.
                Some(age) if now.synced => q.expire(now.wall_ms - age.as_millis() as i64)?,
                _ => 0,
            };
            Ok::<_, queue::QueueError>((expired, q.stats(now.wall_ms)?))
        })
        .await;
        let stats = match result {
            Ok(Ok((expired, stats))) => {
                metrics.set_pending(stats.pending);
                metrics.oldest_age_s.store(
                    stats.oldest_age_s as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                if expired > 0 {
                    error!(expired, max_age = ?config.queue.max_age, "Messages older than max_age deleted unsent.");
                    Metrics::add(&metrics.dropped, expired);
                }
                stats
            }
            Ok(Err(e)) => {
                warn!(error = %e, "Housekeeping could not read the queue.");
                stop_if_damaged(&e, &damaged);
                continue;
            }
            Err(_) => continue,
        };
        let Some(interval) = config.gateway.health_interval else {
            continue;
        };
        if last_health.is_some_and(|t| t.elapsed() < interval) {
            continue;
        }
        let written = crate::metrics::disk_writes(std::process::id());
        let health = serde_json::json!({
            "pending": stats.pending,
            "bytes": stats.bytes,
            "oldest_age_s": stats.oldest_age_s,
            "dropped": stats.dropped,
            "dead": stats.dead,
            "dead_held": stats.dead_held,
            "flaps": Metrics::get(&metrics.flaps),
            "unwritten": Metrics::get(&metrics.unwritten),
            "bytes_written": written.map(|w| w.0),
            "bytes_written_per_day": written.and_then(|(w, secs)| crate::metrics::per_day(w, secs)),
            "readings": Metrics::get(&metrics.readings),
            "bad_frames": Metrics::get(&metrics.bad_frames),
            "held_back": Metrics::get(&metrics.held_back),
            "device_failures": Metrics::get(&metrics.device_failures),
            "devices": metrics.device_failures().into_iter().map(|(name, f)| {
                (name, serde_json::json!({"timeouts": f.timeouts, "exceptions": f.exceptions, "errors": f.errors}))
            }).collect::<serde_json::Map<_, _>>(),
            "proprietary_frames": Metrics::get(&metrics.proprietary_frames),
            "unsupported_frames": Metrics::get(&metrics.unsupported_frames),
            "limited_frames": Metrics::get(&metrics.limited_frames),
            "acked": Metrics::get(&metrics.acked),
            "connects": Metrics::get(&metrics.connects),
            "ts": now.wall_ms,
        });
        if handle.publish_control(
            &health_topic,
            crate::config::Qos::AtMostOnce,
            true,
            health.to_string().into_bytes(),
        ) {
            last_health = Some(tokio::time::Instant::now());
        }
    }
}
