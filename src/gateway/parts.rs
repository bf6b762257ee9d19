//! The gateway's running parts, each started and stopped on its own: the inputs (one task
//! each, in mapper slots), the pipeline, the uplink with the watchdog's supervisor, and
//! housekeeping; how a reloaded config applies to them; the stop in its order.
//!
//! **Invariant:** a reload never closes the queue, and an input that did not change keeps
//! running; the routing for new input slots reaches the pipeline before those inputs start.

use super::{queue_options, PipelineResult, READINGS_CAPACITY};
use crate::config::{Config, InputConfig, InputKind};
use crate::input::{modbus, serial, synthetic, InputId};
use crate::mapping::Mapper;
use crate::metrics::Metrics;
use crate::pipeline::{self, GroupCommit};
use crate::queue::{self, lock, stop_if_damaged, threads, SharedQueue};
use crate::reading::Reading;
use crate::uplink;
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The running parts of the gateway, each started and stopped on its own.
pub(super) struct Parts {
    queue: SharedQueue,
    metrics: Arc<Metrics>,
    /// The last committed row id: the pipeline tells the uplink.
    committed: watch::Sender<i64>,
    /// Messages the pipeline offers the uplink before their commit.
    live: Arc<queue::Live>,
    damaged: CancellationToken,
    uplink_down: CancellationToken,
    /// Home Assistant said "online" (the uplink tells, the pipeline announces again).
    status_online: Arc<Notify>,
    /// The pipeline's mapper and group commit; a reload sends new ones.
    routing: watch::Sender<pipeline::Routing>,
    /// The inputs' way into the pipeline, held weakly: the pipeline ends when every input
    /// has ended (and a reload that starts one then starts a pipeline again).
    readings: Option<mpsc::WeakSender<Reading>>,
    pub(super) pipeline: Option<JoinHandle<Result<(), queue::QueueError>>>,
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
    pub(super) fn new(
        config: &Config,
        queue: SharedQueue,
        metrics: Arc<Metrics>,
        committed: watch::Sender<i64>,
        damaged: CancellationToken,
        uplink_down: CancellationToken,
    ) -> Parts {
        Parts {
            queue,
            metrics,
            committed,
            live: queue::Live::shared(),
            damaged,
            uplink_down,
            status_online: Arc::new(Notify::new()),
            routing: watch::channel(routing(config, Mapper::new(config))).0,
            readings: None,
            pipeline: None,
            inputs: Vec::new(),
            link: None,
            house: None,
        }
    }

    /// A sender into the pipeline, starting a pipeline if none runs (its inputs all ended).
    pub(super) fn sender(&mut self) -> mpsc::Sender<Reading> {
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
            self.status_online.clone(),
        )));
        tx
    }

    /// Starts `input` in mapper slot `slot`.
    pub(super) fn start_input(&mut self, slot: usize, input: &InputConfig) {
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
            InputKind::Modbus(m) => {
                tokio::spawn(modbus::run(id, m.clone(), out, self.metrics.clone(), c))
            }
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
    pub(super) async fn start_link(&mut self, config: &Config) {
        let cancel = CancellationToken::new();
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        let parts = uplink::Parts {
            queue: self.queue.clone(),
            committed: self.committed.subscribe(),
            live: Some(self.live.clone()),
            metrics: self.metrics.clone(),
            cancel: cancel.clone(),
            damaged: self.damaged.clone(),
            status_online: Some(self.status_online.clone()),
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

    pub(super) fn start_housekeeping(&mut self, config: &Config) {
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
    /// Returns the pipeline's result if it ended with an error meanwhile.
    pub(super) async fn reload(&mut self, old: &Config, new: &Config) -> Option<PipelineResult> {
        // Inputs removed or changed stop first; their readings still on the way map with
        // their old slots.
        let kept = |i: &InputConfig| {
            new.inputs
                .iter()
                .any(|n| n.name == i.name && format!("{n:?}") == format!("{i:?}"))
        };
        self.stop_inputs(|i| !kept(i)).await;
        // The last input of the pipeline stopped: it commits what it holds and ends. A new
        // one, for the inputs about to start, must not number rows before that commit.
        if self.readings.as_ref().and_then(|w| w.upgrade()).is_none() {
            if let Some(p) = self.pipeline.take() {
                match p.await {
                    Ok(Ok(())) => {}
                    failed => return Some(failed),
                }
            }
        }
        let mut mapper = self.routing.borrow().mapper.clone();
        mapper.configure(new);
        let start: Vec<(usize, InputConfig)> = new
            .inputs
            .iter()
            .filter(|n| !self.inputs.iter().any(|i| i.config.name == n.name))
            .map(|n| (mapper.add(n), n.clone()))
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
        None
    }

    /// Stops everything in order: inputs, pipeline (which commits what it holds),
    /// housekeeping, uplink. `failed` is the pipeline's result if it ended with an error.
    pub(super) async fn stop(
        mut self,
        failed: Option<PipelineResult>,
        config: &Config,
    ) -> anyhow::Result<()> {
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
            held_back = Metrics::get(&metrics.held_back),
            device_failures = Metrics::get(&metrics.device_failures),
            proprietary_frames = Metrics::get(&metrics.proprietary_frames),
            unsupported_frames = Metrics::get(&metrics.unsupported_frames),
            limited_frames = Metrics::get(&metrics.limited_frames),
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
