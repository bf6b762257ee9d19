//! Dead letters: rows that can never be delivered as they are (refused for good by the
//! broker, larger than it accepts, a topic MQTT cannot carry, a row that cannot be read
//! back) leave the outbox for the `dead` table of the same file, so that nothing behind
//! them waits.
//!
//! **Invariant:** a row becomes a dead letter in one transaction that copies it to `dead`,
//! deletes it from `outbox`, moves its bytes from `meta.bytes` to `meta.dead_bytes` and
//! counts it in `meta.dead`. Dead letters keep their sequence number; the topic is kept
//! as the bytes stored (it may not be UTF-8).
//! **Invariant:** dead letters take at most an eighth of the room the size policy has
//! (`max_size`), and count against it: `meta.bytes` plus `meta.dead_bytes` stays within
//! it. Beyond their eighth the oldest are discarded and counted in `meta.dead_discarded`.
//! An operator lists, exports, requeues (under new sequence numbers, stamped anew, while no
//! gateway runs) or purges them with `sensorgate queue dead`.

use super::confirm::{removed, truncate_if_done, Accounting};
use super::{any, meta, sql, Queue, QueueError, Reader, ROW_OVERHEAD};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// A row moved to the dead letters by [`Queue::bury`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buried {
    pub id: i64,
    /// The topic as stored (lossy where it is not UTF-8), at most 200 characters.
    pub topic: String,
    /// Topic and payload bytes.
    pub bytes: u64,
}

/// What one [`Queue::bury`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Burial {
    pub buried: Vec<Buried>,
    /// The oldest dead letters discarded to keep them within their room.
    pub discarded: u64,
}

/// A dead letter as `sensorgate queue dead list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: i64,
    pub topic: Vec<u8>,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub created_ms: i64,
    pub dead_ms: i64,
    pub reason: String,
}

impl Queue {
    /// Moves the pending rows `ids` to the dead letters with `reason`. Rows already gone
    /// (confirmed, evicted, expired) are skipped.
    pub fn bury(&mut self, ids: &[i64], reason: &str, now_ms: i64) -> Result<Burial, QueueError> {
        let room = self.opts.max_size / 8;
        let run = |conn: &mut Connection| -> Result<(Burial, Accounting), rusqlite::Error> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut burial = Burial::default();
            let mut moved = 0u64;
            for &id in ids {
                let Some(len) = tx
                    .prepare_cached(sql::PENDING_SIZE)?
                    .query_row(params![id], |r| r.get::<_, i64>(0))
                    .optional()?
                else {
                    continue;
                };
                tx.prepare_cached(sql::BURY)?
                    .execute(params![id, now_ms, reason])?;
                let topic: Vec<u8> =
                    tx.query_row("SELECT topic FROM dead WHERE id = ?1", params![id], |r| {
                        r.get(0)
                    })?;
                tx.prepare_cached(sql::DELETE_ONE)?.execute(params![id])?;
                removed(&tx, id)?;
                let bytes = len.max(0) as u64;
                moved += bytes + ROW_OVERHEAD;
                burial.buried.push(Buried {
                    id,
                    topic: String::from_utf8_lossy(&topic).chars().take(200).collect(),
                    bytes,
                });
            }
            if !burial.buried.is_empty() {
                let mut add = tx.prepare_cached(sql::META_ADD)?;
                add.execute(params!["bytes", -(moved as i64)])?;
                add.execute(params!["dead_bytes", moved as i64])?;
                add.execute(params!["dead", burial.buried.len() as i64])?;
                drop(add);
                burial.discarded = trim(&tx, room)?;
                truncate_if_done(&tx, meta(&tx, "released")?)?;
            }
            let after = Accounting::read(&tx)?;
            tx.commit()?;
            Ok((burial, after))
        };
        // On a full disk the reserve is given back and the burial tried once more.
        let (burial, after) = self.with_room(run).map_err(|e| self.conn.err(e))?;
        self.bytes = after.bytes;
        self.reclaimable = after.reclaimable;
        Ok(burial)
    }

    /// Moves dead letters back to the outbox under new sequence numbers (all of them when
    /// `ids` is None). Only while no gateway writes the queue: its pipeline numbers new
    /// rows itself. They are stamped `now_ms` (synchronised): their age counts from the
    /// operator's decision, and `max_age` does not remove them at once. Returns the new
    /// sequence numbers.
    pub fn requeue_dead(
        &mut self,
        ids: Option<&[i64]>,
        now_ms: i64,
    ) -> Result<Vec<i64>, QueueError> {
        let run = |conn: &mut Connection| -> Result<Vec<i64>, rusqlite::Error> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ids = match ids {
                Some(ids) => ids.to_vec(),
                None => dead_ids(&tx)?,
            };
            let mut new = Vec::new();
            let mut bytes = 0i64;
            for id in ids {
                let Some((seq, len)) = tx
                    .prepare_cached(sql::REQUEUE)?
                    .query_row(params![id, now_ms], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                    })
                    .optional()?
                else {
                    continue;
                };
                tx.prepare_cached(sql::DEAD_DELETE)?
                    .query_row(params![id], |_| Ok(()))?;
                bytes += len + ROW_OVERHEAD as i64;
                new.push(seq);
            }
            let mut add = tx.prepare_cached(sql::META_ADD)?;
            add.execute(params!["bytes", bytes])?;
            add.execute(params!["dead_bytes", -bytes])?;
            drop(add);
            tx.commit()?;
            Ok(new)
        };
        let new = run(&mut self.conn).map_err(|e| self.conn.err(e))?;
        if let Some(last) = new.last() {
            self.next_id = self.next_id.max(last + 1);
        }
        self.bytes = meta(&self.conn, "bytes")
            .map_err(|e| self.conn.err(e))?
            .max(0) as u64;
        Ok(new)
    }

    /// Deletes dead letters (all of them when `ids` is None); returns how many.
    pub fn purge_dead(&mut self, ids: Option<&[i64]>) -> Result<u64, QueueError> {
        let run = |conn: &mut Connection| -> Result<u64, rusqlite::Error> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ids = match ids {
                Some(ids) => ids.to_vec(),
                None => dead_ids(&tx)?,
            };
            let (mut n, mut bytes) = (0u64, 0i64);
            for id in ids {
                let len: Option<i64> = tx
                    .prepare_cached(sql::DEAD_DELETE)?
                    .query_row(params![id], |r| r.get(0))
                    .optional()?;
                if let Some(len) = len {
                    n += 1;
                    bytes += len + ROW_OVERHEAD as i64;
                }
            }
            tx.execute(sql::META_ADD, params!["dead_bytes", -bytes])?;
            tx.commit()?;
            Ok(n)
        };
        run(&mut self.conn).map_err(|e| self.conn.err(e))
    }
}

