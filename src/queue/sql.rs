//! The queue's SQL, in one place.
//!
//! Rows with an id up to `meta.released` are confirmed, waiting only to be reclaimed (see
//! the queue's design notes): every statement that reads or drops *pending* rows has
//! `id > released` in it.

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES
    ('bytes', 0), ('dropped_full', 0), ('expired', 0), ('schema', 1),
    ('released', 0), ('released_bytes', 0), ('removed_upto', 0), ('clean', 0);
";

/// The released watermark; 0 in a file no gateway of this version has opened yet.
macro_rules! released {
    () => {
        "coalesce((SELECT value FROM meta WHERE key = 'released'), 0)"
    };
}

/// Accounted bytes of a row, without [`super::ROW_OVERHEAD`].
macro_rules! row_bytes {
    () => {
        "octet_length(topic) + octet_length(payload)"
    };
}

pub const INSERT: &str =
    "INSERT INTO outbox (id, topic, payload, qos, retain, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
pub const FETCH_RANGE: &str = concat!(
    "SELECT id, topic, payload, qos, retain, created_ms FROM outbox WHERE id > max(?1, ",
    released!(),
    ") AND id <= ?3 ORDER BY id LIMIT ?2"
);
pub const SIZE_RANGE: &str = concat!(
    "SELECT coalesce(sum(",
    row_bytes!(),
    "), 0), count(*) FROM outbox WHERE id BETWEEN ?1 AND ?2"
);
pub const COUNT_RANGE: &str = "SELECT count(*) FROM outbox WHERE id BETWEEN ?1 AND ?2";
pub const ANY_BETWEEN: &str = "SELECT EXISTS (SELECT 1 FROM outbox WHERE id > ?1 AND id < ?2)";
pub const ANY_ABOVE: &str = "SELECT EXISTS (SELECT 1 FROM outbox WHERE id > ?1)";
pub const ANY_UP_TO: &str = "SELECT EXISTS (SELECT 1 FROM outbox WHERE id <= ?1)";
pub const MAX_ID: &str = "SELECT max(id) FROM outbox";
pub const DELETE_RANGE: &str = "DELETE FROM outbox WHERE id BETWEEN ?1 AND ?2";
/// Released rows, oldest first.
pub const RECLAIM: &str = concat!(
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE id <= ?1 ORDER BY id LIMIT ?2)
     RETURNING ",
    row_bytes!()
);
pub const EXPIRE: &str = concat!(
    "DELETE FROM outbox WHERE id IN
     (SELECT id FROM outbox WHERE created_ms < ?1 AND id > ",
    released!(),
    " ORDER BY id LIMIT 10000) RETURNING id, ",
    row_bytes!()
);
pub const LAST_ID: &str =
    "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)";
pub const SET_LAST_ID: &str =
    "INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('outbox', ?1)";
pub const COUNT: &str = concat!("SELECT count(*) FROM outbox WHERE id > ", released!());
pub const OLDEST: &str = concat!(
    "SELECT created_ms FROM outbox WHERE id > ",
    released!(),
    " ORDER BY id LIMIT 1"
);
pub const META_GET: &str = "SELECT value FROM meta WHERE key = ?1";
/// Copies what it can of the WAL into the file without waiting; returns (busy, frames in
/// the WAL, frames copied).
pub const CHECKPOINT: &str = "PRAGMA wal_checkpoint(PASSIVE)";
/// Copies the whole WAL into the file, waiting for readers, so that the next write starts
/// the WAL over instead of growing it (a full disk).
pub const CHECKPOINT_RESTART: &str = "PRAGMA wal_checkpoint(RESTART)";
pub const SYNC_NORMAL: &str = "PRAGMA synchronous = NORMAL";
pub const SYNC_FULL: &str = "PRAGMA synchronous = FULL";
pub const META_ADD: &str = "UPDATE meta SET value = value + ?2 WHERE key = ?1";
pub const META_SET: &str = "UPDATE meta SET value = ?2 WHERE key = ?1";
pub const META_RAISE: &str = "UPDATE meta SET value = max(value, ?2) WHERE key = ?1";
/// Every row, released or not: SQLite's truncate (no WHERE) frees whole pages without
/// rewriting them.
pub const TRUNCATE: &str = "DELETE FROM outbox";
pub const SIZES_AFTER: &str = concat!(
    "SELECT id, ",
    row_bytes!(),
    " FROM outbox WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT 256"
);
pub const DELETE_UP_TO: &str = "DELETE FROM outbox WHERE id <= ?1";
pub const RAISE_LAST_ID: &str =
    "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'outbox'";
