//! SQLite store-and-forward queue: the only place a message waits.
//!
//! Design notes and invariants:
//! - One table, `outbox`, ordered by its row id. The row id is also the message's
//!   per-gateway sequence number (`_seq` in JSON payloads), assigned by the pipeline from
//!   [`Queue::next_id`] and never reused (AUTOINCREMENT).
//! - **Invariant:** sequence numbers never go backwards, whatever the clock says: a small
//!   file beside the queue (`seq.ceiling`, see `ceiling`) holds a number above every one
//!   handed out, written durably before any number reaches it; a new file (a reset, or
//!   `queue.db` deleted) numbers on above it.
//! - **Invariant:** a committed row leaves the queue only by [`Queue::confirm`] or
//!   [`Queue::confirm_read`] (the broker's PUBACK, or a QoS 0 write), by the size policy in
//!   [`Queue::append`], by [`Queue::expire`] (max age), by an operator's [`Queue::purge`],
//!   or into the dead letters ([`Queue::bury`]). All but the first are counted in `meta`.
//! - **Released rows.** A confirmed row is either deleted, or *released*: when every row up
//!   to some id is confirmed, `meta.released` moves up to that id and the rows stay on disk
//!   until they are reclaimed. Rows at or below `released` are not pending: no read, count,
//!   expiry or policy drop sees them. Deleting rows one by one rewrites every page they are
//!   on, twice (WAL and checkpoint); a released backlog is freed by SQLite's truncate when
//!   nothing is pending any more, and otherwise reclaimed when the uplink is idle
//!   ([`Queue::reclaim`]) or when the size policy needs the room (before it drops anything
//!   pending).
//! - **Invariant:** `released` only grows, and never above the highest id stored: rows
//!   committed later have higher ids.
//! - **Invariant:** delivery order is row-id order; wall time never orders anything.
//! - **Stamps from a clock not synchronised** (`outbox.clock` = 1) never expire by age.
//!   Once the clock is synchronised, [`Queue::correct_stamps`] gives the rows of this boot
//!   stored that way the wall time their time since boot gives (`clock` = 2); rows of an
//!   earlier boot keep theirs. That update is the only change to a stored row, and it
//!   leaves topic and payload (the sizes the accounting trusts) as they are: a read hands
//!   out the mapper's payload with the corrected stamp, and [`Stored::bytes`] with the size
//!   stored.
//! - `meta.bytes` tracks the accounted size (topic + payload + [`ROW_OVERHEAD`] per row) of
//!   every row on disk, released or not, and `meta.released_bytes` that of the released
//!   ones, in the same transaction as every insert, release and delete: the size policy
//!   costs no scan and counts what the disk holds.
//! - **A full disk is a policy decision** (`room`): the WAL is bounded, the reserve file is
//!   given back on SQLITE_FULL, the policy then works below what the disk holds, and a drop
//!   that cannot be written yet is kept in memory until it can ([`Queue::maintain`]).
//! - The file runs in WAL mode: `sensorgate queue ...` and the uplink's [`Reader`] read it
//!   while the gateway writes. Inserts use `synchronous=FULL` by default (a committed
//!   reading survives a power cut); a confirmation that is lost to a power cut only causes
//!   a duplicate, which QoS 1 allows.
//! - A file that SQLite cannot open or check, or a database that is not a sensorgate queue
//!   (tables, but not `outbox` and `meta` with their columns; checked before anything is
//!   written to it), is moved aside and a fresh queue started ([`open_or_reset`]): the
//!   gateway never crash-loops on its own state. One gateway per state directory
//!   ([`StateLock`]).
//! - **Checked unless closed cleanly.** [`Queue::open`] runs SQLite's `quick_check` (a
//!   read of the whole file, many seconds for a large backlog on an SD card) unless
//!   `meta.clean` says the last gateway closed the file cleanly ([`Queue::mark_clean`]),
//!   and clears that flag durably before anything else is written: a kill -9 or a power
//!   cut leaves it cleared, and the next start checks. Damage found later (a bad sector
//!   under a cleanly closed file) fails the statement that meets it with
//!   [`QueueError::is_corrupt`]; the gateway then stops with an error, and its restart
//!   checks the file. A queue whose connections saw the file fail is never marked clean.
//!
//! The type is synchronous and has one owner (behind a `Mutex` that is never held across an
//! `.await`); async callers use [`threads::spawn`].
//!
//! Where things are: this file opens the queue, marks it clean, expires and purges;
//! `append` commits new rows under the size policy; `confirm` releases, deletes and
//! reclaims confirmed rows and keeps the byte accounting; `read` is fetch, stats and the
//! read-only [`Reader`]; `stamps` corrects stamps from a clock not synchronised;
//! `schema` tells a sensorgate queue from another file; `room` handles a full disk;
//! `conn` is the connection both [`Queue`] and [`Reader`] hold; `reconfigure` applies a
//! reload's options to the open queue; `dead` the dead letters; `files` the CLI's views;
//! `sql` every statement; `shared` the queue as the running gateway shares it
//! ([`SharedQueue`], [`lock`], the damage alarm [`stop_if_damaged`]); [`threads`] the two
//! SQLite threads its work runs on.

