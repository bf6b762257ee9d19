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
//! - **Invariant:** a committed row leaves the queue only by [`Queue::ack`] (the broker's
//!   PUBACK, or a QoS 0 write), by the size policy in [`Queue::append`], or by
//!   [`Queue::expire`] (max age). The last two are counted in `meta` and logged at ERROR by
//!   the caller.
//! - **Released rows.** An acknowledged row is either deleted, or *released*: when every
//!   row up to some id is acknowledged, `meta.released` moves up to that id and the rows stay
//!   on disk until they are reclaimed. Rows at or below `released` are not pending: no read,
//!   count, expiry or policy drop sees them. Deleting rows one by one rewrites every page
//!   they are on (over a third of a backlog replay's CPU); a released backlog is freed by
//!   SQLite's truncate when nothing is pending any more ([`Queue::ack`]), and otherwise
//!   reclaimed when the uplink is idle ([`Queue::reclaim`]) or when the size policy needs
//!   the room (before it drops anything pending).
//! - **Invariant:** `released` only grows, and never above the highest id stored: rows
//!   committed later have higher ids.
//! - **Invariant:** delivery order is row-id order; wall time never orders anything.
//! - **Stamps from a clock not synchronised** (`outbox.clock` = 1, see
//!   `sql::ADD_CLOCK_COLUMNS`) never expire by age. Once the clock is synchronised,
//!   [`Queue::correct_stamps`] gives the rows of this boot stored that way the wall time
//!   their time since boot gives (`clock` = 2); rows of an earlier boot keep theirs. That
//!   update is the only change to a stored row, and it leaves topic and payload (the sizes
//!   the accounting trusts) as they are: a read hands out the mapper's payload with the
//!   corrected stamp, and [`Stored::bytes`] with the size stored.
//! - `meta.bytes` tracks the accounted size (topic + payload + [`ROW_OVERHEAD`] per row) of
//!   every row on disk, released or not, and `meta.released_bytes` that of the released
//!   ones, in the same transaction as every insert, release and delete: the size policy
//!   costs no scan and counts what the disk holds.
//! - **A full disk is a policy decision** (`room`): the WAL is bounded, the reserve file is
//!   given back on SQLITE_FULL, the policy then works below what the disk holds, and a drop
//!   that cannot be written yet is kept in memory until it can ([`Queue::maintain`]).
//! - The file runs in WAL mode: `sensorgate queue ...` reads it while the gateway writes.
//!   Inserts use `synchronous=FULL` by default (a committed reading survives a power cut);
//!   a delete that is lost to a power cut only causes a duplicate, which QoS 1 allows.
//! - A file that SQLite cannot open or check, or a database that is not a sensorgate queue
//!   (tables, but not `outbox` and `meta` with their columns; checked before anything is
//!   written to it), is moved aside and a fresh queue started ([`open_or_reset`]): the
//!   gateway never crash-loops on its own state. One gateway per state directory
//!   ([`StateLock`]).
//! - **Checked unless closed cleanly.** [`Queue::open`] runs SQLite's `quick_check` (it
//!   reads the whole file: 0.12 s for a 137 MB backlog here, many seconds on an SD card)
//!   unless `meta.clean` says the last gateway closed the file cleanly
//!   ([`Queue::mark_clean`]), and clears that flag durably before anything else is written:
//!   a kill -9 or a power cut leaves it cleared, and the next start checks. Damage found
//!   later (a bad sector under a cleanly closed file) fails the statement that meets it with
//!   [`QueueError::is_corrupt`]; the gateway then stops with an error, and its restart
//!   checks the file. A queue whose connections saw the file fail is never marked clean.
//!
//! The type is synchronous and has one owner (behind a `Mutex` that is never held across an
//! `.await`); async callers use `trips::spawn`.

mod ceiling;
mod dead;
mod files;
mod lock;
mod reconfigure;
mod room;
mod sql;
#[cfg(test)]
mod state_tests;

pub use dead::{Burial, Buried, DeadLetter};
pub use files::{open_or_reset, read_clocks, read_oldest, read_stats};
pub use lock::StateLock;
pub use room::{accounted_limit, reserve_size, wal_budget};

use crate::config::{Qos, WhenFull};
use crate::mapping::NewMessage;
use bytes::{Bytes, BytesMut};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The most rows [`Queue::correct_stamps`] corrects in one transaction.
pub const CORRECT_CHUNK: usize = 10_000;

/// Bytes accounted per row beyond topic and payload (row header, id, integers, index).
pub const ROW_OVERHEAD: u64 = 24;

/// Options for opening the queue.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub max_size: u64,
    pub when_full: WhenFull,
    pub synchronous_full: bool,
}

/// A message waiting in the queue.
///
/// Rows read together share their memory: the payloads are slices of one buffer, and a
/// topic repeated among them is one `Arc`. Reading a backlog then costs no allocation per
/// row, and the memory goes back in a few large pieces.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub id: i64,
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
    pub created_ms: i64,
    /// Stamped before the clock synchronised and not corrected yet: its age is unknown.
    pub age_unknown: bool,
    /// Topic and payload bytes as stored, which the size accounting counts. A payload whose
    /// stamp a read corrected (see [`Queue::fetch`]) is longer than the one stored.
    pub stored_bytes: u64,
}

/// Rows the broker confirmed, waiting to be deleted: their ids, and each one's topic and
/// payload bytes as the uplink read them (see [`Queue::ack_known`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Confirmed {
    ids: Vec<i64>,
    sizes: Vec<u64>,
}

