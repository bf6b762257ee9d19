//! One gateway per state directory: `sensorgate run` holds an exclusive lock on
//! `sensorgate.lock` in `state_dir` for as long as it runs (the kernel releases it when the
//! process ends, kill -9 included, so a stale file never blocks a start). The file names
//! the holder's process id. The CLI's `queue stats|peek|export` read without it, beside a
//! running gateway; `queue purge` too (its transaction waits for the gateway's, and the
//! gateway reads the accounting it changes).

use super::QueueError;
use std::fs::{File, TryLockError};
use std::io::{Read, Write};
use std::path::Path;

/// The lock on a state directory; released when dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock on `state_dir` (created if missing), or says which process holds it.
    pub fn take(state_dir: &Path) -> Result<StateLock, QueueError> {
        let path = state_dir.join("sensorgate.lock");
        let io = |source| QueueError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path);
        // A lock file left by a run as another user (root) still locks, read-only.
        let (mut file, writable) = match opened {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                (std::fs::File::open(&path).map_err(io)?, false)
            }
            Err(e) => return Err(io(e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(QueueError::Locked {
                    dir: state_dir.display().to_string(),
                    pid: holder.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        if writable {
            file.set_len(0).map_err(io)?;
            writeln!(file, "{}", std::process::id()).map_err(io)?;
        }
        Ok(StateLock { _file: file })
    }
}

/// The process that holds `state_dir`'s lock, as its lock file names it, if that process
/// still runs a sensorgate (read only: taking the lock to ask could refuse a gateway that
/// starts at that moment).
pub fn holder(state_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(state_dir.join("sensorgate.lock")).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "sensorgate").then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::take(dir.path()).unwrap();
        let e = StateLock::take(dir.path()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("another sensorgate")
                && text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        StateLock::take(dir.path()).unwrap();
    }
}
