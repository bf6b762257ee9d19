//! A scripted fake of the MQTT client behind the uplink's face: each connection attempt
//! takes the next [`Step`] of a script, every publish is written at once and acknowledged
//! after a delay, and everything handed over is logged with tokio's (paused) clock.
//!
//! Its only timers are the acknowledgements and a connection's planned drop, so while a
//! SQLite trip runs on its thread the paused clock has nothing to jump to but those.

use crate::config::Qos;
use crate::uplink::face::{Busy, Events, LinkError, LinkEvent, Outbound, Publisher};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a test waits for a condition, in wall time.
const WALL_DEADLINE: Duration = Duration::from_secs(60);

/// What a connection attempt does.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// It fails (a refused TCP connect).
    Refuse,
    /// It comes up and stays until the client disconnects or forgets it.
    Accept,
    /// It comes up and the broker closes it this long after its first PUBACK of a row
    /// (a keep-alive ping goes first, as rumqttc reports one).
    DropAfterRowAck(Duration),
    /// It comes up and the broker closes it this long after the CONNACK.
    DropAfterConnAck(Duration),
}

/// What the client handed over, and when.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A connection attempt (the event loop asked to connect).
    Attempt,
    Publish(Outbound),
    Disconnect,
    /// The broker closed the connection.
    Dropped,
    Subscribe(String),
}

enum Request {
    Publish(Outbound),
    Disconnect,
}

#[derive(Default)]
pub struct State {
    pub log: Vec<(Instant, Seen)>,
    script: VecDeque<Step>,
    requests: VecDeque<Request>,
    /// Events ready to hand out.
    pub ready: VecDeque<LinkEvent>,
    connected: Option<Step>,
    next_pkid: u16,
    /// Publishes of this connection awaiting their PUBACK: (due, pkid, position, whether
    /// it carries rows).
    acks: Vec<(Instant, u16, u64, bool)>,
    /// Position of the next QoS 1 publish on this connection.
    next_pos: u64,
    drop_at: Option<Instant>,
    /// The ping before the planned drop was reported.
    pinged: bool,
    /// The widest distance seen between the oldest unacknowledged publish and a new one.
    pub max_span: u64,
    /// How long the broker takes to acknowledge: by default, and every `slow.0`th
    /// publish `slow.1`.
    pub ack_delay: Duration,
    pub slow: Option<(u64, Duration)>,
    pub availability: String,
}

impl State {
    /// Topics and payloads published, in order.
    pub fn published(&self) -> Vec<(Instant, &Outbound)> {
        let seen = self.log.iter();
        seen.filter_map(|(t, s)| match s {
            Seen::Publish(o) => Some((*t, o)),
            _ => None,
        })
        .collect()
    }

    /// Times of connection attempts.
    pub fn attempts(&self) -> Vec<Instant> {
        let seen = self.log.iter();
        seen.filter_map(|(t, s)| matches!(s, Seen::Attempt).then_some(*t))
            .collect()
    }

    /// Publishes of this connection still awaiting their PUBACK.
    pub fn acks_pending(&self) -> usize {
        self.acks.len()
    }

    /// Rows published (payloads of messages not on the availability topic).
    pub fn rows(&self) -> Vec<String> {
        let p = self.published();
        p.into_iter()
            .filter(|(_, o)| o.topic != self.availability)
            .map(|(_, o)| String::from_utf8_lossy(&o.payload).into_owned())
            .collect()
    }
}

/// The broker's side, shared by the fake client and event loop, and the test.
#[derive(Clone)]
pub struct Fake {
    pub state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    /// Told of every change, for tests waiting on a condition.
    changed: Arc<Notify>,
}

impl Fake {
    pub fn new(script: &[Step], availability: &str) -> Fake {
        let state = State {
            script: script.iter().copied().collect(),
            next_pkid: 1,
            ack_delay: Duration::from_millis(10),
            availability: availability.to_string(),
            ..State::default()
        };
        Fake {
            state: Arc::new(Mutex::new(state)),
            wake: Arc::new(Notify::new()),
            changed: Arc::new(Notify::new()),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The broker sends the client `event` (a message on a subscribed topic).
    pub fn deliver(&self, event: LinkEvent) {
        self.lock().ready.push_back(event);
        self.wake.notify_one();
        self.changed.notify_waiters();
    }

    /// Waits until `cond` holds; panics after a minute of wall time. The deadline is not a
    /// tokio timer: the paused clock would jump to it while a SQLite trip runs.
    pub async fn until(&self, cond: impl Fn(&State) -> bool) {
        let (done, watch) = std::sync::mpsc::channel::<()>();
        let (changed, expired) = (self.changed.clone(), Arc::new(AtomicBool::new(false)));
        let flag = expired.clone();
        std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = watch.recv_timeout(WALL_DEADLINE) {
                flag.store(true, Relaxed);
                changed.notify_waiters();
            }
        });
        loop {
            let changed = self.changed.notified();
            if cond(&self.lock()) {
                drop(done);
                return;
            }
            assert!(
                !expired.load(Relaxed),
                "condition not met within {WALL_DEADLINE:?}"
            );
            changed.await;
        }
    }

