//! Confirming: rows the broker confirmed are released or deleted, released rows are
//! reclaimed, and the byte accounting follows every change.
//!
//! - **Invariant:** when every row up to some id is confirmed, `meta.released` moves up to
//!   it and the rows stay on disk; rows confirmed behind one still unconfirmed are deleted.
//!   `released` only grows and never passes the highest id stored. Released rows are freed
//!   by SQLite's truncate (no `WHERE`: their pages are freed, not rewritten) in the
//!   transaction that finds nothing pending, otherwise by [`Queue::reclaim`].
//! - **Invariant:** `meta.bytes` (every row on disk) and `meta.released_bytes` (the released
//!   ones) change in the same transaction as the rows. [`Queue::ack_known`] trusts the sizes
//!   the uplink read for a run of ids above `meta.removed_upto` (nothing but a release has
//!   left the queue there), or where a count finds every row of the run; otherwise the run
//!   is sized by a scan.

use super::{any, meta, sql, Queue, QueueError, ROW_OVERHEAD};
use rusqlite::{params, Connection, TransactionBehavior};

/// Rows the broker confirmed, waiting to be released or deleted: their ids, and each one's
/// topic and payload bytes as stored, as the uplink read them (see [`Queue::ack_known`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Confirmed {
    ids: Vec<i64>,
    sizes: Vec<u64>,
}

impl Confirmed {
    pub fn push(&mut self, id: i64, bytes: u64) {
        self.ids.push(id);
        self.sizes.push(bytes);
    }

    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// The topic and payload bytes of all of them.
    pub fn bytes(&self) -> u64 {
        self.sizes.iter().sum()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn extend(&mut self, other: Confirmed) {
        self.ids.extend(other.ids);
        self.sizes.extend(other.sizes);
    }

    /// Takes those with an id above `id`, leaving the rest in their order.
    pub fn take_above(&mut self, id: i64) -> Confirmed {
        if self.ids.iter().all(|&i| i <= id) {
            return Confirmed::default();
        }
        let mut above = Confirmed::default();
        let mut rest = Confirmed::default();
        for (&i, &b) in self.ids.iter().zip(&self.sizes) {
            match i > id {
                true => above.push(i, b),
                false => rest.push(i, b),
            }
        }
        *self = rest;
        above
    }

    /// These without the ids `gone`.
    pub fn without(self, gone: &[i64]) -> Confirmed {
        self.ids
            .into_iter()
            .zip(self.sizes)
            .filter(|(i, _)| !gone.contains(i))
            .collect()
    }

    /// Takes the first `n` (all when there are fewer), leaving the rest.
    pub fn take_first(&mut self, n: usize) -> Confirmed {
        if n >= self.len() {
            return std::mem::take(self);
        }
        let ids = self.ids.split_off(n);
        let sizes = self.sizes.split_off(n);
        Confirmed {
            ids: std::mem::replace(&mut self.ids, ids),
            sizes: std::mem::replace(&mut self.sizes, sizes),
        }
    }
}

impl FromIterator<(i64, u64)> for Confirmed {
    fn from_iter<I: IntoIterator<Item = (i64, u64)>>(rows: I) -> Confirmed {
        let mut c = Confirmed::default();
        for (id, bytes) in rows {
            c.push(id, bytes);
        }
        c
    }
}

impl Queue {
    /// Releases or deletes the rows the broker confirmed; ids no longer present (evicted
    /// meanwhile) are skipped. Returns how many pending rows were confirmed. Each run of
    /// ids is sized by a scan; the uplink, which knows the sizes it read, uses
    /// [`Queue::ack_known`].
    pub fn ack(&mut self, ids: &[i64]) -> Result<usize, QueueError> {
        let rows: Vec<(i64, u64)> = ids.iter().map(|&id| (id, 0)).collect();
        self.confirm(rows, false)
    }

    /// Releases or deletes the rows the broker confirmed, trusting their sizes for the
    /// accounting where every one of a run is still there (ids are never reused and a row's
    /// topic and payload never change, so the sizes the uplink read with
    /// [`super::Stored::bytes`] are the sizes stored). A run with a row gone
    /// (evicted, expired or purged meanwhile) is sized by a scan, as [`Queue::ack`] does.
    pub fn ack_known(&mut self, rows: &Confirmed) -> Result<usize, QueueError> {
        let rows: Vec<(i64, u64)> = rows
            .ids()
            .iter()
            .copied()
            .zip(rows.sizes.iter().copied())
            .collect();
        self.confirm(rows, true)
    }

    /// Whether released rows were left on disk by the last transaction (see
    /// [`Queue::reclaim`]). A purge from outside can make this stale; a reclaim then
    /// finds nothing.
    pub fn reclaimable(&self) -> bool {
        self.reclaimable
    }

