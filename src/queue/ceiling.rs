//! The sequence-number ceiling: a small file beside the queue (`seq.ceiling`) holding a
//! number above every sequence number the queue has handed out, written durably before a
//! number at or above it is handed out. It outlives the queue file: when a damaged or
//! foreign file is moved aside, or `queue.db` is deleted, the fresh queue numbers on above
//! it, whatever the wall clock says (a Pi's may read 1970).
//!
//! The ceiling moves up a block at a time ([`BLOCK`]), so the file is written when a queue
//! is created or reset and about once every four billion messages, never per commit.

use std::io::Write;
use std::path::{Path, PathBuf};

/// How far above the next sequence number the ceiling is set.
pub const BLOCK: i64 = 1 << 32;

/// After a failed write, how many more numbers go out before the next try.
const RETRY_AFTER: i64 = 1 << 16;

#[derive(Debug)]
pub struct Ceiling {
    path: PathBuf,
    /// Every number handed out is below this (0: no ceiling known).
    value: i64,
    /// A failed write is not retried for numbers below this.
    retry_at: i64,
}

impl Ceiling {
    /// Reads the ceiling kept beside the queue file `queue`; 0 when there is none (a first
    /// start) or it cannot be read (logged).
    pub fn read(queue: &Path) -> Ceiling {
        let path = queue.with_file_name("seq.ceiling");
        let value = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "Sequence-number ceiling unreadable; ignoring it.");
                0
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "Sequence-number ceiling unreadable; ignoring it.");
                0
            }
        };
        Ceiling {
            path,
            value,
            retry_at: 0,
        }
    }

    pub fn value(&self) -> i64 {
        self.value
    }

    /// Makes sure `id` is below the ceiling before it is handed out: when it is not, writes
    /// `id + BLOCK` durably. A failed write (a full disk) is logged and retried
    /// [`RETRY_AFTER`] numbers later; meanwhile numbers may go backwards after a reset
    /// with a wrong clock, which the log says.
    pub fn cover(&mut self, id: i64) {
        if id < self.value || id < self.retry_at {
            return;
        }
        let value = id.saturating_add(BLOCK);
        match write_durably(&self.path, value) {
            Ok(()) => self.value = value,
            Err(e) => {
                self.retry_at = id.saturating_add(RETRY_AFTER);
                tracing::warn!(file = %self.path.display(), error = %e, "Could not save the sequence-number ceiling; after a reset of the queue with a wrong clock, numbers could go backwards.");
            }
        }
    }
}

/// Writes `value` to `path` so that a power cut leaves the old content or the new one.
fn write_durably(path: &Path, value: i64) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{value}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_moves_up_a_block_at_a_time_and_survives() {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("queue.db");
        let mut c = Ceiling::read(&queue);
        assert_eq!(c.value(), 0);
        c.cover(1);
        assert_eq!(c.value(), 1 + BLOCK);
        c.cover(BLOCK);
        assert_eq!(c.value(), 1 + BLOCK, "no write below the ceiling");
        c.cover(1 + BLOCK);
        assert_eq!(c.value(), 1 + 2 * BLOCK);
        assert_eq!(Ceiling::read(&queue).value(), 1 + 2 * BLOCK);
        std::fs::write(dir.path().join("seq.ceiling"), "garbage").unwrap();
        assert_eq!(Ceiling::read(&queue).value(), 0);
    }
}
