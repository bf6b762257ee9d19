//! The queue file from outside the writer: read-only views for the CLI (safe while the
//! gateway runs, thanks to WAL), and opening with a reset when the file is corrupt.

use super::{Queue, QueueError, QueueOptions, Reader, Stats, Stored};
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

/// Opens the queue; if the file is corrupt or not a database, moves it (and its WAL and
/// shared-memory files) aside as `queue.db.corrupt-<unix seconds>` and starts a fresh one.
/// Returns the queue and, when a reset happened, the path the old file was moved to.
pub fn open_or_reset(
    path: &Path,
    opts: QueueOptions,
) -> Result<(Queue, Option<PathBuf>), QueueError> {
    match Queue::open(path, opts.clone()) {
        Ok(q) => Ok((q, None)),
        Err(e) if e.is_corrupt() => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
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
            let mut q = Queue::open(path, opts)?;
            // Sequence numbers continue above anything the old file can have handed out:
            // microseconds of wall time are far above any count a gateway reaches.
            q.raise_next_id((stamp as i64).saturating_mul(1_000_000))?;
            Ok((q, Some(aside)))
        }
        Err(e) => Err(e),
    }
}
