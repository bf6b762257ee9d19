//! What makes a file a sensorgate queue, and bringing an older one's schema up to date.
//!
//! **Invariant:** a file with tables but not the gateway's own ([`sql::OWN_TABLES`]) is
//! another application's and is refused before anything is written to it; an extra table
//! or column is a newer gateway's, and is kept.

use super::sql;
use rusqlite::{params, Connection, OptionalExtension};

/// Why the file is not a sensorgate queue, when it is not: it has tables, but not the
/// gateway's ([`sql::OWN_TABLES`]).
pub(super) fn foreign(
    conn: &Connection,
    tables: &[String],
) -> Result<Option<String>, rusqlite::Error> {
    if tables.is_empty() {
        return Ok(None);
    }
    for (table, columns) in sql::OWN_TABLES {
        if !tables.iter().any(|t| t == table) {
            // `meta` comes second in the schema: a file may lack it.
            if table == "outbox" {
                return Ok(Some(format!(
                    "it has no table outbox (tables: {})",
                    tables.join(", ")
                )));
            }
            continue;
        }
        let have = column_names(conn, table)?;
        if let Some(missing) = columns.iter().find(|c| !have.iter().any(|h| h == *c)) {
            return Ok(Some(format!("its table {table} has no column {missing}")));
        }
    }
    Ok(None)
}

pub(super) fn table_names(conn: &Connection) -> Result<Vec<String>, rusqlite::Error> {
    conn.prepare(sql::TABLE_NAMES)?
        .query_map([], |r| r.get(0))?
        .collect()
}

fn column_names(conn: &Connection, table: &str) -> Result<Vec<String>, rusqlite::Error> {
    conn.prepare(sql::COLUMN_NAMES)?
        .query_map(params![table], |r| r.get(0))?
        .collect()
}

/// Whether the last gateway marked the file clean ([`super::Queue::mark_clean`]); false for a new
/// file, or one from a version without the flag.
pub(super) fn was_closed_cleanly(conn: &Connection) -> Result<bool, rusqlite::Error> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(false);
    }
    Ok(conn
        .query_row(sql::META_GET, params!["clean"], |r| r.get::<_, i64>(0))
        .optional()?
        == Some(1))
}

/// Adds `outbox.clock` and `outbox.mono_ms` to a file from before them (one transaction;
/// every row gets 0: stamped by a synchronised clock).
pub(super) fn add_clock_columns(conn: &Connection) -> Result<(), rusqlite::Error> {
    if !column_names(conn, "outbox")?.iter().any(|c| c == "clock") {
        conn.execute_batch(sql::ADD_CLOCK_COLUMNS)?;
    }
    Ok(())
}
