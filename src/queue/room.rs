//! Room on the disk for the queue: the bound on its WAL, and a reserve file that is given
//! back when the disk is full.
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
/// accounted size in pages (measured with eviction and confirmations under way: 0.83 for
/// 20-byte payloads, 0.98 for 130, 1.07 for 400, 1.34 for 1,000, three to a page).
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
