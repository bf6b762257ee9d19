//! The queue's SQL, in one place.

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
    ('bytes', 0), ('dropped_full', 0), ('expired', 0), ('schema', 1);
";

pub const INSERT: &str =
    "INSERT INTO outbox (id, topic, payload, qos, retain, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
pub const FETCH_RANGE: &str =
    "SELECT id, topic, payload, qos, retain, created_ms FROM outbox WHERE id > ?1 AND id <= ?3 ORDER BY id LIMIT ?2";
pub const SIZE_RANGE: &str =
    "SELECT coalesce(sum(octet_length(topic) + octet_length(payload)), 0), count(*) FROM outbox WHERE id BETWEEN ?1 AND ?2";
pub const DELETE_RANGE: &str = "DELETE FROM outbox WHERE id BETWEEN ?1 AND ?2";
pub const EVICT_OLDEST: &str =
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?1)
     RETURNING octet_length(topic) + octet_length(payload)";
pub const EXPIRE: &str = "DELETE FROM outbox WHERE id IN
     (SELECT id FROM outbox WHERE created_ms < ?1 ORDER BY id LIMIT 10000)
     RETURNING octet_length(topic) + octet_length(payload)";
pub const LAST_ID: &str =
    "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)";
pub const SET_LAST_ID: &str =
    "INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('outbox', ?1)";
pub const COUNT: &str = "SELECT count(*) FROM outbox";
pub const OLDEST: &str = "SELECT created_ms FROM outbox ORDER BY id LIMIT 1";
pub const META_GET: &str = "SELECT value FROM meta WHERE key = ?1";
pub const SYNC_NORMAL: &str = "PRAGMA synchronous = NORMAL";
pub const SYNC_FULL: &str = "PRAGMA synchronous = FULL";
pub const META_ADD: &str = "UPDATE meta SET value = value + ?2 WHERE key = ?1";
pub const SCAN_BYTES: &str =
    "SELECT coalesce(sum(octet_length(topic) + octet_length(payload)), 0), count(*) FROM outbox";
pub const PURGE: &str = "DELETE FROM outbox";
pub const SIZES_AFTER: &str =
    "SELECT id, octet_length(topic) + octet_length(payload) FROM outbox WHERE id > ?1 ORDER BY id LIMIT 256";
pub const DELETE_UP_TO: &str = "DELETE FROM outbox WHERE id <= ?1";
pub const RAISE_LAST_ID: &str =
    "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'outbox'";