    /// Runs `work` with `synchronous=NORMAL`. A confirmation lost to a power cut only means
    /// a duplicate, which QoS 1 allows, and a lost reclaim is done again; the next insert's
    /// FULL commit syncs the WAL anyway. The pragmas are cached statements: they run at
    /// every confirmation.
    fn without_fsync<T>(
        &mut self,
        work: impl FnMut(&mut Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, QueueError> {
        let sync = |conn: &Connection, pragma: &str| conn.prepare_cached(pragma)?.execute([]);
        if self.opts.synchronous_full {
            sync(&self.conn, sql::SYNC_NORMAL).map_err(|e| self.conn.err(e))?;
        }
        // On a full disk: the reserve, and a checkpoint (see `room`).
        let result = self.with_room(work);
        if self.opts.synchronous_full {
            sync(&self.conn, sql::SYNC_FULL).map_err(|e| self.conn.err(e))?;
        }
        result.map_err(|e| self.conn.err(e))
    }

    fn confirm(&mut self, mut rows: Vec<(i64, u64)>, known: bool) -> Result<usize, QueueError> {
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_unstable_by_key(|r| r.0);
        rows.dedup_by_key(|r| r.0);
        let (n, after) = self.without_fsync(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = confirm(&tx, &rows, known)?;
            let after = Accounting::read(&tx)?;
            tx.commit()?;
            Ok((n, after))
        })?;
        self.bytes = after.bytes;
        self.reclaimable = after.reclaimable;
        Ok(n)
    }

    /// Deletes up to `max_rows` released rows, oldest first; all of them at once (SQLite's
    /// truncate, which does not rewrite the pages) when nothing is pending. Returns whether
    /// released rows are left. The uplink calls this when it has nothing else to do.
    pub fn reclaim(&mut self, max_rows: usize) -> Result<bool, QueueError> {
        let after = self.without_fsync(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let released = meta(&tx, "released")?;
            if !truncate_if_done(&tx, released)? {
                let freed: u64 = {
                    let mut stmt = tx.prepare_cached(sql::RECLAIM)?;
                    let rows =
                        stmt.query_map(params![released, max_rows as i64], |r| r.get::<_, i64>(0))?;
                    rows.map(|l| l.map(|l| l as u64 + ROW_OVERHEAD))
                        .sum::<Result<u64, _>>()?
                };
                let mut add = tx.prepare_cached(sql::META_ADD)?;
                add.execute(params!["bytes", -(freed as i64)])?;
                add.execute(params!["released_bytes", -(freed as i64)])?;
            }
            let after = Accounting::read(&tx)?;
            tx.commit()?;
            Ok(after)
        })?;
        self.bytes = after.bytes;
        self.reclaimable = after.reclaimable;
        Ok(after.reclaimable)
    }

    /// Accounted bytes of the pending rows (as [`super::Stats::bytes`], without a scan).
    pub fn pending_bytes(&self) -> Result<u64, QueueError> {
        let read = || -> Result<u64, rusqlite::Error> {
            let bytes = meta(&self.conn, "bytes")?.max(0) as u64;
            Ok(bytes.saturating_sub(meta(&self.conn, "released_bytes")?.max(0) as u64))
        };
        read().map_err(|e| self.conn.err(e))
    }

    /// Accounted bytes on disk, pending and released, as tracked in memory (equal to
    /// `meta.bytes`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Recomputes by a full scan the accounted bytes of the pending rows and of the
    /// released ones (for tests: they must equal `Stats::bytes` and
    /// `Stats::reclaimable_bytes`).
    #[cfg(any(test, feature = "test-support"))]
    pub fn scan_bytes(&self) -> Result<(u64, u64), QueueError> {
        let scan = || -> Result<(u64, u64), rusqlite::Error> {
            let released = meta(&self.conn, "released")?;
            let (pending, _) =
                size_of_range(&self.conn, released.saturating_add(1), i64::MAX, None)?;
            let (done, _) = size_of_range(&self.conn, i64::MIN, released, None)?;
            Ok((pending, done))
        };
        scan().map_err(|e| self.conn.err(e))
    }
}

/// The accounting after a transaction, for the in-memory copy.
pub(super) struct Accounting {
    pub(super) bytes: u64,
    pub(super) reclaimable: bool,
}

impl Accounting {
    pub(super) fn read(conn: &Connection) -> Result<Accounting, rusqlite::Error> {
        let released = meta(conn, "released")?;
        Ok(Accounting {
            bytes: meta(conn, "bytes")?.max(0) as u64,
            reclaimable: any(conn, sql::ANY_UP_TO, released)?,
        })
    }
}

/// Notes that rows up to `id` may have left the queue other than by release (policy,
/// expiry, purge, a delete of confirmed rows) or were never stored (refused): confirmed
/// rows at or below it are counted before their sizes are trusted ([`confirm`]).
pub(super) fn removed(conn: &Connection, id: i64) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql::META_RAISE)?
        .execute(params!["removed_upto", id])?;
    Ok(())
}

