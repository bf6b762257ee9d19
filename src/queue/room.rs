//! Room on the disk for the queue: the bound on its WAL, a reserve file that is given back
//! when the disk is full, and what the queue does then ([`Queue::with_room`],
//! [`Queue::maintain`]).
//!
//! - **The WAL is bounded.** SQLite checkpoints after [`wal_budget`] bytes of frames
//!   (`wal_autocheckpoint`, instead of its default 1,000 pages, 4 MB) and truncates the WAL
//!   to that size when it starts over (`journal_size_limit`). [`accounted_limit`] leaves the
//!   WAL that room in `max_size`, so the file plus its WAL stay within it.
//! - **The reserve** (`queue.reserve` beside `queue.db`, [`reserve_size`] bytes) is given
//!   back when SQLite reports a full disk: then the checkpoint that lets the WAL start over,
//!   the policy's evictions, the drop counts and the deletes of confirmed rows find room.
//!   Housekeeping makes it again once the disk has room for it and for the WAL
//!   ([`Reserve::remake`]). Until then the size policy keeps the queue below what the disk
//!   held when it filled (the queue's `disk_cap`), so the file stops growing and the policy
//!   works inside it.

use super::conn::is_full;
use super::{sql, Queue, QueueError};
use rusqlite::{params, Connection};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bytes of WAL frames after which SQLite checkpoints, and the size the WAL is cut back to.
pub fn wal_budget(max_size: u64) -> u64 {
    (max_size / 16).clamp(64 << 10, 1 << 20)
}

/// The reserve holds what a checkpoint of a full WAL and the transactions that make room
/// can need, and the -shm file and a WAL for a start on a disk something else filled.
pub fn reserve_size(max_size: u64) -> u64 {
    wal_budget(max_size) + (256 << 10)
}

/// Pages of the file that are not rows (header, schema, `meta`, the sequence, interior
/// pages of a small table) and the shared-memory file.
const FIXED: u64 = 96 << 10;

/// The accounted bytes (`meta.bytes`) that fit in `max_size` bytes of disk, the file plus
/// its WAL: the WAL's budget and the fixed pages off, and rows take up to 4/3 of their
/// accounted size in pages (the largest ratio measured; see ARCHITECTURE.md's benchmark
/// notes).
pub fn accounted_limit(max_size: u64) -> u64 {
    let rows = max_size.saturating_sub(wal_budget(max_size) + FIXED);
    (rows / 4 * 3).max(16 << 10)
}

/// The reserve file.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    size: u64,
    present: bool,
}

impl Reserve {
    /// The reserve of the queue at `queue`, as it is on disk (see [`Reserve::remake`]).
    pub fn new(queue: &Path, max_size: u64) -> Reserve {
        let path = queue.with_extension("reserve");
        let size = reserve_size(max_size);
        let present = std::fs::metadata(&path).is_ok_and(|m| m.len() >= size);
        Reserve {
            path,
            size,
            present,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn present(&self) -> bool {
        self.present
    }

    /// Deletes the reserve; returns whether there was one to give back.
    pub fn give_back(&mut self) -> bool {
        let was = self.present || self.path.exists();
        let _ = std::fs::remove_file(&self.path);
        self.present = false;
        was
    }

    /// Whether the disk has `bytes` free (or cannot say).
    pub fn room_for(&self, bytes: u64) -> bool {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        free_bytes(dir).is_none_or(|free| free >= bytes)
    }

    /// Makes the reserve again if the disk has room for it and `headroom` bytes more;
    /// returns whether it is there. A disk that cannot take all of it keeps none of it.
    pub fn remake(&mut self, headroom: u64) -> bool {
        if self.present {
            return true;
        }
        if !self.room_for(self.size + headroom) {
            return false;
        }
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&self.path)?;
            let zeros = vec![0u8; 64 << 10];
            let mut left = self.size;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                f.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        };
        match write() {
            Ok(()) => self.present = true,
            Err(_) => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
        self.present
    }
}

/// Bytes an unprivileged process can still write on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
}

/// The queue on a full disk.
impl Queue {
    /// The accounted bytes the size policy allows: `max_size`, or less after the disk filled.
    pub(super) fn limit(&self) -> u64 {
        self.disk_cap
            .map_or(self.opts.max_size, |c| c.min(self.opts.max_size))
    }

    /// The disk is full: gives back the reserve, and checkpoints so that the WAL starts over
    /// (the next write reuses its file instead of growing it).
    pub(super) fn make_room(&mut self) {
        if self.reserve.give_back() {
            tracing::warn!(queue = %self.conn.path.display(), reserve = %self.reserve.path().display(), "Disk full: gave back the queue's reserve file; the size policy now keeps the queue within what the disk holds.");
        }
        let _ = self.conn.query_row(sql::CHECKPOINT_RESTART, [], |_| Ok(()));
    }

    /// Runs `work`; if the disk is full, makes room and runs it once more.
    pub(super) fn with_room<T>(
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
    pub(super) fn save_dropped(&mut self) -> Result<(), rusqlite::Error> {
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
        self.save_dropped().map_err(|e| self.conn.err(e))?;
        if !self.reserve.present() && self.reserve.remake(wal_budget(self.opts.max_size)) {
            if let Some(cap) = self.disk_cap.take() {
                tracing::info!(queue = %self.conn.path.display(), was = cap, "Disk has room again: made the reserve file again; the size policy is back to max_size.");
            }
        }
        Ok(())
    }

    /// Drops counted in memory only: the disk was too full to write them.
    pub fn unsaved_dropped(&self) -> u64 {
        self.unsaved_dropped
    }

    /// Limits the file to `pages` pages, so tests can fill "the disk" (SQLITE_FULL).
    #[cfg(any(test, feature = "test-support"))]
    pub fn set_max_page_count(&self, pages: u64) -> Result<(), QueueError> {
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|e| self.conn.err(e))
    }
}
