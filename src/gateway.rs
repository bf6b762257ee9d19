//! Wiring: opens the queue, starts inputs, pipeline, uplink and housekeeping, applies a
//! reloaded config part by part, and stops them in order on shutdown.
//!
//! Shutdown order: inputs stop first; the pipeline commits what it holds and ends when the
//! last input sender is gone; then the uplink says goodbye and deletes confirmed rows.
//! **Invariant:** nothing that reached the pipeline is lost by a shutdown.

use crate::config::{Config, InputConfig, InputKind};
use crate::input::InputId;
use crate::input::{serial, synthetic};
use crate::mapping::Mapper;
use crate::metrics::Metrics;
use crate::pipeline::{self, GroupCommit};
use crate::queue::{self, lock, stop_if_damaged, threads, QueueOptions, SharedQueue};
use crate::reading::Reading;
use crate::uplink;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
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
    let mut parts = Parts {
        queue,
        metrics,
        committed,
        live: queue::Live::shared(),
        damaged: damaged.clone(),
        uplink_down: uplink_down.clone(),
        routing: watch::channel(routing(&config, Mapper::new(&config))).0,
        readings: None,
        pipeline: None,
        inputs: Vec::new(),
        link: None,
        house: None,
    };
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
                    parts.reload(&config, &new).await;
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

/// The running parts of the gateway, each started and stopped on its own.
struct Parts {
    queue: SharedQueue,
    metrics: Arc<Metrics>,
    /// The last committed row id: the pipeline tells the uplink.
    committed: watch::Sender<i64>,
    /// Messages the pipeline offers the uplink before their commit.
    live: Arc<queue::Live>,
    damaged: CancellationToken,
    uplink_down: CancellationToken,
    /// The pipeline's mapper and group commit; a reload sends new ones.
    routing: watch::Sender<pipeline::Routing>,
    /// The inputs' way into the pipeline, held weakly: the pipeline ends when every input
    /// has ended (and a reload that starts one then starts a pipeline again).
    readings: Option<mpsc::WeakSender<Reading>>,
    pipeline: Option<JoinHandle<Result<(), queue::QueueError>>>,
    inputs: Vec<Input>,
    link: Option<Link>,
    house: Option<(CancellationToken, JoinHandle<()>)>,
}

/// A running input: its config, its slot in the mapper, and its task.
struct Input {
    config: InputConfig,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The uplink (behind a watcher that tells an unexpected end), the handle housekeeping
/// publishes with, and the watchdog's supervisor, whose patience the MQTT settings set.
struct Link {
    cancel: CancellationToken,
    watcher: JoinHandle<()>,
    handle: Option<uplink::Handle>,
    supervisor: (CancellationToken, JoinHandle<()>),
}

fn routing(config: &Config, mapper: Mapper) -> pipeline::Routing {
    pipeline::Routing {
        mapper,
        commit: GroupCommit {
            every: config.queue.commit_every,
            linger: config.queue.commit_linger,
        },
    }
}

impl Parts {
    /// A sender into the pipeline, starting a pipeline if none runs (its inputs all ended).
    fn sender(&mut self) -> mpsc::Sender<Reading> {
        if let Some(tx) = self.readings.as_ref().and_then(|w| w.upgrade()) {
            return tx;
        }
        let (tx, rx) = mpsc::channel(READINGS_CAPACITY);
        self.readings = Some(tx.downgrade());
        // The one before has committed everything and ended, or is about to: its last
        // sender is gone.
        self.pipeline = Some(tokio::spawn(pipeline::run(
            rx,
            self.routing.subscribe(),
            self.queue.clone(),
            self.committed.clone(),
            self.metrics.clone(),
            Some(self.live.clone()),
        )));
        tx
    }

    /// Starts `input` in mapper slot `slot`.
    fn start_input(&mut self, slot: usize, input: &InputConfig) {
        let id = InputId {
            index: slot,
            name: input.name.clone(),
        };
        let out = self.sender();
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = match &input.kind {
            InputKind::Serial(s) => {
                tokio::spawn(serial::run(id, s.clone(), out, self.metrics.clone(), c))
            }
            InputKind::Synthetic(s) => tokio::spawn(synthetic::run(id, s.clone(), out, c)),
            #[cfg(feature = "ble")]
            InputKind::Ble(b) => {
                let m = self.metrics.clone();
                tokio::spawn(crate::input::ble::run(id, b.clone(), out, m, c))
            }
            #[cfg(not(feature = "ble"))]
            InputKind::Ble(_) => unreachable!("Config::load refuses [[ble]] without the feature"),
        };
        self.inputs.push(Input {
            config: input.clone(),
            cancel,
            task,
        });
    }

    /// Stops the inputs `which` picks and waits for them; what they read is on its way to
    /// the pipeline.
    async fn stop_inputs(&mut self, which: impl Fn(&InputConfig) -> bool) {
        let (stop, keep): (Vec<Input>, Vec<Input>) = std::mem::take(&mut self.inputs)
            .into_iter()
            .partition(|i| which(&i.config));
        self.inputs = keep;
        for i in &stop {
            i.cancel.cancel();
        }
        for i in stop {
            let _ = i.task.await;
        }
    }