    fn push(&self, r: Request, seen: Seen) {
        let mut s = self.lock();
        s.log.push((Instant::now(), seen));
        s.requests.push_back(r);
        drop(s);
        self.wake.notify_one();
        self.changed.notify_waiters();
    }
}

impl Publisher for Fake {
    fn try_publish(&self, m: Outbound) -> Result<(), Busy> {
        self.push(Request::Publish(m.clone()), Seen::Publish(m));
        Ok(())
    }

    fn try_disconnect(&self) -> Result<(), Busy> {
        self.push(Request::Disconnect, Seen::Disconnect);
        Ok(())
    }

    fn try_subscribe(&self, topic: &str) -> Result<(), Busy> {
        let mut s = self.lock();
        s.log
            .push((Instant::now(), Seen::Subscribe(topic.to_string())));
        Ok(())
    }
}

fn failure(text: &str, closed_by_peer: bool) -> LinkError {
    LinkError {
        text: text.to_string(),
        needs_operator: false,
        closed_by_peer,
        unread_refusal: None,
    }
}

impl State {
    /// One step of the event loop, if one is ready now; else when to look again.
    fn step(&mut self, now: Instant) -> Result<Result<LinkEvent, LinkError>, Option<Instant>> {
        if let Some(e) = self.ready.pop_front() {
            return Ok(Ok(e));
        }
        let Some(conn) = self.connected else {
            let Some(step) = self.script.pop_front() else {
                return Err(None); // the script is over: nothing more happens
            };
            self.log.push((now, Seen::Attempt));
            if let Step::Refuse = step {
                return Ok(Err(failure("Connection refused (os error 111)", false)));
            }
            self.connected = Some(step);
            (self.next_pkid, self.next_pos) = (1, 0);
            if let Step::DropAfterConnAck(d) = step {
                self.drop_at = Some(now + d);
            }
            return Ok(Ok(LinkEvent::ConnAck {
                receive_max: None,
                alias_max: 0,
                max_packet: None,
            }));
        };
        if let Some(r) = self.requests.pop_front() {
            return Ok(Ok(self.write(r, now)));
        }
        if self.drop_at.is_some_and(|t| t <= now) {
            if !std::mem::replace(&mut self.pinged, true) {
                return Ok(Ok(LinkEvent::Other));
            }
            self.forget();
            self.log.push((now, Seen::Dropped));
            return Ok(Err(failure(
                "Connection reset by peer (os error 104)",
                true,
            )));
        }
        if let Some(i) = (0..self.acks.len()).find(|i| self.acks[*i].0 <= now) {
            let (_, pkid, _, row) = self.acks.remove(i);
            if let Step::DropAfterRowAck(d) = conn {
                if self.drop_at.is_none() && row {
                    self.drop_at = Some(now + d);
                }
            }
            return Ok(Ok(LinkEvent::PubAck {
                pkid,
                refused: None,
            }));
        }
        let next = self.acks.iter().map(|a| a.0).chain(self.drop_at).min();
        Err(next)
    }

    fn write(&mut self, r: Request, now: Instant) -> LinkEvent {
        let out = match r {
            Request::Disconnect => {
                self.forget();
                return LinkEvent::Disconnected;
            }
            Request::Publish(out) => out,
        };
        if out.qos == Qos::AtMostOnce {
            return LinkEvent::Published(0);
        }
        let (pkid, pos) = (self.next_pkid, self.next_pos);
        (self.next_pkid, self.next_pos) = (pkid + 1, pos + 1);
        let oldest = self.acks.iter().map(|a| a.2).min().unwrap_or(pos);
        let row = out.topic != self.availability;
        self.max_span = self.max_span.max(pos - oldest + 1);
        let delay = match self.slow {
            Some((every, slow)) if pos % every == every - 1 => slow,
            _ => self.ack_delay,
        };
        self.acks.push((now + delay, pkid, pos, row));
        LinkEvent::Published(pkid)
    }

    fn forget(&mut self) {
        self.connected = None;
        self.requests.clear();
        self.ready.clear();
        self.acks.clear();
        self.drop_at = None;
        self.pinged = false;
    }
}

impl Events for Fake {
    async fn poll(&mut self) -> Result<LinkEvent, LinkError> {
        loop {
            let wake = self.wake.notified();
            let step = self.lock().step(Instant::now());
            self.changed.notify_waiters();
            match step {
                Ok(event) => return event,
                Err(Some(t)) => {
                    tokio::select! {
                        _ = wake => {}
                        _ = tokio::time::sleep_until(t) => {}
                    }
                }
                Err(None) => wake.await,
            }
        }
    }

    fn forget(&mut self) {
        self.lock().forget();
    }
}
