//! Wiring: opens the queue, starts inputs, pipeline, uplink and housekeeping, and stops
//! them in order on shutdown.
//!
//! Shutdown order: inputs stop first; the pipeline commits what it holds and ends when the
//! last input sender is gone; then the uplink says goodbye and deletes confirmed rows.
//! **Invariant:** nothing that reached the pipeline is lost by a shutdown.

use crate::config::{Config, InputKind};
use crate::input::{serial, synthetic};
use crate::mapping::Mapper;
use crate::metrics::Metrics;
use crate::pipeline::{self, lock, GroupCommit, SharedQueue};
use crate::queue::{self, QueueOptions};
use crate::reading::Stamp;
use crate::uplink;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Capacity of the reading channel: enough to ride out a commit, small enough to bound RAM.
const READINGS_CAPACITY: usize = 4096;

/// The queue's options from the config: `max_size` bounds the file plus its WAL on disk,
/// the policy counts accounted bytes ([`queue::accounted_limit`]).
pub fn queue_options(config: &Config) -> QueueOptions {
    QueueOptions {
        max_size: queue::accounted_limit(config.queue.max_size),
        when_full: config.queue.when_full,
        synchronous_full: config.queue.synchronous_full,
    }
}

/// Opens the configured queue, moving a corrupt file aside.
pub fn open_queue(config: &Config) -> anyhow::Result<queue::Queue> {
    let path = config.queue_path();
    let (q, aside) = queue::open_or_reset(&path, queue_options(config))?;
    if let Some(aside) = aside {
        error!(queue = %path.display(), moved_to = %aside.display(), "Queue file was corrupt or not a sensorgate queue; moved it aside and started a fresh queue. Its messages are not sent.");
    }
    Ok(q)
}

/// A damaged queue file cannot be mended while running: on such an error, logs it and
/// cancels `damaged`, which stops the gateway with an error (its restart checks the file).
pub fn stop_if_damaged(e: &queue::QueueError, damaged: &CancellationToken) {
    if e.is_corrupt() && !damaged.is_cancelled() {
        error!(error = %e, "The queue file is damaged; stopping so that the restart checks it.");
        damaged.cancel();
    }
}

