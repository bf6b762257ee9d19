//! Appending: the pipeline's batches become rows in one transaction each, under the size
//! policy.
//!
//! - **Invariant:** a batch goes in only after the policy made room for it within its limit
//!   (`max_size`, or the lower cap after a full disk, less `meta.dead_bytes`): released
//!   rows go first (no loss), then `drop_oldest` evicts the fewest oldest pending rows or
//!   `drop_newest` refuses the batch's tail. Every drop is counted in `meta.dropped_full`
//!   in the same transaction (on a full disk, in memory until it can be written), and the
//!   ids of refused messages are never handed out again.
//! - **Invariant:** a full disk never wedges the pipeline: the batch is tried again below
//!   what the disk holds, and refused and counted if even that fails.

use super::confirm::removed;
use super::conn::{is_busy, is_damage, is_full};
use super::{any, meta, sql, Queue, QueueError, ROW_OVERHEAD};
use crate::config::WhenFull;
use crate::mapping::NewMessage;
use rusqlite::{params, TransactionBehavior};

/// What one [`Queue::append`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Appended {
    pub stored: usize,
    /// New messages refused by `drop_newest` or a full disk.
    pub dropped_new: u64,
    /// Old messages evicted by `drop_oldest` to make room.
    pub evicted_old: u64,
}

/// How far ahead [`Queue::pass`] records numbers handed out without a row.
pub const SEQ_BLOCK: i64 = 1024;

impl Queue {
    /// Accounted size of a message.
    pub fn size_of(m: &NewMessage) -> u64 {
        (m.topic.len() + m.payload.len()) as u64 + ROW_OVERHEAD
    }

    /// Commits `batch` in one transaction, applying the size policy. Messages must carry
    /// consecutive ids from [`Queue::next_id`] on (the pipeline numbers them so).
    pub fn append(&mut self, batch: &[NewMessage]) -> Result<Appended, QueueError> {
        let Some(last) = batch.last() else {
            return Ok(Appended::default());
        };
        // Before the numbers can reach a consumer: a reset must never number below them.
        self.ceiling.cover(last.seq);
        loop {
            match self.try_append(batch) {
                Ok(a) => return Ok(a),
                Err(e) if is_full(&e) => return self.append_on_full_disk(batch),
                // Another process holds the write lock longer than the busy timeout (an
                // operator's `sqlite3` session, a wedged disk): keep the batch and wait. The
                // watchdog sees the commit hang and withholds its pings.
                Err(e) if is_busy(&e) => {
                    tracing::warn!(queue = %self.conn.path.display(), error = %e, "Queue is locked by another process; still waiting to commit.");
                }
                Err(e) => return Err(self.conn.err(e)),
            }
        }
    }

