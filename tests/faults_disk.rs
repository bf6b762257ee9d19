//! A full disk under the real binary: `state_dir` on a small tmpfs (these tests mount one, so
//! they need root, as CI has), the broker down while a fast synthetic input fills it.

use crate::support::broker::Broker;
use crate::support::gateway::{base_config, Gateway};
use crate::support::subscriber::Subscriber;
use crate::support::{free_port, wait_until};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

/// A tmpfs of a given size mounted at a directory, unmounted on drop (also on a panic).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount(8) must be installed");
        assert!(
            out.status.success(),
            "could not mount a {size} tmpfs at {}: {}; the disk-full tests need root (CI runs as root)",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process the test failed to stop must not keep the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The sum of `key=N` over the log lines that contain `line`.
fn sum_field(log: &str, line: &str, key: &str) -> u64 {
    let key = format!("{key}=");
    log.lines()
        .filter(|l| l.contains(line))
        .filter_map(|l| {
            let at = l.find(&key)? + key.len();
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}

/// Drops the gateway logged: every "Queue full" line's refused and evicted messages.
fn logged_drops(log: &str) -> (u64, u64) {
    (
        sum_field(log, "Queue full", "refused_new"),
        sum_field(log, "Queue full", "evicted_old"),
    )
}

/// Waits until the gateway's inputs have finished `times` times (the log spans restarts).
fn wait_inputs_finished(gw: &Gateway, times: usize) {
    wait_until("the input has finished", LONG, || {
        gw.log().matches("Every input has finished").count() >= times
    });
}

fn dropped_full(gw: &Gateway) -> u64 {
    gw.stats().expect("queue stats")["dropped_full"]
        .as_u64()
        .unwrap()
}

/// How many distinct sequence numbers the subscriber received.
fn distinct_seqs(sub: &Subscriber) -> u64 {
    let seqs: std::collections::HashSet<u64> = sub
        .messages()
        .iter()
        .filter_map(|(_, p)| serde_json::from_str::<serde_json::Value>(p).ok())
        .filter_map(|v| v["_seq"].as_u64())
        .collect();
    seqs.len() as u64
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The queue file and its WAL, in bytes.
fn queue_on_disk(state: &Path) -> u64 {
    file_len(&state.join("queue.db")) + file_len(&state.join("queue.db-wal"))
}

fn config(dir: &Path, url: &str, max_size: &str, count: u64) -> String {
    config_with(dir, url, max_size, "drop_oldest", count)
}

fn config_with(dir: &Path, url: &str, max_size: &str, when_full: &str, count: u64) -> String {
    base_config(dir, "gw1", url, "")
        + &format!(
            "[queue]\nmax_size = \"{max_size}\"\nwhen_full = \"{when_full}\"\n\n\
             [[synthetic]]\nname = \"wx\"\nrate = 2000.0\n\
             fields = [\"temperature\", \"humidity\", \"pressure\"]\n\
             topic = \"site/{{gateway}}/{{input}}\"\nqos = 1\ncount = {count}\n"
        )
}

/// `max_size` above what the disk holds: the disk fills first. `drop_oldest` must still
/// evict (not refuse every batch), every drop must be counted in `queue stats` as logged and
/// survive a restart, and with the broker back the backlog must drain on the full disk
/// without the delete failing again and again.
#[test]
fn a_full_disk_evicts_by_policy_counts_every_drop_and_drains_when_the_broker_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let _disk = Tmpfs::mount(&state, "4m");
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    // A persistent subscriber whose session the broker keeps while it is down.
    let mut broker = Broker::start_on(&tmp.path().join("broker"), port);
    let sub = Subscriber::start(port, "site/#", "disk-sub");
    broker.stop();
    // About 170 bytes a reading: 40,000 readings are 6.8 MB, well past the 4 MiB disk.
    let mut gw = Gateway::new(tmp.path(), &config(tmp.path(), &url, "64MiB", 40_000));
    gw.start();
    gw.wait_log("Every input has finished", LONG);
    let (status, _) = gw.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    let log = gw.log();
    let (refused, evicted) = logged_drops(&log);
    assert!(
        evicted > 0,
        "drop_oldest evicted old messages on the full disk"
    );
    assert!(
        refused * 10 <= evicted,
        "the policy evicts rather than refuses: {refused} refused, {evicted} evicted"
    );
    let stop_dropped = sum_field(&log, "Gateway stopped.", "dropped");
    assert_eq!(
        stop_dropped,
        refused + evicted,
        "the stop line counts every drop"
    );
    assert_eq!(
        dropped_full(&gw),
        refused + evicted,
        "queue stats counts what the gateway logged"
    );
    let pending = gw.pending();
    eprintln!("full disk: {pending} pending, {refused} refused, {evicted} evicted");
    assert!(pending > 1_000, "{pending} pending");
    assert_eq!(
        pending + refused + evicted,
        40_000,
        "every reading is pending or counted"
    );

    // A restart on the full disk: the count is still there, and the backlog drains once
    // the broker is back, without another restart.
    let more = 1;
    std::fs::write(&gw.config, config(tmp.path(), &url, "64MiB", more)).unwrap();
    gw.start();
    wait_inputs_finished(&gw, 2);
    assert_eq!(
        dropped_full(&gw),
        refused + evicted,
        "the count survives a restart"
    );
    broker.start();
    wait_until("the backlog is delivered", LONG, || gw.pending() == 0);
    let (refused_after, evicted_after) = logged_drops(&gw.log());
    let lost = refused_after + evicted_after - refused - evicted;
    wait_until("the subscriber has every message", LONG, || {
        distinct_seqs(&sub) + lost >= pending + more
    });
    assert_eq!(
        gw.log().matches("Queue delete failed").count(),
        0,
        "confirmations are deleted on the full disk"
    );
    let (status, _) = gw.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(dropped_full(&gw), refused_after + evicted_after);
}

/// `max_size` bounds what the queue takes on disk: the file plus its WAL, within a slack of
/// 128 KiB (pages, the WAL's last transaction).
#[test]
fn max_size_bounds_the_queue_file_and_its_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let _disk = Tmpfs::mount(&state, "4m");
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let mut gw = Gateway::new(tmp.path(), &config(tmp.path(), &url, "1MiB", 30_000));
    gw.start();
    let mut largest = 0;
    wait_until("the input has finished", LONG, || {
        largest = largest.max(queue_on_disk(&state));
        gw.log().contains("Every input has finished")
    });
    let (status, _) = gw.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let log = gw.log();
    let (refused, evicted) = logged_drops(&log);
    assert!(evicted > 10_000, "the policy evicted: {evicted}");
    assert_eq!(refused, 0, "drop_oldest refuses nothing below a full disk");
    assert_eq!(dropped_full(&gw), evicted);
    eprintln!("max_size 1MiB: queue.db plus WAL at most {largest} bytes; {evicted} evicted");
    assert!(
        largest <= (1 << 20) + (128 << 10),
        "queue.db plus its WAL reached {largest} bytes"
    );
}

/// With `drop_newest` a full disk refuses new readings, each one counted; when the disk
/// grows, the gateway takes new readings again without a restart (housekeeping makes the
/// reserve again and lifts the cap the full disk set).
#[test]
fn drop_newest_on_a_full_disk_counts_its_refusals_and_recovers_when_room_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let _disk = Tmpfs::mount(&state, "4m");
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let total = 80_000;
    let config = config_with(tmp.path(), &url, "64MiB", "drop_newest", total);
    let mut gw = Gateway::new(tmp.path(), &config);
    let started = std::time::Instant::now();
    gw.start();
    wait_until("the disk is full and readings are refused", LONG, || {
        logged_drops(&gw.log()).0 > 0
    });
    let out = Command::new("mount")
        .args(["-o", "remount,size=24m"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "remount: {out:?}");
    gw.wait_log("Disk has room again", LONG);
    // Drops are summed up in the log once a minute: `queue stats` says what was dropped.
    let dropped_at_room = dropped_full(&gw);
    let pending = gw.pending();
    wait_until("new readings are stored", LONG, || {
        gw.pending() >= pending + 2_000
    });
    gw.wait_log("Every input has finished", LONG);
    let (status, _) = gw.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let log = gw.log();
    let (refused, evicted) = logged_drops(&log);
    assert_eq!(
        refused, dropped_at_room,
        "nothing is dropped once the disk has room"
    );
    assert_eq!(evicted, 0, "drop_newest evicts nothing");
    // One line at the first drop, then one a minute, and the rest at the stop: not one a
    // commit (hundreds while the disk is full).
    let lines = log.matches("Queue full").count() as u64;
    assert!(
        lines <= 2 + started.elapsed().as_secs() / 60,
        "{lines} 'Queue full' lines"
    );
    assert_eq!(
        dropped_full(&gw),
        refused,
        "queue stats counts every refusal"
    );
    assert_eq!(
        gw.pending() + refused,
        total,
        "every reading is pending or counted"
    );
}

/// Fills what is left of the filesystem at `dir` with a file of zeros.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let zeros = vec![0u8; 4096];
    while f.write_all(&zeros).is_ok() {}
}

/// Something else fills the disk while the gateway is stopped: the start gives back the
/// reserve, so the queue opens, takes readings by its policy and drains once the broker is
/// back.
#[test]
fn a_start_on_a_disk_something_else_filled_uses_the_reserve() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let _disk = Tmpfs::mount(&state, "4m");
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut broker = Broker::start_on(&tmp.path().join("broker"), port);
    let sub = Subscriber::start(port, "site/#", "disk-sub");
    broker.stop();
    let mut gw = Gateway::new(tmp.path(), &config(tmp.path(), &url, "1MiB", 3_000));
    gw.start();
    gw.wait_log("Every input has finished", LONG);
    let (status, _) = gw.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(state.join("queue.reserve").exists(), "the reserve is made");

    fill(&state);
    std::fs::write(&gw.config, config(tmp.path(), &url, "1MiB", 1_000)).unwrap();
    gw.start();
    wait_inputs_finished(&gw, 2);
    assert!(gw.log().contains("gave back the queue's reserve file"));
    broker.start();
    wait_until("the backlog is delivered", LONG, || gw.pending() == 0);
    let (refused, evicted) = logged_drops(&gw.log());
    wait_until("the subscriber has every message", LONG, || {
        distinct_seqs(&sub) + refused + evicted >= 4_000
    });
    assert_eq!(gw.log().matches("Queue delete failed").count(), 0);
    let (status, _) = gw.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(dropped_full(&gw), refused + evicted);
}