/// Runs the gateway until `shutdown` fires. `on_ready` is called once the queue is open and
/// the inputs started (systemd's READY=1). The caller holds `state_dir`'s lock, taken before
/// the queue is opened (and perhaps moved aside) and kept across reloads: one gateway per
/// state_dir, with no moment in a reload when another process could take it.
pub async fn run(
    config: Config,
    _lock: &queue::StateLock,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(),
) -> anyhow::Result<()> {
    // The origin of the time since boot (uptime, read once), before any reading is stamped.
    crate::reading::mono_ms(std::time::Instant::now());
    let queue: SharedQueue = Arc::new(Mutex::new(open_queue(&config)?));
    let metrics = Arc::new(Metrics::default());
    // No count of the pending rows here: it reads every page of the table (seconds for a
    // large queue on an SD card), and housekeeping counts them on its first round anyway.
    let (last_id, pending_bytes) = {
        let q = lock(&queue);
        (q.next_id() - 1, q.pending_bytes()?)
    };
    info!(queue = %config.queue_path().display(), pending_bytes, last_seq = last_id, "Queue open.");

    let (committed_tx, committed_rx) = watch::channel(last_id);
    let (readings_tx, readings_rx) = mpsc::channel(READINGS_CAPACITY);
    let inputs_cancel = CancellationToken::new();
    let mut inputs = tokio::task::JoinSet::new();
    for (index, input) in config.inputs.iter().enumerate() {
        let id = serial::InputId {
            index,
            name: input.name.clone(),
        };
        let out = readings_tx.clone();
        let cancel = inputs_cancel.clone();
        match &input.kind {
            InputKind::Serial(s) => {
                inputs.spawn(serial::run(id, s.clone(), out, metrics.clone(), cancel));
            }
            InputKind::Synthetic(s) => {
                inputs.spawn(synthetic::run(id, s.clone(), out, cancel));
            }
            #[cfg(feature = "ble")]
            InputKind::Ble(b) => {
                let m = metrics.clone();
                inputs.spawn(crate::ble::input::run(id, b.clone(), out, m, cancel));
            }
            #[cfg(not(feature = "ble"))]
            InputKind::Ble(_) => unreachable!("Config::load refuses [[ble]] without the feature"),
        }
    }
    drop(readings_tx);

    let pipeline = tokio::spawn(pipeline::run(
        readings_rx,
        Mapper::new(&config),
        queue.clone(),
        GroupCommit {
            every: config.queue.commit_every,
            linger: config.queue.commit_linger,
        },
        committed_tx,
        metrics.clone(),
    ));
    // Cancelled by whoever finds the queue file damaged: the gateway then stops with an error.
    let damaged = CancellationToken::new();
    let uplink_cancel = CancellationToken::new();
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
    let uplink = tokio::spawn(uplink::run(
        config.mqtt.clone(),
        queue.clone(),
        committed_rx,
        metrics.clone(),
        uplink_cancel.clone(),
        damaged.clone(),
        handle_tx,
    ));
    // The uplink ends only when cancelled; ended otherwise (a panic), the gateway would run
    // on sending nothing: it stops with an error instead, and systemd restarts it.
    let uplink_down = CancellationToken::new();
    let uplink = {
        let (down, cancel) = (uplink_down.clone(), uplink_cancel.clone());
        tokio::spawn(async move {
            let r = uplink.await;
            if !cancel.is_cancelled() {
                error!(error = ?r.as_ref().err(), "The uplink stopped; the gateway stops too.");
                down.cancel();
            }
        })
    };
    let house_cancel = CancellationToken::new();
    let house = tokio::spawn(housekeeping(
        config.clone(),
        queue.clone(),
        metrics.clone(),
        handle_rx,
        house_cancel.clone(),
        damaged.clone(),
    ));
    let supervisor_cancel = CancellationToken::new();
    let m = &config.mqtt;
    let supervisor = tokio::spawn(crate::service::supervise(
        metrics.clone(),
        crate::service::poller_deadline(m.keep_alive, m.backoff_max, m.connect_timeout),
        supervisor_cancel.clone(),
    ));
    on_ready();
    info!(gateway = %config.gateway.id, inputs = config.inputs.len(), "Gateway running.");

    // Run until asked to stop, or until the pipeline fails (the queue cannot be written),
    // or the queue file is found damaged.
    let mut pipeline = pipeline;
    // Inputs that end by themselves (a synthetic `count`) end the pipeline early: keep
    // draining the queue until shutdown all the same.
    let pipeline_result = tokio::select! {
        _ = shutdown.cancelled() => None,
        _ = damaged.cancelled() => None,
        _ = uplink_down.cancelled() => None,
        r = &mut pipeline => match r {
            Ok(Ok(())) => {
                info!("Every input has finished; forwarding the backlog until stopped.");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = damaged.cancelled() => {}
                    _ = uplink_down.cancelled() => {}
                }
                Some(Ok(Ok(())))
            }
            failed => Some(failed),
        },
    };
    crate::service::stopping();
    supervisor_cancel.cancel();
    let _ = supervisor.await;
    inputs_cancel.cancel();
    while inputs.join_next().await.is_some() {}
    let pipeline_result = match pipeline_result {
        Some(r) => r,
        None => pipeline.await,
    };
    house_cancel.cancel();
    let _ = house.await;
    uplink_cancel.cancel();
    let _ = uplink.await;
    // Drops counted in memory on a full disk are written now if they can be.
    let q = queue.clone();
    let unsaved = crate::trips::spawn(move || {
        let mut q = lock(&q);
        let _ = q.maintain();
        q.unsaved_dropped()
    })
    .await;
    if let Ok(unsaved @ 1..) = unsaved {
        error!(
            unsaved,
            "The disk is full: drops not written to the queue file; its dropped count is short by this."
        );
    }
    // Last: a stop that lost nothing lets the next start skip the integrity check.
    let stopped_well = matches!(pipeline_result, Ok(Ok(())))
        && !damaged.is_cancelled()
        && !uplink_down.is_cancelled();
    if stopped_well {
        let q = queue.clone();
        match crate::trips::spawn(move || lock(&q).mark_clean()).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                warn!("The queue met a damaged file or a failing disk, or another process was reading it; the next start checks it.")
            }
            Ok(Err(e)) => {
                warn!(error = %e, "Could not mark the queue closed cleanly; the next start checks it.")
            }
            Err(e) => {
                warn!(error = %e, "Could not mark the queue closed cleanly; the next start checks it.")
            }
        }
    }
    info!(
        readings = Metrics::get(&metrics.readings),
        committed = Metrics::get(&metrics.committed),
        acked = Metrics::get(&metrics.acked),
        bad_frames = Metrics::get(&metrics.bad_frames),
        dropped = Metrics::get(&metrics.dropped),
        dead = Metrics::get(&metrics.dead),
        flaps = Metrics::get(&metrics.flaps),
        "Gateway stopped."
    );
    if damaged.is_cancelled() {
        anyhow::bail!(
            "the queue file {} is damaged; the next start checks it",
            config.queue_path().display()
        );
    }
    if uplink_down.is_cancelled() {
        anyhow::bail!("the uplink stopped unexpectedly; unsent messages stay queued");
    }
    match pipeline_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("the pipeline could not write the queue")),
        Err(e) => Err(anyhow::anyhow!("the pipeline task failed: {e}")),
    }
}

/// Corrects stamps taken before the clock synchronised, expires old messages and publishes
/// the gateway's health on a retained topic.
async fn housekeeping(
    config: Config,
    queue: SharedQueue,
    metrics: Arc<Metrics>,
    handle: tokio::sync::oneshot::Receiver<uplink::Handle>,
    cancel: CancellationToken,
    damaged: CancellationToken,
) {
    let Ok(handle) = handle.await else { return };
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
            let trip = crate::trips::spawn(move || lock(&q).correct_stamps(now.wall_ms, mono_now));
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
            info!(corrected, "Clock synchronised; corrected the queue's stamps of messages read before, from the time since boot.");
        }
        let result = crate::trips::spawn(move || {
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
        let health = serde_json::json!({
            "pending": stats.pending,
            "bytes": stats.bytes,
            "oldest_age_s": stats.oldest_age_s,
            "dropped": stats.dropped,
            "dead": stats.dead,
            "dead_held": stats.dead_held,
            "flaps": Metrics::get(&metrics.flaps),
            "readings": Metrics::get(&metrics.readings),
            "bad_frames": Metrics::get(&metrics.bad_frames),
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