    /// Starts the uplink and the supervisor for `config`'s MQTT settings.
    async fn start_link(&mut self, config: &Config) {
        let cancel = CancellationToken::new();
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        let parts = uplink::Parts {
            queue: self.queue.clone(),
            committed: self.committed.subscribe(),
            live: Some(self.live.clone()),
            metrics: self.metrics.clone(),
            cancel: cancel.clone(),
            damaged: self.damaged.clone(),
        };
        let uplink = tokio::spawn(uplink::run(config.mqtt.clone(), parts, handle_tx));
        // The uplink ends only when cancelled; ended otherwise (a panic), the gateway stops.
        let watcher = {
            let (down, cancel) = (self.uplink_down.clone(), cancel.clone());
            tokio::spawn(async move {
                let r = uplink.await;
                if !cancel.is_cancelled() {
                    error!(error = ?r.as_ref().err(), "The uplink stopped; the gateway stops too.");
                    down.cancel();
                }
            })
        };
        let handle = handle_rx.await.ok();
        let m = &config.mqtt;
        let supervisor_cancel = CancellationToken::new();
        let supervisor = tokio::spawn(crate::service::supervise(
            self.metrics.clone(),
            crate::service::poller_deadline(m.keep_alive, m.backoff_max, m.connect_timeout),
            supervisor_cancel.clone(),
        ));
        self.link = Some(Link {
            cancel,
            watcher,
            handle,
            supervisor: (supervisor_cancel, supervisor),
        });
    }

    /// Stops the uplink (it says goodbye and confirms what was acknowledged) and the
    /// supervisor.
    async fn stop_link(&mut self) {
        if let Some(link) = self.link.take() {
            link.supervisor.0.cancel();
            let _ = link.supervisor.1.await;
            link.cancel.cancel();
            let _ = link.watcher.await;
        }
    }

    fn start_housekeeping(&mut self, config: &Config) {
        let Some(handle) = self.link.as_ref().and_then(|l| l.handle.clone()) else {
            return; // the uplink failed at its start: the watcher stops the gateway
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(crate::housekeeping::run(
            config.clone(),
            self.queue.clone(),
            self.metrics.clone(),
            handle,
            cancel.clone(),
            self.damaged.clone(),
        ));
        self.house = Some((cancel, task));
    }

    async fn stop_housekeeping(&mut self) {
        if let Some((cancel, task)) = self.house.take() {
            cancel.cancel();
            let _ = task.await;
        }
    }

    /// Applies `new` over `old`, part by part.
    async fn reload(&mut self, old: &Config, new: &Config) {
        // Inputs removed or changed stop first; their readings still on the way map with
        // their old slots.
        let kept = |i: &InputConfig| {
            new.inputs
                .iter()
                .any(|n| n.name == i.name && format!("{n:?}") == format!("{i:?}"))
        };
        self.stop_inputs(|i| !kept(i)).await;
        let mut mapper = self.routing.borrow().mapper.clone();
        mapper.configure(new);
        let start: Vec<(usize, InputConfig)> = new
            .inputs
            .iter()
            .filter(|n| !self.inputs.iter().any(|i| i.config.name == n.name))
            .map(|n| (mapper.add(n.name.clone(), n.route.clone()), n.clone()))
            .collect();
        // Before the new inputs start: a reading of theirs finds its slot.
        self.routing.send_replace(routing(new, mapper));
        for (slot, input) in &start {
            self.start_input(*slot, input);
        }
        if crate::reload::queue_changed(old, new) {
            let q = self.queue.clone();
            let opts = queue_options(new);
            match threads::spawn(move || lock(&q).reconfigure(opts)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, "Could not apply the new [queue] options to the open queue.");
                    stop_if_damaged(&e, &self.damaged);
                }
                Err(e) => {
                    warn!(error = %e, "Could not apply the new [queue] options to the open queue.")
                }
            }
        }
        let mqtt = crate::reload::mqtt_changed(old, new);
        if mqtt
            || crate::reload::queue_changed(old, new)
            || crate::reload::gateway_changed(old, new)
        {
            self.stop_housekeeping().await;
            if mqtt {
                info!("Reconnecting to the broker with the new [mqtt] settings.");
                self.stop_link().await;
                self.start_link(new).await;
            }
            self.start_housekeeping(new);
        }
    }

    /// Stops everything in order: inputs, pipeline (which commits what it holds),
    /// housekeeping, uplink. `failed` is the pipeline's result if it ended with an error.
    async fn stop(mut self, failed: Option<PipelineResult>, config: &Config) -> anyhow::Result<()> {
        if let Some(link) = &self.link {
            link.supervisor.0.cancel();
        }
        self.stop_inputs(|_| true).await;
        self.readings = None;
        let pipeline_result = match (failed, self.pipeline.take()) {
            (Some(r), _) => r,
            (None, Some(p)) => p.await,
            (None, None) => Ok(Ok(())),
        };
        self.stop_housekeeping().await;
        self.stop_link().await;
        let (queue, metrics, damaged) = (self.queue, self.metrics, self.damaged);
        // Drops counted in memory on a full disk are written now if they can be.
        let q = queue.clone();
        let unsaved = threads::spawn(move || {
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
        let uplink_down = self.uplink_down.is_cancelled();
        let stopped_well =
            matches!(pipeline_result, Ok(Ok(()))) && !damaged.is_cancelled() && !uplink_down;
        if stopped_well {
            let q = queue.clone();
            match threads::spawn(move || lock(&q).mark_clean()).await {
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
            unwritten = Metrics::get(&metrics.unwritten),
            "Gateway stopped."
        );
        if damaged.is_cancelled() {
            anyhow::bail!(
                "the queue file {} is damaged; the next start checks it",
                config.queue_path().display()
            );
        }
        if uplink_down {
            anyhow::bail!("the uplink stopped unexpectedly; unsent messages stay queued");
        }
        match pipeline_result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                Err(anyhow::Error::new(e).context("the pipeline could not write the queue"))
            }
            Err(e) => Err(anyhow::anyhow!("the pipeline task failed: {e}")),
        }
    }
}
