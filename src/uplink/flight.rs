//! Correlation of queue rows with rumqttc's packet ids.
//!
//! rumqttc 0.25 has no per-publish acknowledgement handle: `publish()` only queues a request.
//! It does handle requests strictly in order, and reports each one as
//! `Outgoing::Publish(pkid)` when it writes it. So every request we hand over is appended
//! to `sent`; each `Outgoing::Publish` belongs to the oldest entry of `sent`; a QoS 1 row
//! then waits in `awaiting` under its pkid until the PUBACK with that pkid names it.
//!
//! A request stands for one queue row, or for several (a batch): they are confirmed, and
//! deleted, together.
//!
//! **Invariant:** a row id reaches `acked` only through the PUBACK of its own request
//! (QoS 1) or its request's `Outgoing::Publish` (QoS 0, written to the socket).
//! **Invariant:** the distance between the oldest outstanding request and the next one is
//! below `window`, and rumqttc's `inflight` is above it, so a packet id is never reused
//! while its publish awaits an ack (no `Outgoing::AwaitAck` collisions), even when the
//! broker acknowledges out of order or withholds one ack.
//! On any connection error everything here is forgotten ([`Flight::reset`]): the rows are
//! still in the queue and are read again after the next CONNACK.
//!
//! **Dead letters.** Rows that can never be delivered as they are (refused for good by an
//! MQTT 5 broker, too large for it, unreadable) wait in `dead` until the pump moves them to
//! the queue's dead-letter table. An MQTT 3.1.1 broker cannot say why it drops a client: a
//! drop counts against the oldest request written and not acknowledged (a *strike*) only
//! when the broker closed the socket within [`STRIKE_WINDOW`] of that write, no later
//! request was acknowledged, and the next connection came up at the first attempt (a broker
//! that restarts refuses connections for a while). Two strikes against the same request
//! make its rows [`Suspect`]s, sent one at a time with nothing else in flight; a suspect
//! row is condemned when the broker drops the connection with it alone in flight: once if
//! the suspect request was that row alone, twice if it was a batch. Nothing here is
//! forgotten by a reset.

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

/// Rows to move to the dead-letter table, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condemned {
    pub ids: Vec<i64>,
    pub reason: String,
}

/// Rows that were the oldest in flight when the broker dropped the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    /// The rows of that request not yet confirmed, condemned or gone from the queue.
    pub ids: Vec<i64>,
    /// Strikes against the request.
    pub strikes: u32,
    /// Sent one row at a time, with nothing else in flight.
    pub alone: bool,
    /// The request was one row: condemned at its first drop alone.
    pub single: bool,
    /// Drops with each row alone in flight.
    pub alone_drops: HashMap<i64, u32>,
}

/// Strikes against the same request before its rows are sent alone.
const STRIKES_BEFORE_ALONE: u32 = 2;

/// A drop counts against the oldest request only this soon after it was written (a broker
/// that refuses a packet closes the connection as soon as it has read it).
pub const STRIKE_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug)]
pub struct Flight {
    window: u64,
    next_pos: u64,
    sent: VecDeque<(u64, Item)>,
    awaiting: HashMap<u16, (u64, Confirmed, Instant)>,
    /// Position of every request not yet confirmed, with when it was written (None while
    /// rumqttc has not written it yet). Positions are written in order.
    outstanding: BTreeMap<u64, Option<Instant>>,
    /// Rows whose delivery is confirmed, not yet deleted from the queue.
    pub acked: Confirmed,
    /// Bumped by every reset, so a reader of the queue knows its view is stale.
    pub epoch: u64,
    pub online: bool,
    /// MQTT 5 topic aliases of this connection, and how many the broker allows.
    aliases: HashMap<String, u16>,
    pub alias_max: u16,
    /// on_demand: when the next window opens (for the availability topic).
    pub next_window: Option<std::time::SystemTime>,
    /// The largest packet this connection may carry (see `link::MAX_PACKET`).
    pub max_packet: usize,
    /// Rows that cannot be delivered, waiting to be moved to the dead-letter table.
    pub dead: Vec<Condemned>,
    pub suspect: Option<Suspect>,
    /// The rows a drop counted against, until the next connection shows whether the
    /// broker was up all along ([`Flight::confirm_strike`]).
    pending_strike: Option<Vec<i64>>,
    /// The newest request acknowledged on this connection.
    last_acked_pos: Option<u64>,
    /// A packet size limit learnt from an MQTT 5 refusal (0x95) of a batch: kept across
    /// connections.
    pub learned_max: Option<usize>,
}

