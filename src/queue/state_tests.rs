//! The queue's own state against the world: stamps from a clock not synchronised (and the
//! payloads that carry them), files that are not a sensorgate queue, and sequence numbers
//! across a lost file.

use super::{ceiling, open_or_reset, Confirmed, Queue, QueueOptions, Stored, ROW_OVERHEAD};
use crate::config::{Qos, WhenFull};
use crate::mapping::NewMessage;
use rusqlite::Connection;

fn opts() -> QueueOptions {
    QueueOptions {
        max_size: u64::MAX,
        when_full: WhenFull::DropOldest,
        synchronous_full: true,
    }
}

/// A message stamped `created_ms`; by a clock not synchronised when `mono` is given.
fn message(seq: i64, created_ms: i64, mono: Option<i64>) -> NewMessage {
    NewMessage {
        seq,
        topic: "t".into(),
        payload: b"p".to_vec(),
        qos: Qos::AtLeastOnce,
        retain: false,
        created_ms,
        unsynced_mono_ms: mono,
    }
}

const JAN_2_1970_MS: i64 = 86_400_000;
const NOW_MS: i64 = 1_800_000_000_000;
const HOUR_MS: i64 = 3_600_000;

#[test]
fn unsynced_stamps_never_expire_until_corrected_from_the_monotonic_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Queue::open(&dir.path().join("queue.db"), opts()).unwrap();
    q.append(&[
        message(1, JAN_2_1970_MS, Some(1_000)),
        message(2, JAN_2_1970_MS + 10_000, Some(11_000)),
        // A stamp from a synchronised clock as old: it expires as always.
        message(3, JAN_2_1970_MS, None),
    ])
    .unwrap();
    assert_eq!(q.expire(NOW_MS - HOUR_MS).unwrap(), 1);
    assert_eq!(q.stats(0).unwrap().pending, 2);
    // The clock synchronises 41 s (monotonic) after the first reading.
    assert_eq!(q.correct_stamps(NOW_MS, 41_000).unwrap(), (2, false));
    let rows = q.fetch_after(0, 10).unwrap();
    let stamps: Vec<i64> = rows.iter().map(|r| r.created_ms).collect();
    assert_eq!(stamps, [NOW_MS - 40_000, NOW_MS - 30_000]);
    assert_eq!(
        q.correct_stamps(NOW_MS, 42_000).unwrap(),
        (0, false),
        "once"
    );
    // Corrected stamps expire by their corrected age.
    assert_eq!(q.expire(NOW_MS - HOUR_MS).unwrap(), 0);
    assert_eq!(q.expire(NOW_MS - 35_000).unwrap(), 1);
    let clocks = super::read_clocks(q.path(), 0, 10).unwrap();
    assert_eq!(clocks, [(2, "corrected")]);
}

/// A JSON payload as the mapper writes it for a reading stamped `ts` by a clock not
/// synchronised, after a sensor field that is also called `_ts` and a string that quotes one.
fn unsynced_payload(seq: i64, ts: i64) -> Vec<u8> {
    format!(
        r#"{{"_ts":5,"note":"a \",\"_ts\":7 quoted","_ts":{ts},"_gw":"gw1","_seq":{seq},"_clock":"unsynced"}}"#
    )
    .into_bytes()
}

fn payload(row: &Stored) -> &str {
    std::str::from_utf8(&row.payload).unwrap()
}

