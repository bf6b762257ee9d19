//! The queue when the disk fills or the file is corrupt.

use sensorgate::config::{Qos, WhenFull};
use sensorgate::mapping::NewMessage;
use sensorgate::queue::{open_or_reset, Confirmed, Queue, QueueOptions};

use crate::support::damage_a_middle_page;

fn batch(from: i64, n: usize, len: usize) -> Vec<NewMessage> {
    (0..n)
        .map(|i| NewMessage {
            seq: from + i as i64,
            topic: "t".into(),
            payload: vec![b'p'; len],
            qos: Qos::AtLeastOnce,
            retain: false,
            created_ms: 0,
            unsynced_mono_ms: None,
        })
        .collect()
}

fn opts(when_full: WhenFull) -> QueueOptions {
    QueueOptions {
        max_size: u64::MAX,
        when_full,
        synchronous_full: true,
    }
}

/// `max_page_count` makes SQLite answer SQLITE_FULL exactly as a full disk does.
#[test]
fn full_disk_drops_by_policy_and_counts_every_message() {
    for policy in [WhenFull::DropOldest, WhenFull::DropNewest] {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(&dir.path().join("queue.db"), opts(policy)).unwrap();
        q.set_max_page_count(40).unwrap();
        let (mut sent, mut stored, mut dropped) = (0u64, 0u64, 0u64);
        for _ in 0..60 {
            let b = batch(q.next_id(), 20, 400);
            let a = q.append(&b).unwrap();
            sent += b.len() as u64;
            stored += a.stored as u64;
            dropped += a.dropped_new + a.evicted_old;
        }
        let stats = q.stats(0).unwrap();
        assert!(dropped > 0, "{policy:?}: the disk filled");
        assert_eq!(
            stats.pending + stats.dropped_full,
            sent,
            "{policy:?}: every message is pending or counted"
        );
        assert_eq!(
            stats.dropped_full, dropped,
            "{policy:?}: the counter is what append reported"
        );
        assert!(stored > 0);
        // Once acks free space, appends succeed again.
        let pending = q.fetch_after(0, 10_000).unwrap();
        q.confirm(&pending.iter().map(|r| r.id).collect::<Vec<_>>())
            .unwrap();
        let a = q.append(&batch(q.next_id(), 5, 400)).unwrap();
        assert_eq!(a.stored, 5, "{policy:?}: room again after acks");
        if policy == WhenFull::DropOldest {
            assert!(stats.pending > 0);
        }
    }
}

/// Confirmed rows the uplink released (still on disk, waiting to be reclaimed) make room
/// on a full disk before anything pending is dropped, with either policy.
#[test]
fn a_full_disk_reclaims_released_rows_before_it_drops() {
    for policy in [WhenFull::DropOldest, WhenFull::DropNewest] {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(&dir.path().join("queue.db"), opts(policy)).unwrap();
        q.set_max_page_count(40).unwrap();
        // Fill up to the first drop.
        let mut sent = 0;
        loop {
            let a = q.append(&batch(q.next_id(), 20, 400)).unwrap();
            sent += 20;
            if a.evicted_old + a.dropped_new > 0 {
                break;
            }
        }
        let stats = q.stats(0).unwrap();
        // The oldest half is confirmed: released, not deleted, as the uplink does it.
        let oldest: Confirmed = q
            .fetch_after(0, (stats.pending / 2) as usize)
            .unwrap()
            .iter()
            .map(|r| (r.id, r.bytes()))
            .collect();
        assert_eq!(q.confirm_read(&oldest).unwrap(), oldest.len());
        assert!(
            q.reclaimable(),
            "{policy:?}: the confirmed rows are still on disk"
        );
        let pending = q.stats(0).unwrap().pending;
        let dropped = q.stats(0).unwrap().dropped_full;
        let a = q.append(&batch(q.next_id(), 20, 400)).unwrap();
        assert_eq!(
            (a.stored, a.evicted_old, a.dropped_new),
            (20, 0, 0),
            "{policy:?}: released rows made the room ({sent} sent)"
        );
        let stats = q.stats(0).unwrap();
        assert_eq!(stats.pending, pending + 20);
        assert_eq!(stats.dropped_full, dropped);
    }
}

/// A queue of 600 rows, closed as the gateway's clean stop leaves it.
fn cleanly_closed_queue(path: &std::path::Path) {
    let mut q = Queue::open(path, opts(WhenFull::DropOldest)).unwrap();
    q.append(&batch(1, 600, 200)).unwrap();
    assert!(q.mark_clean().unwrap());
}

