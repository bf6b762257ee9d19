//! State that is not the gateway's own, and a clock without a real-time clock behind it,
//! through the real binary: a foreign SQLite file in place of `queue.db` is moved aside; a
//! second gateway on the same `state_dir` is refused; readings stamped before the clock
//! synchronised are not expired when it jumps, and get corrected times (also those of an
//! earlier run of the same boot), in the queue and in the payloads delivered; sequence numbers
//! keep rising after a reset while the clock reads 1970.
//!
//! The clock is libfaketime's (`faketime` package, see .ci/run): the gateway's wall clock
//! reads what a file says (an offset from the real clock), which the test changes to make
//! the clock jump; its monotonic clock stays real, as on a Pi.

use crate::support::broker::Broker;
use crate::support::fake_clock::{libfaketime, real_now_s, FakeClock, BOOT_1970};
use crate::support::gateway::{base_config, Gateway};
use crate::support::subscriber::Subscriber;
use crate::support::wait_until;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LONG: Duration = Duration::from_secs(60);

/// libfaketime's library, which these tests need.
fn faketime() -> String {
    libfaketime().expect("libfaketime is installed (apt-get install faketime; see .ci/run)")
}

/// A config with one synthetic input of `count` readings at `rate` a second, and a broker
/// URL nobody listens on: every reading stays pending.
fn config(dir: &Path, rate: f64, count: u64, queue_extra: &str) -> String {
    config_on(dir, crate::support::free_port(), rate, count, queue_extra)
}

/// As [`config`], with the broker's URL on `port` (nobody listens there until the test
/// starts a broker on it).
fn config_on(dir: &Path, port: u16, rate: f64, count: u64, queue_extra: &str) -> String {
    let url = format!("mqtt://127.0.0.1:{port}");
    base_config(dir, "gw1", &url, "")
        + &format!(
            "[queue]\ncommit_every = 50\ncommit_linger = \"50ms\"\n{queue_extra}\n\
             [[synthetic]]\nname = \"wx\"\nrate = {rate:?}\nfields = [\"temperature\"]\n\
             topic = \"site/{{gateway}}/{{input}}\"\nqos = 1\ncount = {count}\n"
        )
}

fn queue_path(dir: &Path) -> PathBuf {
    dir.join("state/queue.db")
}

/// Files in the state directory moved aside by a reset.
fn moved_aside(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("queue.db.corrupt-")
                && !name.ends_with("-wal")
                && !name.ends_with("-shm")
        })
        .collect();
    found.sort();
    found
}

/// The sequence numbers of the pending messages.
fn seqs(gw: &Gateway) -> Vec<i64> {
    gw.export()
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect()
}

fn real_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn a_foreign_sqlite_file_is_moved_aside_and_a_fresh_queue_starts() {
    // Another application's file: a `meta` table of its own (the gateway used to exit with
    // "no such column: value" at every start), and one with no table the gateway knows
    // (the gateway used to add its tables into it).
    let foreign = [
        "CREATE TABLE meta (name TEXT PRIMARY KEY, data BLOB);
         CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO contacts (name) VALUES ('ada');",
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO contacts (name) VALUES ('ada');",
    ];
    for schema in foreign {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("state")).unwrap();
        rusqlite::Connection::open(queue_path(tmp.path()))
            .unwrap()
            .execute_batch(schema)
            .unwrap();
        let mut gw = Gateway::new(tmp.path(), &config(tmp.path(), 200.0, 100, ""));
        gw.start();
        wait_until("the fresh queue takes every reading", LONG, || {
            gw.pending() == 100
        });
        assert!(gw.is_running(), "{}", gw.log());
        let log = gw.log();
        assert!(
            log.contains("ERROR") && log.contains("moved it aside"),
            "{log}"
        );
        let aside = moved_aside(tmp.path());
        assert_eq!(aside.len(), 1, "{aside:?}");
        // The other application's data is kept, untouched.
        let name: String = rusqlite::Connection::open(&aside[0])
            .unwrap()
            .query_row("SELECT name FROM contacts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(name, "ada");
        let (status, _) = gw.terminate(LONG);
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
    }
}

#[test]
fn a_second_gateway_on_the_same_state_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let text = config(tmp.path(), 100.0, 1_000_000, "");
    let mut first = Gateway::new(tmp.path(), &text);
    first.start();
    first.wait_log("Gateway running.", LONG);
    wait_until("the first gateway commits", LONG, || first.pending() > 0);

    // Same config, hence same state_dir; its own log file.
    let mut second = Gateway::new(&tmp.path().join("second"), &text);
    second.start();
    let status = second.wait_stopped(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the second gateway exits with an error: {status:?}\n{}",
        second.log()
    );
    let log = second.log();
    assert!(
        log.contains("another sensorgate")
            && log.contains(&tmp.path().join("state").display().to_string()),
        "the error names the state directory and the other gateway: {log}"
    );
    // The first one runs on and keeps committing; the CLI still reads beside it.
    let before = first.pending();
    wait_until("the first gateway commits on", LONG, || {
        first.pending() > before + 50
    });
    assert!(first.is_running());
    assert!(!first.log().contains("UNIQUE"), "{}", first.log());
    let (status, _) = first.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[test]