#[test]
fn a_corrected_stamp_reaches_the_payload_and_the_accounting_keeps_the_stored_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Queue::open(&dir.path().join("queue.db"), opts()).unwrap();
    let json = |seq, ts, mono| NewMessage {
        payload: unsynced_payload(seq, ts),
        ..message(seq, ts, Some(mono))
    };
    let plain = NewMessage {
        payload: b"21.5".to_vec(),
        ..message(3, JAN_2_1970_MS, Some(12_000))
    };
    let synced = NewMessage {
        payload: format!(r#"{{"t":1,"_ts":{NOW_MS},"_gw":"gw1","_seq":4}}"#).into_bytes(),
        ..message(4, NOW_MS, None)
    };
    let batch = [
        json(1, JAN_2_1970_MS, 1_000),
        json(2, JAN_2_1970_MS + 10_000, 11_000),
        plain,
        synced,
    ];
    q.append(&batch).unwrap();
    let as_stored: Vec<Vec<u8>> = batch.iter().map(|m| m.payload.clone()).collect();
    let payloads = |rows: &[Stored]| rows.iter().map(|r| r.payload.to_vec()).collect::<Vec<_>>();
    assert_eq!(payloads(&q.fetch_after(0, 10).unwrap()), as_stored);

    assert_eq!(q.correct_stamps(NOW_MS, 41_000).unwrap(), (3, false));
    let rows = q.fetch_after(0, 10).unwrap();
    // The mapper's own `_ts` (the last one) carries the corrected stamp.
    let corrected = |seq, ts| {
        format!(
            r#"{{"_ts":5,"note":"a \",\"_ts\":7 quoted","_ts":{ts},"_gw":"gw1","_seq":{seq},"_clock":"corrected"}}"#
        )
    };
    assert_eq!(payload(&rows[0]), corrected(1, NOW_MS - 40_000));
    assert_eq!(payload(&rows[1]), corrected(2, NOW_MS - 30_000));
    // A plain value (a `{field}` template) and a synchronised reading are as stored.
    assert_eq!(payloads(&rows[2..]), as_stored[2..]);
    // The uplink reads through its own connection: the same.
    assert_eq!(
        q.reader().unwrap().fetch_range(0, i64::MAX, 10).unwrap(),
        rows
    );
    // Sizes stay those stored, which the accounting counts.
    for (row, m) in rows.iter().zip(&batch) {
        assert_eq!(row.bytes(), (m.topic.len() + m.payload.len()) as u64);
    }

    // Confirmed with the sizes as read: deleted behind an unconfirmed row, then released,
    // then all of them; the accounting matches a scan at every step and ends at 0.
    let size = |rows: &[Stored]| rows.iter().map(|r| r.bytes() + ROW_OVERHEAD).sum::<u64>();
    let confirm = |q: &mut Queue, rows: &[Stored]| {
        let c: Confirmed = rows.iter().map(|r| (r.id, r.bytes())).collect();
        assert_eq!(q.ack_known(&c).unwrap(), rows.len());
    };
    confirm(&mut q, &rows[1..2]);
    assert_eq!(q.pending_bytes().unwrap(), size(&rows) - size(&rows[1..2]));
    assert_eq!(q.scan_bytes().unwrap().0, q.pending_bytes().unwrap());
    confirm(&mut q, &rows[..1]);
    assert_eq!(q.pending_bytes().unwrap(), size(&rows[2..]));
    assert_eq!(q.scan_bytes().unwrap().0, q.pending_bytes().unwrap());
    confirm(&mut q, &rows[2..]);
    assert_eq!(q.pending_bytes().unwrap(), 0);
    assert_eq!(q.scan_bytes().unwrap(), (0, 0));
}

#[test]
fn unsynced_stamps_of_this_boot_are_corrected_after_a_restart_and_of_an_earlier_boot_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let mut q = Queue::open(&path, opts()).unwrap();
    q.append(&[message(1, JAN_2_1970_MS, Some(1_000))]).unwrap();
    drop(q);
    // A restart in the same boot: its time since boot still holds.
    let mut q = Queue::open(&path, opts()).unwrap();
    q.append(&[message(2, JAN_2_1970_MS + 1_000, Some(2_000))])
        .unwrap();
    assert_eq!(q.correct_stamps(NOW_MS, 5_000).unwrap(), (2, false));
    let stamps: Vec<i64> = q
        .fetch_after(0, 10)
        .unwrap()
        .iter()
        .map(|r| r.created_ms)
        .collect();
    assert_eq!(stamps, [NOW_MS - 4_000, NOW_MS - 3_000]);
    q.append(&[message(3, JAN_2_1970_MS, Some(3_000))]).unwrap();
    drop(q);
    // The next boot: the row from the last one keeps its stamp, and never expires by age.
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE meta SET value = value + 1 WHERE key = 'boot'", [])
        .unwrap();
    let mut q = Queue::open(&path, opts()).unwrap();
    q.append(&[message(4, NOW_MS, None)]).unwrap();
    assert_eq!(q.correct_stamps(NOW_MS, 9_000).unwrap(), (0, false));
    assert_eq!(
        q.expire(NOW_MS + HOUR_MS).unwrap(),
        3,
        "all but the unsynced one"
    );
    let rows = q.fetch_after(0, 10).unwrap();
    assert_eq!((rows[0].id, rows[0].created_ms), (3, JAN_2_1970_MS));
    assert_eq!(super::read_clocks(&path, 0, 10).unwrap(), [(3, "unsynced")]);
}

#[test]
fn another_applications_file_is_foreign_but_a_newer_gateways_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    // A newer gateway's file: an extra table and an extra column are kept.
    let mut q = Queue::open(&path, opts()).unwrap();
    q.append(&[message(1, NOW_MS, None)]).unwrap();
    drop(q);
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE later (id INTEGER PRIMARY KEY, why TEXT);
             ALTER TABLE outbox ADD COLUMN later INTEGER;",
        )
        .unwrap();
    let (q, aside) = open_or_reset(&path, opts()).unwrap();
    assert!(aside.is_none());
    assert_eq!(q.stats(0).unwrap().pending, 1);
    drop(q);

    for schema in [
        "CREATE TABLE meta (name TEXT, data BLOB)",
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, body TEXT)",
        "CREATE TABLE photos (id INTEGER PRIMARY KEY)",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(schema)
            .unwrap();
        let e = Queue::open(&path, opts()).err().expect("refused");
        assert!(e.is_foreign() && !e.is_corrupt(), "{e}");
        // Left as it was: not switched to WAL, no table added.
        let mode: String = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        let (q, aside) = open_or_reset(&path, opts()).unwrap();
        assert!(aside.is_some_and(|a| a.exists()), "{schema}");
        assert_eq!(q.stats(0).unwrap().pending, 0);
    }
}

