//! The uplink: owns the MQTT client and event loop (rumqttc, MQTT 3.1.1 or 5), publishes the
//! oldest queued rows within an in-flight window, alone or in batches, and deletes a row
//! only when its delivery is confirmed.
//!
//! Two tasks share a [`Flight`] (a std `Mutex`, never held across an `.await`):
//! - the **poller** drives the event loop, feeds its events to the `Flight`, publishes the
//!   birth message after every CONNACK, and on any error cleans rumqttc's state (its own
//!   replay would break the correlation), forgets the flight and backs off with jitter.
//!   With `connection = "on_demand"` it stays off the air between windows;
//! - the **pump** deletes confirmed rows in batches, reads the next rows after its cursors,
//!   groups them into messages ([`ahead`], [`batch`]), paces them (`replay_rate`) and hands
//!   them to rumqttc while the window has room. After a reconnect (a new epoch) it reads
//!   again from the oldest row in the queue.
//!
//! **Architecture Invariant:** SQLite is the only retry buffer. rumqttc never replays a
//! publish on its own: its `pending` list is cleared on every error and sessions are clean.
//! A request is registered in the `Flight` under the same lock that hands it to rumqttc, so
//! the order of registrations is the order rumqttc sees.

pub mod ahead;
pub mod batch;
pub mod flight;
pub mod link;
pub mod tls;

use crate::config::{Connection, MqttConfig, Protocol, Qos};
use crate::metrics::Metrics;
use crate::pipeline::{lock, SharedQueue};
use crate::queue::{Burial, Confirmed, Fetched, QueueError, Reader};
use crate::trips::{Panicked, Trip};
use ahead::{Ahead, Waiting};
use flight::{Condemned, Flight, Item};
use link::{Client, EventLoop, LinkEvent, Outbound, MAX_TOPIC};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Shared between the poller, the pump and other publishers of control messages.
#[derive(Clone)]
pub struct Handle {
    client: Client,
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
        self.control_locked(&mut f, topic, q, retain, payload)
    }

    fn control_locked(
        &self,
        f: &mut Flight,
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

/// Runs the uplink until `cancel` fires; then publishes the will payload, disconnects, and
/// deletes what was confirmed. `committed` carries the last committed row id.
pub async fn run(
    cfg: MqttConfig,
    queue: SharedQueue,
    committed: watch::Receiver<i64>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    damaged: CancellationToken,
    ready: tokio::sync::oneshot::Sender<Handle>,
) {
    let cfg = Arc::new(cfg);
    let (client, mut eventloop) = link::connect(&cfg);
    let handle = Handle {
        client,
        flight: Arc::new(Mutex::new(Flight::new(cfg.inflight))),
        wake: Arc::new(Notify::new()),
    };
    let _ = ready.send(handle.clone()); // the caller may not want it
    let pump_cancel = cancel.child_token();
    let mut pump = tokio::spawn(pump(
        cfg.clone(),
        handle.clone(),
        queue.clone(),
        committed,
        metrics.clone(),
        pump_cancel.clone(),
        damaged.clone(),
    ));

    let pump_ended = tokio::select! {
        _ = poll_until_cancelled(&cfg, &handle, &mut eventloop, &metrics, &cancel) => None,
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
            metrics.online.store(false, Relaxed);
            return;
        }
        Some(_) => {}
    }
    say_goodbye(&cfg, &handle, &mut eventloop).await;

    let acked = std::mem::take(&mut handle.flight().acked);
    let n = acked.len();
    let q = queue.clone();
    match crate::trips::spawn(move || lock(&q).ack_known(&acked)).await {
        Ok(Ok(_)) => debug!(rows = n, "Deleted the last confirmed rows."),
        Ok(Err(e)) => {
            warn!(error = %e, "Could not delete confirmed rows at shutdown; they will be sent again.");
            crate::gateway::stop_if_damaged(&e, &damaged);
        }
        Err(e) => warn!(error = %e, "Delete task failed at shutdown."),
    }
    metrics.online.store(false, Relaxed);
}