impl Confirmed {
    pub fn push(&mut self, id: i64, bytes: u64) {
        self.ids.push(id);
        self.sizes.push(bytes);
    }

    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// The topic and payload bytes of all of them.
    pub fn bytes(&self) -> u64 {
        self.sizes.iter().sum()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn extend(&mut self, other: Confirmed) {
        self.ids.extend(other.ids);
        self.sizes.extend(other.sizes);
    }

    /// Takes the first `n` (all when there are fewer), leaving the rest.
    pub fn take_first(&mut self, n: usize) -> Confirmed {
        if n >= self.len() {
            return std::mem::take(self);
        }
        let ids = self.ids.split_off(n);
        let sizes = self.sizes.split_off(n);
        Confirmed {
            ids: std::mem::replace(&mut self.ids, ids),
            sizes: std::mem::replace(&mut self.sizes, sizes),
        }
    }
}

impl FromIterator<(i64, u64)> for Confirmed {
    fn from_iter<I: IntoIterator<Item = (i64, u64)>>(rows: I) -> Confirmed {
        let mut c = Confirmed::default();
        for (id, bytes) in rows {
            c.push(id, bytes);
        }
        c
    }
}

impl Stored {
    /// Topic and payload bytes as stored, as the size accounting counts them.
    pub fn bytes(&self) -> u64 {
        self.stored_bytes
    }
}

/// What one [`Queue::append`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Appended {
    pub stored: usize,
    /// New messages refused by `drop_newest` or a full disk.
    pub dropped_new: u64,
    /// Old messages evicted by `drop_oldest` to make room.
    pub evicted_old: u64,
}

/// The backlog, as `sensorgate queue stats` prints it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Messages not yet acknowledged.
    pub pending: u64,
    /// Accounted bytes of those messages.
    pub bytes: u64,
    /// Accounted bytes of acknowledged messages still on disk, waiting to be reclaimed.
    pub reclaimable_bytes: u64,
    /// Age of the oldest pending message by its wall-clock stamp (0 when empty).
    pub oldest_age_s: f64,
    /// Messages removed by policy since the queue was created (size and age).
    pub dropped: u64,
    /// Of `dropped`: evicted or refused because the queue or disk was full.
    pub dropped_full: u64,
    /// Of `dropped`: older than `max_age`.
    pub expired: u64,
    /// The last sequence number handed out.
    pub last_seq: i64,
    /// Messages moved to the dead letters since the queue was created (never delivered:
    /// refused for good, too large, unreadable).
    pub dead: u64,
    /// Dead letters held now (`sensorgate queue dead list`).
    pub dead_held: u64,
    /// Of `dead`: the oldest dead letters discarded to keep them within their room.
    pub dead_discarded: u64,
}

/// What one read of the queue found: the rows, in id order, and the ids of rows that
/// cannot be read back as messages (a topic that is not UTF-8, a column of the wrong type),
/// which the uplink moves to the dead letters.
#[derive(Debug, Default)]
pub struct Fetched {
    pub rows: Vec<Stored>,
    pub unreadable: Vec<(i64, String)>,
}

impl Fetched {
    /// Rows read, readable or not.
    pub fn count(&self) -> usize {
        self.rows.len() + self.unreadable.len()
    }

    /// The highest id read, readable or not.
    pub fn last_id(&self) -> Option<i64> {
        let a = self.rows.last().map(|r| r.id);
        let b = self.unreadable.last().map(|r| r.0);
        a.max(b)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("queue {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a sensorgate queue: {reason}")]
    Foreign { path: String, reason: String },
    #[error(
        "another sensorgate{} is running with the state directory {dir}; one state directory serves one gateway",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { dir: String, pid: Option<u32> },
}

impl QueueError {
    /// Whether SQLite found the file damaged (or not a database at all).
    pub fn is_corrupt(&self) -> bool {
        match self {
            QueueError::Sqlite { source, .. } => is_damage(source),
            QueueError::Io { .. } | QueueError::Foreign { .. } | QueueError::Locked { .. } => false,
        }
    }

    /// Whether the file is a database, but another application's (or another schema's).
    pub fn is_foreign(&self) -> bool {
        matches!(self, QueueError::Foreign { .. })
    }
}

/// A damaged file, or one that is not a database at all.
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Whether an error says the file can no longer be trusted to be whole.
fn is_fault(e: &rusqlite::Error) -> bool {
    is_damage(e) || matches!(e.sqlite_error_code(), Some(ErrorCode::SystemIoFailure))
}

pub struct Queue {
    conn: Connection,
    path: PathBuf,
    opts: QueueOptions,
    next_id: i64,
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
    /// Set when any connection to the file (this one or a [`Reader`] made by
    /// [`Queue::reader`]) met a damaged file or a failing disk: then it is not marked clean.
    faulted: Arc<AtomicBool>,
    /// Above every sequence number handed out, kept beside the file.
    ceiling: ceiling::Ceiling,
    /// From which row on stamps from a clock not synchronised may wait for a correction
    /// ([`Queue::correct_stamps`]): the first row of this boot at open, then the first one
    /// this queue stored so since the last correction.
    unsynced_from: Option<i64>,
}

fn is_full(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DiskFull))
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

