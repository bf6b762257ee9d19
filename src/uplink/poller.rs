//! The poller: drives the client's event loop, feeds its events to the session, publishes
//! the birth message after every CONNACK, and on any error forgets the connection (the
//! client's own replay would break the correlation) and backs off ([`Retry`]). With
//! `connection = "on_demand"` it stays off the air between windows.
//!
//! The link is one of four states ([`Link`]), driven by one
//! `loop { link = match link { .. } }`.
//!
//! **Architecture Invariant:** SQLite is the only retry buffer. Every error forgets the
//! client's state and requests (`Events::forget`) and the session's; after each CONNACK
//! the pump reads again from the oldest row.
//! **Invariant:** a drop of an MQTT 3.1.1 connection is noted against the oldest request
//! (strikes.rs) and decided by the next CONNACK; an error before a CONNACK forgives it.

use super::face::{Events, LinkError, LinkEvent, Refusal};
use super::retry::{Retry, Trial};
use super::session::Session;
use super::{now, rfc3339, Handle};
use crate::config::{Connection, MqttConfig, Protocol, Qos};
use crate::metrics::Metrics;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Where the link stands. `trial` is the connection not yet proved stable, if any.
#[derive(Debug)]
enum Link {
    /// Polling for a connection; the last one (if any) was ended or forgotten by us.
    Connecting { trial: Option<Trial> },
    /// Up since a CONNACK, or reconnecting at once after the correlation was lost: a
    /// failure now is a connection lost, not a broker out of reach.
    Online { trial: Option<Trial> },
    /// Waiting out the backoff after a failure.
    Backoff {
        until: Instant,
        trial: Option<Trial>,
    },
    /// on_demand: off the air (no socket, no keep-alive) until the next window.
    Asleep { until: Instant },
}

struct Poller<'a, E> {
    cfg: &'a MqttConfig,
    handle: &'a Handle,
    events: &'a mut E,
    metrics: &'a Metrics,
    retry: Retry,
    /// on_demand: when the current window opened.
    window_start: Instant,
    /// Told when Home Assistant says "online" on `cfg.status_topic`.
    status_online: Option<Arc<Notify>>,
}

