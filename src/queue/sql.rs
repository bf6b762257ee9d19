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
    created_ms INTEGER NOT NULL,
    clock      INTEGER NOT NULL DEFAULT 0,
    mono_ms    INTEGER
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead (
    id         INTEGER PRIMARY KEY,
    topic      BLOB    NOT NULL,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    dead_ms    INTEGER NOT NULL,
    reason     TEXT    NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES
    ('bytes', 0), ('dropped_full', 0), ('expired', 0), ('schema', 1),
    ('released', 0), ('released_bytes', 0), ('removed_upto', 0), ('clean', 0),
    ('dead', 0), ('dead_bytes', 0), ('dead_discarded', 0), ('unwritten', 0),
    ('held_back', 0);
";

/// The tables a file must have, with the columns of each that every version of the gateway
/// reads; a file with tables but not these is another application's (an extra table or
/// column is a newer gateway's, and is kept).
pub const OWN_TABLES: [(&str, &[&str]); 2] = [
    (
        "outbox",
        &["id", "topic", "payload", "qos", "retain", "created_ms"],
    ),
    ("meta", &["key", "value"]),
];
pub const TABLE_NAMES: &str =
    "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'";
pub const COLUMN_NAMES: &str = "SELECT name FROM pragma_table_info(?1)";
/// `outbox.clock`: how `created_ms` was stamped. 0: by a synchronised clock; 1: by a clock
/// not synchronised (never expired by age; `mono_ms` holds the milliseconds since boot
/// at the stamp, `crate::reading::mono_ms`); 2: corrected from `mono_ms` when the clock
/// synchronised. `meta.boot` names the boot of the last open and `meta.boot_first_id` the
/// first id that boot can have stored: rows from there on are that boot's.
/// Files from before these columns get both in one transaction, with 0 in every row.
pub const ADD_CLOCK_COLUMNS: &str = "
BEGIN IMMEDIATE;
ALTER TABLE outbox ADD COLUMN clock INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN mono_ms INTEGER;
COMMIT;
";
pub const CLOCK_UNSYNCED: i64 = 1;
pub const CLOCK_CORRECTED: i64 = 2;

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
    "INSERT INTO outbox (id, topic, payload, qos, retain, created_ms, clock, mono_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
/// Corrects the stamps of up to `?4` pending rows from `?3` on that a clock not
/// synchronised stamped: wall time now `?1`, minus the time since boot (`?2` now) that has
/// passed since the row was stamped. Returns their ids.
pub const CORRECT_STAMPS: &str = concat!(
    "UPDATE outbox SET created_ms = ?1 - (?2 - mono_ms), clock = 2 WHERE id IN
     (SELECT id FROM outbox WHERE id >= ?3 AND id > ",
    released!(),
    " AND clock = 1 AND mono_ms IS NOT NULL ORDER BY id LIMIT ?4) RETURNING id"
);
/// The clock flag of each row in a range (`queue peek` and `export`).
pub const CLOCK_RANGE: &str = "SELECT id, clock FROM outbox WHERE id BETWEEN ?1 AND ?2";
pub const FETCH_RANGE: &str = concat!(
    "SELECT id, topic, payload, qos, retain, created_ms, clock FROM outbox WHERE id > max(?1, ",
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
     (SELECT id FROM outbox WHERE created_ms < ?1 AND clock <> 1 AND id > ",
    released!(),
    " ORDER BY id LIMIT 10000) RETURNING id, ",
    row_bytes!()
);
pub const LAST_ID: &str =
    "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)";
/// `sqlite_sequence` has no unique key: its row for `outbox` is updated, and inserted only
/// when there is none (see `set_last_id`).
pub const UPDATE_LAST_ID: &str = "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'outbox'";
pub const INSERT_LAST_ID: &str = "INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?1)";
pub const COUNT: &str = concat!("SELECT count(*) FROM outbox WHERE id > ", released!());
pub const OLDEST: &str = concat!(
    "SELECT created_ms FROM outbox WHERE id > ",
    released!(),
    " ORDER BY id LIMIT 1"
);
pub const META_GET: &str = "SELECT value FROM meta WHERE key = ?1";
pub const META_PUT: &str = "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)";
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

/// The accounted size of a pending row (None when it is gone or released).
pub const PENDING_SIZE: &str = concat!(
    "SELECT ",
    row_bytes!(),
    " FROM outbox WHERE id = ?1 AND id > ",
    released!()
);
/// Copies a row to the dead letters, its topic as the bytes stored (it may not be UTF-8).
pub const BURY: &str = "INSERT OR REPLACE INTO dead (id, topic, payload, qos, retain, created_ms, dead_ms, reason)
     SELECT id, CAST(topic AS BLOB), CAST(payload AS BLOB), qos, retain, created_ms, ?2, ?3 FROM outbox WHERE id = ?1";
pub const DELETE_ONE: &str = "DELETE FROM outbox WHERE id = ?1";
pub const HAS_DEAD: &str =
    "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'dead')";
pub const DEAD_ANY: &str = "SELECT EXISTS (SELECT 1 FROM dead WHERE id > ?1)";
pub const DEAD_COUNT: &str = "SELECT count(*) FROM dead";
/// The oldest dead letters, to keep them within their share of the disk.
pub const DEAD_TRIM: &str =
    "DELETE FROM dead WHERE id IN (SELECT id FROM dead ORDER BY id LIMIT ?1)
     RETURNING octet_length(topic) + octet_length(payload)";
pub const DEAD_AFTER: &str = "SELECT id, topic, payload, qos, retain, created_ms, dead_ms, reason
     FROM dead WHERE id > ?1 ORDER BY id LIMIT ?2";
/// A dead letter back into the outbox, under a new sequence number (AUTOINCREMENT).
pub const REQUEUE: &str = "INSERT INTO outbox (topic, payload, qos, retain, created_ms)
     SELECT CAST(topic AS TEXT), payload, qos, retain, ?2 FROM dead WHERE id = ?1
     RETURNING id, octet_length(topic) + octet_length(payload)";
pub const DEAD_DELETE: &str =
    "DELETE FROM dead WHERE id = ?1 RETURNING octet_length(topic) + octet_length(payload)";
pub const DEAD_IDS: &str = "SELECT id FROM dead ORDER BY id";
