//! The live path: messages mapped and not yet committed, offered to the uplink so that a
//! reading can leave at once while its commit lingers. A message the broker acknowledges
//! before its commit starts is never written; whatever is not acknowledged by then is
//! committed as any other.
//!
//! The pipeline offers messages only while the uplink says it takes them (it is online and
//! has sent everything committed). Every message keeps the sequence number the pipeline gave
//! it, which is its row id if it is committed.
//!
//! - **Invariant:** a message is skipped by its commit only if the broker acknowledged it
//!   before the commit started ([`Live::hand`] and [`Live::claim`] decide under one lock):
//!   what is acknowledged after that is confirmed in the queue as a row.
//! - **Invariant:** the uplink takes offered messages in sequence order, each one only when
//!   every lower number was sent (read from the queue or taken here): the order per topic is
//!   the order of the sequence numbers, live or not.
//! - **Invariant:** offered messages are bounded ([`OFFERED_MAX`]); past it the pipeline
//!   stops offering and the rest waits for its commit.

use super::Stored;
use crate::mapping::NewMessage;
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The most messages offered and not taken.
pub const OFFERED_MAX: usize = 4096;

/// Shared by the pipeline (offers, hands to commits) and the uplink (takes, claims).
#[derive(Debug, Default)]
pub struct Live {
    state: Mutex<State>,
    /// Set by the uplink while it takes offered messages.
    taking: AtomicBool,
    /// Wakes the uplink when a message is offered.
    pub offered: Notify,
    /// The queue file records every sequence number up to this one as handed out
    /// ([`crate::queue::Queue::reserve_seq`]): only those may be offered, so that a number
    /// a consumer saw is never handed out again, even after a crash.
    reserved: AtomicI64,
    /// A reservation is under way.
    pub reserving: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Mapped, not handed to a commit, not taken: in sequence order.
    offered: VecDeque<Stored>,
    /// Every sequence number up to this one went to a commit (or was skipped by it).
    handed: i64,
    /// Acknowledged by the broker before their commit: the commit skips them.
    acked: BTreeSet<i64>,
}

/// How a commit's messages stand when it starts ([`Live::hand`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Handed {
    /// The sequence numbers the broker has acknowledged: not to be written.
    pub skip: BTreeSet<i64>,
}