fn readings_stamped_before_the_clock_synchronised_are_not_expired_and_get_corrected_times() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = FakeClock::starting_at(tmp.path(), faketime(), BOOT_1970);
    let port = crate::support::free_port();
    let text = config_on(tmp.path(), port, 50.0, 100, "max_age = \"1h\"\n")
        // Housekeeping (expiry) every second.
        .replace("health_interval = \"0s\"", "health_interval = \"1s\"");
    let mut gw = Gateway::new(tmp.path(), &text);
    gw.env = clock.env();
    let started_ms = real_now_ms();
    gw.start();
    wait_until("100 readings queued", LONG, || gw.pending() == 100);
    // A restart before the clock synchronises: the readings of both runs are this boot's.
    let (status, _) = gw.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    gw.start();
    wait_until("200 readings queued", LONG, || gw.pending() == 200);
    let exported = gw.export();
    for m in &exported {
        let p: serde_json::Value = serde_json::from_str(m["payload"].as_str().unwrap()).unwrap();
        assert_eq!(p["_clock"], "unsynced", "{p}");
        assert!(p["_ts"].as_i64().unwrap() < 2 * BOOT_1970 * 1000, "{p}");
    }

    // NTP: the clock jumps to the real time.
    clock.set(real_now_s());
    let synced_ms = real_now_ms();
    wait_until(
        "the queue corrects the stamps, or expires the readings",
        LONG,
        || {
            let s = gw.stats().unwrap();
            s["expired"].as_u64() != Some(0) || s["oldest_age_s"].as_f64().unwrap() < 3600.0
        },
    );
    // Stamps are corrected before expiry, in the same round.
    let s = gw.stats().unwrap();
    assert_eq!(s["expired"], 0, "{s}");
    assert_eq!(s["pending"], 200, "{s}");
    // Corrected from the monotonic clock: the oldest reading is as old as it really is
    // (seconds), not 56 years.
    let oldest = s["oldest_age_s"].as_f64().unwrap();
    assert!(oldest < 120.0, "{s}");
    let mut corrected = std::collections::HashSet::new();
    for m in gw.export() {
        let age = m["age_s"].as_f64().unwrap();
        assert!((0.0..120.0).contains(&age), "{m}");
        assert_eq!(m["clock"], "corrected", "{m}");
        let p: serde_json::Value = serde_json::from_str(m["payload"].as_str().unwrap()).unwrap();
        assert_eq!(p["_clock"], "corrected", "{m}");
        corrected.insert(m["seq"].as_i64().unwrap());
    }
    assert!(!gw.log().contains("deleted unsent"), "{}", gw.log());
    assert!(gw.log().contains("Clock synchronised"), "{}", gw.log());
    let (status, _) = gw.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    // Delivered: the payloads carry the corrected stamps too, the time each reading was
    // really taken. (The broker and its subscriber start while the gateway is stopped, so
    // that the subscription is there before the first publish; the run adds 100 readings
    // stamped by the synchronised clock.)
    let _broker = Broker::start_on(&tmp.path().join("broker"), port);
    let sub = Subscriber::start(port, "site/#", "clock-sub");
    gw.start();
    let delivered = |sub: &Subscriber| -> Vec<serde_json::Value> {
        sub.messages()
            .iter()
            .map(|(_, p)| serde_json::from_str(p).unwrap())
            .collect()
    };
    wait_until("the corrected readings delivered", LONG, || {
        let seqs: std::collections::HashSet<i64> = delivered(&sub)
            .iter()
            .map(|p| p["_seq"].as_i64().unwrap())
            .collect();
        corrected.is_subset(&seqs)
    });
    for p in delivered(&sub) {
        if !corrected.contains(&p["_seq"].as_i64().unwrap()) {
            assert!(p.get("_clock").is_none(), "{p}");
            continue;
        }
        assert_eq!(p["_clock"], "corrected", "{p}");
        let ts = p["_ts"].as_i64().unwrap();
        assert!(
            (started_ms - 5_000..=synced_ms + 5_000).contains(&ts),
            "{p}: taken between {started_ms} and {synced_ms}"
        );
    }
    let (status, _) = gw.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[test]
