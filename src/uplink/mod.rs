//! The uplink: owns the MQTT client (rumqttc, MQTT 3.1.1 or 5), publishes the oldest
//! queued rows within an in-flight window, alone or in batches, and confirms a row only
//! when its delivery is confirmed: the queue then releases or deletes it.
//!
//! Two tasks share a [`Session`] (a std `Mutex`, never held across an `.await`):
//! - the **poller** ([`poller`]) drives the event loop, feeds its events to the session,
//!   publishes the birth message after every CONNACK, and on any error forgets the
//!   connection and backs off with jitter ([`retry`]); with `connection = "on_demand"` it
//!   stays off the air between windows;
//! - the **pump** ([`pump`]) reads rows ahead ([`cursors`], [`read_ahead`], [`store`]),
//!   groups them into messages ([`outbound`], [`batch`]), paces them ([`pacer`]), hands
//!   them to the client while the window has room ([`session`], [`flight`]), has confirmed
//!   rows released or deleted and dead letters buried ([`dead`]).
//!
//! Both see the client through its face ([`face`]): rumqttc in [`link`], a scripted fake in
//! the tests.
//!
//! **Architecture Invariant:** SQLite is the only retry buffer. rumqttc never replays a
//! publish on its own: its `pending` list is cleared on every error and sessions are clean.
//! A request is registered in the session under the same lock that hands it to rumqttc, so
//! the order of registrations is the order rumqttc sees.

pub mod batch;
mod cursors;
mod dead;
mod face;
pub mod flight;
pub mod link;
mod outbound;
mod pacer;
mod poller;
mod pump;
mod read_ahead;
mod retry;
mod session;
mod store;
mod strikes;

#[cfg(test)]
mod tests;

use crate::config::{MqttConfig, Qos};
use crate::metrics::Metrics;
use crate::queue::{lock, Live, SharedQueue};
use face::{Events, LinkEvent, Outbound, Publisher};
use flight::Item;
use session::Session;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

/// Shared between the poller, the pump and other publishers of control messages.
#[derive(Clone)]
pub struct Handle {
    client: Arc<dyn Publisher>,
    session: Arc<Mutex<Session>>,
    wake: Arc<Notify>,
}

impl Handle {
    fn session(&self) -> MutexGuard<'_, Session> {
        locked(&self.session)
    }

    /// Publishes a control message (health) if the link is up and the window has room.
    /// Returns whether it was handed over.
    pub fn publish_control(&self, topic: &str, q: Qos, retain: bool, payload: Vec<u8>) -> bool {
        let mut f = self.session();
        self.control_locked(&mut f, topic, q, retain, payload)
    }

    fn control_locked(
        &self,
        f: &mut Session,
        topic: &str,
        qos: Qos,
        retain: bool,
        payload: Vec<u8>,
    ) -> bool {
        if !f.can_send() {
            return false;
        }
        let ok = self
            .client
            .try_publish(Outbound {
                topic: topic.to_string(),
                qos,
                retain,
                payload,
                ..Default::default()
            })
            .is_ok();
        if ok {
            f.on_sent(Item::Control { qos });
        }
        ok
    }
}

/// Locks the session (a panic elsewhere leaves it usable: every change is one step).
fn locked(session: &Mutex<Session>) -> MutexGuard<'_, Session> {
    session.lock().unwrap_or_else(|p| p.into_inner())
}

/// The uplink's clock: tokio's, so that tests can pause and advance it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Runs the uplink until `parts.cancel` fires; then publishes the will payload,
/// disconnects, and releases or deletes what was confirmed.
pub async fn run(cfg: MqttConfig, parts: Parts, ready: tokio::sync::oneshot::Sender<Handle>) {
    let (client, eventloop) = link::connect(&cfg);
    run_on(cfg, Arc::new(client), eventloop, parts, ready).await
}

