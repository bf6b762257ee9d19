//! The uplink: owns the rumqttc client and event loop, publishes the oldest queued rows
//! within an in-flight window, and deletes a row only when its delivery is confirmed.
//!
//! Two tasks share a [`Flight`] (a std `Mutex`, never held across an `.await`):
//! - the **poller** drives `EventLoop::poll`, feeds its events to the `Flight`, publishes the
//!   birth message after every CONNACK, and on any error cleans rumqttc's state (its own
//!   replay would break the correlation), forgets the flight and backs off with jitter;
//! - the **pump** deletes confirmed rows in batches, reads the next rows after its cursor,
//!   and hands them to rumqttc while the window has room. After a reconnect (a new epoch)
//!   it reads again from the oldest row in the queue.
//!
//! **Architecture Invariant:** SQLite is the only retry buffer. rumqttc never replays a
//! publish on its own: its `pending` list is cleared on every error and sessions are clean.
//! A request is registered in the `Flight` under the same lock that hands it to rumqttc, so
//! the order of registrations is the order rumqttc sees.

pub mod flight;

use crate::config::{MqttConfig, Qos};
use crate::metrics::Metrics;
use crate::pipeline::{lock, SharedQueue};
use flight::{Flight, Item};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";

fn qos(q: Qos) -> QoS {
    match q {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    }
}

/// Shared between the poller, the pump and other publishers of control messages.
#[derive(Clone)]
pub struct Handle {
    client: AsyncClient,
    flight: Arc<Mutex<Flight>>,
    wake: Arc<Notify>,
}

impl Handle {
    fn flight(&self) -> std::sync::MutexGuard<'_, Flight> {
        self.flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a control message (health) if the link is up and the window has room.
    /// Returns whether it was handed over.
    pub fn publish_control(&self, topic: &str, q: Qos, retain: bool, payload: Vec<u8>) -> bool {
        let mut f = self.flight();
        if !f.can_send() {
            return false;
        }
        let ok = self
            .client
            .try_publish(topic, qos(q), retain, payload)
            .is_ok();
        if ok {
            f.on_sent(Item::Control { qos: q });
        }
        ok
    }
}