mod append;
mod ceiling;
mod confirm;
mod conn;
mod dead;
mod files;
mod live;
mod lock;
mod read;
mod reconfigure;
mod room;
mod schema;
mod shared;
mod sql;
mod stamps;
#[cfg(test)]
mod state_tests;
pub mod threads;

pub use append::{Appended, SEQ_BLOCK};
pub use confirm::Confirmed;
pub use conn::QueueError;
pub use dead::{Burial, Buried, DeadLetter};
pub use files::{open_or_reset, read_clocks, read_oldest, read_stats};
pub use live::{Handed, Live};
pub use lock::{holder, StateLock};
pub use read::{Fetched, Reader, Stats, Stored};
pub use room::{accounted_limit, reserve_size, wal_budget};
pub use shared::{lock, stop_if_damaged, SharedQueue};
pub use stamps::CORRECT_CHUNK;

use crate::config::WhenFull;
use confirm::{removed, truncate_if_done, Accounting};
use conn::Conn;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;

/// Bytes accounted per row beyond topic and payload (row header, id, integers, index).
pub const ROW_OVERHEAD: u64 = 24;

/// Options for opening the queue.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub max_size: u64,
    pub when_full: WhenFull,
    pub synchronous_full: bool,
}

/// The queue's writer: the one connection that appends, confirms and removes rows.
pub struct Queue {
    /// Its errors name the file; its fault flag is shared with the [`Reader`]s made by
    /// [`Queue::reader`]: a fault met by any of them keeps the queue from being marked clean.
    conn: Conn,
    opts: QueueOptions,
    next_id: i64,
    /// The last id the file has recorded as handed out (`sqlite_sequence`): numbers of
    /// messages delivered from memory and never written are reserved up to it in blocks
    /// ([`Queue::pass`]).
    seq_reserved: i64,
    /// Messages sent without being written, not yet counted in `meta.unwritten`.
    unsaved_unwritten: u64,
    /// Readings held back by deadbands, not yet counted in `meta.held_back`.
    unsaved_held_back: u64,
    bytes: u64,
    /// Drops that could not be written to `meta` yet (the disk was full); written by the
    /// next transaction that can ([`Queue::maintain`] at the latest).
    unsaved_dropped: u64,
    /// Whether released rows were on disk after the last transaction.
    reclaimable: bool,
    /// Given back when the disk is full (see `room`).
    reserve: room::Reserve,
    /// Below `max_size` after the disk filled: the accounted bytes the disk held then, less
    /// a margin. Lifted when the reserve can be made again.
    disk_cap: Option<u64>,
    /// Above every sequence number handed out, kept beside the file.
    ceiling: ceiling::Ceiling,
    /// From which row on stamps from a clock not synchronised may wait for a correction
    /// ([`Queue::correct_stamps`]): the first row of this boot at open, then the first one
    /// this queue stored so since the last correction.
    unsynced_from: Option<i64>,
}

