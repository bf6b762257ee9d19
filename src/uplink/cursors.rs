//! Where the pump reads next, and what it has read: the cursors of one connection and the
//! two read-aheads they fill.
//!
//! After each CONNACK (a new epoch) every row left in the queue is unconfirmed: the cursors
//! start again from the oldest row. Rows up to `split` are the backlog (`old`), rows after
//! it the fresh ones; `split` is the last row committed when the connection came up with
//! `live_first`, else 0 (everything is fresh).
//!
//! **Invariant:** nothing is read before the connection is up and `split` is fixed (a read
//! before it would put backlog rows among the fresh ones), and after a new epoch nothing is
//! read until the confirmed rows are released or deleted (`reread`): a read from the start
//! must not find them again.
//! **Invariant:** a cursor only moves up, and past `end` only to ids read: ids are never
//! reused, so nothing can appear below a cursor later.

use super::read_ahead::{ReadAhead, Waiting};
use crate::queue::Fetched;
use std::time::{Duration, Instant};

/// What a read is for: the fresh rows or the backlog, after which id and up to which,
/// how many rows it asks for, and under which connection.
#[derive(Debug, Clone, Copy)]
pub struct ReadPlan {
    pub fresh: bool,
    pub after: i64,
    pub end: i64,
    pub want: usize,
    pub epoch: u64,
}

impl ReadPlan {
    /// The highest id the read may return: fresh reads run to the newest row.
    pub fn upto(&self) -> i64 {
        if self.fresh {
            i64::MAX
        } else {
            self.end
        }
    }
}

/// The pump's cursors for one connection.
#[derive(Debug)]
pub struct Cursors {
    epoch: u64,
    /// `split` is fixed once per connection, when it is up.
    split_taken: bool,
    split: i64,
    /// The last ids read into the backlog and into the fresh rows.
    old: i64,
    fresh: i64,
    /// The last row committed when the connection came up (on_demand windows end there).
    window_last: i64,
    /// The queue is to be read again from the start (a new connection).
    reread: bool,
}

impl Default for Cursors {
    fn default() -> Cursors {
        Cursors {
            epoch: u64::MAX,
            split_taken: false,
            split: 0,
            old: 0,
            fresh: 0,
            window_last: 0,
            reread: true,
        }
    }
}

impl Cursors {
    /// Follows the session to `epoch`; a new one starts the cursors over. Returns whether
    /// it did (what was read ahead is then stale).
    pub fn follow(&mut self, epoch: u64) -> bool {
        if self.epoch == epoch {
            return false;
        }
        *self = Cursors {
            epoch,
            window_last: self.window_last,
            ..Cursors::default()
        };
        true
    }

    /// The connection is up with `last` the newest row committed: fixes the backlog's end
    /// (`live_first`) and the end of an on_demand window, once per connection.
    pub fn take_split(&mut self, last: i64, live_first: bool) {
        if self.split_taken {
            return;
        }
        self.split_taken = true;
        self.window_last = last;
        if live_first {
            self.split = last;
            self.fresh = last;
        }
    }

    /// The last row an on_demand window sends: the one committed when it opened (rows
    /// committed during it wait for the next, or input faster than the round trip would
    /// keep the window and the radio open for ever).
    pub fn window_end(&self, last: i64) -> i64 {
        last.min(self.window_last)
    }

    /// Whether rows up to `last` are left to read.
    pub fn behind(&self, last: i64) -> bool {
        self.split_taken && (self.fresh < last || self.old < self.split)
    }

    /// Whether reading must wait for the confirmed rows to be released or deleted.
    pub fn reread(&self) -> bool {
        self.reread
    }

    /// The next read, of at most `want` rows: fresh rows first, the backlog when there are
    /// none.
    pub fn plan(&self, last: i64, want: usize) -> ReadPlan {
        let (fresh, after, end) = if self.fresh < last {
            (true, self.fresh, last)
        } else {
            (false, self.old, self.split)
        };
        ReadPlan {
            fresh,
            after,
            end,
            want,
            epoch: self.epoch,
        }
    }

    /// A read of `plan` returned `fetched`: moves its cursor. Fewer rows than asked means
    /// none are left up to `end`, so the cursor may skip to it. Returns the new cursor.
    pub fn advance(&mut self, plan: &ReadPlan, fetched: &Fetched) -> i64 {
        self.reread = false;
        let cursor = if plan.fresh {
            &mut self.fresh
        } else {
            &mut self.old
        };
        *cursor = if fetched.count() < plan.want {
            plan.end.max(fetched.last_id().unwrap_or(0))
        } else {
            fetched.last_id().unwrap_or(*cursor)
        };
        *cursor
    }

    /// Whether row `id` belongs with the fresh rows.
    pub fn is_fresh(&self, id: i64) -> bool {
        id > self.split
    }
}

/// Rows read ahead: the fresh ones and the backlog, each in row-id order.
#[derive(Debug, Default)]
pub struct Lanes {
    pub fresh: ReadAhead,
    pub old: ReadAhead,
}

impl Lanes {
    pub fn len(&self) -> usize {
        self.fresh.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fresh.is_empty() && self.old.is_empty()
    }

    pub fn clear(&mut self) {
        self.fresh.clear();
        self.old.clear();
    }

    /// The lane a read of `plan` fills.
    pub fn of(&mut self, plan: &ReadPlan) -> &mut ReadAhead {
        if plan.fresh {
            &mut self.fresh
        } else {
            &mut self.old
        }
    }

    /// The next message's rows ([`ReadAhead::next`]): fresh rows first, or the backlog
    /// first when a suspect goes `alone` (suspects are the oldest rows).
    pub fn next(
        &mut self,
        max: usize,
        now: Instant,
        force: bool,
        alone: bool,
    ) -> Option<Vec<Waiting>> {
        let (first, second) = if alone {
            (&mut self.old, &mut self.fresh)
        } else {
            (&mut self.fresh, &mut self.old)
        };
        first
            .next(max, now, force)
            .or_else(|| second.next(max, now, force))
    }

    /// Returns rows that could not be sent to the front of the lane they came from.
    pub fn unshift(&mut self, cursors: &Cursors, rows: Vec<Waiting>) {
        if rows.first().is_some_and(|w| cursors.is_fresh(w.row.id)) {
            self.fresh.unshift(rows);
        } else {
            self.old.unshift(rows);
        }
    }

    /// When the next batch is due, if after `now`.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        [self.fresh.next_due(), self.old.next_due()]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
    }

    /// Adds a row read for `plan`.
    pub fn push(
        &mut self,
        plan: &ReadPlan,
        row: crate::queue::Stored,
        now: Instant,
        now_ms: i64,
        max_delay: Duration,
    ) {
        self.of(plan).push(row, now, now_ms, max_delay);
    }
}
