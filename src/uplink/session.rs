//! One connection's session as the uplink keeps it: its requests in flight ([`Flight`]),
//! the limits its CONNACK set (window, packet size, topic aliases), and what outlives it:
//! confirmed rows not yet released or deleted, dead letters waiting to be buried, suspects.
//!
//! Shared by the poller, the pump and other publishers of control messages behind a std
//! `Mutex` that is never held across an `.await`.
//!
//! **Invariant:** a row id reaches `acked` only through the PUBACK of its own request
//! (QoS 1) or its request's `Outgoing::Publish` (QoS 0, written to the socket).
//! **Invariant:** [`Session::reset`] forgets the connection (requests, aliases, limits) and
//! bumps `epoch`; `acked`, `dead`, the suspects and a learnt packet limit stay. Rows
//! condemned wait in `dead`; reads skip them until they are buried.

use super::flight::{Flight, Item, Mismatch, Written};
use super::strikes::{Strikes, Suspect};
use crate::queue::{Confirmed, Fetched};
use std::collections::{HashMap, HashSet};
use std::time::{Instant, SystemTime};

/// Rows to move to the dead-letter table, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condemned {
    pub ids: Vec<i64>,
    pub reason: String,
}

#[derive(Debug)]
pub struct Session {
    flight: Flight,
    strikes: Strikes,
    /// Rows whose delivery is confirmed, not yet released or deleted from the queue.
    pub acked: Confirmed,
    /// Bumped by every reset, so a reader of the queue knows its view is stale.
    pub epoch: u64,
    /// A CONNACK came and the connection has not been forgotten since.
    pub online: bool,
    /// MQTT 5 topic aliases of this connection, and how many the broker allows.
    aliases: HashMap<String, u16>,
    pub alias_max: u16,
    /// on_demand: when the next window opens (for the availability topic).
    pub next_window: Option<SystemTime>,
    /// The largest packet this connection may carry (see `link::MAX_PACKET`).
    pub max_packet: usize,
    /// Rows that cannot be delivered, waiting to be moved to the dead-letter table.
    pub dead: Vec<Condemned>,
    /// A packet size limit learnt from an MQTT 5 refusal (0x95) of a batch: kept across
    /// connections.
    pub learned_max: Option<usize>,
}

impl Session {
    pub fn new(window: u16) -> Session {
        Session {
            flight: Flight::new(window),
            strikes: Strikes::default(),
            acked: Confirmed::default(),
            epoch: 0,
            online: false,
            aliases: HashMap::new(),
            alias_max: 0,
            next_window: None,
            max_packet: crate::uplink::link::MAX_PACKET,
            dead: Vec::new(),
            learned_max: None,
        }
    }

    /// Lowers (or restores) the window for this connection (at CONNACK).
    pub fn set_window(&mut self, window: u16) {
        self.flight.set_window(window);
    }

    pub fn window(&self) -> u64 {
        self.flight.window()
    }

    /// How many more requests fit in the window.
    pub fn room(&self) -> u64 {
        self.flight.room()
    }

    /// Requests handed over and not yet confirmed.
    pub fn in_flight(&self) -> usize {
        self.flight.in_flight()
    }

    /// When the oldest publish still waiting for its PUBACK was written.
    pub fn oldest_wait(&self) -> Option<Instant> {
        self.flight.oldest_wait()
    }

    /// The rows the request awaiting `pkid` stands for.
    pub fn rows_of(&self, pkid: u16) -> Option<&Confirmed> {
        self.flight.rows_of(pkid)
    }