#[test]
fn a_file_from_before_the_clock_columns_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
               payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,
               created_ms INTEGER NOT NULL);
             INSERT INTO outbox (topic, payload, qos, retain, created_ms)
               VALUES ('t', 'p', 1, 0, 86400000);",
        )
        .unwrap();
    let mut q = Queue::open(&path, opts()).unwrap();
    assert_eq!(q.next_id(), 2);
    q.append(&[message(2, NOW_MS, Some(7))]).unwrap();
    let clocks = super::read_clocks(&path, 0, 10).unwrap();
    assert_eq!(clocks, [(1, "synced"), (2, "unsynced")]);
}

#[test]
fn numbering_never_goes_back_when_the_queue_file_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let mut q = Queue::open(&path, opts()).unwrap();
    q.append(&[message(1, NOW_MS, None), message(2, NOW_MS, None)])
        .unwrap();
    drop(q);
    // Deleted by hand: the fresh file numbers on above the ceiling.
    std::fs::remove_file(&path).unwrap();
    let q = Queue::open(&path, opts()).unwrap();
    assert_eq!(q.next_id(), 1 + ceiling::BLOCK);
    drop(q);
    // Garbage: the reset numbers above the ceiling too, whatever the wall clock says.
    std::fs::write(&path, b"garbage".repeat(1000)).unwrap();
    let (q, aside) = open_or_reset(&path, opts()).unwrap();
    assert!(aside.is_some());
    assert!(q.next_id() > 1 + ceiling::BLOCK);
    // An empty file that was opened before is not new: it keeps its numbering.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    drop(Queue::open(&path, opts()).unwrap());
    assert_eq!(Queue::open(&path, opts()).unwrap().next_id(), 1);
}

#[test]
fn a_large_backlog_is_corrected_a_chunk_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Queue::open(&dir.path().join("queue.db"), opts()).unwrap();
    let n = super::CORRECT_CHUNK as i64 * 2 + 5;
    let batch: Vec<NewMessage> = (1..=n)
        .map(|i| message(i, JAN_2_1970_MS + i, Some(i)))
        .collect();
    q.append(&batch).unwrap();
    let chunk = super::CORRECT_CHUNK as u64;
    assert_eq!(q.correct_stamps(NOW_MS, n).unwrap(), (chunk, true));
    assert_eq!(q.correct_stamps(NOW_MS, n).unwrap(), (chunk, true));
    assert_eq!(q.correct_stamps(NOW_MS, n).unwrap(), (5, false));
    assert_eq!(q.correct_stamps(NOW_MS, n).unwrap(), (0, false));
    let last = q.fetch_after(n - 1, 1).unwrap();
    assert_eq!(last[0].created_ms, NOW_MS);
}

/// Numbers handed out without a row (messages delivered from memory) are never handed out
/// again: after a crash the queue numbers on above what was reserved; after a clean stop
/// exactly after the last one; `sqlite_sequence` keeps one row for the outbox.
#[test]
fn numbers_reserved_for_unwritten_messages_are_not_handed_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let mut q = Queue::open(&path, opts()).unwrap();
    q.append(&[message(1, NOW_MS, None), message(2, NOW_MS, None)])
        .unwrap();
    assert_eq!(
        q.reserve_seq(2 + super::SEQ_BLOCK).unwrap(),
        2 + super::SEQ_BLOCK
    );
    // 3 and 4 went out from memory; 5 was written.
    q.pass(4).unwrap();
    q.append(&[message(5, NOW_MS, None)]).unwrap();
    drop(q); // a crash: no clean mark
    let rows = |path: &std::path::Path| -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM sqlite_sequence WHERE name = 'outbox'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(rows(&path), 1);
    let mut q = Queue::open(&path, opts()).unwrap();
    assert_eq!(
        q.next_id(),
        3 + super::SEQ_BLOCK,
        "above every number reserved"
    );
    // A clean stop records the exact next number.
    q.pass(q.next_id() + 7).unwrap();
    let next = q.next_id();
    assert!(q.mark_clean().unwrap());
    drop(q);
    assert_eq!(rows(&path), 1);
    let q = Queue::open(&path, opts()).unwrap();
    assert_eq!(q.next_id(), next);
}