fn sequence_numbers_keep_rising_after_a_reset_while_the_clock_reads_1970() {
    let tmp = tempfile::tempdir().unwrap();
    let garbage = vec![0x5a_u8; 16 * 1024];
    std::fs::create_dir_all(tmp.path().join("state")).unwrap();
    // 1. A reset with the right clock: numbering restarts high (above wall-clock µs).
    std::fs::write(queue_path(tmp.path()), &garbage).unwrap();
    let mut gw = Gateway::new(tmp.path(), &config(tmp.path(), 500.0, 100, ""));
    gw.start();
    wait_until("100 readings queued", LONG, || gw.pending() == 100);
    let old = seqs(&gw);
    let old_max = *old.iter().max().unwrap();
    assert!(old_max > 1_000_000_000_000_000, "{old_max}");
    let (status, _) = gw.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    // 2. The file is lost to garbage, and the next boot has no network: the clock reads
    // 1970 when the gateway resets the queue.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", queue_path(tmp.path()).display()));
    }
    std::fs::write(queue_path(tmp.path()), &garbage).unwrap();
    let clock = FakeClock::starting_at(tmp.path(), faketime(), BOOT_1970);
    gw.env = clock.env();
    gw.start();
    wait_until("100 readings queued in the fresh queue", LONG, || {
        gw.pending() == 100
    });
    assert_eq!(moved_aside(tmp.path()).len(), 2);
    let new = seqs(&gw);
    let new_min = *new.iter().min().unwrap();
    assert!(
        new_min > old_max,
        "numbering went backwards: {new_min} after {old_max}"
    );
    let (status, _) = gw.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// `$GPRMC` with status A for the Unix time `ms`, checksummed.
fn rmc(ms: i64) -> String {
    let (secs, frac) = (ms.div_euclid(1000), ms.rem_euclid(1000) / 10);
    let (days, s) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let body = format!(
        "GPRMC,{:02}{:02}{:02}.{frac:02},A,4807.038,N,01131.000,E,0.4,84.4,{d:02}{m:02}{:02},,,A",
        s / 3600,
        s / 60 % 60,
        s % 60,
        y % 100
    );
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}")
}

#[test]
fn a_gps_fix_tells_the_time_while_the_system_clock_reads_1970() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = FakeClock::starting_at(tmp.path(), faketime(), BOOT_1970);
    let port = crate::support::free_port();
    let mut gps = crate::support::pty::Pty::open();
    let text = config_on(tmp.path(), port, 20.0, 1_000_000, "max_age = \"1h\"\n")
        .replace("health_interval = \"0s\"", "health_interval = \"1s\"")
        + &format!(
            "\n[[serial]]\nname = \"gps\"\ndevice = \"{}\"\nformat = \"nmea\"\n\
             topic = \"site/{{gateway}}/{{input}}/{{sentence}}\"\nsentences = [\"GGA\"]\n",
            gps.path.display()
        );
    let mut gw = Gateway::new(tmp.path(), &text);
    gw.env = clock.env();
    let started_ms = real_now_ms();
    gw.start();
    gw.wait_log("Serial port open.", LONG);
    wait_until("readings stamped by the 1970 clock", LONG, || {
        gw.pending() >= 20
    });
    // The receiver gets its fix: the RMC (not published: only GGA is) tells the time.
    let fix_ms = real_now_ms();
    gps.line(&rmc(fix_ms));
    gw.wait_log("GPS fix", LONG);
    let before = gw.pending();
    wait_until("the stamps taken before the fix corrected", LONG, || {
        gw.stats().unwrap()["oldest_age_s"].as_f64().unwrap() < 3600.0
    });
    wait_until("readings stamped after the fix", LONG, || {
        gw.pending() >= before + 20
    });
    let (status, _) = gw.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let done_ms = real_now_ms();
    let (mut corrected, mut by_gps) = (0, 0);
    for m in gw.export() {
        let p: serde_json::Value = serde_json::from_str(m["payload"].as_str().unwrap()).unwrap();
        let ts = p["_ts"].as_i64().unwrap();
        // Every stamp is the real time the reading was taken, within the run.
        assert!(
            (started_ms - 5_000..=done_ms + 5_000).contains(&ts),
            "{m}: taken between {started_ms} and {done_ms}"
        );
        match p.get("_clock") {
            Some(c) => {
                assert_eq!(c, "corrected", "{m}");
                corrected += 1;
            }
            None => by_gps += 1,
        }
    }
    assert!(
        corrected >= 20 && by_gps >= 20,
        "{corrected} corrected, {by_gps} by GPS"
    );
    assert!(
        !gw.log().contains("GGA"),
        "nothing but the clock came of the RMC"
    );
}
