//! Wiring: opens the queue, starts inputs, pipeline, uplink and housekeeping, applies a
//! reloaded config part by part, and stops them in order on shutdown.
//!
//! Shutdown order: inputs stop first; the pipeline commits what it holds and ends when the
//! last input sender is gone; then the uplink says goodbye and releases or deletes the
//! confirmed rows. The parts themselves are in `parts`.
//! **Invariant:** nothing that reached the pipeline is lost by a shutdown.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::queue::{self, lock, QueueOptions, SharedQueue};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

mod parts;

use parts::Parts;

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

/// Runs the gateway until `shutdown` fires. `on_ready` is called once the queue is open and
/// the inputs started, and again after each reload (systemd's READY=1). `reloads` hands over
/// a new, valid config (see `reload.rs`), which applies part by part: inputs added, changed
/// or removed start or stop alone, a change to `[mqtt]` reconnects the uplink, the rest
/// applies in place; the queue stays open. The caller holds `state_dir`'s lock, taken before
/// the queue is opened (and perhaps moved aside) and kept for the whole run: one gateway per
/// state_dir.
pub async fn run(
    config: Config,
    _lock: &queue::StateLock,
    shutdown: CancellationToken,
    mut reloads: watch::Receiver<Option<Config>>,
    on_ready: impl Fn(),
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

    let (committed, _) = watch::channel(last_id);
    // Cancelled by whoever finds the queue file damaged: the gateway then stops with an error.
    let damaged = CancellationToken::new();
    // Cancelled when the uplink ends by itself (a panic): the gateway would run on sending
    // nothing, so it stops with an error instead, and systemd restarts it.
    let uplink_down = CancellationToken::new();
    let mut parts = Parts::new(
        &config,
        queue,
        metrics,
        committed,
        damaged.clone(),
        uplink_down.clone(),
    );
    for (slot, input) in config.inputs.iter().enumerate() {
        parts.start_input(slot, input);
    }
    parts.start_link(&config).await;
    parts.start_housekeeping(&config);
    on_ready();
    info!(gateway = %config.gateway.id, inputs = config.inputs.len(), "Gateway running.");

    // Run until asked to stop, or until the pipeline fails (the queue cannot be written),
    // or the queue file is found damaged. Inputs that end by themselves (a synthetic
    // `count`) end the pipeline early: the backlog is forwarded until shutdown all the same.
    let mut config = config;
    let failed = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            _ = damaged.cancelled() => break None,
            _ = uplink_down.cancelled() => break None,
            r = ended(&mut parts.pipeline) => {
                parts.pipeline = None;
                match r {
                    Ok(Ok(())) => info!("Every input has finished; forwarding the backlog until stopped."),
                    failed => break Some(failed),
                }
            }
            Ok(()) = reloads.changed() => {
                let new = reloads.borrow_and_update().clone();
                if let Some(new) = new {
                    if let Some(failed) = parts.reload(&config, &new).await {
                        break Some(failed);
                    }
                    config = new;
                    on_ready();
                }
            }
        }
    };
    crate::service::stopping();
    parts.stop(failed, &config).await
}

type PipelineResult = Result<Result<(), queue::QueueError>, tokio::task::JoinError>;

/// Resolves when the pipeline ends (never, if none runs).
async fn ended(pipeline: &mut Option<JoinHandle<Result<(), queue::QueueError>>>) -> PipelineResult {
    match pipeline.as_mut() {
        Some(p) => p.await,
        None => std::future::pending().await,
    }
}