/// What the uplink works with besides its client.
pub struct Parts {
    pub queue: SharedQueue,
    /// The last committed row id.
    pub committed: watch::Receiver<i64>,
    /// Messages offered before their commit (see `queue::Live`).
    pub live: Option<Arc<Live>>,
    pub metrics: Arc<Metrics>,
    pub cancel: CancellationToken,
    /// Cancelled by whoever finds the queue file damaged.
    pub damaged: CancellationToken,
    /// Told when Home Assistant says "online" on `status_topic` (the poller's alone).
    pub status_online: Option<Arc<Notify>>,
}

/// [`run`] over any client behind the face.
async fn run_on<E: Events>(
    cfg: MqttConfig,
    client: Arc<dyn Publisher>,
    mut events: E,
    parts: Parts,
    ready: tokio::sync::oneshot::Sender<Handle>,
) {
    let Parts {
        queue,
        committed,
        live,
        metrics,
        cancel,
        damaged,
        status_online,
    } = parts;
    let cfg = Arc::new(cfg);
    let handle = Handle {
        client,
        session: Arc::new(Mutex::new(Session::new(cfg.inflight))),
        wake: Arc::new(Notify::new()),
    };
    let _ = ready.send(handle.clone()); // the caller may not want it
    let pump_cancel = cancel.child_token();
    let mut pump = tokio::spawn(pump::pump(
        cfg.clone(),
        handle.clone(),
        Parts {
            queue: queue.clone(),
            committed,
            live,
            metrics: metrics.clone(),
            cancel: pump_cancel.clone(),
            damaged: damaged.clone(),
            status_online: None,
        },
    ));

    let pump_ended = tokio::select! {
        _ = poller::poll_until_cancelled(&cfg, &handle, &mut events, &metrics, status_online, &cancel) => None,
        r = &mut pump => Some(r),
    };
    match pump_ended {
        None => {
            pump_cancel.cancel();
            let _ = pump.await;
        }
        // The pump ends only when cancelled; ended otherwise (a panic), nothing would be
        // sent again: the uplink returns, and the gateway stops with an error.
        Some(r) if !cancel.is_cancelled() => {
            error!(error = ?r.err(), "The uplink's pump stopped; nothing can be sent.");
            metrics.set_online(false);
            return;
        }
        Some(_) => {}
    }
    say_goodbye(&cfg, &handle, &mut events).await;

    let confirmed = std::mem::take(&mut handle.session().confirmed);
    let n = confirmed.len();
    let q = queue.clone();
    match crate::queue::threads::spawn(move || lock(&q).confirm_read(&confirmed)).await {
        Ok(Ok(_)) => debug!(rows = n, "Released or deleted the last confirmed rows."),
        Ok(Err(e)) => {
            warn!(error = %e, "Could not delete confirmed rows at shutdown; they will be sent again.");
            crate::queue::stop_if_damaged(&e, &damaged);
        }
        Err(e) => warn!(error = %e, "Delete task failed at shutdown."),
    }
    metrics.set_online(false);
}

/// A clean goodbye: the will payload (retained) on the availability topic, then DISCONNECT.
/// The will covers the cases where this cannot happen. Bounded to two seconds.
async fn say_goodbye<E: Events>(cfg: &MqttConfig, handle: &Handle, events: &mut E) {
    if !handle.session().online {
        return;
    }
    let bye = async {
        handle
            .client
            .try_publish(Outbound {
                topic: cfg.availability_topic.clone(),
                qos: Qos::AtLeastOnce,
                retain: true,
                payload: cfg.will_payload.clone().into_bytes(),
                ..Default::default()
            })
            .ok()?;
        loop {
            if let LinkEvent::PubAck { .. } = events.poll().await.ok()? {
                break;
            }
        }
        handle.client.try_disconnect().ok()?;
        loop {
            if let LinkEvent::Disconnected = events.poll().await.ok()? {
                return Some(());
            }
        }
    };
    // Acks of rows still in flight may arrive before ours; they are not needed: those rows
    // stay in the queue and are sent again next time.
    if tokio::time::timeout(Duration::from_secs(2), bye)
        .await
        .is_err()
    {
        debug!("Broker did not confirm the goodbye in time.");
    }
}