impl Queue {
    /// Opens (creating if needed) the queue at `path`.
    pub fn open(path: &Path, opts: QueueOptions) -> Result<Queue, QueueError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| QueueError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        // A start on a full disk: the -shm file and the WAL need room before any statement.
        let mut reserve = room::Reserve::new(path, opts.max_size);
        if !reserve.room_for(reserve_size(opts.max_size)) && reserve.give_back() {
            tracing::warn!(reserve = %reserve.path().display(), "The disk is nearly full at the start: gave back the queue's reserve file.");
        }
        let conn = Conn::open(path)?;
        let err = |e| conn.err(e);
        // Before anything is written: another application's file is left as it was.
        let tables = schema::table_names(&conn).map_err(err)?;
        if let Some(reason) = schema::foreign(&conn, &tables).map_err(err)? {
            return Err(QueueError::Foreign {
                path: path.display().to_string(),
                reason,
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // The flag is cleared with an fsync whatever the configured level: a power cut
        // after this must leave it cleared.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        // The WAL starts over after `wal_budget` bytes of frames and is cut back to that.
        let budget = wal_budget(opts.max_size);
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(err)?;
        conn.pragma_update(None, "wal_autocheckpoint", (budget as i64 / page).max(8))
            .map_err(err)?;
        conn.pragma_update(None, "journal_size_limit", budget as i64)
            .map_err(err)?;
        let clean = schema::was_closed_cleanly(&conn).map_err(err)?;
        if !clean {
            let check: String = conn
                .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
                .map_err(err)?;
            if check != "ok" {
                return Err(err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                    Some(format!("quick_check: {check}")),
                )));
            }
        }
        let setup = |conn: &Connection| -> Result<(), rusqlite::Error> {
            conn.execute_batch(sql::SCHEMA)?;
            if clean {
                conn.execute(sql::META_SET, params!["clean", 0])?;
            }
            Ok(())
        };
        match setup(&conn) {
            // A restart on a full disk: the reserve (if a gateway left one) and a
            // checkpoint make the room.
            Err(e) if conn::is_full(&e) => {
                reserve.give_back();
                let _ = conn.query_row(sql::CHECKPOINT_RESTART, [], |_| Ok(()));
                setup(&conn).map_err(err)?;
            }
            r => r.map_err(err)?,
        }
        if !reserve.remake(budget) {
            tracing::warn!(reserve = %reserve.path().display(), "No room on the disk for the queue's reserve file; trying again later.");
        }
        schema::add_clock_columns(&conn).map_err(err)?;
        if !opts.synchronous_full {
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(err)?;
        }
        let mut last: i64 = conn
            .query_row(sql::LAST_ID, [], |r| r.get(0))
            .map_err(err)?;
        // A new file (a first start, a reset, or `queue.db` deleted) numbers on above what
        // an earlier file handed out.
        let mut ceiling = ceiling::Ceiling::read(path);
        if tables.is_empty() && last == 0 && ceiling.value() > 1 {
            last = ceiling.value() - 1;
            set_last_id(&conn, last).map_err(err)?;
        }
        ceiling.cover(last + 1);
        let boot_first_id = stamps::this_boot_from(&conn, last + 1).map_err(err)?;
        let bytes = meta(&conn, "bytes").map_err(err)?;
        let released = meta(&conn, "released").map_err(err)?;
        let reclaimable = any(&conn, sql::ANY_UP_TO, released).map_err(err)?;
        Ok(Queue {
            conn,
            opts,
            next_id: last + 1,
            seq_reserved: last,
            unsaved_unwritten: 0,
            unsaved_held_back: 0,
            bytes: bytes.max(0) as u64,
            unsaved_dropped: 0,
            reclaimable,
            reserve,
            disk_cap: None,
            ceiling,
            // Rows of this boot stored by an earlier process may wait for a correction.
            unsynced_from: Some(boot_first_id),
        })
    }