impl Live {
    pub fn shared() -> Arc<Live> {
        Arc::new(Live::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every number up to this one may be offered.
    pub fn reserved(&self) -> i64 {
        self.reserved.load(Relaxed)
    }

    pub fn set_reserved(&self, upto: i64) {
        self.reserved.fetch_max(upto, Relaxed);
    }

    /// Whether the uplink takes offered messages (cheap: read before copying any).
    pub fn wanted(&self) -> bool {
        self.taking.load(Relaxed)
    }

    /// The uplink says whether it takes offered messages.
    pub fn set_taking(&self, taking: bool) {
        if self.taking.swap(taking, Relaxed) && !taking {
            self.state().offered.clear();
        }
    }

    /// The pipeline offers `messages` (in sequence order, above every one offered before);
    /// those above the reserved numbers are not offered. Returns how many were.
    pub fn offer(&self, messages: &[NewMessage]) -> usize {
        if !self.wanted() || messages.is_empty() {
            return 0;
        }
        let reserved = self.reserved();
        let mut s = self.state();
        let mut n = 0;
        for m in messages {
            if s.offered.len() >= OFFERED_MAX || m.seq > reserved {
                break;
            }
            s.offered.push_back(Stored::from_new(m));
            n += 1;
        }
        drop(s);
        self.offered.notify_one();
        n
    }

    /// A commit of every sequence number up to `last` starts: what was offered up to it is
    /// withdrawn, and the numbers the broker acknowledged are returned, to be skipped.
    pub fn hand(&self, first: i64, last: i64) -> Handed {
        let mut s = self.state();
        s.handed = s.handed.max(last);
        while s.offered.front().is_some_and(|m| m.id <= last) {
            s.offered.pop_front();
        }
        let rest = s.acked.split_off(&(last + 1));
        let skip: BTreeSet<i64> = std::mem::replace(&mut s.acked, rest)
            .into_iter()
            .filter(|&id| id >= first)
            .collect();
        Handed { skip }
    }

    /// The last sequence number handed to a commit.
    pub fn handed(&self) -> i64 {
        self.state().handed
    }

    /// The uplink takes up to `max` offered messages, starting exactly at `next` (the
    /// number after every one it has sent): none if the first offered is not `next` (a
    /// message between was not offered, and waits for its commit).
    pub fn take(&self, next: i64, max: usize) -> Vec<Stored> {
        let mut s = self.state();
        while s.offered.front().is_some_and(|m| m.id < next) {
            s.offered.pop_front();
        }
        let mut taken = Vec::new();
        let mut expect = next;
        while taken.len() < max && s.offered.front().is_some_and(|m| m.id == expect) {
            taken.push(s.offered.pop_front().expect("checked"));
            expect += 1;
        }
        taken
    }

    /// The broker acknowledged the live messages `ids`: those not handed to a commit yet
    /// are recorded (their commit skips them) and returned; the others are rows to confirm.
    pub fn claim(&self, ids: impl IntoIterator<Item = i64>) -> Vec<i64> {
        let mut s = self.state();
        let handed = s.handed;
        let mut claimed = Vec::new();
        for id in ids {
            if id > handed {
                s.acked.insert(id);
                claimed.push(id);
            }
        }
        claimed
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_reserved_numbers_are_offered() {
        let live = Live::default();
        live.set_taking(true);
        live.set_reserved(2);
        live.offer(&messages(1..=4));
        let ids: Vec<i64> = live.take(1, 10).iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 2]);
    }

    use super::*;
    use crate::config::Qos;

    fn messages(ids: std::ops::RangeInclusive<i64>) -> Vec<NewMessage> {
        ids.map(|seq| NewMessage {
            seq,
            topic: "t".into(),
            payload: b"{}".to_vec(),
            qos: Qos::AtLeastOnce,
            retain: false,
            created_ms: 0,
            unsynced_mono_ms: None,
        })
        .collect()
    }

    #[test]
    fn nothing_is_offered_unless_the_uplink_takes() {
        let live = Live::default();
        live.set_reserved(100);
        live.offer(&messages(1..=3));
        assert!(live.take(1, 10).is_empty());
        live.set_taking(true);
        live.offer(&messages(4..=6));
        // 1..=3 were not offered: 4 is not the next to send.
        assert!(live.take(1, 10).is_empty());
        let ids: Vec<i64> = live.take(4, 2).iter().map(|m| m.id).collect();
        assert_eq!(ids, [4, 5]);
        live.set_taking(false);
        assert!(
            live.take(6, 10).is_empty(),
            "withdrawn when the uplink stops taking"
        );
    }

    #[test]
    fn an_acknowledgement_before_the_commit_skips_the_row_and_after_it_confirms_the_row() {
        let live = Live::default();
        live.set_reserved(100);
        live.set_taking(true);
        live.offer(&messages(1..=4));
        assert_eq!(live.take(1, 10).len(), 4);
        assert_eq!(live.claim([1, 2]), [1, 2]);
        let handed = live.hand(1, 3);
        assert_eq!(handed.skip, [1, 2].into());
        // 3 was in the commit: a row to confirm; 4 was not: skipped by its commit.
        assert_eq!(live.claim([3, 4]), [4]);
        assert_eq!(live.hand(4, 4).skip, [4].into());
        assert_eq!(live.handed(), 4);
    }

    #[test]
    fn offers_are_bounded_and_withdrawn_by_their_commit() {
        let live = Live::default();
        live.set_reserved(i64::MAX);
        live.set_taking(true);
        let many = messages(1..=(OFFERED_MAX as i64 + 10));
        live.offer(&many);
        live.hand(1, 100);
        let taken = live.take(101, usize::MAX);
        assert_eq!(taken.first().map(|m| m.id), Some(101));
        assert_eq!(taken.len(), OFFERED_MAX - 100);
    }
}
