//! Rows read ahead of the window, and how they leave as messages: one row each, or (with
//! `[mqtt.batch]`) the rows of one topic together.
//!
//! **Invariant:** within a topic, rows leave in row-id order. Across topics a batch that is
//! due (full, or its oldest row waited `max_delay`) may overtake a topic whose batch is
//! still filling; without batching every row leaves in row-id order.

use crate::queue::Stored;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A row waiting to be sent, and when its batch must leave at the latest.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub row: Stored,
    pub due: Instant,
}

/// How many distinct topics one search for a due batch looks at.
const TOPICS_PER_SEARCH: usize = 64;

#[derive(Debug, Default)]
pub struct ReadAhead {
    /// In row-id order; `None` marks a row already taken into a batch.
    rows: VecDeque<Option<Waiting>>,
    len: usize,
}

impl ReadAhead {
    /// Rows not yet taken.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.rows.clear();
        self.len = 0;
    }

    /// Adds a row read from the queue. It is due when it has waited `max_delay` since it
    /// was read, or since it was stamped (a reading from a backlog is due at once).
    pub fn push(&mut self, row: Stored, now: Instant, now_ms: i64, max_delay: Duration) {
        let age = match row.age_unknown {
            true => Duration::ZERO,
            false => Duration::from_millis(now_ms.saturating_sub(row.created_ms).max(0) as u64),
        };
        self.rows.push_back(Some(Waiting {
            due: now + max_delay.saturating_sub(age),
            row,
        }));
        self.len += 1;
    }

    /// When the oldest waiting row is due: the time to look again.
    pub fn next_due(&self) -> Option<Instant> {
        self.rows.iter().flatten().map(|w| w.due).next()
    }

    /// The next message's rows: the oldest row alone when `max` is 1; otherwise the rows of
    /// the first topic (in order of its oldest row) whose batch is full (`max` rows) or due
    /// by `now`. With `force`, the oldest topic's batch leaves even if it is neither.
    pub fn next(&mut self, max: usize, now: Instant, force: bool) -> Option<Vec<Waiting>> {
        self.trim();
        if max <= 1 {
            let w = self.rows.pop_front()??;
            self.len -= 1;
            return Some(vec![w]);
        }
        let mut seen: Vec<&str> = Vec::new();
        let mut pick: Option<usize> = None;
        for (i, w) in self.rows.iter().enumerate() {
            let Some(w) = w else { continue };
            if seen.contains(&&*w.row.topic) {
                continue;
            }
            if force || w.due <= now || self.count_from(i, max) >= max {
                pick = Some(i);
                break;
            }
            seen.push(&w.row.topic);
            if seen.len() >= TOPICS_PER_SEARCH {
                break;
            }
        }
        let start = pick?;
        let topic = self.rows[start].as_ref().map(|w| w.row.topic.clone())?;
        let mut out = Vec::new();
        for slot in self.rows.iter_mut().skip(start) {
            if out.len() == max {
                break;
            }
            if slot.as_ref().is_some_and(|w| w.row.topic == topic) {
                out.extend(slot.take());
            }
        }
        self.len -= out.len();
        self.trim();
        Some(out)
    }

    /// Puts rows that could not be handed over back in front, in their order.
    pub fn unshift(&mut self, rows: Vec<Waiting>) {
        self.len += rows.len();
        for w in rows.into_iter().rev() {
            self.rows.push_front(Some(w));
        }
    }

    fn count_from(&self, start: usize, max: usize) -> usize {
        let topic = match &self.rows[start] {
            Some(w) => &w.row.topic,
            None => return 0,
        };
        self.rows
            .iter()
            .skip(start)
            .flatten()
            .filter(|w| &w.row.topic == topic)
            .take(max)
            .count()
    }

    fn trim(&mut self) {
        while matches!(self.rows.front(), Some(None)) {
            self.rows.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Qos;

    fn row(id: i64, topic: &str, created_ms: i64) -> Stored {
        Stored {
            id,
            topic: topic.into(),
            payload: id.to_string().into_bytes().into(),
            qos: Qos::AtLeastOnce,
            retain: false,
            created_ms,
            age_unknown: false,
            stored_bytes: (topic.len() + id.to_string().len()) as u64,
        }
    }

    fn ids(b: Option<Vec<Waiting>>) -> Vec<i64> {
        b.unwrap_or_default().iter().map(|w| w.row.id).collect()
    }

    const NOW_MS: i64 = 1_000_000;

    #[test]
    fn without_batching_rows_leave_one_by_one_in_order() {
        let t = Instant::now();
        let mut a = ReadAhead::default();
        for (id, topic) in [(1, "a"), (2, "b"), (3, "a")] {
            a.push(row(id, topic, NOW_MS), t, NOW_MS, Duration::ZERO);
        }
        assert_eq!(ids(a.next(1, t, false)), vec![1]);
        assert_eq!(ids(a.next(1, t, false)), vec![2]);
        assert_eq!(ids(a.next(1, t, false)), vec![3]);
        assert!(a.next(1, t, false).is_none() && a.is_empty());
    }

    #[test]
    fn a_batch_waits_until_full_or_due() {
        let t = Instant::now();
        let d = Duration::from_secs(30);
        let mut a = ReadAhead::default();
        for id in 1..=3 {
            a.push(row(id, "a", NOW_MS), t, NOW_MS, d);
        }
        a.push(row(4, "b", NOW_MS), t, NOW_MS, d);
        for id in 5..=6 {
            a.push(row(id, "b", NOW_MS), t, NOW_MS, d);
        }
        a.push(row(7, "b", NOW_MS), t, NOW_MS, d);
        // b is full at 4 rows and overtakes a, which is still filling.
        assert_eq!(ids(a.next(4, t, false)), vec![4, 5, 6, 7]);
        assert!(a.next(4, t, false).is_none());
        assert_eq!(a.next_due(), Some(t + d));
        assert_eq!(ids(a.next(4, t + d, false)), vec![1, 2, 3]);
        assert!(a.is_empty());
    }

    #[test]
    fn old_rows_are_due_at_once_and_force_sends_what_waits() {
        let t = Instant::now();
        let d = Duration::from_secs(30);
        let mut a = ReadAhead::default();
        a.push(row(1, "a", NOW_MS - 60_000), t, NOW_MS, d);
        a.push(row(2, "b", NOW_MS), t, NOW_MS, d);
        assert_eq!(ids(a.next(10, t, false)), vec![1], "a backlog row is due");
        assert!(a.next(10, t, false).is_none());
        assert_eq!(ids(a.next(10, t, true)), vec![2]);
    }

    #[test]
    fn unshift_restores_order_and_count() {
        let t = Instant::now();
        let mut a = ReadAhead::default();
        for id in 1..=5 {
            a.push(row(id, "a", NOW_MS), t, NOW_MS, Duration::ZERO);
        }
        let b = a.next(3, t, false).unwrap();
        assert_eq!(a.len(), 2);
        a.unshift(b);
        assert_eq!(a.len(), 5);
        assert_eq!(ids(a.next(10, t, false)), vec![1, 2, 3, 4, 5]);
    }
}