    fn try_append(&mut self, batch: &[NewMessage]) -> Result<Appended, rusqlite::Error> {
        let incoming: u64 = batch.iter().map(Queue::size_of).sum();
        let mut out = Appended::default();
        let limit = self.limit();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Read, not cached: `sensorgate queue purge` may have changed it from outside.
        self.bytes = meta(&tx, "bytes")?.max(0) as u64;
        // Dead letters share the room (within an eighth of it, see dead.rs).
        let limit = limit.saturating_sub(meta(&tx, "dead_bytes")?.max(0) as u64);
        let mut bytes = self.bytes;
        let mut take = batch.len();
        let mut reclaimed = 0;
        let mut reclaimable = self.reclaimable;
        if bytes + incoming > limit {
            let need = bytes + incoming - limit;
            let released = meta(&tx, "released")?;
            // Released rows are the oldest: they go first, and are no drop.
            let upto = match self.opts.when_full {
                WhenFull::DropOldest => i64::MAX,
                WhenFull::DropNewest => released,
            };
            let freed = evict_for(&tx, need, upto, released)?;
            out.evicted_old += freed.dropped;
            bytes = bytes.saturating_sub(freed.bytes);
            reclaimed = freed.reclaimed;
            reclaimable = any(&tx, sql::ANY_UP_TO, released)?;
            if self.opts.when_full == WhenFull::DropNewest {
                let mut room = limit.saturating_sub(bytes);
                take = 0;
                for m in batch {
                    let s = Queue::size_of(m);
                    if s > room {
                        break;
                    }
                    room -= s;
                    take += 1;
                }
                out.dropped_new = (batch.len() - take) as u64;
            }
        }
        {
            let mut insert = tx.prepare_cached(sql::INSERT)?;
            for m in &batch[..take] {
                let clock = match m.unsynced_mono_ms {
                    Some(_) => sql::CLOCK_UNSYNCED,
                    None => 0,
                };
                insert.execute(params![
                    m.seq,
                    m.topic,
                    m.payload,
                    m.qos.as_u8(),
                    m.retain,
                    m.created_ms,
                    clock,
                    m.unsynced_mono_ms
                ])?;
                bytes += Queue::size_of(m);
            }
        }
        // Ids of refused messages are not handed out again, even after a reopen.
        let last_seq = batch.last().map_or(0, |m| m.seq);
        if take < batch.len() {
            tx.execute(sql::RAISE_LAST_ID, params![last_seq])?;
            removed(&tx, last_seq)?;
        }
        let dropped = out.evicted_old + out.dropped_new + self.unsaved_dropped;
        let mut meta_add = tx.prepare_cached(sql::META_ADD)?;
        meta_add.execute(params!["dropped_full", dropped as i64])?;
        if self.unsaved_unwritten > 0 {
            meta_add.execute(params!["unwritten", self.unsaved_unwritten as i64])?;
        }
        if self.unsaved_held_back > 0 {
            meta_add.execute(params!["held_back", self.unsaved_held_back as i64])?;
        }
        meta_add.execute(params!["bytes", bytes as i64 - self.bytes as i64])?;
        if reclaimed > 0 {
            meta_add.execute(params!["released_bytes", -(reclaimed as i64)])?;
        }
        drop(meta_add);
        tx.commit()?;
        self.reclaimable = reclaimable;
        self.unsaved_dropped = 0;
        self.unsaved_unwritten = 0;
        self.unsaved_held_back = 0;
        self.bytes = bytes;
        self.next_id = self.next_id.max(batch.last().map_or(0, |m| m.seq) + 1);
        self.seq_reserved = self.seq_reserved.max(self.next_id - 1);
        if let Some(first) = batch[..take].iter().find(|m| m.unsynced_mono_ms.is_some()) {
            self.unsynced_from = Some(self.unsynced_from.unwrap_or(first.seq).min(first.seq));
        }
        out.stored = take;
        Ok(out)
    }

    /// Records every sequence number up to `upto` as handed out, before any of them can
    /// reach a consumer without a row (the live path): after a crash the queue numbers on
    /// above them. Returns the numbers recorded so far.
    pub fn reserve_seq(&mut self, upto: i64) -> Result<i64, QueueError> {
        self.ceiling.cover(upto);
        if upto > self.seq_reserved {
            let set = |conn: &rusqlite::Connection| super::set_last_id(conn, upto);
            self.with_room(|conn| set(conn))
                .map_err(|e| self.conn.err(e))?;
            self.seq_reserved = upto;
        }
        Ok(self.seq_reserved)
    }

    /// Counts `n` messages the broker acknowledged before their commit: saved in
    /// `meta.unwritten` with the next transaction that writes rows, or at a clean stop (no
    /// write of its own: that would cost what skipping the commit saved).
    pub fn count_unwritten(&mut self, n: u64) {
        self.unsaved_unwritten += n;
    }

    /// Counts `n` readings held back by their deadbands (report by exception): saved in
    /// `meta.held_back` as [`Queue::count_unwritten`] saves its count.
    pub fn count_held_back(&mut self, n: u64) {
        self.unsaved_held_back += n;
    }

    /// The numbers recorded as handed out ([`Queue::reserve_seq`]).
    pub fn seq_reserved(&self) -> i64 {
        self.seq_reserved
    }

