//! Correlation of requests handed to rumqttc with its packet ids, and the in-flight window.
//!
//! rumqttc 0.25 has no per-publish acknowledgement handle: `publish()` only queues a request.
//! It does handle requests strictly in order, and reports each one as
//! `Outgoing::Publish(pkid)` when it writes it. So every request we hand over is appended
//! to `sent`; each `Outgoing::Publish` belongs to the oldest entry of `sent`; a QoS 1
//! request then waits in `awaiting` under its pkid until the PUBACK with that pkid names it.
//!
//! A request stands for one queue row, or for several (a batch): they are confirmed, and
//! deleted, together.
//!
//! **Invariant:** rows leave the flight only through the PUBACK of their own request (QoS 1)
//! or their request's `Outgoing::Publish` (QoS 0, written to the socket).
//! **Invariant:** the distance between the oldest outstanding request and the next one is
//! below `window`, and rumqttc's `inflight` is above it, so a packet id is never reused
//! while its publish awaits an ack (no `Outgoing::AwaitAck` collisions), even when the
//! broker acknowledges out of order or withholds one ack.
//! On any connection error everything here is forgotten ([`Flight::clear`]): the rows are
//! still in the queue and are read again after the next CONNACK.

use crate::config::Qos;
use crate::queue::Confirmed;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

/// What a request handed to rumqttc stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Queue rows: one, or a batch (their ids and bytes as read).
    Rows { rows: Confirmed, qos: Qos },
    /// A message of the gateway's own (birth, health): nothing to delete.
    Control { qos: Qos },
}

/// An event did not fit the requests we made: correlation is lost, reconnect.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("rumqttc reported publish pkid {0} with no request outstanding")]
    UnknownPublish(u16),
    #[error("rumqttc reported pkid {pkid} for a QoS {qos} request")]
    QosMismatch { pkid: u16, qos: u8 },
    #[error("packet id {0} was already awaiting an ack")]
    Collision(u16),
}

/// A request written and waiting for its PUBACK: its position, rows and when it was written.
pub type Written = (u64, Confirmed, Instant);

/// The requests of one connection, from the hand-over to their confirmation.
#[derive(Debug)]
pub struct Flight {
    window: u64,
    next_pos: u64,
    sent: VecDeque<(u64, Item)>,
    awaiting: HashMap<u16, Written>,
    /// Position of every request not yet confirmed, with when it was written (None while
    /// rumqttc has not written it yet). Positions are written in order.
    outstanding: BTreeMap<u64, Option<Instant>>,
    /// The newest request acknowledged on this connection.
    last_acked_pos: Option<u64>,
}

impl Flight {
    pub fn new(window: u16) -> Flight {
        Flight {
            window: u64::from(window.max(1)),
            next_pos: 0,
            sent: VecDeque::new(),
            awaiting: HashMap::new(),
            outstanding: BTreeMap::new(),
            last_acked_pos: None,
        }
    }

    /// Lowers (or restores) the window for this connection: an MQTT 5 broker may allow fewer
    /// messages in flight than configured. Only while nothing is in flight (at CONNACK).
    pub fn set_window(&mut self, window: u16) {
        debug_assert!(self.outstanding.is_empty());
        self.window = u64::from(window.max(1));
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    /// How many more requests fit in the window.
    pub fn room(&self) -> u64 {
        let oldest = self
            .outstanding
            .first_key_value()
            .map_or(self.next_pos, |(p, _)| *p);
        self.window.saturating_sub(self.next_pos - oldest)
    }

    /// Records a request just handed to rumqttc.
    pub fn on_sent(&mut self, item: Item) {
        self.outstanding.insert(self.next_pos, None);
        self.sent.push_back((self.next_pos, item));
        self.next_pos += 1;
    }

    /// rumqttc wrote a publish with `pkid` (0 for QoS 0). Returns the rows this confirms
    /// (those of a QoS 0 request; none for QoS 1, which waits for its PUBACK).
    pub fn on_publish(&mut self, pkid: u16, now: Instant) -> Result<Confirmed, Mismatch> {
        let (pos, item) = self
            .sent
            .pop_front()
            .ok_or(Mismatch::UnknownPublish(pkid))?;
        let (qos, rows) = match item {
            Item::Rows { rows, qos } => (qos, rows),
            Item::Control { qos } => (qos, Confirmed::default()),
        };
        match (qos, pkid) {
            (Qos::AtMostOnce, 0) => {
                self.outstanding.remove(&pos);
                Ok(rows)
            }
            (Qos::AtLeastOnce, p) if p != 0 => {
                self.outstanding.insert(pos, Some(now));
                if self.awaiting.insert(p, (pos, rows, now)).is_some() {
                    return Err(Mismatch::Collision(p));
                }
                Ok(Confirmed::default())
            }
            (q, p) => Err(Mismatch::QosMismatch {
                pkid: p,
                qos: q.as_u8(),
            }),
        }
    }

    /// The broker answered `pkid` (acknowledged or refused it): the request leaves the
    /// window. Returns its rows (None when the pkid was not awaited: rumqttc itself treats
    /// that as an error).
    pub fn on_answer(&mut self, pkid: u16) -> Option<Confirmed> {
        let (pos, rows, _) = self.awaiting.remove(&pkid)?;
        self.outstanding.remove(&pos);
        self.last_acked_pos = self.last_acked_pos.max(Some(pos));
        Some(rows)
    }

    /// The oldest request of rows written and not acknowledged (messages of the gateway's
    /// own are left out): its position, rows and when it was written.
    pub fn oldest_written(&self) -> Option<&Written> {
        self.awaiting
            .values()
            .filter(|(_, rows, _)| !rows.is_empty())
            .min_by_key(|(pos, _, _)| *pos)
    }

    /// Whether the request at `pos` or a later one was answered on this connection.
    pub fn answered_since(&self, pos: u64) -> bool {
        self.last_acked_pos.is_some_and(|a| a >= pos)
    }

    /// The rows the request awaiting `pkid` stands for.
    pub fn rows_of(&self, pkid: u16) -> Option<&Confirmed> {
        self.awaiting.get(&pkid).map(|(_, rows, _)| rows)
    }

    /// When the oldest publish still waiting for its PUBACK was written.
    pub fn oldest_wait(&self) -> Option<Instant> {
        // Requests are written in position order, so the oldest outstanding one was written
        // first (or nothing outstanding is written yet).
        self.outstanding.first_key_value().and_then(|(_, t)| *t)
    }

    /// Requests handed over and not yet confirmed.
    pub fn in_flight(&self) -> usize {
        self.outstanding.len()
    }

    /// Forgets every request (the connection is gone and rumqttc's state was cleaned).
    pub fn clear(&mut self) {
        self.sent.clear();
        self.awaiting.clear();
        self.outstanding.clear();
        self.next_pos = 0;
        self.last_acked_pos = None;
    }
}