    /// Records that the file was closed cleanly, so that the next [`Queue::open`] skips the
    /// integrity check. The gateway calls it last, after a stop that lost nothing; it
    /// declines (`Ok(false)`) when a connection to the file met damage or a failing disk,
    /// or when another connection keeps the WAL from being folded into the file.
    pub fn mark_clean(&mut self) -> Result<bool, QueueError> {
        if self.conn.faulted() {
            return Ok(false);
        }
        if self.save_dropped().is_err() {
            return Ok(false);
        }
        let full = self.opts.synchronous_full;
        let (reserved, next_id) = (self.seq_reserved, self.next_id);
        let unwritten = self.unsaved_unwritten;
        let held_back = self.unsaved_held_back;
        let run = |conn: &Connection| -> Result<bool, rusqlite::Error> {
            // The WAL goes into the file first, so that the flag is not followed by a
            // checkpoint of up to a thousand pages when the connection closes: a disk that
            // fails then must not leave the file marked clean. It waits for nobody; a
            // reader in the way (the CLI) leaves it incomplete, and the flag is not set.
            let (busy, frames, copied): (i64, i64, i64) =
                conn.query_row(sql::CHECKPOINT, [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            if busy != 0 || copied < frames {
                return Ok(false);
            }
            conn.execute_batch(sql::SYNC_FULL)?;
            // Numbers reserved ahead for messages never written go back to the exact next
            // one: a clean stop leaves no gap in the sequence.
            if reserved > next_id - 1 {
                set_last_id(conn, next_id - 1)?;
            }
            if unwritten > 0 {
                conn.execute(sql::META_ADD, params!["unwritten", unwritten as i64])?;
            }
            if held_back > 0 {
                conn.execute(sql::META_ADD, params!["held_back", held_back as i64])?;
            }
            conn.execute(sql::META_SET, params!["clean", 1])?;
            if !full {
                conn.execute_batch(sql::SYNC_NORMAL)?;
            }
            Ok(true)
        };
        self.with_room(|conn| run(conn))
            .map_err(|e| self.conn.err(e))
    }

    /// The queue file.
    pub fn path(&self) -> &Path {
        &self.conn.path
    }

    /// The sequence number (row id) the next appended message must carry.
    pub fn next_id(&self) -> i64 {
        self.next_id
    }

    /// Starts sequence numbers above `floor` (used for a fresh queue after a reset, so that
    /// consumers that deduplicate by sequence number do not drop new messages).
    pub fn raise_next_id(&mut self, floor: i64) -> Result<(), QueueError> {
        if floor >= self.next_id {
            set_last_id(&self.conn, floor).map_err(|e| self.conn.err(e))?;
            self.next_id = floor + 1;
            self.ceiling.cover(self.next_id);
        }
        Ok(())
    }

    /// Deletes messages stamped before `cutoff_ms`, but none stamped by a clock that was
    /// not synchronised; returns how many.
    pub fn expire(&mut self, cutoff_ms: i64) -> Result<u64, QueueError> {
        let run = |conn: &mut Connection| -> Result<(u64, Accounting), rusqlite::Error> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let freed: Vec<(i64, u64)> = {
                let mut stmt = tx.prepare_cached(sql::EXPIRE)?;
                let rows = stmt.query_map(params![cutoff_ms], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)? as u64 + ROW_OVERHEAD,
                    ))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            if let Some(last) = freed.iter().map(|r| r.0).max() {
                removed(&tx, last)?;
            }
            let freed: Vec<u64> = freed.into_iter().map(|r| r.1).collect();
            let sum: u64 = freed.iter().sum();
            // Nothing expired, nothing written: a round of housekeeping costs the card
            // nothing (an UPDATE by 0 would still write its page and sync).
            if !freed.is_empty() {
                tx.execute(sql::META_ADD, params!["expired", freed.len() as i64])?;
                tx.execute(sql::META_ADD, params!["bytes", -(sum as i64)])?;
                // The last pending rows expired: released rows can go at once.
                truncate_if_done(&tx, meta(&tx, "released")?)?;
            }
            let after = Accounting::read(&tx)?;
            tx.commit()?;
            Ok((freed.len() as u64, after))
        };
        let (n, after) = self.with_room(run).map_err(|e| self.conn.err(e))?;
        self.bytes = after.bytes;
        self.reclaimable = after.reclaimable;
        Ok(n)
    }

    /// Deletes every pending message (operator's purge); returns how many. Counted as dropped.
    pub fn purge(&mut self) -> Result<u64, QueueError> {
        let run = |conn: &mut Connection| -> Result<i64, rusqlite::Error> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n: i64 = tx.query_row(sql::COUNT, [], |r| r.get(0))?;
            let last: i64 = tx.query_row(sql::LAST_ID, [], |r| r.get(0))?;
            removed(&tx, last)?;
            tx.execute(sql::TRUNCATE, [])?;
            tx.execute(sql::META_SET, params!["bytes", 0])?;
            tx.execute(sql::META_SET, params!["released_bytes", 0])?;
            tx.execute(sql::META_ADD, params!["dropped_full", n])?;
            tx.commit()?;
            Ok(n)
        };
        let n = run(&mut self.conn).map_err(|e| self.conn.err(e))?;
        self.bytes = 0;
        self.reclaimable = false;
        Ok(n as u64)
    }
}

/// A counter or watermark of the `meta` table; 0 when absent.
fn meta(conn: &Connection, key: &str) -> Result<i64, rusqlite::Error> {
    Ok(conn
        .query_row(sql::META_GET, params![key], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Whether `query` (an `EXISTS` over one id) finds a row.
fn any(conn: &Connection, query: &str, id: i64) -> Result<bool, rusqlite::Error> {
    conn.prepare_cached(query)?
        .query_row(params![id], |r| r.get(0))
}

/// Sets the last id handed out (`sqlite_sequence`, which has no unique key: its one row
/// for `outbox` is updated, or inserted when there is none).
pub(super) fn set_last_id(conn: &Connection, seq: i64) -> Result<(), rusqlite::Error> {
    if conn
        .prepare_cached(sql::UPDATE_LAST_ID)?
        .execute(params![seq])?
        == 0
    {
        conn.prepare_cached(sql::INSERT_LAST_ID)?
            .execute(params![seq])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
