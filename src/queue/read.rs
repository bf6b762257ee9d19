//! Reading the queue: [`Queue::fetch`] on the writer's connection, the read-only
//! [`Reader`] the uplink and the CLI read through, and the backlog's [`Stats`].
//!
//! - **Invariant:** a read sees pending rows only (`id > meta.released`), in id order, and
//!   never writes. One read is one buffer: payloads are slices of it and a topic repeated
//!   among the rows is one `Arc`, so reading a backlog costs no allocation per row.
//! - **Invariant:** a row that cannot be read back as a message (a topic that is not UTF-8,
//!   a column of the wrong type) fails alone: it is reported in [`Fetched::unreadable`] for
//!   the dead letters, and the read goes on.
//! - **Invariant:** a payload is handed out as stored, except that of a row whose stamp was
//!   corrected (see `stamps`); [`Stored::bytes`] is always the size stored.

use super::conn::Conn;
use super::{dead, meta, sql, stamps, Queue, QueueError};
use crate::config::Qos;
use bytes::{Bytes, BytesMut};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Arc;

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
    /// stamp a read corrected (see [`Queue::fetch_range`]) differs from the one stored.
    pub stored_bytes: u64,
}

impl Stored {
    /// Topic and payload bytes as stored, as the size accounting counts them.
    pub fn bytes(&self) -> u64 {
        self.stored_bytes
    }

    /// The row `m` becomes when it is committed (the live path hands it out before).
    pub fn from_new(m: &crate::mapping::NewMessage) -> Stored {
        Stored {
            id: m.seq,
            topic: Arc::from(m.topic.as_str()),
            payload: Bytes::copy_from_slice(&m.payload),
            qos: m.qos,
            retain: m.retain,
            created_ms: m.created_ms,
            age_unknown: m.unsynced_mono_ms.is_some(),
            stored_bytes: (m.topic.len() + m.payload.len()) as u64,
        }
    }
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
    /// Messages the broker acknowledged before their commit, never written (saved with the
    /// next commit that writes, or at a clean stop).
    pub unwritten: u64,
    /// Readings not published because no field moved past its deadband (report by
    /// exception; saved as `unwritten` is).
    pub held_back: u64,
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

impl Queue {
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
        fetch_range(&self.conn, after, upto, limit).map_err(|e| self.conn.err(e))
    }

    /// A second, read-only connection to this queue for the uplink's reads. In WAL mode it
    /// reads while this one appends and deletes, so reading ahead waits for neither.
    pub fn reader(&self) -> Result<Reader, QueueError> {
        let conn = Conn::open_read_only(&self.conn.path, self.conn.faulted.clone())?;
        // Reads go forward through the table: a small page cache is enough.
        conn.pragma_update(None, "cache_size", -256)
            .map_err(|e| conn.err(e))?;
        Ok(Reader { conn })
    }

    /// The backlog's statistics, drops not yet saved included.
    pub fn stats(&self, now_ms: i64) -> Result<Stats, QueueError> {
        stats(&self.conn, now_ms, self.unsaved_dropped).map_err(|e| self.conn.err(e))
    }
}

/// A read-only connection to the queue ([`Queue::reader`]).
pub struct Reader {
    /// Its fault flag is shared with the [`Queue`] that made it, if one did.
    pub(super) conn: Conn,
}

impl Reader {
    /// Opens the queue file at `path` read-only; in WAL mode that is safe while the gateway
    /// writes it.
    pub fn open(path: &Path) -> Result<Reader, QueueError> {
        let conn = Conn::open_read_only(path, Arc::default())?;
        Ok(Reader { conn })
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
        fetch_range(&self.conn, after, upto, limit).map_err(|e| self.conn.err(e))
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
        read().map_err(|e| self.conn.err(e))
    }
}

/// How many distinct topics one read remembers, to share each one among its rows.
const TOPICS_PER_READ: usize = 16;

/// One read: up to `limit` pending rows with an id in `after + 1..=upto`, in one buffer.
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
            if clock == sql::CLOCK_CORRECTED {
                stamps::write_corrected(&mut payloads, payload, created_ms);
            } else {
                payloads.extend_from_slice(payload);
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

/// The backlog's statistics; `unsaved_dropped` are drops counted only in memory.
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
        unwritten: meta(conn, "unwritten")?.max(0) as u64,
        held_back: meta(conn, "held_back")?.max(0) as u64,
    })
}