impl Reader {
    /// Up to `limit` dead letters with a sequence number above `after`, oldest first.
    pub fn dead_after(&self, after: i64, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let read = || -> Result<Vec<DeadLetter>, rusqlite::Error> {
            if !has_dead(&self.conn)? {
                return Ok(Vec::new());
            }
            let mut stmt = self.conn.prepare_cached(sql::DEAD_AFTER)?;
            let rows = stmt.query_map(params![after, limit as i64], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    topic: blob(r.get_ref(1)?),
                    payload: blob(r.get_ref(2)?),
                    qos: r.get(3)?,
                    retain: r.get(4)?,
                    created_ms: r.get(5)?,
                    dead_ms: r.get(6)?,
                    reason: r.get(7)?,
                })
            })?;
            rows.collect()
        };
        read().map_err(|e| self.conn.err(e))
    }
}

fn blob(v: rusqlite::types::ValueRef<'_>) -> Vec<u8> {
    match v {
        rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => b.to_vec(),
        _ => Vec::new(),
    }
}

/// Whether the file has a dead-letter table (a file no gateway of this version has opened
/// has none).
pub(super) fn has_dead(conn: &Connection) -> Result<bool, rusqlite::Error> {
    conn.prepare_cached(sql::HAS_DEAD)?
        .query_row([], |r| r.get(0))
}