    /// The rows of the oldest request of rows written and not acknowledged.
    pub fn oldest_rows(&self) -> Option<Confirmed> {
        self.flight
            .oldest_written()
            .map(|(_, rows, _): &Written| rows.clone())
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

    /// Whether another request may be handed to rumqttc now.
    pub fn can_send(&self) -> bool {
        self.online && self.room() > 0 && !(self.alone() && self.in_flight() > 0)
    }

    /// Whether requests go one row at a time with nothing else in flight (a suspect).
    pub fn alone(&self) -> bool {
        self.strikes.alone()
    }

    pub fn suspect(&self) -> Option<&Suspect> {
        self.strikes.suspect()
    }

    /// Records a request just handed to rumqttc.
    pub fn on_sent(&mut self, item: Item) {
        self.flight.on_sent(item);
    }

    /// rumqttc wrote a publish with `pkid` (0 for QoS 0): a QoS 0 request's rows are
    /// confirmed.
    pub fn on_publish(&mut self, pkid: u16, now: Instant) -> Result<(), Mismatch> {
        let rows = self.flight.on_publish(pkid, now)?;
        self.acked.extend(rows);
        Ok(())
    }

    /// The broker acknowledged `pkid`. Returns how many rows it confirms (None when the
    /// pkid was not awaited: rumqttc itself treats that as an error).
    pub fn on_puback(&mut self, pkid: u16) -> Option<usize> {
        let rows = self.flight.on_answer(pkid)?;
        let n = rows.len();
        self.strikes.forget(rows.ids());
        self.acked.extend(rows);
        Some(n)
    }

    /// The broker refused `pkid` for good: its rows become dead letters. Returns how many
    /// (None when the pkid was not awaited).
    pub fn on_refused(&mut self, pkid: u16, reason: String) -> Option<usize> {
        let rows = self.flight.on_answer(pkid)?;
        let n = rows.len();
        if n > 0 {
            self.condemn(rows.ids().to_vec(), reason);
        }
        Some(n)
    }

    /// A broker refused a batch of `bytes` (topic and payloads) as too large: later
    /// connections cut batches to half of it. Returns the new limit.
    pub fn learn_limit(&mut self, bytes: u64) -> usize {
        let limit = ((bytes / 2) as usize).clamp(128, self.max_packet.max(128));
        self.learned_max = Some(self.learned_max.map_or(limit, |l| l.min(limit)));
        limit
    }

    /// The broker closed the connection at `now`: a strike may count against the oldest
    /// request ([`Strikes::note_drop`]).
    pub fn note_drop(&mut self, now: Instant) {
        self.strikes.note_drop(&self.flight, now);
    }

    /// The connection failed before a CONNACK: the last drop was not the broker's choice.
    pub fn forgive_drop(&mut self) {
        self.strikes.forgive();
    }

    /// A CONNACK at the first attempt after a drop: the strike noted counts. Returns the row
    /// condemned, if one was alone in flight and has struck out.
    pub fn confirm_strike(&mut self) -> Option<i64> {
        let (id, reason) = self.strikes.confirm()?;
        self.condemn(vec![id], reason);
        Some(id)
    }

    /// Moves `ids` to the dead letters with `reason`; they are no longer suspects.
    pub fn condemn(&mut self, ids: Vec<i64>, reason: String) {
        self.strikes.forget(&ids);
        self.dead.push(Condemned { ids, reason });
    }

    /// Rows that left the queue some other way (expired, evicted, purged) are no longer
    /// suspects.
    pub fn forget_suspects(&mut self, gone: &[i64]) {
        self.strikes.forget(gone);
    }

    /// A read of the ids after `after` up to `hi` found `fetched`: suspects it should have
    /// met and did not are gone from the queue (expired, evicted, purged), no reason to
    /// stay alone any more.
    pub fn forget_suspects_unread(&mut self, after: i64, hi: i64, fetched: &Fetched) {
        let Some(s) = self.suspect() else { return };
        let gone: Vec<i64> = s
            .ids
            .iter()
            .copied()
            .filter(|id| *id > after && *id <= hi)
            .filter(|id| {
                !fetched.rows.iter().any(|r| r.id == *id)
                    && !fetched.unreadable.iter().any(|u| u.0 == *id)
            })
            .collect();
        self.forget_suspects(&gone);
    }

    /// The ids condemned and not yet buried, with `burying`, those a burial is moving.
    pub fn condemned(&self, burying: &[i64]) -> HashSet<i64> {
        let dead = self.dead.iter().flat_map(|c| c.ids.iter().copied());
        dead.chain(burying.iter().copied()).collect()
    }

    /// Forgets the connection (rumqttc's state was cleaned). Confirmed rows in `acked`
    /// stay: they were delivered.
    pub fn reset(&mut self) {
        self.flight.clear();
        self.online = false;
        self.aliases.clear();
        self.alias_max = 0;
        self.max_packet = crate::uplink::link::MAX_PACKET;
        self.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::strikes::STRIKE_WINDOW;
    use super::*;
    use crate::config::Qos;
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
        let mut f = Session::new(8);
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
        let mut f = Session::new(3);
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
        let mut f = Session::new(4);
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
        let mut f = Session::new(4);
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
        let mut f = Session::new(4);
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
        let mut f = Session::new(4);
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
        let mut f = Session::new(4);
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
    fn drop_with_head_in_flight(f: &mut Session, head: &[i64], now: Instant) -> Option<i64> {
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
        let mut f = Session::new(8);
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
        assert!(f.suspect().is_none());
        assert!(!f.alone());
    }

    #[test]
    fn drops_the_broker_did_not_choose_are_no_strikes() {
        let now = Instant::now();
        let mut f = Session::new(8);
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
        assert!(f.suspect().is_none());
        // Written long before the drop (a link that died later), or a later request was
        // acknowledged (the broker got past it): no strike either.
        f.online = true;
        f.on_sent(row(3));
        f.on_publish(1, now).unwrap();
        f.note_drop(now + STRIKE_WINDOW + Duration::from_secs(1));
        f.reset();
        assert_eq!(f.confirm_strike(), None);
        assert!(f.suspect().is_none());
        f.online = true;
        f.on_sent(row(3));
        f.on_publish(1, now).unwrap();
        f.on_sent(row(4));
        f.on_publish(2, now).unwrap();
        f.on_puback(2);
        f.note_drop(now);
        f.reset();
        assert_eq!(f.confirm_strike(), None);
        assert!(f.suspect().is_none());
    }

    #[test]
    fn rows_of_a_suspect_batch_are_condemned_only_after_two_drops_alone() {
        let now = Instant::now();
        let mut f = Session::new(8);
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
        assert_eq!(f.suspect().unwrap().ids, vec![4, 5]);
        assert_eq!(drop_with_head_in_flight(&mut f, &[4], now), None);
        assert_eq!(drop_with_head_in_flight(&mut f, &[4], now), Some(4));
        assert_eq!(f.suspect().unwrap().ids, vec![5]);
        assert!(f.alone());
    }

    #[test]
    fn a_suspect_that_left_the_queue_ends_alone_mode() {
        let now = Instant::now();
        let mut f = Session::new(8);
        drop_with_head_in_flight(&mut f, &[3], now);
        drop_with_head_in_flight(&mut f, &[3], now);
        assert!(f.alone());
        f.forget_suspects(&[3]);
        assert!(!f.alone());
        assert!(f.suspect().is_none());
    }

    #[test]
    fn a_refused_request_condemns_its_rows_and_frees_the_window() {
        let now = Instant::now();
        let mut f = Session::new(1);
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