#[test]
fn a_cleanly_closed_queue_is_not_checked_but_damage_found_later_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    cleanly_closed_queue(&path);
    damage_a_middle_page(&path);

    // Closed cleanly: the open does not read the whole file, and so does not see the damage.
    let (q, aside) = open_or_reset(&path, opts(WhenFull::DropOldest)).unwrap();
    assert!(aside.is_none(), "a cleanly closed queue is not checked");
    // The read that meets it fails as damage, on the uplink's own connection too.
    let e = q
        .reader()
        .unwrap()
        .fetch_range(0, i64::MAX, 1000)
        .unwrap_err();
    assert!(e.is_corrupt(), "{e}");
    // A queue that met damage is not marked clean ...
    let mut q = q;
    assert!(!q.mark_clean().unwrap());
    drop(q);
    // ... and since the open cleared the flag, the next one checks and moves it aside.
    let (q, aside) = open_or_reset(&path, opts(WhenFull::DropOldest)).unwrap();
    assert!(aside.is_some(), "the restart checks the file");
    assert_eq!(q.stats(0).unwrap().pending, 0);
}

#[test]
fn a_reader_in_the_way_of_the_last_checkpoint_keeps_the_queue_unmarked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let mut q = Queue::open(&path, opts(WhenFull::DropOldest)).unwrap();
    q.append(&batch(1, 100, 200)).unwrap();
    // Another process (the CLI) in a read transaction from before the last commit.
    let cli = rusqlite::Connection::open(&path).unwrap();
    cli.execute_batch("BEGIN").unwrap();
    let n: i64 = cli
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 100);
    q.append(&batch(101, 100, 200)).unwrap();
    assert!(!q.mark_clean().unwrap(), "the WAL is not all in the file");
    drop(cli);
    assert!(q.mark_clean().unwrap());
}

#[test]
fn a_queue_not_closed_cleanly_is_checked_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    cleanly_closed_queue(&path);
    // A gateway that opened it and was killed: its open cleared the flag.
    drop(Queue::open(&path, opts(WhenFull::DropOldest)).unwrap());
    damage_a_middle_page(&path);
    let (_, aside) = open_or_reset(&path, opts(WhenFull::DropOldest)).unwrap();
    assert!(aside.is_some(), "the damage is found at open");
}

#[test]
fn corrupt_file_is_moved_aside_and_a_fresh_queue_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    std::fs::write(
        &path,
        b"this is not a database, it is a power cut's leftovers".repeat(100),
    )
    .unwrap();
    let (mut q, aside) = open_or_reset(&path, opts(WhenFull::DropOldest)).unwrap();
    let aside = aside.expect("moved aside");
    assert!(aside.exists());
    assert!(aside
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("queue.db.corrupt-"));
    // Sequence numbers continue above anything the old file could have used.
    assert!(q.next_id() > 1_000_000_000_000);
    let a = q.append(&batch(q.next_id(), 3, 10)).unwrap();
    assert_eq!(a.stored, 3);
    assert_eq!(q.stats(0).unwrap().pending, 3);
    // A healthy file is left alone.
    drop(q);
    let (q, aside) = open_or_reset(&path, opts(WhenFull::DropOldest)).unwrap();
    assert!(aside.is_none());
    assert_eq!(q.stats(0).unwrap().pending, 3);
}

/// The uplink confirms rows with the sizes it read. Rows evicted, expired or purged after
/// the read must not be counted again: the accounting stays what a scan finds.
#[test]
fn confirming_rows_removed_since_they_were_read_keeps_the_accounting() {
    type Remove = fn(&mut Queue, i64);
    let evict: Remove = |q, next| {
        // 10 rows of 100 + 1 + overhead fill 1,250 bytes: 3 more evict 3.
        let a = q.append(&batch(next, 3, 100)).unwrap();
        assert_eq!(a.evicted_old, 3);
    };
    let expire: Remove = |q, _| {
        assert_eq!(q.expire(3).unwrap(), 3);
    };
    let purge: Remove = |q, next| {
        assert_eq!(q.purge().unwrap(), 10);
        q.append(&batch(next, 2, 100)).unwrap();
    };
    // Of the five oldest rows confirmed, how many are still there to confirm.
    for (name, remove, left) in [
        ("evict", evict, 2),
        ("expire", expire, 2),
        ("purge", purge, 0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = QueueOptions {
            max_size: 1_250,
            when_full: WhenFull::DropOldest,
            synchronous_full: false,
        };
        let mut q = Queue::open(&dir.path().join("queue.db"), opts).unwrap();
        let rows: Vec<_> = (0..10)
            .map(|i| NewMessage {
                created_ms: i,
                unsynced_mono_ms: None,
                ..batch(1 + i, 1, 100).remove(0)
            })
            .collect();
        q.append(&rows).unwrap();
        let read = q.fetch_after(0, 100).unwrap();
        let next = q.next_id();
        remove(&mut q, next);
        let first: Confirmed = read[..5].iter().map(|r| (r.id, r.bytes())).collect();
        assert_eq!(q.confirm_read(&first).unwrap(), left, "{name}");
        let stats = q.stats(0).unwrap();
        let (pending, released) = q.scan_bytes().unwrap();
        assert_eq!(
            (stats.bytes, stats.reclaimable_bytes),
            (pending, released),
            "{name}: the accounting is what a scan finds"
        );
        assert_eq!(q.bytes(), pending + released, "{name}");
    }
}