impl Queue {
    /// Opens (creating if needed) the queue at `path`.
    pub fn open(path: &Path, opts: QueueOptions) -> Result<Queue, QueueError> {
        let err = |source| QueueError::Sqlite {
            path: path.display().to_string(),
            source,
        };
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
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        // Before anything is written: another application's file is left as it was.
        let tables = table_names(&conn).map_err(err)?;
        if let Some(reason) = foreign(&conn, &tables).map_err(err)? {
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
        let clean = was_closed_cleanly(&conn).map_err(err)?;
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
            Err(e) if is_full(&e) => {
                reserve.give_back();
                let _ = conn.query_row(sql::CHECKPOINT_RESTART, [], |_| Ok(()));
                setup(&conn).map_err(err)?;
            }
            r => r.map_err(err)?,
        }
        if !reserve.remake(budget) {
            tracing::warn!(reserve = %reserve.path().display(), "No room on the disk for the queue's reserve file; trying again later.");
        }
        if !column_names(&conn, "outbox")
            .map_err(err)?
            .iter()
            .any(|c| c == "clock")
        {
            conn.execute_batch(sql::ADD_CLOCK_COLUMNS).map_err(err)?;
        }
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
            conn.execute(sql::SET_LAST_ID, params![last]).map_err(err)?;
        }
        ceiling.cover(last + 1);
        let boot_first_id = this_boot_from(&conn, last + 1).map_err(err)?;
        let bytes = meta(&conn, "bytes").map_err(err)?;
        let released = meta(&conn, "released").map_err(err)?;
        let reclaimable = any(&conn, sql::ANY_UP_TO, released).map_err(err)?;
        Ok(Queue {
            conn,
            path: path.to_path_buf(),
            opts,
            next_id: last + 1,
            bytes: bytes.max(0) as u64,
            unsaved_dropped: 0,
            reclaimable,
            reserve,
            disk_cap: None,
            faulted: Arc::new(AtomicBool::new(false)),
            ceiling,
            // Rows of this boot stored by an earlier process may wait for a correction.
            unsynced_from: Some(boot_first_id),
        })
    }

    /// The accounted bytes the size policy allows: `max_size`, or less after the disk filled.
    fn limit(&self) -> u64 {
        self.disk_cap
            .map_or(self.opts.max_size, |c| c.min(self.opts.max_size))
    }

    /// The disk is full: gives back the reserve, and checkpoints so that the WAL starts over
    /// (the next write reuses its file instead of growing it).
    fn make_room(&mut self) {
        if self.reserve.give_back() {
            tracing::warn!(queue = %self.path.display(), reserve = %self.reserve.path().display(), "Disk full: gave back the queue's reserve file; the size policy now keeps the queue within what the disk holds.");
        }
        let _ = self.conn.query_row(sql::CHECKPOINT_RESTART, [], |_| Ok(()));
    }

    /// Runs `work`; if the disk is full, makes room and runs it once more.
    fn with_room<T>(
        &mut self,
        mut work: impl FnMut(&mut Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, rusqlite::Error> {
        match work(&mut self.conn) {
            Err(e) if is_full(&e) => {
                self.make_room();
                work(&mut self.conn)
            }
            r => r,
        }
    }

    /// Writes drops counted only in memory to `meta`.
    fn save_dropped(&mut self) -> Result<(), rusqlite::Error> {
        let n = self.unsaved_dropped;
        if n > 0 {
            self.with_room(|conn| conn.execute(sql::META_ADD, params!["dropped_full", n as i64]))?;
            self.unsaved_dropped = 0;
        }
        Ok(())
    }

    /// Housekeeping's part: writes drops counted only in memory (the disk was full) to
    /// `meta`, and makes the reserve again once the disk has room for it and for the WAL;
    /// then the size policy goes back to `max_size`.
    pub fn maintain(&mut self) -> Result<(), QueueError> {
        self.save_dropped().map_err(|e| self.err(e))?;
        if !self.reserve.present() && self.reserve.remake(wal_budget(self.opts.max_size)) {
            if let Some(cap) = self.disk_cap.take() {
                tracing::info!(queue = %self.path.display(), was = cap, "Disk has room again: made the reserve file again; the size policy is back to max_size.");
            }
        }
        Ok(())
    }

    /// Drops counted in memory only: the disk was too full to write them.
    pub fn unsaved_dropped(&self) -> u64 {
        self.unsaved_dropped
    }

    fn err(&self, source: rusqlite::Error) -> QueueError {
        if is_fault(&source) {
            self.faulted.store(true, Ordering::Relaxed);
        }
        QueueError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Records that the file was closed cleanly, so that the next [`Queue::open`] skips the
    /// integrity check. The gateway calls it last, after a stop that lost nothing; it
    /// declines (`Ok(false)`) when a connection to the file met damage or a failing disk,
    /// or when another connection keeps the WAL from being folded into the file.
    pub fn mark_clean(&mut self) -> Result<bool, QueueError> {
        if self.faulted.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if self.save_dropped().is_err() {
            return Ok(false);
        }
        let full = self.opts.synchronous_full;
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
            conn.execute(sql::META_SET, params!["clean", 1])?;
            if !full {
                conn.execute_batch(sql::SYNC_NORMAL)?;
            }
            Ok(true)
        };
        self.with_room(|conn| run(conn)).map_err(|e| self.err(e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sequence number (row id) the next appended message must carry.
    pub fn next_id(&self) -> i64 {
        self.next_id
    }

    /// Starts sequence numbers above `floor` (used for a fresh queue after a reset, so that
    /// consumers that deduplicate by sequence number do not drop new messages).
    pub fn raise_next_id(&mut self, floor: i64) -> Result<(), QueueError> {
        if floor >= self.next_id {
            self.conn
                .execute(sql::SET_LAST_ID, params![floor])
                .map_err(|e| self.err(e))?;
            self.next_id = floor + 1;
            self.ceiling.cover(self.next_id);
        }
        Ok(())
    }

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
                    tracing::warn!(queue = %self.path.display(), error = %e, "Queue is locked by another process; still waiting to commit.");
                }
                Err(e) => return Err(self.err(e)),
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
        meta_add.execute(params!["bytes", bytes as i64 - self.bytes as i64])?;
        if reclaimed > 0 {
            meta_add.execute(params!["released_bytes", -(reclaimed as i64)])?;
        }
        drop(meta_add);
        tx.commit()?;
        self.reclaimable = reclaimable;
        self.unsaved_dropped = 0;
        self.bytes = bytes;
        self.next_id = self.next_id.max(batch.last().map_or(0, |m| m.seq) + 1);
        if let Some(first) = batch[..take].iter().find(|m| m.unsynced_mono_ms.is_some()) {
            self.unsynced_from = Some(self.unsynced_from.unwrap_or(first.seq).min(first.seq));
        }
        out.stored = take;
        Ok(out)
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
                Err(e) if is_damage(&e) => return Err(self.err(e)),
                Err(e) if is_full(&e) => {
                    self.make_room();
                    cap -= cap / 4;
                }
                // An I/O error here may be the full disk itself (the -shm file cannot
                // grow): the batch is dropped and counted, and the file is not marked clean.
                Err(e) => {
                    let _ = self.err(e);
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

    /// Up to `limit` messages with an id above `after`, oldest first.
    pub fn fetch_after(&self, after: i64, limit: usize) -> Result<Vec<Stored>, QueueError> {
        self.fetch_range(after, i64::MAX, limit)
    }

    /// Up to `limit` messages with an id above `after` and at most `upto`, oldest first.
    /// A payload the mapper marked `"_clock":"unsynced"` whose row's stamp was corrected
    /// since ([`Queue::correct_stamps`]) comes out with that stamp in `_ts` and marked
    /// `"corrected"`; the row on disk keeps its payload.
    pub fn fetch_range(
        &self,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<Stored>, QueueError> {
        Ok(self.fetch(after, upto, limit)?.rows)
    }

    /// As [`Queue::fetch_range`], with the ids of rows that cannot be read back.
    pub fn fetch(&self, after: i64, upto: i64, limit: usize) -> Result<Fetched, QueueError> {
        fetch_range(&self.conn, after, upto, limit).map_err(|e| self.err(e))
    }

    /// A second, read-only connection to this queue for the uplink's reads. In WAL mode it
    /// reads while this one appends and deletes, so reading ahead waits for neither.
    pub fn reader(&self) -> Result<Reader, QueueError> {
        let mut r = Reader::open(&self.path)?;
        r.faulted = self.faulted.clone();
        // Reads go forward through the table: a small page cache is enough.
        r.conn
            .pragma_update(None, "cache_size", -256)
            .map_err(|e| r.err(e))?;
        Ok(r)
    }

    /// Removes acknowledged messages; ids no longer present (evicted meanwhile) are
    /// skipped. Returns how many pending rows were confirmed. Each run of ids is sized by a
    /// scan; the uplink, which knows the sizes it read, uses [`Queue::ack_known`].
    pub fn ack(&mut self, ids: &[i64]) -> Result<usize, QueueError> {
        let rows: Vec<(i64, u64)> = ids.iter().map(|&id| (id, 0)).collect();
        self.confirm(rows, false)
    }

    /// Removes the rows the broker confirmed, trusting their sizes for the accounting
    /// where every one of a run is still there (ids are never reused and a row is never
    /// changed, so the sizes the uplink read are the sizes stored). A run with a row gone
    /// (evicted, expired or purged meanwhile) is sized by a scan, as [`Queue::ack`] does.
    pub fn ack_known(&mut self, rows: &Confirmed) -> Result<usize, QueueError> {
        let rows: Vec<(i64, u64)> = rows
            .ids()
            .iter()
            .copied()
            .zip(rows.sizes.iter().copied())
            .collect();
        self.confirm(rows, true)
    }

    /// Whether released rows were left on disk by the last transaction (see
    /// [`Queue::reclaim`]). A purge from outside can make this stale; a reclaim then
    /// finds nothing.
    pub fn reclaimable(&self) -> bool {
        self.reclaimable
    }

    /// Runs `work` with `synchronous=NORMAL`. A confirmation lost to a power cut only means
    /// a duplicate, which QoS 1 allows, and a lost reclaim is done again; the next insert's
    /// FULL commit syncs the WAL anyway. The pragmas are cached statements: parsing them
    /// each time cost more than the work.
    fn without_fsync<T>(
        &mut self,
        work: impl FnMut(&mut Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, QueueError> {
        let sync = |conn: &Connection, pragma: &str| conn.prepare_cached(pragma)?.execute([]);
        if self.opts.synchronous_full {
            sync(&self.conn, sql::SYNC_NORMAL).map_err(|e| self.err(e))?;
        }
        // On a full disk: the reserve, and a checkpoint (see `room`).
        let result = self.with_room(work);
        if self.opts.synchronous_full {
            sync(&self.conn, sql::SYNC_FULL).map_err(|e| self.err(e))?;
        }
        result.map_err(|e| self.err(e))
    }

    fn confirm(&mut self, mut rows: Vec<(i64, u64)>, known: bool) -> Result<usize, QueueError> {
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_unstable_by_key(|r| r.0);
        rows.dedup_by_key(|r| r.0);
        let (n, after) = self.without_fsync(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = confirm(&tx, &rows, known)?;
            let after = Accounting::read(&tx)?;
            tx.commit()?;
            Ok((n, after))
        })?;
        self.bytes = after.bytes;
        self.reclaimable = after.reclaimable;
        Ok(n)
    }

    /// Deletes up to `max_rows` released rows, oldest first; all of them at once (SQLite's
    /// truncate, which does not rewrite the pages) when nothing is pending. Returns whether
    /// released rows are left. The uplink calls this when it has nothing else to do.
    pub fn reclaim(&mut self, max_rows: usize) -> Result<bool, QueueError> {
        let after = self.without_fsync(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let released = meta(&tx, "released")?;
            if !truncate_if_done(&tx, released)? {
                let freed: u64 = {
                    let mut stmt = tx.prepare_cached(sql::RECLAIM)?;
                    let rows =
                        stmt.query_map(params![released, max_rows as i64], |r| r.get::<_, i64>(0))?;
                    rows.map(|l| l.map(|l| l as u64 + ROW_OVERHEAD))
                        .sum::<Result<u64, _>>()?
                };
                let mut add = tx.prepare_cached(sql::META_ADD)?;
                add.execute(params!["bytes", -(freed as i64)])?;
                add.execute(params!["released_bytes", -(freed as i64)])?;
            }
            let after = Accounting::read(&tx)?;
            tx.commit()?;
            Ok(after)
        })?;
        self.bytes = after.bytes;
        self.reclaimable = after.reclaimable;
        Ok(after.reclaimable)
    }

    /// Once the wall clock is synchronised (it reads `wall_ms` while the time since boot
    /// is `mono_ms`, [`crate::reading::mono_ms`]), corrects the stamps of the rows of this
    /// boot that a clock not synchronised stamped: each becomes the wall time its time since
    /// boot gives, flagged as corrected, and can expire by age from then on. Rows of an
    /// earlier boot keep their stamp and flag (their time since boot is another boot's) and
    /// never expire by age. Corrects at most [`CORRECT_CHUNK`] rows in one transaction (a
    /// large backlog must not hold the queue past the watchdog's patience); returns how
    /// many, and whether more may be left (call again).
    pub fn correct_stamps(
        &mut self,
        wall_ms: i64,
        mono_ms: i64,
    ) -> Result<(u64, bool), QueueError> {
        let Some(from) = self.unsynced_from else {
            return Ok((0, false));
        };
        let run = || -> Result<Vec<i64>, rusqlite::Error> {
            let mut stmt = self.conn.prepare_cached(sql::CORRECT_STAMPS)?;
            let rows = stmt
                .query_map(params![wall_ms, mono_ms, from, CORRECT_CHUNK as i64], |r| {
                    r.get(0)
                })?;
            rows.collect()
        };
        let ids = run().map_err(|e| self.err(e))?;
        let more = ids.len() >= CORRECT_CHUNK;
        self.unsynced_from = match ids.iter().max() {
            Some(&last) if more => Some(last + 1),
            _ => None,
        };
        Ok((ids.len() as u64, more))
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
            tx.execute(sql::META_ADD, params!["expired", freed.len() as i64])?;
            tx.execute(sql::META_ADD, params!["bytes", -(sum as i64)])?;
            if !freed.is_empty() {
                // The last pending rows expired: released rows can go at once.
                truncate_if_done(&tx, meta(&tx, "released")?)?;
            }
            let after = Accounting::read(&tx)?;
            tx.commit()?;
            Ok((freed.len() as u64, after))
        };
        let (n, after) = self.with_room(run).map_err(|e| self.err(e))?;
        self.bytes = after.bytes;
        self.reclaimable = after.reclaimable;
        Ok(n)
    }

    pub fn stats(&self, now_ms: i64) -> Result<Stats, QueueError> {
        stats(&self.conn, now_ms, self.unsaved_dropped).map_err(|e| self.err(e))
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
        let n = run(&mut self.conn).map_err(|e| self.err(e))?;
        self.bytes = 0;
        self.reclaimable = false;
        Ok(n as u64)
    }

    /// Accounted bytes of the pending rows (as [`Stats::bytes`], without a scan).
    pub fn pending_bytes(&self) -> Result<u64, QueueError> {
        let read = || -> Result<u64, rusqlite::Error> {
            let bytes = meta(&self.conn, "bytes")?.max(0) as u64;
            Ok(bytes.saturating_sub(meta(&self.conn, "released_bytes")?.max(0) as u64))
        };
        read().map_err(|e| self.err(e))
    }

    /// Accounted bytes on disk, pending and released, as tracked in memory (equal to
    /// `meta.bytes`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Recomputes by a full scan the accounted bytes of the pending rows and of the
    /// released ones (for tests: they must equal `Stats::bytes` and
    /// `Stats::reclaimable_bytes`).
    pub fn scan_bytes(&self) -> Result<(u64, u64), QueueError> {
        let scan = || -> Result<(u64, u64), rusqlite::Error> {
            let released = meta(&self.conn, "released")?;
            let (pending, _) =
                size_of_range(&self.conn, released.saturating_add(1), i64::MAX, None)?;
            let (done, _) = size_of_range(&self.conn, i64::MIN, released, None)?;
            Ok((pending, done))
        };
        scan().map_err(|e| self.err(e))
    }

    /// Limits the file to `pages` pages, so tests can fill "the disk" (SQLITE_FULL).
    pub fn set_max_page_count(&self, pages: u64) -> Result<(), QueueError> {
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }
}

/// A read-only connection to the queue ([`Queue::reader`]).
pub struct Reader {
    conn: Connection,
    path: PathBuf,
    /// Shared with the [`Queue`] that made it, if one did.
    faulted: Arc<AtomicBool>,
}

impl Reader {
    /// Opens the queue file at `path` read-only; in WAL mode that is safe while the gateway
    /// writes it. NO_MUTEX, as `Connection::open` does: a connection has one user at a
    /// time, and without it SQLite takes a mutex in every call, several per column of every
    /// row.
    pub fn open(path: &Path) -> Result<Reader, QueueError> {
        let err = |source| QueueError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        Ok(Reader {
            conn,
            path: path.to_path_buf(),
            faulted: Arc::new(AtomicBool::new(false)),
        })
    }

    fn err(&self, source: rusqlite::Error) -> QueueError {
        if is_fault(&source) {
            self.faulted.store(true, Ordering::Relaxed);
        }
        QueueError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// As [`Queue::fetch_range`].
    pub fn fetch_range(
        &self,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<Stored>, QueueError> {
        Ok(self.fetch(after, upto, limit)?.rows)
    }

    /// As [`Queue::fetch`].
    pub fn fetch(&self, after: i64, upto: i64, limit: usize) -> Result<Fetched, QueueError> {
        fetch_range(&self.conn, after, upto, limit).map_err(|e| self.err(e))
    }

    /// The backlog's statistics, as [`Queue::stats`] (drops not yet saved are unknown here).
    /// One read transaction: the gateway's commits between its statements would make the
    /// counts and byte totals disagree.
    pub fn stats(&self, now_ms: i64) -> Result<Stats, QueueError> {
        let read = || -> Result<Stats, rusqlite::Error> {
            let tx = self.conn.unchecked_transaction()?;
            let stats = stats(&tx, now_ms, 0)?;
            tx.commit()?;
            Ok(stats)
        };
        read().map_err(|e| self.err(e))
    }
}

/// How many distinct topics one read remembers, to share each one among its rows.
const TOPICS_PER_READ: usize = 16;

fn fetch_range(
    conn: &Connection,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Fetched, rusqlite::Error> {
    struct Row {
        id: i64,
        topic: Arc<str>,
        end: usize,
        qos: Qos,
        retain: bool,
        created_ms: i64,
        age_unknown: bool,
        stored_bytes: u64,
    }
    let mut stmt = conn.prepare_cached(sql::FETCH_RANGE)?;
    let mut rows = stmt.query(params![after, limit as i64, upto])?;
    let mut found: Vec<Row> = Vec::new();
    let mut unreadable = Vec::new();
    let mut payloads = BytesMut::new();
    let mut topics: Vec<Arc<str>> = Vec::new();
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let start = payloads.len();
        // A column SQLite holds but that cannot be a message (a topic that is not UTF-8,
        // written by another program or a bad sector SQLite cannot see) makes this row,
        // not the read, fail.
        let mut read = || -> Result<Row, rusqlite::Error> {
            let topic = r.get_ref(1)?;
            let topic = match topics
                .iter()
                .find(|t| t.as_bytes() == topic.as_bytes().unwrap_or(&[]))
            {
                Some(t) => t.clone(),
                None => {
                    let t: Arc<str> = Arc::from(topic.as_str()?);
                    if topics.len() == TOPICS_PER_READ {
                        topics.remove(0);
                    }
                    topics.push(t.clone());
                    t
                }
            };
            // A payload is a BLOB as the gateway writes it; TEXT (another writer) reads the same.
            let payload = r.get_ref(2)?.as_bytes_or_null()?.unwrap_or_default();
            let created_ms: i64 = r.get(5)?;
            let clock: i64 = r.get(6)?;
            let stored_bytes = (topic.len() + payload.len()) as u64;
            match clock == sql::CLOCK_CORRECTED {
                true => write_corrected(&mut payloads, payload, created_ms),
                false => payloads.extend_from_slice(payload),
            }
            Ok(Row {
                id,
                topic,
                end: payloads.len(),
                qos: if r.get::<_, i64>(3)? == 0 {
                    Qos::AtMostOnce
                } else {
                    Qos::AtLeastOnce
                },
                retain: r.get(4)?,
                created_ms,
                age_unknown: clock == sql::CLOCK_UNSYNCED,
                stored_bytes,
            })
        };
        match read() {
            Ok(row) => found.push(row),
            Err(
                e @ (rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)
                | rusqlite::Error::Utf8Error(..)),
            ) => {
                payloads.truncate(start);
                unreadable.push((id, e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    let payloads = payloads.freeze();
    let mut start = 0;
    let rows = found
        .into_iter()
        .map(|r| {
            let payload = payloads.slice(start..r.end);
            start = r.end;
            Stored {
                id: r.id,
                topic: r.topic,
                payload,
                qos: r.qos,
                retain: r.retain,
                created_ms: r.created_ms,
                age_unknown: r.age_unknown,
                stored_bytes: r.stored_bytes,
            }
        })
        .collect();
    Ok(Fetched { rows, unreadable })
}

/// How the mapper ends the JSON payload of a reading stamped by a clock not synchronised,
/// and how a read ends it once the row's stamp is corrected.
const UNSYNCED_END: &[u8] = b",\"_clock\":\"unsynced\"}";
const CORRECTED_END: &[u8] = b",\"_clock\":\"corrected\"}";
const TS_KEY: &[u8] = b"\"_ts\":";

/// Appends the payload of a row whose stamp was corrected to `out`. A payload the mapper
/// marked unsynced (it ends `,"_clock":"unsynced"}`) gets the corrected stamp in its last
/// `"_ts":<digits>` and ends `,"_clock":"corrected"}`, so that a consumer sees when the
/// reading was taken; the stored row is not rewritten (its size is what the accounting
/// counts). Any other payload is appended as it is.
fn write_corrected(out: &mut BytesMut, payload: &[u8], created_ms: i64) {
    let found = payload
        .strip_suffix(UNSYNCED_END)
        .and_then(|body| Some((body, last_ts(body)?)));
    let Some((body, (start, end))) = found else {
        out.extend_from_slice(payload);
        return;
    };
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(created_ms.to_string().as_bytes());
    out.extend_from_slice(&body[end..]);
    out.extend_from_slice(CORRECTED_END);
}

/// Where the digits of the last `"_ts":<digits>` key of a JSON object's text are. The
/// mapper writes its own `_ts` after the sensor's fields; a key follows `{` or `,`, which
/// inside a JSON string cannot precede an unescaped quote.
fn last_ts(body: &[u8]) -> Option<(usize, usize)> {
    let mut end = body.len();
    while let Some(at) = body[..end].windows(TS_KEY.len()).rposition(|w| w == TS_KEY) {
        let start = at + TS_KEY.len();
        let digits = body[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if at > 0 && matches!(body[at - 1], b'{' | b',') && digits > 0 {
            return Some((start, start + digits));
        }
        end = at;
    }
    None
}

/// The first id this boot can have stored (`meta.boot_first_id`); when the last open was in
/// another boot (or the boot is unknown), that is `next_id`, and it is recorded.
fn this_boot_from(conn: &Connection, next_id: i64) -> Result<i64, rusqlite::Error> {
    let Some(boot) = crate::reading::boot_id() else {
        return Ok(next_id);
    };
    if meta(conn, "boot")? == boot {
        return Ok(meta(conn, "boot_first_id")?.min(next_id));
    }
    conn.execute(sql::META_PUT, params!["boot_first_id", next_id])?;
    conn.execute(sql::META_PUT, params!["boot", boot])?;
    Ok(next_id)
}

/// Why the file is not a sensorgate queue, when it is not: it has tables, but not the
/// gateway's ([`sql::OWN_TABLES`]).
fn foreign(conn: &Connection, tables: &[String]) -> Result<Option<String>, rusqlite::Error> {
    if tables.is_empty() {
        return Ok(None);
    }
    for (table, columns) in sql::OWN_TABLES {
        if !tables.iter().any(|t| t == table) {
            // `meta` comes second in the schema: a file may lack it.
            if table == "outbox" {
                return Ok(Some(format!(
                    "it has no table outbox (tables: {})",
                    tables.join(", ")
                )));
            }
            continue;
        }
        let have = column_names(conn, table)?;
        if let Some(missing) = columns.iter().find(|c| !have.iter().any(|h| h == *c)) {
            return Ok(Some(format!("its table {table} has no column {missing}")));
        }
    }
    Ok(None)
}

fn table_names(conn: &Connection) -> Result<Vec<String>, rusqlite::Error> {
    conn.prepare(sql::TABLE_NAMES)?
        .query_map([], |r| r.get(0))?
        .collect()
}

fn column_names(conn: &Connection, table: &str) -> Result<Vec<String>, rusqlite::Error> {
    conn.prepare(sql::COLUMN_NAMES)?
        .query_map(params![table], |r| r.get(0))?
        .collect()
}

/// Whether the last gateway marked the file clean ([`Queue::mark_clean`]); false for a new
/// file, or one from a version without the flag.
fn was_closed_cleanly(conn: &Connection) -> Result<bool, rusqlite::Error> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(false);
    }
    Ok(conn
        .query_row(sql::META_GET, params!["clean"], |r| r.get::<_, i64>(0))
        .optional()?
        == Some(1))
}

fn meta(conn: &Connection, key: &str) -> Result<i64, rusqlite::Error> {
    Ok(conn
        .query_row(sql::META_GET, params![key], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
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

/// The accounting after a transaction, for the in-memory copy.
struct Accounting {
    bytes: u64,
    reclaimable: bool,
}

impl Accounting {
    fn read(conn: &Connection) -> Result<Accounting, rusqlite::Error> {
        let released = meta(conn, "released")?;
        Ok(Accounting {
            bytes: meta(conn, "bytes")?.max(0) as u64,
            reclaimable: any(conn, sql::ANY_UP_TO, released)?,
        })
    }
}

/// Notes that rows up to `id` may have left the queue other than by release (policy,
/// expiry, purge, a delete of confirmed rows) or were never stored (refused): confirmed
/// rows at or below it are counted before their sizes are trusted ([`confirm`]).
fn removed(conn: &Connection, id: i64) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql::META_RAISE)?
        .execute(params!["removed_upto", id])?;
    Ok(())
}

fn any(conn: &Connection, query: &str, id: i64) -> Result<bool, rusqlite::Error> {
    conn.prepare_cached(query)?
        .query_row(params![id], |r| r.get(0))
}

/// Confirms `rows` (ids sorted and distinct; sizes valid when `known`). The leading runs
/// of ids below which no pending row is left unconfirmed are released (`meta.released`
/// moves up to the last of them); the other runs are deleted. Returns how many pending
/// rows were confirmed.
fn confirm(tx: &Connection, rows: &[(i64, u64)], known: bool) -> Result<usize, rusqlite::Error> {
    let released = meta(tx, "released")?;
    // The uplink read these rows, so they were there. Above `removed_upto` nothing has left
    // the queue but by release (filtered out just below), so they still are: their sizes
    // need no count. At or below it, a count must find every one of them first.
    let removed_upto = meta(tx, "removed_upto")?;
    let rows = &rows[rows.partition_point(|r| r.0 <= released)..];
    // The watermark never passes the highest id stored: later rows get higher ids.
    let Some(max_id) = tx.query_row(sql::MAX_ID, [], |r| r.get::<_, Option<i64>>(0))? else {
        return Ok(0);
    };
    let rows = &rows[..rows.partition_point(|r| r.0 <= max_id)];
    let runs: Vec<&[(i64, u64)]> = rows.chunk_by(|a, b| a.0 + 1 == b.0).collect();
    let claim = |run: &[&[(i64, u64)]]| {
        known.then(|| {
            let rows = run.iter().copied().flatten();
            Claim {
                rows: rows.clone().count(),
                bytes: rows.clone().map(|r| r.1).sum::<u64>(),
                sure: run[0][0].0 > removed_upto,
            }
        })
    };
    let mut upto = released;
    let mut leading = 0;
    for run in &runs {
        if any_between(tx, upto, run[0].0)? {
            break;
        }
        upto = run[run.len() - 1].0;
        leading += 1;
    }
    let mut confirmed = 0;
    if leading > 0 {
        // No row in the gaps between these runs: the rows in the range are theirs.
        let (bytes, n) = size_of_range(tx, released + 1, upto, claim(&runs[..leading]))?;
        tx.prepare_cached(sql::META_SET)?
            .execute(params!["released", upto])?;
        tx.prepare_cached(sql::META_ADD)?
            .execute(params!["released_bytes", bytes as i64])?;
        confirmed += n;
    }
    let mut deleted = 0u64;
    for run in &runs[leading..] {
        let (lo, hi) = (run[0].0, run[run.len() - 1].0);
        let (bytes, n) = size_of_range(tx, lo, hi, claim(std::slice::from_ref(run)))?;
        if n > 0 {
            tx.prepare_cached(sql::DELETE_RANGE)?
                .execute(params![lo, hi])?;
            deleted += bytes;
            confirmed += n;
        }
        removed(tx, hi)?;
    }
    if deleted > 0 {
        tx.prepare_cached(sql::META_ADD)?
            .execute(params!["bytes", -(deleted as i64)])?;
    }
    truncate_if_done(tx, upto)?;
    Ok(confirmed)
}

fn any_between(conn: &Connection, after: i64, before: i64) -> Result<bool, rusqlite::Error> {
    conn.prepare_cached(sql::ANY_BETWEEN)?
        .query_row(params![after, before], |r| r.get(0))
}

/// What the uplink says of the rows it confirmed in a range: how many, their bytes as it
/// read them, and whether they are sure to be there still.
struct Claim {
    rows: usize,
    bytes: u64,
    sure: bool,
}

/// Accounted bytes and count of the rows with an id in `lo..=hi`. A claim is trusted when
/// it is sure, or when exactly that many rows are there (the caller's ids are distinct and
/// in the range, so they are the rows).
fn size_of_range(
    conn: &Connection,
    lo: i64,
    hi: i64,
    claim: Option<Claim>,
) -> Result<(u64, usize), rusqlite::Error> {
    if let Some(c) = claim {
        let there = match c.sure {
            true => c.rows as i64,
            false => conn
                .prepare_cached(sql::COUNT_RANGE)?
                .query_row(params![lo, hi], |r| r.get(0))?,
        };
        if there as usize == c.rows {
            return Ok((c.bytes + c.rows as u64 * ROW_OVERHEAD, c.rows));
        }
    }
    let (len, n): (i64, i64) = conn
        .prepare_cached(sql::SIZE_RANGE)?
        .query_row(params![lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((len as u64 + n as u64 * ROW_OVERHEAD, n as usize))
}

/// When no pending row is left, frees the released ones at once: SQLite's truncate frees
/// their pages without rewriting them. Returns whether nothing is pending.
fn truncate_if_done(tx: &Connection, released: i64) -> Result<bool, rusqlite::Error> {
    if any(tx, sql::ANY_ABOVE, released)? {
        return Ok(false);
    }
    if any(tx, sql::ANY_UP_TO, released)? {
        tx.prepare_cached(sql::TRUNCATE)?.execute([])?;
        tx.prepare_cached(sql::META_SET)?
            .execute(params!["bytes", 0])?;
        tx.prepare_cached(sql::META_SET)?
            .execute(params!["released_bytes", 0])?;
    }
    Ok(true)
}

fn stats(conn: &Connection, now_ms: i64, unsaved_dropped: u64) -> Result<Stats, rusqlite::Error> {
    let pending: i64 = conn.query_row(sql::COUNT, [], |r| r.get(0))?;
    let bytes = meta(conn, "bytes")?.max(0) as u64;
    let reclaimable_bytes = meta(conn, "released_bytes")?.max(0) as u64;
    let oldest: Option<i64> = conn.query_row(sql::OLDEST, [], |r| r.get(0)).optional()?;
    let dropped_full = meta(conn, "dropped_full")? as u64 + unsaved_dropped;
    let expired = meta(conn, "expired")? as u64;
    Ok(Stats {
        pending: pending as u64,
        bytes: bytes.saturating_sub(reclaimable_bytes),
        reclaimable_bytes,
        oldest_age_s: oldest.map_or(0.0, |t| ((now_ms - t).max(0)) as f64 / 1000.0),
        dropped: dropped_full + expired,
        dropped_full,
        expired,
        last_seq: conn.query_row(sql::LAST_ID, [], |r| r.get(0))?,
        dead: meta(conn, "dead")?.max(0) as u64,
        dead_held: dead::dead_held(conn)?,
        dead_discarded: meta(conn, "dead_discarded")?.max(0) as u64,
    })
}

#[cfg(test)]
mod tests;