impl Flight {
    pub fn new(window: u16) -> Flight {
        Flight {
            window: u64::from(window.max(1)),
            next_pos: 0,
            sent: VecDeque::new(),
            awaiting: HashMap::new(),
            outstanding: BTreeMap::new(),
            acked: Confirmed::default(),
            epoch: 0,
            online: false,
            aliases: HashMap::new(),
            alias_max: 0,
            next_window: None,
            max_packet: crate::uplink::link::MAX_PACKET,
            dead: Vec::new(),
            suspect: None,
            pending_strike: None,
            last_acked_pos: None,
            learned_max: None,
        }
    }

    /// Lowers (or restores) the window for this connection: an MQTT 5 broker may allow fewer
    /// messages in flight than configured. Only while nothing is in flight (at CONNACK).
    pub fn set_window(&mut self, window: u16) {
        debug_assert!(self.outstanding.is_empty());
        self.window = u64::from(window.max(1));
    }

    /// The topic alias to use for `topic`, and whether the broker already knows it (then the
    /// topic itself can be left out). None when aliases are off or all are taken.
    pub fn alias(&mut self, topic: &str) -> Option<(u16, bool)> {
        if let Some(a) = self.aliases.get(topic) {
            return Some((*a, true));
        }
        let next = self.aliases.len() as u16 + 1;
        if next > self.alias_max {
            return None;
        }
        self.aliases.insert(topic.to_string(), next);
        Some((next, false))
    }

