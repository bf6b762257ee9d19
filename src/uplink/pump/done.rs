//! What the pump does when a trip to the SQLite threads comes back: a read's rows join
//! their lane, a confirmation frees its rows or hands them back to the session.
//!
//! **Invariant:** a read made under an older connection (epoch) is dropped: the next round
//! reads again from the start. Rows condemned or being buried never join a lane.

use super::Pump;
use crate::metrics::Metrics;
use crate::queue::threads::Panicked;
use crate::queue::{Fetched, QueueError};
use crate::uplink::cursors::ReadPlan;
use crate::uplink::store::Confirming;
use crate::uplink::{locked, now};
use tracing::{error, warn};

impl Pump {
    /// A read came back: its rows join their lane, unless condemned.
    pub(super) fn on_read(
        &mut self,
        plan: ReadPlan,
        r: Result<Result<Fetched, QueueError>, Panicked>,
    ) {
        let fetched = match r {
            Ok(Ok(fetched)) => fetched,
            Ok(Err(e)) => {
                self.on_error(&e);
                error!(error = %e, "Queue read failed; retrying in 1s.");
                return self.pause_db();
            }
            Err(e) => {
                error!(error = %e, "Queue read task failed; retrying in 1s.");
                return self.pause_db();
            }
        };
        let session = self.handle.session.clone();
        let mut f = locked(&session);
        if plan.epoch != f.epoch {
            return; // read under an older connection: the next round starts over
        }
        let hi = self.cursors.advance(&plan, &fetched);
        let (now, now_ms) = (now(), crate::reading::now_ms() as i64);
        f.forget_suspects_unread(plan.after, hi, &fetched);
        // Rows on their way to the dead letters are not sent again.
        let condemned = f.condemned(self.burials.ids());
        for row in fetched.rows {
            // Taken from memory before its commit: sent already.
            if row.id <= self.live_taken {
                continue;
            }
            if !condemned.contains(&row.id) {
                self.lanes.push(&plan, row, now, now_ms, self.max_delay);
            }
        }
        for (id, e) in fetched.unreadable {
            if !condemned.contains(&id) {
                f.condemn(
                    vec![id],
                    format!("it cannot be read back from the queue: {e}"),
                );
            }
        }
    }

    /// A confirmation (or reclaim) came back.
    pub(super) fn on_confirmed(&mut self, r: Result<Confirming, Panicked>) {
        match r {
            Ok((Ok(_), _, left)) => {
                self.reclaim_left = left;
                Metrics::add(&self.metrics.progress, 1);
            }
            // A failed reclaim (nothing confirmed was in it) is optional work: it waits for
            // the next confirmation instead of pausing the queue.
            Ok((Err(e), unsaved, _)) if unsaved.is_empty() => {
                self.on_error(&e);
                warn!(error = %e, "Could not reclaim released rows; trying again after the next confirmation.");
                self.reclaim_left = false;
            }
            Ok((Err(e), unsaved, _)) => {
                self.on_error(&e);
                warn!(error = %e, "Queue delete failed; the rows stay confirmed in memory, retrying in 1s.");
                self.handle.session().acked.extend(unsaved);
                self.pause_db();
            }
            Err(e) => {
                error!(error = %e, "Queue delete task failed; retrying in 1s.");
                self.pause_db();
            }
        }
    }
}
