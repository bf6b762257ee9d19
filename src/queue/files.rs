//! The queue file from outside the writer: read-only views for the CLI (safe while the
//! gateway runs, thanks to WAL), and opening with a reset when the file is corrupt.

use super::{sql, Queue, QueueError, QueueOptions, Reader, Stats, Stored};
use std::path::{Path, PathBuf};

/// Reads the statistics of a queue file without taking part in writing it (the CLI, while
/// the gateway runs).
pub fn read_stats(path: &Path, now_ms: i64) -> Result<Stats, QueueError> {
    Reader::open(path)?.stats(now_ms)
}

/// Reads up to `limit` of the oldest pending messages without writing.
pub fn read_oldest(path: &Path, after: i64, limit: usize) -> Result<Vec<Stored>, QueueError> {
    Reader::open(path)?.fetch_range(after, i64::MAX, limit)
}

/// How each row with an id in `lo..=hi` was stamped: `"synced"`, `"unsynced"` (by a clock
/// not synchronised) or `"corrected"` (since, from the monotonic clock). Empty for a file
/// that no gateway of this version has opened yet.
pub fn read_clocks(path: &Path, lo: i64, hi: i64) -> Result<Vec<(i64, &'static str)>, QueueError> {
    let r = Reader::open(path)?;
    let read = || -> Result<Vec<(i64, &'static str)>, rusqlite::Error> {
        let Ok(mut stmt) = r.conn.prepare(sql::CLOCK_RANGE) else {
            return Ok(Vec::new()); // no such column yet
        };
        let rows = stmt.query_map(rusqlite::params![lo, hi], |row| {
            let name = match row.get::<_, i64>(1)? {
                sql::CLOCK_UNSYNCED => "unsynced",
                sql::CLOCK_CORRECTED => "corrected",
                _ => "synced",
            };
            Ok((row.get(0)?, name))
        })?;
        rows.collect()
    };
    read().map_err(|e| r.conn.err(e))
}

/// Opens the queue; if the file is corrupt, not a database, or another application's
/// database, moves it (and its WAL and shared-memory files) aside as
/// `queue.db.corrupt-<unix seconds>` and starts a fresh one. Returns the queue and, when a
/// reset happened, the path the old file was moved to.
///
/// The fresh queue numbers on above every sequence number the old file handed out: above
/// the ceiling kept beside it (`seq.ceiling`), above the old file's own last number when it
/// can still be read, and above the wall clock in microseconds (far above any count a
/// gateway reaches, when the clock is right).
pub fn open_or_reset(
    path: &Path,
    opts: QueueOptions,
) -> Result<(Queue, Option<PathBuf>), QueueError> {
    match Queue::open(path, opts.clone()) {
        Ok(q) => Ok((q, None)),
        Err(e) if e.is_corrupt() || e.is_foreign() => {
            tracing::warn!(queue = %path.display(), error = %e, "Queue file unusable; moving it aside.");
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
            // Two resets within a second (or a clock that came back) keep both files.
            for n in 1.. {
                if !aside.exists() {
                    break;
                }
                aside = PathBuf::from(format!("{}.corrupt-{stamp}-{n}", path.display()));
            }
            let io = |source| QueueError::Io {
                path: path.display().to_string(),
                source,
            };
            std::fs::rename(path, &aside).map_err(io)?;
            for suffix in ["-wal", "-shm"] {
                let side = PathBuf::from(format!("{}{suffix}", path.display()));
                if side.exists() {
                    let _ = std::fs::rename(&side, format!("{}{suffix}", aside.display()));
                }
            }
            let old_last = last_number_in(&aside).unwrap_or(0);
            let mut q = Queue::open(path, opts)?;
            q.raise_next_id((stamp as i64).saturating_mul(1_000_000).max(old_last))?;
            Ok((q, Some(aside)))
        }
        Err(e) => Err(e),
    }
}

/// The last sequence number a moved-aside queue file handed out, if it can still say.
fn last_number_in(path: &Path) -> Option<i64> {
    let r = Reader::open(path).ok()?;
    r.conn.query_row(sql::LAST_ID, [], |row| row.get(0)).ok()
}