/// Dead letters held now.
pub(super) fn dead_held(conn: &Connection) -> Result<u64, rusqlite::Error> {
    if !has_dead(conn)? {
        return Ok(0);
    }
    conn.query_row(sql::DEAD_COUNT, [], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

fn dead_ids(conn: &Connection) -> Result<Vec<i64>, rusqlite::Error> {
    let mut stmt = conn.prepare(sql::DEAD_IDS)?;
    let ids = stmt.query_map([], |r| r.get(0))?;
    ids.collect()
}

/// Discards the oldest dead letters until they take at most `room` bytes; returns how many.
fn trim(tx: &Connection, room: u64) -> Result<u64, rusqlite::Error> {
    let mut discarded = 0u64;
    while meta(tx, "dead_bytes")?.max(0) as u64 > room && any(tx, sql::DEAD_ANY, 0)? {
        let freed: Vec<i64> = tx
            .prepare_cached(sql::DEAD_TRIM)?
            .query_map(params![16], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let bytes: i64 = freed.iter().map(|l| l + ROW_OVERHEAD as i64).sum();
        tx.execute(sql::META_ADD, params!["dead_bytes", -bytes])?;
        tx.execute(sql::META_ADD, params!["dead_discarded", freed.len() as i64])?;
        discarded += freed.len() as u64;
    }
    Ok(discarded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Qos, WhenFull};
    use crate::mapping::NewMessage;
    use crate::queue::QueueOptions;

    fn open(dir: &std::path::Path, max_size: u64) -> Queue {
        Queue::open(
            &dir.join("queue.db"),
            QueueOptions {
                max_size,
                when_full: WhenFull::DropOldest,
                synchronous_full: false,
            },
        )
        .unwrap()
    }

    fn push(q: &mut Queue, n: usize, payload_len: usize) {
        let first = q.next_id();
        let batch: Vec<NewMessage> = (0..n)
            .map(|i| NewMessage {
                seq: first + i as i64,
                topic: format!("t/{i}"),
                payload: vec![b'x'; payload_len],
                qos: Qos::AtLeastOnce,
                retain: false,
                created_ms: 1,
                unsynced_mono_ms: None,
            })
            .collect();
        q.append(&batch).unwrap();
    }

    #[test]
    fn a_buried_row_leaves_the_outbox_with_its_bytes_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = open(dir.path(), 64 << 20);
        push(&mut q, 3, 10);
        let before = q.bytes();
        let burial = q.bury(&[2], "too large", 5).unwrap();
        assert_eq!(burial.buried.len(), 1);
        assert_eq!(burial.buried[0].topic, "t/1");
        assert_eq!(q.bytes(), before - (3 + 10 + ROW_OVERHEAD));
        let ids: Vec<i64> = q.fetch_after(0, 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![1, 3]);
        let s = q.stats(5).unwrap();
        assert_eq!((s.pending, s.dead, s.dead_held), (2, 1, 1));
        assert_eq!(q.scan_bytes().unwrap().0, s.bytes);
        // Burying again, or a row that is gone, does nothing.
        assert!(q.bury(&[2, 99], "again", 6).unwrap().buried.is_empty());
        assert_eq!(q.stats(5).unwrap().dead, 1);
    }

    #[test]
    fn dead_letters_requeue_under_new_numbers_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = open(dir.path(), 64 << 20);
        push(&mut q, 3, 10);
        q.bury(&[1, 3], "refused", 5).unwrap();
        let new = q.requeue_dead(Some(&[3]), 7).unwrap();
        assert_eq!(new, vec![4]);
        assert_eq!(q.next_id(), 5);
        let rows = q.fetch_after(0, 10).unwrap();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(&*rows[1].topic, "t/2");
        assert_eq!(rows[1].created_ms, 7, "stamped anew");
        assert_eq!(q.purge_dead(None).unwrap(), 1);
        let s = q.stats(5).unwrap();
        assert_eq!((s.pending, s.dead_held), (2, 0));
        assert_eq!(q.scan_bytes().unwrap().0, s.bytes);
    }

    #[test]
    fn dead_letters_keep_to_their_room_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = open(dir.path(), 8 << 20);
        // Room is an eighth of 8 MiB: 40 rows of 100 KB do not fit.
        push(&mut q, 40, 100_000);
        let ids: Vec<i64> = (1..=40).collect();
        let burial = q.bury(&ids, "too large", 5).unwrap();
        assert_eq!(burial.buried.len(), 40);
        assert!(burial.discarded > 0);
        let s = q.stats(5).unwrap();
        assert_eq!(s.dead, 40);
        assert_eq!(s.dead_held, 40 - burial.discarded);
        assert!(s.dead_discarded == burial.discarded);
        let r = q.reader().unwrap();
        let held = r.dead_after(0, 100).unwrap();
        assert_eq!(held.last().unwrap().id, 40, "the newest are kept");
        assert_eq!(held.first().unwrap().id, 1 + burial.discarded as i64);
    }
}
