//! Stamps from a clock not synchronised (`outbox.clock` = 1: a Pi before NTP may read 1970).
//!
//! **Invariant:** such a row never expires by age. Once the clock is synchronised,
//! [`Queue::correct_stamps`] gives each row of this boot stored so the wall time its time
//! since boot gives (`clock` = 2); rows of an earlier boot (`meta.boot`,
//! `meta.boot_first_id`) keep their stamp, since their time since boot is another boot's.
//! That update is the only change to a stored row: topic and payload, whose sizes the
//! accounting trusts, stay as stored, and a read hands out the mapper's payload with the
//! corrected stamp instead ([`write_corrected`]).

use super::{meta, sql, Queue, QueueError};
use bytes::BytesMut;
use rusqlite::{params, Connection};

/// The most rows [`Queue::correct_stamps`] corrects in one transaction.
pub const CORRECT_CHUNK: usize = 10_000;

impl Queue {
    /// Once the wall clock is synchronised (it reads `wall_ms` while the time since boot
    /// is `mono_ms`, [`crate::reading::mono_ms`]), corrects the stamps of the rows of this
    /// boot that a clock not synchronised stamped: each becomes the wall time its time since
    /// boot gives, flagged as corrected, and can expire by age from then on. Rows of an
    /// earlier boot keep their stamp and flag (their time since boot is another boot's) and
    /// never expire by age. Corrects at most [`CORRECT_CHUNK`] rows in one transaction (a
    /// large backlog must not hold the queue past the watchdog's patience); returns how
    /// many, and whether more may be left (call again).
    pub fn correct_stamps(
        &mut self,
        wall_ms: i64,
        mono_ms: i64,
    ) -> Result<(u64, bool), QueueError> {
        let Some(from) = self.unsynced_from else {
            return Ok((0, false));
        };
        let run = || -> Result<Vec<i64>, rusqlite::Error> {
            let mut stmt = self.conn.prepare_cached(sql::CORRECT_STAMPS)?;
            let rows = stmt
                .query_map(params![wall_ms, mono_ms, from, CORRECT_CHUNK as i64], |r| {
                    r.get(0)
                })?;
            rows.collect()
        };
        let ids = run().map_err(|e| self.conn.err(e))?;
        let more = ids.len() >= CORRECT_CHUNK;
        self.unsynced_from = match ids.iter().max() {
            Some(&last) if more => Some(last + 1),
            _ => None,
        };
        Ok((ids.len() as u64, more))
    }
}

/// The first id this boot can have stored (`meta.boot_first_id`); when the last open was in
/// another boot (or the boot is unknown), that is `next_id`, and it is recorded.
pub(super) fn this_boot_from(conn: &Connection, next_id: i64) -> Result<i64, rusqlite::Error> {
    let Some(boot) = crate::reading::boot_id() else {
        return Ok(next_id);
    };
    if meta(conn, "boot")? == boot {
        return Ok(meta(conn, "boot_first_id")?.min(next_id));
    }
    conn.execute(sql::META_PUT, params!["boot_first_id", next_id])?;
    conn.execute(sql::META_PUT, params!["boot", boot])?;
    Ok(next_id)
}

/// How the mapper ends the JSON payload of a reading stamped by a clock not synchronised,
/// and how a read ends it once the row's stamp is corrected.
const UNSYNCED_END: &[u8] = b",\"_clock\":\"unsynced\"}";
const CORRECTED_END: &[u8] = b",\"_clock\":\"corrected\"}";
const TS_KEY: &[u8] = b"\"_ts\":";

/// Appends the payload of a row whose stamp was corrected to `out`. A payload the mapper
/// marked unsynced (it ends `,"_clock":"unsynced"}`) gets the corrected stamp in its last
/// `"_ts":<digits>` and ends `,"_clock":"corrected"}`, so that a consumer sees when the
/// reading was taken; the stored row is not rewritten (its size is what the accounting
/// counts). Any other payload is appended as it is.
pub(super) fn write_corrected(out: &mut BytesMut, payload: &[u8], created_ms: i64) {
    let found = payload
        .strip_suffix(UNSYNCED_END)
        .and_then(|body| Some((body, last_ts(body)?)));
    let Some((body, (start, end))) = found else {
        out.extend_from_slice(payload);
        return;
    };
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(created_ms.to_string().as_bytes());
    out.extend_from_slice(&body[end..]);
    out.extend_from_slice(CORRECTED_END);
}

/// Where the digits of the last `"_ts":<digits>` key of a JSON object's text are. The
/// mapper writes its own `_ts` after the sensor's fields; a key follows `{` or `,`, which
/// inside a JSON string cannot precede an unescaped quote.
fn last_ts(body: &[u8]) -> Option<(usize, usize)> {
    let mut end = body.len();
    while let Some(at) = body[..end].windows(TS_KEY.len()).rposition(|w| w == TS_KEY) {
        let start = at + TS_KEY.len();
        let digits = body[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if at > 0 && matches!(body[at - 1], b'{' | b',') && digits > 0 {
            return Some((start, start + digits));
        }
        end = at;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corrected(payload: &str, created_ms: i64) -> String {
        let mut out = BytesMut::new();
        write_corrected(&mut out, payload.as_bytes(), created_ms);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn only_the_mappers_unsynced_stamp_is_corrected() {
        // The mapper's payload, its `_ts` first (a reading without fields).
        assert_eq!(
            corrected(r#"{"_ts":86400000,"_clock":"unsynced"}"#, 1_800_000_000_000),
            r#"{"_ts":1800000000000,"_clock":"corrected"}"#
        );
        // The last key `_ts` with digits is the mapper's; an earlier one is the sensor's.
        assert_eq!(
            corrected(
                r#"{"_ts":7,"a":1,"_ts":9,"_gw":"g","_clock":"unsynced"}"#,
                42
            ),
            r#"{"_ts":7,"a":1,"_ts":42,"_gw":"g","_clock":"corrected"}"#
        );
        for unchanged in [
            // Not marked unsynced, or not at the end.
            r#"{"_ts":9,"_gw":"g"}"#,
            r#"{"_ts":9,"_clock":"unsynced","x":1}"#,
            "21.5",
            // No key `_ts` with digits: a string, or a key `a"_ts` (its quote escaped).
            r#"{"_ts":"9","_clock":"unsynced"}"#,
            r#"{"a\"_ts":9,"_clock":"unsynced"}"#,
            r#"{"_clock":"unsynced"}"#,
        ] {
            assert_eq!(corrected(unchanged, 42), unchanged);
        }
    }
}