/// Forgets the connection: rumqttc's state and requests, and the flight.
fn forget(eventloop: &mut EventLoop, f: &mut Flight) {
    eventloop.forget();
    f.reset();
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
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
    let mut last_error: Option<String> = None;
    // The backoff goes back to its minimum only once a connection has proved stable: up for
    // a keep-alive interval and at least one PUBACK. A CONNACK alone does not reset it, or a
    // broker that accepts and then drops the gateway would see a reconnect storm.
    let mut trial: Option<Trial> = None;
    // Drops of connections that had not proved stable, in this episode.
    let mut flaps = 0u32;
    // on_demand: when the current window started, and until when the link sleeps.
    let mut window_start = Instant::now();
    let mut asleep_until: Option<Instant> = None;
    loop {
        metrics.poller_beat.store(crate::service::now_ms(), Relaxed);
        if let Some(until) = asleep_until.take() {
            // Off the air: no socket, no keep-alive. The watchdog still sees us alive.
            loop {
                metrics.poller_beat.store(crate::service::now_ms(), Relaxed);
                let step = until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1));
                if step.is_zero() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(step) => {}
                    _ = cancel.cancelled() => return,
                }
            }
            window_start = Instant::now();
        }
        let event = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            e = eventloop.poll() => e,
        };
        let now = Instant::now();
        match event {
            Ok(LinkEvent::ConnAck {
                receive_max,
                alias_max,
                max_packet,
            }) => {
                {
                    let mut f = handle.flight();
                    // rumqttc's own limit is the smaller of ours + 2 and the broker's
                    // receive maximum; the window stays 2 below it (see flight.rs).
                    let window = match receive_max {
                        Some(rm) => cfg.inflight.min(rm.saturating_sub(2)).max(1),
                        None => cfg.inflight,
                    };
                    f.set_window(window);
                    f.alias_max = alias_max;
                    f.max_packet = max_packet
                        .map_or(usize::MAX, |m| m as usize)
                        .min(cfg.max_message_size)
                        .min(f.learned_max.unwrap_or(usize::MAX))
                        .min(link::MAX_PACKET);
                    f.online = true;
                    // Up at the first attempt after a drop: the broker chose to drop us.
                    if let Some(id) = f.confirm_strike() {
                        debug!(
                            seq = id,
                            "The broker dropped the connection with this message alone in flight."
                        );
                    }
                    if let Connection::OnDemand { flush_every } = cfg.connection {
                        f.next_window = Some(SystemTime::now() + flush_every);
                    }
                    let birth = cfg.birth_payload.clone().into_bytes();
                    handle.control_locked(
                        &mut f,
                        &cfg.availability_topic,
                        Qos::AtLeastOnce,
                        true,
                        birth,
                    );
                }
                trial = Some(Trial {
                    since: now,
                    delivered: false,
                });
                was_online = true;
                last_error = None;
                metrics.online.store(true, Relaxed);
                Metrics::add(&metrics.connects, 1);
                if flaps < 2 {
                    info!(broker = %format!("{}:{}", cfg.host, cfg.port), "Connected to the broker.");
                } else {
                    debug!(broker = %format!("{}:{}", cfg.host, cfg.port), "Connected to the broker.");
                }
                handle.wake.notify_one();
            }
            Ok(LinkEvent::Published(pkid)) => {
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
            Ok(LinkEvent::PubAck {
                pkid,
                refused: None,
            }) => {
                let mut f = handle.flight();
                if f.on_puback(pkid).is_some_and(|rows| rows > 0) {
                    Metrics::add(&metrics.acked, 1);
                    Metrics::add(&metrics.progress, 1);
                    // A row delivered (the birth message alone proves little).
                    if let Some(t) = trial.as_mut() {
                        t.delivered = true;
                    }
                }
                drop(f);
                handle.wake.notify_one();
            }
            Ok(LinkEvent::PubAck {
                pkid,
                refused: Some(reason),
            }) if reason.is_permanent() => {
                let mut f = handle.flight();
                let batch = f.rows_of(pkid).filter(|r| r.len() > 1).map(|r| r.bytes());
                if let Some(bytes) = batch.filter(|_| reason.code == 0x95) {
                    // A batch too large for a broker that did not say its limit: cut
                    // batches to half of it and send the rows again. Not a dead letter.
                    let limit = f.learn_limit(bytes);
                    warn!(pkid, reason = %reason, max_packet = limit, "Broker refused a batch as too large; sending it again in smaller parts.");
                    forget(eventloop, &mut f);
                    drop(f);
                    metrics.online.store(false, Relaxed);
                    was_online = false;
                    trial = None;
                    handle.wake.notify_one();
                    continue;
                }
                // Sending it again cannot succeed: its rows become dead letters and
                // nothing behind them waits. The connection itself is fine.
                let rows = f.on_refused(pkid, format!("the broker refused it: {reason}"));
                drop(f);
                if rows == Some(0) {
                    warn!(pkid, reason = %reason, "Broker refused a message of the gateway's own.");
                }
                Metrics::add(&metrics.progress, 1);
                handle.wake.notify_one();
            }
            Ok(LinkEvent::PubAck {
                pkid,
                refused: Some(reason),
            }) => {
                // A refusal that may pass (quota exceeded, unspecified): the message stays
                // in the queue. Reconnect after a pause and try again.
                warn!(pkid, reason = %reason, "Broker refused a message for now; it stays queued, retrying after a pause.");
                forget(eventloop, &mut handle.flight());
                metrics.online.store(false, Relaxed);
                was_online = false;
                if pause(&mut backoff, cfg, cancel).await {
                    return;
                }
                continue;
            }
            Ok(LinkEvent::Collision(pkid)) => {
                error!(
                    pkid,
                    "Packet id collision in rumqttc; reconnecting to resend from the queue."
                );
                forget(eventloop, &mut handle.flight());
                continue;
            }
            Ok(LinkEvent::Disconnected) => {
                // The pump ended an on_demand window: everything was sent and confirmed.
                let mut f = handle.flight();
                forget(eventloop, &mut f);
                drop(f);
                metrics.online.store(false, Relaxed);
                was_online = false;
                // A planned end of a window that delivered proves the link as well.
                if trial.take().is_some_and(|t| t.delivered) {
                    backoff = cfg.backoff_min;
                    flaps = 0;
                }
                if let Connection::OnDemand { flush_every } = cfg.connection {
                    let next = (window_start + flush_every).max(Instant::now());
                    let wall = SystemTime::now() + next.saturating_duration_since(Instant::now());
                    info!(next = %rfc3339(wall), "Backlog sent; off the air until the next window.");
                    asleep_until = Some(next);
                }
                handle.wake.notify_one();
                continue;
            }
            Ok(LinkEvent::Other) => {}
            Err(e) => {
                {
                    let mut f = handle.flight();
                    // An MQTT 3.1.1 broker that closes the connection while one message is
                    // the oldest in flight, again and again, gets it alone, then gives it
                    // up (flight.rs). MQTT 5 brokers say why instead.
                    if f.online && e.closed_by_peer && cfg.protocol == Protocol::V311 {
                        f.note_drop(now);
                    } else if !f.online {
                        f.forgive_drop();
                    }
                    // A refusal rumqttc could not read: as the same refusal read (above).
                    if let (Some(code), Some(rows)) = (e.unread_refusal, f.oldest_rows()) {
                        if code == 0x95 && rows.len() > 1 {
                            let limit = f.learn_limit(rows.bytes());
                            warn!(reason = code, max_packet = limit, "Broker refused a batch as too large; sending it again in smaller parts.");
                        } else {
                            f.condemn(
                                rows.ids().to_vec(),
                                format!("the broker refused it: 0x{code:02x}"),
                            );
                        }
                    }
                    forget(eventloop, &mut f);
                }
                handle.wake.notify_one();
                metrics.online.store(false, Relaxed);
                let text = e.text;
                // The same failure again (times and counts in its text aside) is logged once.
                let same: String = text.chars().filter(|c| !c.is_ascii_digit()).collect();
                let unproven = trial.take().is_some();
                if unproven {
                    flaps += 1;
                    Metrics::add(&metrics.flaps, 1);
                }
                if was_online && unproven && flaps >= 2 {
                    if flaps == 2 {
                        warn!(error = %text, retry_in = ?backoff, "The broker accepts the connection and then drops it; backing off longer each time until a connection holds.");
                    } else {
                        debug!(error = %text, flaps, "Connection dropped again before it proved stable.");
                    }
                    was_online = false;
                } else if was_online {
                    warn!(error = %text, "Connection to the broker lost; queueing on disk.");
                    was_online = false;
                } else if last_error.as_deref() == Some(same.as_str()) {
                    debug!(error = %text, retry_in = ?backoff, "Cannot reach the broker.");
                } else if e.needs_operator {
                    // A certificate that does not verify, or credentials the broker refuses,
                    // will not fix themselves: an operator must act.
                    error!(error = %text, "Broker refused the connection (TLS or credentials); retrying with backoff.");
                } else {
                    warn!(error = %text, "Cannot reach the broker; queueing on disk and retrying.");
                }
                last_error = Some(same);
                if pause(&mut backoff, cfg, cancel).await {
                    return;
                }
                continue;
            }
        }
        if let Some(t) =
            trial.filter(|t| t.delivered && now.duration_since(t.since) >= cfg.keep_alive)
        {
            trial = None;
            backoff = cfg.backoff_min;
            if flaps > 1 {
                info!(drops = flaps, up_for = ?now.duration_since(t.since), "Connection to the broker is stable again.");
            }
            flaps = 0;
        }
        let mut f = handle.flight();
        if f.oldest_wait()
            .is_some_and(|t| now.duration_since(t) > cfg.ack_timeout)
        {
            warn!(timeout = ?cfg.ack_timeout, "No PUBACK within the ack timeout; reconnecting to resend.");
            forget(eventloop, &mut f);
            metrics.online.store(false, Relaxed);
            was_online = false;
        }
    }
}