fn options(cfg: &MqttConfig) -> MqttOptions {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive);
    o.set_clean_session(true);
    // Above our window, so packet ids never collide (see flight.rs).
    o.set_inflight(cfg.inflight + 2);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_last_will(LastWill::new(
        &cfg.availability_topic,
        OFFLINE,
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &cfg.username {
        o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    o
}

/// Runs the uplink until `cancel` fires; then publishes `offline`, disconnects, and deletes
/// what was confirmed. `committed` carries the last committed row id.
pub async fn run(
    cfg: MqttConfig,
    queue: SharedQueue,
    committed: watch::Receiver<i64>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    ready: tokio::sync::oneshot::Sender<Handle>,
) {
    let (client, mut eventloop) = AsyncClient::new(options(&cfg), usize::from(cfg.inflight) + 16);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_connection_timeout(cfg.connect_timeout.as_secs().max(1));
    eventloop.set_network_options(net);
    let handle = Handle {
        client,
        flight: Arc::new(Mutex::new(Flight::new(cfg.inflight))),
        wake: Arc::new(Notify::new()),
    };
    let _ = ready.send(handle.clone()); // the caller may not want it
    let pump_cancel = cancel.child_token();
    let pump = tokio::spawn(pump(
        handle.clone(),
        queue.clone(),
        committed,
        metrics.clone(),
        pump_cancel.clone(),
    ));

    poll_until_cancelled(&cfg, &handle, &mut eventloop, &metrics, &cancel).await;
    pump_cancel.cancel();
    let _ = pump.await;
    say_goodbye(&cfg, &handle, &mut eventloop).await;

    let acked = std::mem::take(&mut handle.flight().acked);
    let n = acked.len();
    let q = queue.clone();
    match tokio::task::spawn_blocking(move || lock(&q).ack(&acked)).await {
        Ok(Ok(_)) => debug!(rows = n, "Deleted the last confirmed rows."),
        Ok(Err(e)) => {
            warn!(error = %e, "Could not delete confirmed rows at shutdown; they will be sent again.")
        }
        Err(e) => warn!(error = %e, "Delete task failed at shutdown."),
    }
    metrics
        .online
        .store(false, std::sync::atomic::Ordering::Relaxed);
}

/// Forgets the connection: rumqttc's state and requests, and the flight.
fn forget(eventloop: &mut EventLoop, f: &mut Flight) {
    eventloop.clean();
    eventloop.pending.clear();
    f.reset();
}

async fn poll_until_cancelled(
    cfg: &MqttConfig,
    handle: &Handle,
    eventloop: &mut EventLoop,
    metrics: &Metrics,
    cancel: &CancellationToken,
) {
    let mut backoff = cfg.backoff_min;
    let mut was_online = false;
    loop {
        let event = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            e = eventloop.poll() => e,
        };
        let now = Instant::now();
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                {
                    let mut f = handle.flight();
                    f.online = true;
                    let birth = handle.client.try_publish(
                        &cfg.availability_topic,
                        QoS::AtLeastOnce,
                        true,
                        ONLINE,
                    );
                    if birth.is_ok() {
                        f.on_sent(Item::Control {
                            qos: Qos::AtLeastOnce,
                        });
                    }
                }
                backoff = cfg.backoff_min;
                was_online = true;
                metrics
                    .online
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Metrics::add(&metrics.connects, 1);
                info!(broker = %format!("{}:{}", cfg.host, cfg.port), "Connected to the broker.");
                handle.wake.notify_one();
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut f = handle.flight();
                if let Err(e) = f.on_publish(pkid, now) {
                    error!(error = %e, "Lost track of packet ids; reconnecting to resend from the queue.");
                    forget(eventloop, &mut f);
                    continue;
                }
                Metrics::add(&metrics.published, 1);
                if !f.acked.is_empty() {
                    handle.wake.notify_one(); // QoS 0 rows confirmed
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let mut f = handle.flight();
                if f.on_puback(ack.pkid).is_some() {
                    Metrics::add(&metrics.acked, 1);
                    Metrics::add(&metrics.progress, 1);
                }
                drop(f);
                handle.wake.notify_one();
            }
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                error!(
                    pkid,
                    "Packet id collision in rumqttc; reconnecting to resend from the queue."
                );
                forget(eventloop, &mut handle.flight());
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                forget(eventloop, &mut handle.flight());
                metrics
                    .online
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                if was_online {
                    warn!(error = %e, "Connection to the broker lost; queueing on disk.");
                    was_online = false;
                } else {
                    debug!(error = %e, retry_in = ?backoff, "Cannot reach the broker.");
                }
                let pause = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(cfg.backoff_max);
                continue;
            }
        }
        let mut f = handle.flight();
        if f.oldest_wait()
            .is_some_and(|t| now.duration_since(t) > cfg.ack_timeout)
        {
            warn!(timeout = ?cfg.ack_timeout, "No PUBACK within the ack timeout; reconnecting to resend.");
            forget(eventloop, &mut f);
            metrics
                .online
                .store(false, std::sync::atomic::Ordering::Relaxed);
            was_online = false;
        }
    }
}