    /// Forgets an alias that was taken for a message that was not handed over after all.
    pub fn unalias(&mut self, topic: &str) {
        if self
            .aliases
            .get(topic)
            .is_some_and(|a| usize::from(*a) == self.aliases.len())
        {
            self.aliases.remove(topic);
        }
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    /// Whether another request may be handed to rumqttc now.
    pub fn can_send(&self) -> bool {
        self.online && self.room() > 0 && !(self.alone() && self.in_flight() > 0)
    }

    /// Whether requests go one row at a time with nothing else in flight (a suspect).
    pub fn alone(&self) -> bool {
        self.suspect.as_ref().is_some_and(|s| s.alone)
    }

    /// The broker closed the connection at `now`. Notes the rows of the oldest request of
    /// rows written and not acknowledged, if it was written within [`STRIKE_WINDOW`] and no
    /// later request was acknowledged; the next CONNACK decides ([`Flight::confirm_strike`]).
    pub fn note_drop(&mut self, now: Instant) {
        self.pending_strike = self
            .oldest_written()
            .filter(|(pos, _, at)| {
                self.last_acked_pos.is_none_or(|a| a < *pos)
                    && now.saturating_duration_since(*at) <= STRIKE_WINDOW
            })
            .map(|(_, rows, _)| rows.ids().to_vec());
    }

    /// The connection failed before a CONNACK: the broker was not up, so the last drop was
    /// not its choice.
    pub fn forgive_drop(&mut self) {
        self.pending_strike = None;
    }

    /// A CONNACK at the first attempt after a drop: the strike noted counts. Returns the row
    /// condemned, if one was alone in flight and has struck out.
    pub fn confirm_strike(&mut self) -> Option<i64> {
        let rows = self.pending_strike.take()?;
        let first = *rows.first()?;
        match &mut self.suspect {
            Some(s) if s.alone && rows.len() == 1 && s.ids.contains(&first) => {
                let drops = s.alone_drops.entry(first).or_insert(0);
                *drops += 1;
                let drops = *drops;
                if !s.single && drops < 2 {
                    return None;
                }
                let strikes = s.strikes + drops;
                self.condemn(
                    vec![first],
                    format!(
                        "the broker closed the connection {strikes} times while it was the oldest in flight, the last {drops} with it alone"
                    ),
                );
                Some(first)
            }
            Some(s) if s.ids.first() == Some(&first) && !s.alone => {
                s.strikes += 1;
                if s.strikes >= STRIKES_BEFORE_ALONE {
                    s.alone = true;
                }
                None
            }
            Some(s) if s.alone => None,
            _ => {
                self.suspect = Some(Suspect {
                    single: rows.len() == 1,
                    ids: rows,
                    strikes: 1,
                    alone: false,
                    alone_drops: HashMap::new(),
                });
                None
            }
        }
    }

    /// Moves `ids` to the dead letters with `reason`; they are no longer suspects.
    pub fn condemn(&mut self, ids: Vec<i64>, reason: String) {
        self.forget_suspects(&ids);
        self.dead.push(Condemned { ids, reason });
    }

    /// Rows that left the queue some other way (expired, evicted, condemned) are no
    /// longer suspects.
    pub fn forget_suspects(&mut self, gone: &[i64]) {
        if let Some(s) = &mut self.suspect {
            s.ids.retain(|id| !gone.contains(id));
            if s.ids.is_empty() {
                self.suspect = None;
            }
        }
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

    /// rumqttc wrote a publish with `pkid` (0 for QoS 0).
    pub fn on_publish(&mut self, pkid: u16, now: Instant) -> Result<(), Mismatch> {
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
                self.acked.extend(rows);
                Ok(())
            }
            (Qos::AtLeastOnce, p) if p != 0 => {
                self.outstanding.insert(pos, Some(now));
                if self.awaiting.insert(p, (pos, rows, now)).is_some() {
                    return Err(Mismatch::Collision(p));
                }
                Ok(())
            }
            (q, p) => Err(Mismatch::QosMismatch {
                pkid: p,
                qos: q.as_u8(),
            }),
        }
    }

    /// The broker acknowledged `pkid`. Returns how many rows it confirms (None when the
    /// pkid was not awaited: rumqttc itself treats that as an error).
    pub fn on_puback(&mut self, pkid: u16) -> Option<usize> {
        let (pos, rows, _) = self.awaiting.remove(&pkid)?;
        self.outstanding.remove(&pos);
        let n = rows.len();
        self.forget_suspects(rows.ids());
        self.last_acked_pos = self.last_acked_pos.max(Some(pos));
        self.acked.extend(rows);
        Some(n)
    }

    /// The rows of the oldest request of rows written and not acknowledged.
    pub fn oldest_rows(&self) -> Option<Confirmed> {
        self.oldest_written().map(|(_, rows, _)| rows.clone())
    }

    /// The oldest request of rows written and not acknowledged (messages of the gateway's
    /// own are left out): its position, rows and when it was written.
    fn oldest_written(&self) -> Option<&(u64, Confirmed, Instant)> {
        self.awaiting
            .values()
            .filter(|(_, rows, _)| !rows.is_empty())
            .min_by_key(|(pos, _, _)| *pos)
    }

    /// The rows the request awaiting `pkid` stands for.
    pub fn rows_of(&self, pkid: u16) -> Option<&Confirmed> {
        self.awaiting.get(&pkid).map(|(_, rows, _)| rows)
    }

    /// A broker refused a batch of `bytes` (topic and payloads) as too large: later
    /// connections cut batches to half of it. Returns the new limit.
    pub fn learn_limit(&mut self, bytes: u64) -> usize {
        let limit = ((bytes / 2) as usize).clamp(128, self.max_packet.max(128));
        self.learned_max = Some(self.learned_max.map_or(limit, |l| l.min(limit)));
        limit
    }