/// Polls until `cancel` fires.
pub(super) async fn poll_until_cancelled<E: Events>(
    cfg: &MqttConfig,
    handle: &Handle,
    events: &mut E,
    metrics: &Metrics,
    status_online: Option<Arc<Notify>>,
    cancel: &CancellationToken,
) {
    let mut p = Poller {
        cfg,
        handle,
        events,
        metrics,
        retry: Retry::new(cfg),
        window_start: now(),
        status_online,
    };
    let mut link = Link::Connecting { trial: None };
    loop {
        p.beat();
        link = match link {
            Link::Asleep { until } => {
                // The watchdog still sees the poller alive while it sleeps.
                loop {
                    p.beat();
                    let step = until
                        .saturating_duration_since(now())
                        .min(Duration::from_secs(1));
                    if step.is_zero() {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(step) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
                p.window_start = now();
                Link::Connecting { trial: None }
            }
            Link::Backoff { until, trial } => {
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = cancel.cancelled() => return,
                }
                Link::Connecting { trial }
            }
            Link::Connecting { trial } => match p.next_event(cancel).await {
                Some(event) => p.on_event(false, trial, event),
                None => return,
            },
            Link::Online { trial } => match p.next_event(cancel).await {
                Some(event) => p.on_event(true, trial, event),
                None => return,
            },
        };
    }
}

impl<E: Events> Poller<'_, E> {
    fn beat(&self) {
        let ms = crate::reading::now_ms();
        self.metrics.poller_beat.store(ms, Relaxed);
    }

    /// The event loop's next event; None when cancelled.
    async fn next_event(
        &mut self,
        cancel: &CancellationToken,
    ) -> Option<Result<LinkEvent, LinkError>> {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            e = self.events.poll() => Some(e),
        }
    }

    /// Forgets the connection: the client's state and requests, and the session's.
    fn forget(&mut self, f: &mut Session) {
        self.events.forget();
        f.reset();
    }

    /// Forgets the connection and says the link is down.
    fn go_offline(&mut self) {
        let session = self.handle.session.clone();
        self.forget(&mut super::locked(&session));
        self.metrics.set_online(false);
    }

    /// The backoff state after a failure: waits out the backoff (with jitter) and doubles it.
    fn back_off(&mut self, trial: Option<Trial>) -> Link {
        Link::Backoff {
            until: now() + self.retry.next_wait(),
            trial,
        }
    }

    /// What an event makes of a connection (`online`: the link was [`Link::Online`]).
    fn on_event(
        &mut self,
        mut online: bool,
        mut trial: Option<Trial>,
        event: Result<LinkEvent, LinkError>,
    ) -> Link {
        let now = now();
        match event {
            Ok(LinkEvent::ConnAck {
                receive_max,
                alias_max,
                max_packet,
            }) => {
                self.on_connack(receive_max, alias_max, max_packet);
                trial = Some(Trial::new(now));
                online = true;
            }
            Ok(LinkEvent::Published(pkid)) => {
                let session = self.handle.session.clone();
                let mut f = super::locked(&session);
                if let Err(e) = f.on_publish(pkid, now) {
                    error!(error = %e, "Lost track of packet ids; reconnecting to resend from the queue.");
                    self.forget(&mut f);
                    return stay(online, trial);
                }
                Metrics::add(&self.metrics.published, 1);
                if !f.confirmed.is_empty() {
                    self.handle.wake.notify_one(); // QoS 0 rows confirmed
                }
            }
            Ok(LinkEvent::PubAck {
                pkid,
                refused: None,
            }) => {
                let rows = self.handle.session().on_puback(pkid);
                if rows.is_some_and(|rows| rows > 0) {
                    Metrics::add(&self.metrics.acked, 1);
                    Metrics::add(&self.metrics.progress, 1);
                    if let Some(t) = trial.as_mut() {
                        t.delivered = true;
                    }
                }
                self.handle.wake.notify_one();
            }
            Ok(LinkEvent::PubAck {
                pkid,
                refused: Some(reason),
            }) if reason.is_permanent() => {
                if self.on_refused_for_good(pkid, reason) {
                    return Link::Connecting { trial: None };
                }
            }
            Ok(LinkEvent::PubAck {
                pkid,
                refused: Some(reason),
            }) => {
                // A refusal that may pass (quota exceeded, unspecified): the message stays
                // in the queue. Reconnect after a pause and try again.
                warn!(pkid, reason = %reason, "Broker refused a message for now; it stays queued, retrying after a pause.");
                self.go_offline();
                return self.back_off(trial);
            }
            Ok(LinkEvent::Collision(pkid)) => {
                error!(
                    pkid,
                    "Packet id collision in rumqttc; reconnecting to resend from the queue."
                );
                let session = self.handle.session.clone();
                self.forget(&mut super::locked(&session));
                return stay(online, trial);
            }
            Ok(LinkEvent::Disconnected) => return self.on_disconnected(trial),
            Ok(LinkEvent::Message { topic, payload }) => {
                let status = self.cfg.status_topic.as_deref() == Some(topic.as_str());
                if let (true, Some(n)) = (status && payload == b"online", &self.status_online) {
                    info!(topic = %topic, "Home Assistant is online; sending every discovery config again.");
                    n.notify_one();
                }
            }
            Ok(LinkEvent::Other) => {}
            Err(e) => return self.on_error(online, trial, e, now),
        }
        // The connection proves stable: up for a keep-alive interval, and a row delivered.
        if let Some(t) = trial.filter(|t| t.passed(now, self.cfg.keep_alive)) {
            trial = None;
            if self.retry.flaps > 1 {
                info!(drops = self.retry.flaps, up_for = ?now.duration_since(t.since), "Connection to the broker is stable again.");
            }
            self.retry.reset();
        }
        let timed_out = self
            .handle
            .session()
            .oldest_wait()
            .is_some_and(|t| now.duration_since(t) > self.cfg.ack_timeout);
        if timed_out {
            warn!(timeout = ?self.cfg.ack_timeout, "No PUBACK within the ack timeout; reconnecting to resend.");
            self.go_offline();
            return Link::Connecting { trial };
        }
        stay(online, trial)
    }

    /// A CONNACK: the session takes the connection's limits, a strike noted at the last
    /// drop counts, and the birth message goes out.
    fn on_connack(&mut self, receive_max: Option<u16>, alias_max: u16, max_packet: Option<u32>) {
        let cfg = self.cfg;
        {
            let mut f = self.handle.session();
            // rumqttc's own limit is the smaller of ours + 2 and the broker's receive
            // maximum; the window stays 2 below it (see flight.rs).
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
                .min(super::link::MAX_PACKET);
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
            let topic = &cfg.availability_topic;
            self.handle
                .control_locked(&mut f, topic, Qos::AtLeastOnce, true, birth);
            if let Some(status) = &cfg.status_topic {
                if self.handle.client.try_subscribe(status).is_err() {
                    warn!(topic = %status, "Could not subscribe to Home Assistant's status topic.");
                }
            }
        }
        self.retry.last_error = None;
        self.metrics.set_online(true);
        Metrics::add(&self.metrics.connects, 1);
        let broker = format!("{}:{}", cfg.host, cfg.port);
        if self.retry.flaps < 2 {
            info!(broker = %broker, "Connected to the broker.");
        } else {
            debug!(broker = %broker, "Connected to the broker.");
        }
        self.handle.wake.notify_one();
    }

    /// An MQTT 5 refusal that cannot pass. Returns true when the connection was forgotten
    /// (a batch too large, sent again in smaller parts).
    fn on_refused_for_good(&mut self, pkid: u16, reason: Refusal) -> bool {
        let session = self.handle.session.clone();
        let mut f = super::locked(&session);
        let batch = f.rows_of(pkid).filter(|r| r.len() > 1).map(|r| r.bytes());
        if let Some(bytes) = batch.filter(|_| reason.code == 0x95) {
            // A batch too large for a broker that did not say its limit: cut batches to
            // half of it and send the rows again. Not a dead letter.
            let limit = f.learn_limit(bytes);
            warn!(pkid, reason = %reason, max_packet = limit, "Broker refused a batch as too large; sending it again in smaller parts.");
            self.forget(&mut f);
            drop(f);
            self.metrics.set_online(false);
            self.handle.wake.notify_one();
            return true;
        }
        // Sending it again cannot succeed: its rows become dead letters and nothing behind
        // them waits. The connection itself is fine.
        let rows = f.on_refused(pkid, format!("the broker refused it: {reason}"));
        drop(f);
        if rows == Some(0) {
            warn!(pkid, reason = %reason, "Broker refused a message of the gateway's own.");
        }
        Metrics::add(&self.metrics.progress, 1);
        self.handle.wake.notify_one();
        false
    }

    /// The pump ended an on_demand window: everything was sent and confirmed.
    fn on_disconnected(&mut self, trial: Option<Trial>) -> Link {
        self.go_offline();
        // A planned end of a window that delivered proves the link as well.
        if trial.is_some_and(|t| t.delivered) {
            self.retry.reset();
        }
        self.handle.wake.notify_one();
        let Connection::OnDemand { flush_every } = self.cfg.connection else {
            return Link::Connecting { trial: None };
        };
        let next = (self.window_start + flush_every).max(now());
        let wall = SystemTime::now() + next.saturating_duration_since(now());
        info!(next = %rfc3339(wall), "Backlog sent; off the air until the next window.");
        Link::Asleep { until: next }
    }

    /// The connection failed (or could not be made): forget it, log once per episode, and
    /// back off.
    fn on_error(&mut self, online: bool, trial: Option<Trial>, e: LinkError, now: Instant) -> Link {
        {
            let session = self.handle.session.clone();
            let mut f = super::locked(&session);
            // An MQTT 3.1.1 broker that closes the connection while one message is the
            // oldest in flight, again and again, gets it alone, then gives it up
            // (strikes.rs). MQTT 5 brokers say why instead.
            if f.online && e.closed_by_peer && self.cfg.protocol == Protocol::V311 {
                f.note_drop(now);
            } else if !f.online {
                f.forgive_drop();
            }
            // A refusal rumqttc could not read: as the same refusal read (above).
            if let (Some(code), Some(rows)) = (e.unread_refusal, f.oldest_rows()) {
                if code == 0x95 && rows.len() > 1 {
                    let limit = f.learn_limit(rows.bytes());
                    warn!(
                        reason = code,
                        max_packet = limit,
                        "Broker refused a batch as too large; sending it again in smaller parts."
                    );
                } else {
                    let reason = format!("the broker refused it: 0x{code:02x}");
                    f.condemn(rows.ids().to_vec(), reason);
                }
            }
            self.forget(&mut f);
        }
        self.handle.wake.notify_one();
        self.metrics.set_online(false);
        if trial.is_some() {
            Metrics::add(&self.metrics.flaps, 1);
        }
        self.retry.failed(online, trial.is_some(), &e);
        self.back_off(None)
    }
}

/// The same state after an event that leaves the connection as it is.
fn stay(online: bool, trial: Option<Trial>) -> Link {
    if online {
        Link::Online { trial }
    } else {
        Link::Connecting { trial }
    }
}