/// A clean goodbye: `offline` (retained) on the availability topic, then DISCONNECT. The
/// will covers the cases where this cannot happen. Bounded to two seconds.
async fn say_goodbye(cfg: &MqttConfig, handle: &Handle, eventloop: &mut EventLoop) {
    if !handle.flight().online {
        return;
    }
    let bye = async {
        handle
            .client
            .try_publish(&cfg.availability_topic, QoS::AtLeastOnce, true, OFFLINE)
            .ok()?;
        loop {
            match eventloop.poll().await.ok()? {
                Event::Incoming(Packet::PubAck(_)) => break,
                _ => continue,
            }
        }
        handle.client.try_disconnect().ok()?;
        loop {
            if let Event::Outgoing(Outgoing::Disconnect) = eventloop.poll().await.ok()? {
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

/// Deletes confirmed rows and hands new rows to rumqttc while the window has room.
///
/// Rows are read ahead into `ahead` (up to two windows), so SQLite is read in bulk rather
/// than once per acknowledgement, and deletes are batched while rows wait to be sent.
async fn pump(
    handle: Handle,
    queue: SharedQueue,
    mut committed: watch::Receiver<i64>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let window = handle.flight().window() as usize;
    let read_ahead = 2 * window;
    // Confirmed rows are deleted in batches of a window while there is other work. A crash
    // can therefore resend at most: the window in flight, the batch being deleted, and the
    // acks gathered meanwhile: three windows.
    let delete_batch = window;
    let mut ahead: std::collections::VecDeque<crate::queue::Stored> = Default::default();
    let mut cursor = 0i64; // the last id read into `ahead`
    let mut epoch = u64::MAX;
    let mut pipeline_open = true;
    loop {
        // 1. Hand over what fits, and see what is left to do.
        let (acked, read, want, last) = {
            let mut f = handle.flight();
            if f.epoch != epoch {
                // A new connection: every row left in the queue is unconfirmed.
                epoch = f.epoch;
                ahead.clear();
                cursor = 0;
            }
            while f.can_send() {
                let Some(row) = ahead.pop_front() else { break };
                let (id, q) = (row.id, row.qos);
                if let Err(e) =
                    handle
                        .client
                        .try_publish(row.topic, qos(q), row.retain, row.payload)
                {
                    debug!(error = %e, "rumqttc's request channel is full; will retry.");
                    break;
                }
                f.on_sent(Item::Row { id, qos: q });
            }
            let last = *committed.borrow_and_update();
            let want = read_ahead.saturating_sub(ahead.len());
            let read = want > 0 && cursor < last;
            // Confirmed rows must be gone before the queue is read again from the start;
            // otherwise they are deleted in batches, or when there is nothing else to do.
            let idle = ahead.is_empty() && !read;
            let delete_now = cursor == 0 || f.acked.len() >= delete_batch || idle;
            let acked = if delete_now {
                std::mem::take(&mut f.acked)
            } else {
                Vec::new()
            };
            (acked, read, want, last)
        };
        if acked.is_empty() && !read {
            tokio::select! {
                _ = handle.wake.notified() => {}
                r = committed.changed(), if pipeline_open => pipeline_open = r.is_ok(),
                _ = cancel.cancelled() => return,
            }
            continue;
        }
        // 2. Delete what was confirmed, then read ahead, in one trip to the blocking pool.
        let q = queue.clone();
        let n_acked = acked.len();
        let from = cursor;
        let result = tokio::task::spawn_blocking(move || {
            let mut q = lock(&q);
            if let Err(e) = q.ack(&acked) {
                return (Err(e), acked);
            }
            let rows = if read {
                q.fetch_after(from, want)
            } else {
                Ok(Vec::new())
            };
            (rows, Vec::new())
        })
        .await;
        let rows = match result {
            Ok((Ok(rows), _)) => rows,
            Ok((Err(e), unsaved)) => {
                error!(error = %e, "Queue read or delete failed; retrying in 1s.");
                handle.flight().acked.extend(unsaved);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = cancel.cancelled() => return,
                }
                continue;
            }
            Err(e) => {
                error!(error = %e, "Queue task failed; retrying in 1s.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if n_acked > 0 {
            Metrics::add(&metrics.progress, 1);
        }
        if read {
            // Rows read under an older epoch are dropped: the next round reads from 0.
            cursor = rows.last().map_or(cursor.max(last), |r| r.id);
            ahead.extend(rows);
        }
    }
}