/// A connection not yet proved stable: when it came up, and whether a PUBACK arrived.
#[derive(Debug, Clone, Copy)]
struct Trial {
    since: Instant,
    delivered: bool,
}

/// Waits out the backoff (with jitter) and doubles it. Returns true when cancelled.
async fn pause(backoff: &mut Duration, cfg: &MqttConfig, cancel: &CancellationToken) -> bool {
    let wait = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
    *backoff = (*backoff * 2).min(cfg.backoff_max);
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = cancel.cancelled() => true,
    }
}

/// A clean goodbye: the will payload (retained) on the availability topic, then DISCONNECT.
/// The will covers the cases where this cannot happen. Bounded to two seconds.
async fn say_goodbye(cfg: &MqttConfig, handle: &Handle, eventloop: &mut EventLoop) {
    if !handle.flight().online {
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
            if let LinkEvent::PubAck { .. } = eventloop.poll().await.ok()? {
                break;
            }
        }
        handle.client.try_disconnect().ok()?;
        loop {
            if let LinkEvent::Disconnected = eventloop.poll().await.ok()? {
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

/// Paces messages at `rate` per second, with a burst of one second's worth.
struct Pacer {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        Pacer {
            rate,
            tokens: rate.max(1.0),
            last: Instant::now(),
        }
    }

    /// Takes a token if one is there; otherwise says when the next one comes.
    fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let burst = self.rate.max(1.0);
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Row ids as compact runs: `12-20,25,31-40`.
fn runs(ids: &[i64]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j == i {
            out.push_str(&ids[i].to_string());
        } else {
            out.push_str(&format!("{}-{}", ids[i], ids[j]));
        }
        i = j + 1;
    }
    out
}

/// The message for `rows` (one row, or a batch of one topic), and what it stands for.
/// The topic alias is set later ([`fits`] first: an alias must not be taken for a message
/// that is not sent).
fn outbound(cfg: &MqttConfig, rows: &[Waiting], now_ms: i64) -> (Outbound, Item) {
    let first = &rows[0].row;
    let confirmed: Confirmed = rows.iter().map(|w| (w.row.id, w.row.bytes())).collect();
    let qos = if rows.iter().any(|w| w.row.qos == Qos::AtLeastOnce) {
        Qos::AtLeastOnce
    } else {
        Qos::AtMostOnce
    };
    let v5 = cfg.protocol == Protocol::V5;
    let mut out = Outbound {
        qos,
        retain: rows.iter().any(|w| w.row.retain),
        ..Default::default()
    };
    match &cfg.batch {
        None => {
            out.topic = first.topic.to_string();
            out.payload = rows[0].row.payload.to_vec();
        }
        Some(b) => {
            out.payload = batch::encode(b, rows.iter().map(|w| w.row.payload.as_ref()));
            if v5 {
                out.topic = first.topic.to_string();
                out.content_type = Some(b.suffix());
            } else {
                out.topic = format!("{}/{}", first.topic, b.suffix());
            }
        }
    }
    if v5 {
        out.seq = Some(runs(confirmed.ids()));
        // A reading stamped before the clock synchronised has no age to count down.
        let known = rows.iter().all(|w| !w.row.age_unknown);
        if let Some(max_age) = cfg.max_age.filter(|_| known) {
            // The broker may drop the message once its oldest reading is older than
            // max_age, as the queue itself would.
            let age = Duration::from_millis(now_ms.saturating_sub(first.created_ms).max(0) as u64);
            out.expiry_s = Some(
                max_age
                    .saturating_sub(age)
                    .as_secs()
                    .clamp(1, u32::MAX as u64) as u32,
            );
        }
    }
    (
        out,
        Item::Rows {
            rows: confirmed,
            qos,
        },
    )
}

/// Why `out` can never be sent as it is on this connection, if it cannot. The size is
/// checked as if the topic alias were set but the topic sent along (the most it can be).
fn unsendable(out: &Outbound, v5: bool, max_packet: usize) -> Option<String> {
    if out.topic.len() > MAX_TOPIC {
        return Some(format!(
            "its topic has {} bytes; MQTT carries at most {MAX_TOPIC}",
            out.topic.len()
        ));
    }
    let size = out.packet_size(v5) + if v5 { 3 } else { 0 };
    (size > max_packet).then(|| {
        format!("its packet has {size} bytes; the broker or [mqtt] max_message_size allows {max_packet}")
    })
}

/// Where the pump stands in an on_demand window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    SleepSent,
    Disconnecting,
}

/// The most rows one read takes. Each read is a round trip to a SQLite thread and back,
/// and the pump waits for it once the rows read before are sent: with released rows
/// instead of deletes, reads of 4,096 replayed a 1M backlog 1.1 to 1.2 times as fast as
/// reads of 1,024 (alternating runs). One read still holds under a MiB of payloads.
const READ_CHUNK: usize = 4096;

/// The most confirmed rows one delete takes. Every page a delete touches stays in SQLite's
/// cache until it commits: unbounded deletes held 4 MB of pages at the peak of a 1M-row
/// replay (heaptrack). From about 1,000 rows on, larger deletes cost no less per row.
const DELETE_CHUNK: usize = 4096;

/// A delete of confirmed rows (or a reclaim of released ones) on a SQLite thread: its
/// result, the rows (handed back to the flight if the delete failed), and whether released
/// rows are left to reclaim.
type Deleting = Trip<(Result<usize, QueueError>, Confirmed, bool)>;

/// Dead letters are logged one by one up to [`DeadLog::PER_MINUTE`] a minute, then counted
/// and summed up: a denied topic at 10 readings a second must not flood the journal.
#[derive(Debug, Default)]
struct DeadLog {
    since: Option<Instant>,
    logged: u32,
    quiet: u64,
    /// Failed burials in a row.
    failures: u32,
}

impl DeadLog {
    const PER_MINUTE: u32 = 10;

    /// Whether to log this one; says how many went unlogged in the last minute.
    fn log_one(&mut self, now: Instant) -> bool {
        if self
            .since
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            if self.quiet > 0 {
                error!(count = self.quiet, "More messages moved to the dead letters in the last minute (sensorgate queue dead list).");
            }
            *self = DeadLog {
                since: Some(now),
                failures: self.failures,
                ..DeadLog::default()
            };
        }
        self.logged += 1;
        if self.logged > Self::PER_MINUTE {
            self.quiet += 1;
        }
        self.logged <= Self::PER_MINUTE
    }
}

