//! The queue's connections to its file and the errors they report.
//!
//! The writer ([`super::Queue`]) and every read-only [`super::Reader`] hold a [`Conn`]:
//! the SQLite connection, the path its errors name, and a fault flag.
//!
//! **Invariant:** every connection a queue made (its own and its readers') shares one fault
//! flag, set by any error that says the file can no longer be trusted (damage, a failing
//! disk); a queue whose flag is set is never marked clean (`Queue::mark_clean`).

use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
pub(super) fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Whether an error says the file can no longer be trusted to be whole.
fn is_fault(e: &rusqlite::Error) -> bool {
    is_damage(e) || matches!(e.sqlite_error_code(), Some(ErrorCode::SystemIoFailure))
}

/// The disk (or the file's page limit) is full: SQLITE_FULL.
pub(super) fn is_full(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DiskFull))
}

/// Another connection holds the lock past the busy timeout.
pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// A connection to the queue file. It derefs to the SQLite connection; its errors go
/// through [`Conn::err`], which names the file and notes faults.
pub(super) struct Conn {
    conn: Connection,
    pub(super) path: PathBuf,
    /// Shared by every connection the same queue made.
    pub(super) faulted: Arc<AtomicBool>,
}

impl Conn {
    /// The writer's connection (read-write, created if missing).
    pub(super) fn open(path: &Path) -> Result<Conn, QueueError> {
        Conn::open_with(path, OpenFlags::default(), Arc::default())
    }

    /// A read-only connection; in WAL mode it reads while the writer writes. NO_MUTEX, as
    /// the writer's: a connection has one user at a time, and without it SQLite takes a
    /// mutex in every call, several per column of every row.
    pub(super) fn open_read_only(
        path: &Path,
        faulted: Arc<AtomicBool>,
    ) -> Result<Conn, QueueError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Conn::open_with(path, flags, faulted)
    }

    fn open_with(
        path: &Path,
        flags: OpenFlags,
        faulted: Arc<AtomicBool>,
    ) -> Result<Conn, QueueError> {
        let conn =
            Connection::open_with_flags(path, flags).map_err(|source| QueueError::Sqlite {
                path: path.display().to_string(),
                source,
            })?;
        let conn = Conn {
            conn,
            path: path.to_path_buf(),
            faulted,
        };
        // Another process's write transaction (the CLI's purge, the gateway's commit) is
        // waited for, not failed.
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| conn.err(e))?;
        Ok(conn)
    }

    /// The error naming this file; one that says the file cannot be trusted sets the
    /// fault flag.
    pub(super) fn err(&self, source: rusqlite::Error) -> QueueError {
        if is_fault(&source) {
            self.faulted.store(true, Ordering::Relaxed);
        }
        QueueError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Whether a connection sharing this one's flag met damage or a failing disk.
    pub(super) fn faulted(&self) -> bool {
        self.faulted.load(Ordering::Relaxed)
    }
}

impl Deref for Conn {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}