    /// The broker refused `pkid` for good: its rows become dead letters. Returns how many
    /// (None when the pkid was not awaited).
    pub fn on_refused(&mut self, pkid: u16, reason: String) -> Option<usize> {
        let (pos, rows, _) = self.awaiting.remove(&pkid)?;
        self.outstanding.remove(&pos);
        self.last_acked_pos = self.last_acked_pos.max(Some(pos));
        let n = rows.len();
        if n > 0 {
            self.condemn(rows.ids().to_vec(), reason);
        }
        Some(n)
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
    /// Confirmed rows in `acked` stay: they were delivered.
    pub fn reset(&mut self) {
        self.sent.clear();
        self.awaiting.clear();
        self.outstanding.clear();
        self.next_pos = 0;
        self.online = false;
        self.aliases.clear();
        self.alias_max = 0;
        self.max_packet = crate::uplink::link::MAX_PACKET;
        self.last_acked_pos = None;
        self.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const Q1: Qos = Qos::AtLeastOnce;

    /// Rows of 10 bytes each.
    fn confirmed(ids: &[i64]) -> Confirmed {
        ids.iter().map(|id| (*id, 10)).collect()
    }

    fn row(id: i64) -> Item {
        Item::Rows {
            rows: confirmed(&[id]),
            qos: Q1,
        }
    }

    #[test]
    fn acks_in_any_order_name_their_own_rows() {
        let now = Instant::now();
        let mut f = Flight::new(8);
        f.online = true;
        for id in [10, 11, 12] {
            f.on_sent(row(id));
        }
        f.on_publish(1, now).unwrap();
        f.on_publish(2, now).unwrap();
        f.on_publish(3, now).unwrap();
        assert_eq!(f.on_puback(3), Some(1));
        assert_eq!(f.acked, confirmed(&[12]));
        assert_eq!(f.on_puback(1), Some(1));
        assert_eq!(
            f.on_puback(1),
            None,
            "a second ack for the same pkid confirms nothing"
        );
        assert_eq!(f.on_puback(2), Some(1));
        assert_eq!(f.acked, confirmed(&[12, 10, 11]));
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn window_counts_from_the_oldest_unacked_request() {
        let now = Instant::now();
        let mut f = Flight::new(3);
        f.online = true;
        for (pkid, id) in [(1, 1), (2, 2), (3, 3)] {
            assert!(f.can_send());
            f.on_sent(row(id));
            f.on_publish(pkid, now).unwrap();
        }
        assert!(!f.can_send());
        // Acks for the newer two do not open the window while the oldest is withheld.
        f.on_puback(2);
        f.on_puback(3);
        assert!(!f.can_send());
        assert_eq!(f.room(), 0);
        f.on_puback(1);
        assert_eq!(f.room(), 3);
    }

    #[test]
    fn qos0_rows_are_confirmed_when_written_and_control_messages_confirm_nothing() {
        let now = Instant::now();
        let mut f = Flight::new(4);
        f.on_sent(Item::Control { qos: Q1 });
        f.on_sent(Item::Rows {
            rows: confirmed(&[5]),
            qos: Qos::AtMostOnce,
        });
        f.on_publish(7, now).unwrap();
        f.on_publish(0, now).unwrap();
        assert_eq!(f.acked, confirmed(&[5]));
        assert_eq!(f.on_puback(7), Some(0));
        assert!(f.acked == confirmed(&[5]) && f.in_flight() == 0);
    }

    #[test]
    fn events_that_do_not_fit_are_mismatches() {
        let now = Instant::now();
        let mut f = Flight::new(4);
        assert_eq!(f.on_publish(1, now), Err(Mismatch::UnknownPublish(1)));
        f.on_sent(row(1));
        assert!(matches!(
            f.on_publish(0, now),
            Err(Mismatch::QosMismatch { .. })
        ));
        f.on_sent(row(2));
        f.on_sent(row(3));
        f.on_publish(4, now).unwrap();
        assert_eq!(f.on_publish(4, now), Err(Mismatch::Collision(4)));
    }

    #[test]
    fn a_batch_is_confirmed_as_a_whole() {
        let now = Instant::now();
        let mut f = Flight::new(4);
        f.online = true;
        f.on_sent(Item::Rows {
            rows: confirmed(&[3, 4, 7]),
            qos: Q1,
        });
        f.on_sent(row(8));
        f.on_publish(1, now).unwrap();
        f.on_publish(2, now).unwrap();
        assert_eq!(f.on_puback(2), Some(1));
        assert_eq!(f.acked, confirmed(&[8]));
        assert_eq!(f.on_puback(1), Some(3));
        assert_eq!(f.acked, confirmed(&[8, 3, 4, 7]));
    }

    #[test]
    fn aliases_are_handed_out_up_to_the_brokers_maximum_and_forgotten_on_reset() {
        let mut f = Flight::new(4);
        assert_eq!(
            f.alias("a"),
            None,
            "no aliases before the broker allows them"
        );
        f.alias_max = 2;
        assert_eq!(f.alias("a"), Some((1, false)));
        assert_eq!(f.alias("a"), Some((1, true)));
        assert_eq!(f.alias("b"), Some((2, false)));
        assert_eq!(f.alias("c"), None);
        assert_eq!(f.alias("b"), Some((2, true)));
        f.reset();
        f.alias_max = 2;
        assert_eq!(
            f.alias("b"),
            Some((1, false)),
            "a new connection knows no alias"
        );
    }

    #[test]
    fn confirmed_rows_split_in_order_with_their_sizes() {
        let mut c: Confirmed = [(1, 5), (2, 6), (3, 7)].into_iter().collect();
        let first = c.take_first(2);
        assert_eq!((first.ids(), first.bytes()), (&[1, 2][..], 11));
        assert_eq!((c.ids(), c.bytes()), (&[3][..], 7));
        assert_eq!(c.take_first(10).ids(), &[3]);
        assert!(c.is_empty());
    }

    #[test]
    fn reset_forgets_requests_but_keeps_confirmed_rows() {
        let now = Instant::now();
        let mut f = Flight::new(4);
        f.online = true;
        f.on_sent(row(1));
        f.on_sent(row(2));
        f.on_publish(1, now).unwrap();
        f.on_puback(1);
        f.reset();
        assert!(!f.online);
        assert_eq!(f.acked, confirmed(&[1]));
        assert_eq!(f.in_flight(), 0);
        assert_eq!(f.on_puback(2), None);
        assert_eq!(f.epoch, 1);
    }

    /// One connection: rows 1 and 2 acknowledged, `head` (and after it 4) written and
    /// not; then the broker closes the socket and the next CONNACK comes at once.
    fn drop_with_head_in_flight(f: &mut Flight, head: &[i64], now: Instant) -> Option<i64> {
        f.reset();
        f.online = true;
        for (pkid, id) in [(1, 1), (2, 2)] {
            f.on_sent(row(id));
            f.on_publish(pkid, now).unwrap();
        }
        if f.alone() {
            f.on_puback(1);
            f.on_puback(2);
        }
        f.on_sent(Item::Rows {
            rows: confirmed(head),
            qos: Q1,
        });
        f.on_publish(3, now).unwrap();
        if !f.alone() {
            f.on_sent(row(99));
            f.on_publish(4, now).unwrap();
        }
        f.on_puback(1);
        f.on_puback(2);
        f.note_drop(now + Duration::from_millis(10));
        f.reset();
        f.confirm_strike()
    }

    #[test]
    fn a_request_oldest_at_two_drops_goes_alone_and_is_condemned_at_the_third() {
        let now = Instant::now();
        let mut f = Flight::new(8);
        assert_eq!(drop_with_head_in_flight(&mut f, &[3], now), None);
        assert!(!f.alone());
        assert_eq!(drop_with_head_in_flight(&mut f, &[3], now), None);
        assert!(f.alone());
        f.online = true;
        f.on_sent(row(3));
        assert!(
            !f.can_send(),
            "nothing else goes while a suspect is in flight"
        );
        assert_eq!(drop_with_head_in_flight(&mut f, &[3], now), Some(3));
        assert_eq!(f.dead.len(), 1);
        assert_eq!(f.dead[0].ids, vec![3]);
        assert!(f.suspect.is_none());
        assert!(!f.alone());
    }

    #[test]
    fn drops_the_broker_did_not_choose_are_no_strikes() {
        let now = Instant::now();
        let mut f = Flight::new(8);
        // The broker was down after the drop (a restart): the next connect failed first.
        for _ in 0..3 {
            f.reset();
            f.online = true;
            f.on_sent(row(3));
            f.on_publish(1, now).unwrap();
            f.note_drop(now);
            f.reset();
            f.forgive_drop();
            assert_eq!(f.confirm_strike(), None);
        }
        assert!(f.suspect.is_none());
        // Written long before the drop (a link that died later), or a later request was
        // acknowledged (the broker got past it): no strike either.
        f.online = true;
        f.on_sent(row(3));
        f.on_publish(1, now).unwrap();
        f.note_drop(now + STRIKE_WINDOW + Duration::from_secs(1));
        f.reset();
        assert_eq!(f.confirm_strike(), None);
        assert!(f.suspect.is_none());
        f.online = true;
        f.on_sent(row(3));
        f.on_publish(1, now).unwrap();
        f.on_sent(row(4));
        f.on_publish(2, now).unwrap();
        f.on_puback(2);
        f.note_drop(now);
        f.reset();
        assert_eq!(f.confirm_strike(), None);
        assert!(f.suspect.is_none());
    }

    #[test]
    fn rows_of_a_suspect_batch_are_condemned_only_after_two_drops_alone() {
        let now = Instant::now();
        let mut f = Flight::new(8);
        drop_with_head_in_flight(&mut f, &[3, 4, 5], now);
        drop_with_head_in_flight(&mut f, &[3, 4, 5], now);
        assert!(f.alone());
        // Row 3 alone: one drop (a broker restart, say) is not enough...
        assert_eq!(drop_with_head_in_flight(&mut f, &[3], now), None);
        // ...it goes through on the next connection; row 4 is dropped alone twice.
        f.online = true;
        f.on_sent(row(3));
        f.on_publish(1, now).unwrap();
        f.on_puback(1);
        assert_eq!(f.suspect.as_ref().unwrap().ids, vec![4, 5]);
        assert_eq!(drop_with_head_in_flight(&mut f, &[4], now), None);
        assert_eq!(drop_with_head_in_flight(&mut f, &[4], now), Some(4));
        assert_eq!(f.suspect.as_ref().unwrap().ids, vec![5]);
        assert!(f.alone());
    }

    #[test]
    fn a_suspect_that_left_the_queue_ends_alone_mode() {
        let now = Instant::now();
        let mut f = Flight::new(8);
        drop_with_head_in_flight(&mut f, &[3], now);
        drop_with_head_in_flight(&mut f, &[3], now);
        assert!(f.alone());
        f.forget_suspects(&[3]);
        assert!(!f.alone());
        assert!(f.suspect.is_none());
    }

    #[test]
    fn a_refused_request_condemns_its_rows_and_frees_the_window() {
        let now = Instant::now();
        let mut f = Flight::new(1);
        f.online = true;
        f.on_sent(Item::Rows {
            rows: confirmed(&[7, 8]),
            qos: Q1,
        });
        f.on_publish(1, now).unwrap();
        assert!(!f.can_send());
        assert_eq!(f.on_refused(1, "0x87 NotAuthorized".into()), Some(2));
        assert!(f.can_send());
        assert!(f.acked.is_empty());
        assert_eq!(f.dead[0].ids, vec![7, 8]);
    }
}