/// A read ahead on a SQLite thread (on the pump's own connection when it has one).
type Reading = Trip<(Option<Reader>, Result<Fetched, QueueError>)>;

/// Dead letters being moved out of the outbox on a SQLite thread: what was buried, or the
/// error and the rows still to bury.
type Burying = Trip<Result<Vec<(Condemned, Burial)>, (QueueError, Vec<Condemned>)>>;

/// What a read was for: the fresh rows or the backlog, up to which id, how many rows were
/// asked for, and under which connection.
struct ReadPlan {
    fresh: bool,
    after: i64,
    end: i64,
    want: usize,
    epoch: u64,
}

/// Waits for a task that may not be there (then forever).
async fn finished<T, P>(task: &mut Option<(Trip<T>, P)>) -> Result<T, Panicked> {
    match task {
        Some((t, _)) => t.await,
        None => std::future::pending().await,
    }
}

/// Deletes confirmed rows and hands new messages to rumqttc while the window has room.
///
/// Rows are read ahead (a window's worth of messages, at least two reads' worth of rows), so
/// SQLite is read in bulk rather than once per acknowledgement, and the next read is under
/// way while the rows of the last one are sent. Deleting and reading are
/// separate trips to the SQLite threads that run side by side, at most one of each: the read
/// on a read-only connection of its own (WAL lets it read while the writer deletes), the
/// delete on the shared queue. While a delete runs, confirmations gather for the next one;
/// when a window's worth waits, nothing more is sent. With `live_first`, rows committed after
/// the connection came up (`fresh`) go before the backlog (`old`).
async fn pump(
    cfg: Arc<MqttConfig>,
    handle: Handle,
    queue: SharedQueue,
    mut committed: watch::Receiver<i64>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    damaged: CancellationToken,
) {
    let on_error = |e: &crate::queue::QueueError| crate::gateway::stop_if_damaged(e, &damaged);
    let per_message = cfg.batch.as_ref().map_or(1, |b| b.max_readings);
    let max_delay = cfg.batch.as_ref().map_or(Duration::ZERO, |b| b.max_delay);
    let on_demand = matches!(cfg.connection, Connection::OnDemand { .. });
    let v5 = cfg.protocol == Protocol::V5;
    let mut pacer = cfg.replay_rate.map(Pacer::new);
    let mut fresh = Ahead::default();
    let mut old = Ahead::default();
    // Rows up to `split` are the backlog (live_first); `old_cursor` and `fresh_cursor` are
    // the last ids read into each.
    let mut split = 0i64;
    let mut old_cursor = 0i64;
    let mut fresh_cursor = 0i64;
    let mut split_taken = false;
    // The last row committed when the connection came up (on_demand windows end there).
    let mut window_last = 0i64;
    let mut reread = true;
    let mut epoch = u64::MAX;
    let mut closing = Closing::Open;
    let mut pipeline_open = true;
    // The pump's own connection for reads; without one, reads go through the shared queue.
    let mut reader = {
        let q = queue.clone();
        match crate::trips::spawn(move || lock(&q).reader()).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                warn!(error = %e, "Cannot open a second connection to the queue; reads share the writer's.");
                None
            }
            Err(_) => None,
        }
    };
    // The trips to the SQLite threads under way, with when each started (for the watchdog).
    let mut deleting: Option<(Deleting, u64)> = None;
    // Released rows may be on disk (unknown at start): reclaim them when idle.
    let mut reclaim_left = true;
    let mut reading: Option<(Reading, (ReadPlan, u64))> = None;
    let mut burying: Option<(Burying, u64)> = None;
    // The rows that trip is burying.
    let mut burying_ids: Vec<i64> = Vec::new();
    // Dead letters logged one by one in the current minute, and those only counted.
    let mut dead_log = DeadLog::default();
    // After a failed trip, no new one before this.
    let mut db_pause: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let now_ms = crate::service::now_ms() as i64;
        let db_ready = db_pause.is_none_or(|t| now >= t);
        // 1. Hand over what fits, and see what is left to do.
        let (acked, wait_until, reclaim) = {
            let mut f = handle.flight();
            if f.epoch != epoch {
                // A new connection: every row left in the queue is unconfirmed.
                epoch = f.epoch;
                fresh.clear();
                old.clear();
                (split, old_cursor, fresh_cursor) = (0, 0, 0);
                split_taken = false;
                reread = true;
                closing = Closing::Open;
            }
            let mut last = *committed.borrow_and_update();
            if f.online && !split_taken {
                split_taken = true;
                window_last = last;
                if cfg.live_first {
                    split = last;
                    fresh_cursor = last;
                }
            }
            // An on_demand window sends what was committed when it opened; rows committed
            // during it wait for the next one, or steady input faster than the round trip
            // would keep the window (and the radio) open for ever.
            if on_demand {
                last = last.min(window_last);
            }
            let window = f.window() as usize;
            // Room for the next read as well as the rows of the one just arrived, so that
            // the SQLite thread reads while this one sends.
            let read_ahead = (window * per_message).clamp(2 * READ_CHUNK, 20_000);
            // The next read is decided before the sending below, which takes as long as a
            // read: started after it, reads and sends would take turns instead of overlapping.
            let room = read_ahead.saturating_sub(fresh.len() + old.len());
            // Nothing is read before the connection is up and the backlog's end (`split`) is
            // fixed: a read before it would put backlog rows among the fresh ones.
            let want_read = split_taken && room > 0 && (fresh_cursor < last || old_cursor < split);
            // Confirmed rows must be gone before the queue is read again from the start
            // (rows on their way to the dead letters are skipped when read).
            let deletes_pending = deleting.is_some() || !f.acked.is_empty();
            let read = (db_ready && want_read && reading.is_none() && !(reread && deletes_pending))
                .then(|| {
                    let room = room.min(READ_CHUNK);
                    // Fresh rows first; the backlog when there are none.
                    if fresh_cursor < last {
                        (
                            fresh_cursor,
                            i64::MAX,
                            ReadPlan {
                                fresh: true,
                                after: fresh_cursor,
                                end: last,
                                want: room,
                                epoch,
                            },
                        )
                    } else {
                        (
                            old_cursor,
                            split,
                            ReadPlan {
                                fresh: false,
                                after: old_cursor,
                                end: split,
                                want: room,
                                epoch,
                            },
                        )
                    }
                });
            if let Some((after, upto, plan)) = read {
                let q = queue.clone();
                let own = reader.take();
                let want = plan.want;
                let task = crate::trips::spawn(move || match own {
                    Some(r) => {
                        let rows = r.fetch(after, upto, want);
                        (Some(r), rows)
                    }
                    None => (None, lock(&q).fetch(after, upto, want)),
                });
                reading = Some((task, (plan, crate::service::now_ms())));
            }
            let mut wait_until: Option<Instant> = None;
            // Deletes may fall behind the broker's confirmations: then nothing more is sent
            // until they catch up, so what a crash can duplicate stays within three windows
            // (in flight, being deleted, confirmed meanwhile) and so does memory.
            let confirmed_max = window * per_message;
            while f.can_send() && closing == Closing::Open && f.acked.len() < confirmed_max {
                // Backlog waiting beyond what is read ahead, an on_demand window, or a full
                // read-ahead: send partial batches rather than wait for them to fill.
                let force = on_demand || fresh.len() + old.len() >= read_ahead;
                // A suspect goes one row at a time (see flight.rs).
                let per = if f.alone() { 1 } else { per_message };
                // Suspects are the oldest rows: with them alone, the backlog goes first.
                let next = if f.alone() {
                    old.next(per, now, force)
                        .or_else(|| fresh.next(per, now, force))
                } else {
                    fresh
                        .next(per, now, force)
                        .or_else(|| old.next(per, now, force))
                };
                let Some(mut rows) = next else {
                    break;
                };
                if let Some(p) = pacer.as_mut() {
                    if let Err(at) = p.take(now) {
                        wait_until = Some(at);
                        unshift(&mut fresh, &mut old, split, rows);
                        break;
                    }
                }
                // A batch too large for the broker leaves in halves; a single row that can
                // never be sent is a dead letter.
                let (mut out, item) = loop {
                    let (out, item) = outbound(&cfg, &rows, now_ms);
                    let Some(why) = unsendable(&out, v5, f.max_packet) else {
                        break (out, item);
                    };
                    if rows.len() > 1 {
                        let rest = rows.split_off(rows.len() / 2);
                        unshift(&mut fresh, &mut old, split, rest);
                        continue;
                    }
                    f.condemn(vec![rows[0].row.id], why);
                    rows.clear();
                    break (out, item);
                };
                if rows.is_empty() {
                    continue;
                }
                if v5 {
                    if let Some((alias, known)) = f.alias(&out.topic) {
                        out.alias = Some(alias);
                        out.alias_only = known;
                    }
                }
                let new_alias = (out.alias.is_some() && !out.alias_only).then(|| out.topic.clone());
                if handle.client.try_publish(out).is_err() {
                    debug!("rumqttc's request channel is full; will retry.");
                    if let Some(topic) = new_alias {
                        f.unalias(&topic);
                    }
                    unshift(&mut fresh, &mut old, split, rows);
                    break;
                }
                f.on_sent(item);
            }
            // A batch's due time matters only while it could be sent; otherwise what
            // unblocks the sending (CONNACK, PUBACK, a finished delete) wakes the pump. A due
            // time already past means the sending is blocked: waiting for it would spin.
            let could_send =
                f.can_send() && closing == Closing::Open && f.acked.len() < confirmed_max;
            if wait_until.is_none() && per_message > 1 && could_send {
                wait_until = [fresh.next_due(), old.next_due()]
                    .into_iter()
                    .flatten()
                    .filter(|t| *t > now)
                    .min();
            }
            if let Some(t) = db_pause.filter(|_| !db_ready) {
                wait_until = Some(wait_until.map_or(t, |w| w.min(t)));
            }
            // Nothing left to send or to read (with what was just sent counted out).
            let more_to_read = split_taken
                && fresh.len() + old.len() < read_ahead
                && (fresh_cursor < last || old_cursor < split);
            let idle = fresh.is_empty() && old.is_empty() && !more_to_read;
            // The sending made room for a read that could not start before it: look again
            // at once rather than at the next acknowledgement.
            if reading.is_none() && db_ready && more_to_read && !(reread && deletes_pending) {
                wait_until = Some(now);
            }
            // Confirmed rows are deleted a window's worth at a time, or at once when there
            // is nothing else to do or the queue is about to be read from the start.
            let delete_now = db_ready
                && deleting.is_none()
                && !f.acked.is_empty()
                && (reread || f.acked.len() >= window || idle);
            let acked = if delete_now {
                f.acked.take_first(DELETE_CHUNK)
            } else {
                Confirmed::default()
            };
            // Released rows are reclaimed when there is nothing else to do (when nothing is
            // pending, the last confirmation truncated them already).
            let reclaim = db_ready
                && deleting.is_none()
                && acked.is_empty()
                && f.acked.is_empty()
                && idle
                && reclaim_left;
            // on_demand: everything sent, confirmed and deleted ends the window.
            if on_demand && f.online && idle && !deletes_pending && f.in_flight() == 0 {
                match closing {
                    Closing::Open => {
                        let next = f.next_window.map(rfc3339).unwrap_or_default();
                        let payload = cfg.sleep_payload.replace("{next}", &next).into_bytes();
                        if handle.control_locked(
                            &mut f,
                            &cfg.availability_topic,
                            Qos::AtLeastOnce,
                            true,
                            payload,
                        ) {
                            closing = Closing::SleepSent;
                        }
                    }
                    Closing::SleepSent => {
                        if handle.client.try_disconnect().is_ok() {
                            closing = Closing::Disconnecting;
                        }
                    }
                    Closing::Disconnecting => {}
                }
            }
            (acked, wait_until, reclaim)
        };
        // 2. Start the deletes that are due (a read started above, before the sending).
        if !acked.is_empty() {
            let q = queue.clone();
            let task = crate::trips::spawn(move || {
                let mut q = lock(&q);
                let result = q.ack_known(&acked);
                (result, acked, q.reclaimable())
            });
            deleting = Some((task, crate::service::now_ms()));
        } else if reclaim {
            let q = queue.clone();
            let task = crate::trips::spawn(move || {
                let mut q = lock(&q);
                let result = q.reclaim(DELETE_CHUNK).map(|_| 0);
                (result, Confirmed::default(), q.reclaimable())
            });
            deleting = Some((task, crate::service::now_ms()));
        }
        // Dead letters leave the outbox on a trip of their own.
        if burying.is_none() && db_pause.is_none_or(|t| Instant::now() >= t) {
            let dead = std::mem::take(&mut handle.flight().dead);
            if !dead.is_empty() {
                burying_ids = dead.iter().flat_map(|c| c.ids.iter().copied()).collect();
                let q = queue.clone();
                let task = crate::trips::spawn(move || {
                    let mut q = lock(&q);
                    let now_ms = crate::service::now_ms() as i64;
                    let mut done = Vec::new();
                    let mut left = dead.into_iter();
                    while let Some(c) = left.next() {
                        match q.bury(&c.ids, &c.reason, now_ms) {
                            Ok(b) => done.push((c, b)),
                            Err(e) => {
                                let mut rest = vec![c];
                                rest.extend(left);
                                return Err((e, rest));
                            }
                        }
                    }
                    Ok(done)
                });
                burying = Some((task, crate::service::now_ms()));
            }
        }
        // The watchdog looks at the oldest trip still under way.
        let since = [
            deleting.as_ref().map(|d| d.1),
            reading.as_ref().map(|r| r.1 .1),
            burying.as_ref().map(|b| b.1),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(0);
        metrics.uplink_db_since.store(since, Relaxed);

        // 3. Wait for something to change.
        let sleep = async {
            match wait_until {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = finished(&mut deleting) => {
                deleting = None;
                match done {
                    Ok((Ok(_), _, left)) => {
                        reclaim_left = left;
                        Metrics::add(&metrics.progress, 1);
                    }
                    // A failed reclaim (nothing confirmed was in it) is optional work: it
                    // waits for the next confirmation instead of pausing the queue.
                    Ok((Err(e), unsaved, _)) if unsaved.is_empty() => {
                        on_error(&e);
                        warn!(error = %e, "Could not reclaim released rows; trying again after the next confirmation.");
                        reclaim_left = false;
                    }
                    Ok((Err(e), unsaved, _)) => {
                        on_error(&e);
                        warn!(error = %e, "Queue delete failed; the rows stay confirmed in memory, retrying in 1s.");
                        handle.flight().acked.extend(unsaved);
                        db_pause = Some(Instant::now() + Duration::from_secs(1));
                    }
                    Err(e) => {
                        error!(error = %e, "Queue delete task failed; retrying in 1s.");
                        db_pause = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
            }
            done = finished(&mut reading) => {
                let Some((_, (plan, _))) = reading.take() else { continue };
                let fetched = match done {
                    Ok((own, Ok(fetched))) => {
                        reader = own;
                        fetched
                    }
                    Ok((own, Err(e))) => {
                        reader = own;
                        on_error(&e);
                        error!(error = %e, "Queue read failed; retrying in 1s.");
                        db_pause = Some(Instant::now() + Duration::from_secs(1));
                        continue;
                    }
                    Err(e) => {
                        error!(error = %e, "Queue read task failed; retrying in 1s.");
                        db_pause = Some(Instant::now() + Duration::from_secs(1));
                        continue;
                    }
                };
                if plan.epoch != handle.flight().epoch {
                    continue; // read under an older connection: the next round starts over
                }
                reread = false;
                let (ahead, cursor) = if plan.fresh {
                    (&mut fresh, &mut fresh_cursor)
                } else {
                    (&mut old, &mut old_cursor)
                };
                // No more rows up to `end` means the cursor may skip to it (ids are never
                // reused, so nothing can appear below it later).
                *cursor = if fetched.count() < plan.want {
                    plan.end.max(fetched.last_id().unwrap_or(0))
                } else {
                    fetched.last_id().unwrap_or(*cursor)
                };
                let now = Instant::now();
                let now_ms = crate::service::now_ms() as i64;
                let mut f = handle.flight();
                // Suspects this read should have met and did not are gone from the queue
                // (expired, evicted, purged): no reason to stay alone any more.
                if let Some(s) = &f.suspect {
                    let hi = *cursor;
                    let gone: Vec<i64> = s
                        .ids
                        .iter()
                        .copied()
                        .filter(|id| *id > plan.after && *id <= hi)
                        .filter(|id| {
                            !fetched.rows.iter().any(|r| r.id == *id)
                                && !fetched.unreadable.iter().any(|u| u.0 == *id)
                        })
                        .collect();
                    f.forget_suspects(&gone);
                }
                // Rows on their way to the dead letters are not sent again.
                let condemned: std::collections::HashSet<i64> = f
                    .dead
                    .iter()
                    .flat_map(|c| c.ids.iter().copied())
                    .chain(burying_ids.iter().copied())
                    .collect();
                for row in fetched.rows {
                    if !condemned.contains(&row.id) {
                        ahead.push(row, now, now_ms, max_delay);
                    }
                }
                for (id, e) in fetched.unreadable {
                    if !condemned.contains(&id) {
                        f.condemn(vec![id], format!("it cannot be read back from the queue: {e}"));
                    }
                }
            }
            done = finished(&mut burying) => {
                burying = None;
                burying_ids.clear();
                match done {
                    Ok(Ok(done)) => {
                        for (c, b) in done {
                            for row in &b.buried {
                                if dead_log.log_one(Instant::now()) {
                                    error!(seq = row.id, topic = %row.topic, bytes = row.bytes, reason = %c.reason, "Message cannot be delivered; moved to the dead letters (sensorgate queue dead).");
                                }
                            }
                            Metrics::add(&metrics.dead, b.buried.len() as u64);
                            if b.discarded > 0 {
                                error!(discarded = b.discarded, "Dead letters over their room; the oldest were discarded.");
                            }
                        }
                        dead_log.failures = 0;
                        Metrics::add(&metrics.progress, 1);
                    }
                    Ok(Err((e, rest))) => {
                        on_error(&e);
                        if dead_log.failures == 0 {
                            error!(error = %e, "Could not move messages to the dead letters; they are not sent, retrying every second.");
                        } else {
                            debug!(error = %e, "Could not move messages to the dead letters.");
                        }
                        dead_log.failures += 1;
                        handle.flight().dead.extend(rest);
                        db_pause = Some(Instant::now() + Duration::from_secs(1));
                    }
                    Err(e) => {
                        error!(error = %e, "Dead-letter task failed; retrying in 1s.");
                        db_pause = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
            }
            _ = handle.wake.notified() => {}
            r = committed.changed(), if pipeline_open => pipeline_open = r.is_ok(),
            _ = sleep => {
                if db_pause.is_some_and(|t| Instant::now() >= t) {
                    db_pause = None;
                }
            }
            _ = cancel.cancelled() => {
                // A delete under way finishes; rows it could not delete go back to the
                // flight for the last delete at shutdown.
                if let Some((task, _)) = deleting.take() {
                    if let Ok((Err(e), unsaved, _)) = task.await {
                        on_error(&e);
                        handle.flight().acked.extend(unsaved);
                    }
                }
                // A read under way holds a read transaction, which would keep the last
                // checkpoint (and the queue's clean mark) from completing.
                if let Some((task, _)) = reading.take() {
                    if let Ok((_, Err(e))) = task.await {
                        on_error(&e);
                    }
                }
                metrics.uplink_db_since.store(0, Relaxed);
                return;
            }
        }
    }
}

/// Returns rows that could not be sent to the front of the queue they came from.
fn unshift(fresh: &mut Ahead, old: &mut Ahead, split: i64, rows: Vec<Waiting>) {
    if rows.first().is_some_and(|w| w.row.id > split) {
        fresh.unshift(rows);
    } else {
        old.unshift(rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_compact_and_exact() {
        assert_eq!(runs(&[5]), "5");
        assert_eq!(runs(&[1, 2, 3, 7, 9, 10]), "1-3,7,9-10");
        assert_eq!(runs(&[]), "");
    }

    #[test]
    fn the_pacer_allows_a_second_of_burst_then_the_rate() {
        let t = Instant::now();
        let mut p = Pacer::new(10.0);
        p.last = t;
        for _ in 0..10 {
            assert!(p.take(t).is_ok());
        }
        let next = p.take(t).unwrap_err();
        assert_eq!(next, t + Duration::from_millis(100));
        assert!(p.take(t + Duration::from_millis(100)).is_ok());
        assert!(p.take(t + Duration::from_millis(100)).is_err());
    }
}
