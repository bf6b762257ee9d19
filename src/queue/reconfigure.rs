//! Options applied to an open queue (a reload of the config): the queue stays open, its
//! connections and its cursors with it.

use super::{room, sql, Queue, QueueError, QueueOptions};

impl Queue {
    /// Applies `opts`: the size policy (`max_size`, `when_full`) from the next append on,
    /// the WAL's bound, and the sync level. The reserve file keeps the size it was made
    /// with until it is made again.
    pub fn reconfigure(&mut self, opts: QueueOptions) -> Result<(), QueueError> {
        let budget = room::wal_budget(opts.max_size) as i64;
        let apply = |q: &Queue| -> Result<(), rusqlite::Error> {
            let page: i64 = q.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            q.conn
                .pragma_update(None, "wal_autocheckpoint", (budget / page).max(8))?;
            q.conn.pragma_update(None, "journal_size_limit", budget)?;
            let sync = match opts.synchronous_full {
                true => sql::SYNC_FULL,
                false => sql::SYNC_NORMAL,
            };
            q.conn.prepare_cached(sync)?.execute([])?;
            Ok(())
        };
        apply(self).map_err(|e| self.conn.err(e))?;
        self.opts = opts;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Qos, WhenFull};
    use crate::mapping::NewMessage;

    fn message(seq: i64) -> NewMessage {
        NewMessage {
            seq,
            topic: "t".into(),
            payload: vec![b'p'; 1000],
            qos: Qos::AtLeastOnce,
            retain: false,
            created_ms: 0,
            unsynced_mono_ms: None,
        }
    }

    /// A smaller `max_size` and another policy apply to the open queue from the next
    /// append on.
    #[test]
    fn new_options_apply_to_the_open_queue() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |max_size, when_full| QueueOptions {
            max_size,
            when_full,
            synchronous_full: true,
        };
        let mut q = Queue::open(
            &dir.path().join("q.db"),
            opts(1 << 30, WhenFull::DropOldest),
        )
        .unwrap();
        let batch: Vec<NewMessage> = (1..=20).map(message).collect();
        assert_eq!(q.append(&batch).unwrap().dropped_new, 0);
        q.reconfigure(opts(10_000, WhenFull::DropNewest)).unwrap();
        let batch: Vec<NewMessage> = (21..=25).map(message).collect();
        let appended = q.append(&batch).unwrap();
        assert_eq!((appended.stored, appended.dropped_new), (0, 5));
        let sync: i64 = q
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
    }
}