    /// Sequence numbers up to `last` were handed out without a row (messages the broker
    /// acknowledged from memory, see `live`): later ones start above it, after a restart
    /// too. The file records them ahead in blocks of [`SEQ_BLOCK`] (one small transaction
    /// per block, not per commit); a clean stop ([`Queue::mark_clean`]) records the exact
    /// number, so only a crash leaves a gap of at most a block.
    pub fn pass(&mut self, last: i64) -> Result<(), QueueError> {
        self.next_id = self.next_id.max(last + 1);
        if last > self.seq_reserved {
            self.reserve_seq(last + SEQ_BLOCK)?;
        }
        Ok(())
    }

    /// The disk itself is full (SQLITE_FULL): gives back the reserve and checkpoints
    /// (`make_room`), and caps the policy below what the disk holds now, so that the policy
    /// makes the room (evicting with `drop_oldest`, released rows first with either) and
    /// the file stops growing. If that fails too, the batch is refused and counted.
    fn append_on_full_disk(&mut self, batch: &[NewMessage]) -> Result<Appended, QueueError> {
        self.make_room();
        // A sixteenth of the pages are kept free for the transactions that follow.
        let mut cap = self.bytes - self.bytes / 16;
        for _ in 0..4 {
            self.disk_cap = Some(self.disk_cap.map_or(cap, |c| c.min(cap)));
            match self.try_append(batch) {
                Ok(a) => return Ok(a),
                Err(e) if is_damage(&e) => return Err(self.conn.err(e)),
                Err(e) if is_full(&e) => {
                    self.make_room();
                    cap -= cap / 4;
                }
                // An I/O error here may be the full disk itself (the -shm file cannot
                // grow): the batch is dropped and counted, and the file is not marked clean.
                Err(e) => {
                    let _ = self.conn.err(e);
                    break;
                }
            }
        }
        self.unsaved_dropped += batch.len() as u64;
        // The ids of the dropped batch are not reused: a gap is what a consumer should see.
        self.next_id = self.next_id.max(batch.last().map_or(0, |m| m.seq) + 1);
        // Kept in memory if even this cannot be written; `maintain` tries again.
        let _ = self.save_dropped();
        Ok(Appended {
            stored: 0,
            dropped_new: batch.len() as u64,
            evicted_old: 0,
        })
    }
}

/// What a policy eviction freed: rows and their accounted bytes, of which `dropped` rows
/// were pending (a loss, counted) and `reclaimed` bytes were released rows (no loss).
#[derive(Debug, Default)]
struct Freed {
    rows: u64,
    dropped: u64,
    bytes: u64,
    reclaimed: u64,
}

impl Freed {
    fn add(&mut self, id: i64, len: i64, released: i64) {
        let bytes = len as u64 + ROW_OVERHEAD;
        self.rows += 1;
        self.bytes += bytes;
        if id <= released {
            self.reclaimed += bytes;
        } else {
            self.dropped += 1;
        }
    }
}

/// Deletes the fewest oldest rows, up to id `upto`, that free at least `need` bytes (or all
/// of them). Released rows are the oldest, so they go first.
fn evict_for(
    tx: &rusqlite::Transaction,
    need: u64,
    upto: i64,
    released: i64,
) -> Result<Freed, rusqlite::Error> {
    let mut freed = Freed::default();
    let mut cutoff = None;
    let mut after = i64::MIN;
    let mut stmt = tx.prepare_cached(sql::SIZES_AFTER)?;
    'scan: while freed.bytes < need {
        let rows: Vec<(i64, i64)> = stmt
            .query_map(params![after, upto], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if rows.is_empty() {
            break;
        }
        for (id, len) in rows {
            freed.add(id, len, released);
            cutoff = Some(id);
            after = id;
            if freed.bytes >= need {
                break 'scan;
            }
        }
    }
    if let Some(cutoff) = cutoff {
        tx.execute(sql::DELETE_UP_TO, params![cutoff])?;
        if cutoff > released {
            removed(tx, cutoff)?;
        }
    }
    Ok(freed)
}
