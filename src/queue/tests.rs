//! The queue on a full file (SQLite's `max_page_count` answers SQLITE_FULL exactly as a full
//! disk does) and the bound on its WAL.

use super::*;
use crate::config::Qos;
use crate::mapping::NewMessage;
use std::path::Path;

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

fn opts(max_size: u64, when_full: WhenFull) -> QueueOptions {
    QueueOptions {
        max_size,
        when_full,
        synchronous_full: false,
    }
}

/// Every drop on a full file is written to `meta` where another connection (the CLI) sees
/// it and a restart finds it, with either policy; the byte accounting stays what a scan
/// finds.
#[test]
fn drops_on_a_full_file_are_saved_where_the_cli_and_a_restart_see_them() {
    for policy in [WhenFull::DropOldest, WhenFull::DropNewest] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let mut q = Queue::open(&path, opts(u64::MAX, policy)).unwrap();
        q.set_max_page_count(40).unwrap();
        let (mut sent, mut dropped) = (0u64, 0u64);
        for _ in 0..60 {
            let b = batch(q.next_id(), 20, 400);
            let a = q.append(&b).unwrap();
            sent += b.len() as u64;
            dropped += a.dropped_new + a.evicted_old;
        }
        assert!(dropped > 0, "{policy:?}: the file filled");
        let cli = Reader::open(&path).unwrap().stats(0).unwrap();
        assert_eq!(
            cli.dropped_full, dropped,
            "{policy:?}: the CLI sees every drop"
        );
        assert_eq!(cli.pending + cli.dropped_full, sent, "{policy:?}");
        let (pending, released) = q.scan_bytes().unwrap();
        assert_eq!(
            (cli.bytes, cli.reclaimable_bytes),
            (pending, released),
            "{policy:?}"
        );
        drop(q);
        let q = Queue::open(&path, opts(u64::MAX, policy)).unwrap();
        assert_eq!(
            q.stats(0).unwrap().dropped_full,
            dropped,
            "{policy:?}: the count survives a restart"
        );
    }
}

/// With `drop_oldest`, a full file makes room by evicting: no batch is refused.
#[test]
fn drop_oldest_on_a_full_file_evicts_and_refuses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Queue::open(
        &dir.path().join("queue.db"),
        opts(u64::MAX, WhenFull::DropOldest),
    )
    .unwrap();
    q.set_max_page_count(40).unwrap();
    let (mut refused, mut evicted) = (0, 0);
    for _ in 0..60 {
        let a = q.append(&batch(q.next_id(), 20, 400)).unwrap();
        refused += a.dropped_new;
        evicted += a.evicted_old;
    }
    assert!(evicted > 0);
    assert_eq!(refused, 0, "{evicted} evicted");
}

fn wal_len(path: &Path) -> u64 {
    std::fs::metadata(format!("{}-wal", path.display())).map_or(0, |m| m.len())
}

/// The WAL does not grow past its bound, so that `max_size` can bound the file plus its WAL.
#[test]
fn the_wal_stays_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let max_size = 1 << 20;
    let mut q = Queue::open(&path, opts(max_size, WhenFull::DropOldest)).unwrap();
    let mut largest = 0;
    for _ in 0..100 {
        q.append(&batch(q.next_id(), 256, 150)).unwrap();
        largest = largest.max(wal_len(&path));
    }
    let bound = wal_budget(max_size);
    assert!(
        largest <= bound + (64 << 10),
        "the WAL reached {largest} bytes; its bound is {bound}"
    );
}

/// The reserve is there after the open, given back when the file is full, and made again
/// by `maintain` once there is room (a full file here, not a full disk), which also lifts
/// the cap the full disk set.
#[test]
fn the_reserve_is_given_back_when_full_and_made_again_by_maintain() {
    let dir = tempfile::tempdir().unwrap();
    let reserve = dir.path().join("queue.reserve");
    let mut q = Queue::open(
        &dir.path().join("queue.db"),
        opts(u64::MAX, WhenFull::DropOldest),
    )
    .unwrap();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    assert_eq!(size(&reserve), Some(reserve_size(u64::MAX)));
    q.set_max_page_count(40).unwrap();
    while q.append(&batch(q.next_id(), 20, 400)).unwrap().evicted_old == 0 {}
    assert_eq!(size(&reserve), None, "given back");
    assert!(
        q.disk_cap.is_some(),
        "the policy keeps below what the file held"
    );
    q.maintain().unwrap();
    assert_eq!(size(&reserve), Some(reserve_size(u64::MAX)), "made again");
    assert_eq!(q.disk_cap, None);
}