/// Confirms `rows` (ids sorted and distinct; sizes valid when `known`). The leading runs
/// of ids below which no pending row is left unconfirmed are released (`meta.released`
/// moves up to the last of them); the other runs are deleted. Returns how many pending
/// rows were confirmed.
fn confirm(tx: &Connection, rows: &[(i64, u64)], known: bool) -> Result<usize, rusqlite::Error> {
    let released = meta(tx, "released")?;
    // The uplink read these rows, so they were there. Above `removed_upto` nothing has left
    // the queue but by release (filtered out just below), so they still are: their sizes
    // need no count. At or below it, a count must find every one of them first.
    let removed_upto = meta(tx, "removed_upto")?;
    let rows = &rows[rows.partition_point(|r| r.0 <= released)..];
    // The watermark never passes the highest id stored: later rows get higher ids.
    let Some(max_id) = tx.query_row(sql::MAX_ID, [], |r| r.get::<_, Option<i64>>(0))? else {
        return Ok(0);
    };
    let rows = &rows[..rows.partition_point(|r| r.0 <= max_id)];
    let runs: Vec<&[(i64, u64)]> = rows.chunk_by(|a, b| a.0 + 1 == b.0).collect();
    let claim = |run: &[&[(i64, u64)]]| {
        known.then(|| {
            let rows = run.iter().copied().flatten();
            Claim {
                rows: rows.clone().count(),
                bytes: rows.clone().map(|r| r.1).sum::<u64>(),
                sure: run[0][0].0 > removed_upto,
            }
        })
    };
    let mut upto = released;
    let mut leading = 0;
    for run in &runs {
        if any_between(tx, upto, run[0].0)? {
            break;
        }
        upto = run[run.len() - 1].0;
        leading += 1;
    }
    let mut confirmed = 0;
    if leading > 0 {
        // No row in the gaps between these runs: the rows in the range are theirs.
        let (bytes, n) = size_of_range(tx, released + 1, upto, claim(&runs[..leading]))?;
        tx.prepare_cached(sql::META_SET)?
            .execute(params!["released", upto])?;
        tx.prepare_cached(sql::META_ADD)?
            .execute(params!["released_bytes", bytes as i64])?;
        confirmed += n;
    }
    let mut deleted = 0u64;
    for run in &runs[leading..] {
        let (lo, hi) = (run[0].0, run[run.len() - 1].0);
        let (bytes, n) = size_of_range(tx, lo, hi, claim(std::slice::from_ref(run)))?;
        if n > 0 {
            tx.prepare_cached(sql::DELETE_RANGE)?
                .execute(params![lo, hi])?;
            deleted += bytes;
            confirmed += n;
        }
        removed(tx, hi)?;
    }
    if deleted > 0 {
        tx.prepare_cached(sql::META_ADD)?
            .execute(params!["bytes", -(deleted as i64)])?;
    }
    truncate_if_done(tx, upto)?;
    Ok(confirmed)
}

fn any_between(conn: &Connection, after: i64, before: i64) -> Result<bool, rusqlite::Error> {
    conn.prepare_cached(sql::ANY_BETWEEN)?
        .query_row(params![after, before], |r| r.get(0))
}

/// What the uplink says of the rows it confirmed in a range: how many, their bytes as it
/// read them, and whether they are sure to be there still.
struct Claim {
    rows: usize,
    bytes: u64,
    sure: bool,
}

/// Accounted bytes and count of the rows with an id in `lo..=hi`. A claim is trusted when
/// it is sure, or when exactly that many rows are there (the caller's ids are distinct and
/// in the range, so they are the rows).
fn size_of_range(
    conn: &Connection,
    lo: i64,
    hi: i64,
    claim: Option<Claim>,
) -> Result<(u64, usize), rusqlite::Error> {
    if let Some(c) = claim {
        let there = match c.sure {
            true => c.rows as i64,
            false => conn
                .prepare_cached(sql::COUNT_RANGE)?
                .query_row(params![lo, hi], |r| r.get(0))?,
        };
        if there as usize == c.rows {
            return Ok((c.bytes + c.rows as u64 * ROW_OVERHEAD, c.rows));
        }
    }
    let (len, n): (i64, i64) = conn
        .prepare_cached(sql::SIZE_RANGE)?
        .query_row(params![lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((len as u64 + n as u64 * ROW_OVERHEAD, n as usize))
}

/// When no pending row is left, frees the released ones at once: SQLite's truncate frees
/// their pages without rewriting them. Returns whether nothing is pending.
pub(super) fn truncate_if_done(tx: &Connection, released: i64) -> Result<bool, rusqlite::Error> {
    if any(tx, sql::ANY_ABOVE, released)? {
        return Ok(false);
    }
    if any(tx, sql::ANY_UP_TO, released)? {
        tx.prepare_cached(sql::TRUNCATE)?.execute([])?;
        tx.prepare_cached(sql::META_SET)?
            .execute(params!["bytes", 0])?;
        tx.prepare_cached(sql::META_SET)?
            .execute(params!["released_bytes", 0])?;
    }
    Ok(true)
}
