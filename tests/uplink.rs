//! The uplink's shapes on the wire against a real Mosquitto: MQTT 5 properties, batches in
//! every encoding (read back by the test's own decoders), link profiles across a link
//! reset, replay pacing with live readings first, and on-demand windows.

use crate::support::broker::Broker;
use crate::support::gateway::{base_config, Gateway};
use crate::support::mqtt5::{batch_name, unpack, Sub5};
use crate::support::proxy::Proxy;
use crate::support::pty::Pty;
use crate::support::wait_until;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

const LONG: Duration = Duration::from_secs(60);

fn synthetic(count: u64, rate: f64) -> String {
    format!(
        "[queue]\ncommit_every = 100\ncommit_linger = \"20ms\"\nmax_age = \"1h\"\n\n\
         [[synthetic]]\nname = \"wx\"\nrate = {rate}\nfields = [\"temperature\", \"humidity\", \"pressure\"]\n\
         topic = \"site/{{gateway}}/{{input}}\"\nqos = 1\ncount = {count}\n"
    )
}

/// rumqttc's MQTT 5 client needs a keep-alive of at least 5 s.
fn v5(config: String) -> String {
    config.replace("keep_alive = \"2s\"", "keep_alive = \"5s\"")
}

/// How often each `_seq` arrived.
fn seqs(readings: &[(serde_json::Value, Instant)]) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for (r, _) in readings {
        *m.entry(r["_seq"].as_u64().expect("_seq in every reading"))
            .or_insert(0) += 1;
    }
    m
}

#[test]
fn mqtt5_messages_carry_their_sequence_number_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path());
    let sub = Sub5::start(broker.port, "site/#", "t-v5");
    let cfg = v5(base_config(
        dir.path(),
        "gw5",
        &broker.url(),
        "protocol = \"5\"\n",
    )) + &synthetic(20, 200.0);
    let mut gw = Gateway::new(dir.path(), &cfg);
    gw.start();
    wait_until("20 messages", LONG, || sub.messages().len() >= 20);
    for m in sub.messages() {
        assert_eq!(m.topic, "site/gw5/wx");
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let seq = v["_seq"].as_u64().unwrap().to_string();
        assert_eq!(
            m.user,
            vec![("seq".to_string(), seq)],
            "user property seq = _seq"
        );
        let e = m.expiry.expect("an expiry from queue.max_age");
        assert!((3500..=3600).contains(&e), "expiry {e}");
        assert_eq!(m.content_type, None);
    }
    wait_until("an empty queue", LONG, || gw.pending() == 0);
}

/// (protocol, profile, [mqtt.batch] lines, the batch name expected, or None for no batches)
const SHAPES: &[(&str, &str, &str, Option<&str>)] = &[
    ("3.1.1", "lan", "", None),
    (
        "3.1.1",
        "cellular",
        "max_readings = 10\nmax_delay = \"1s\"\n",
        Some("batch.json.zst"),
    ),
    (
        "3.1.1",
        "satellite",
        "max_readings = 10\nmax_delay = \"1s\"\n",
        Some("batch.cbor.zst"),
    ),
    (
        "5",
        "lan",
        "max_readings = 10\nmax_delay = \"1s\"\ncompression = \"deflate\"\n",
        Some("batch.json.deflate"),
    ),
    (
        "5",
        "satellite",
        "max_readings = 10\nmax_delay = \"1s\"\nencoding = \"json\"\ncompression = \"none\"\n",
        Some("batch.json"),
    ),
];

#[test]
fn every_shape_delivers_every_reading_across_a_link_reset() {
    for (protocol, profile, batch, name) in SHAPES {
        let what = format!("protocol {protocol}, profile {profile}, {name:?}");
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start_in(dir.path());
        let sub = Sub5::start(broker.port, "site/#", "t-shapes");
        let proxy = Proxy::start(broker.port);
        proxy.black_hole();
        // The profile's slow timings are overridden (base_config) so the test is quick;
        // its batching and window stay. Paced replay: the reset lands mid-replay.
        let rate = if name.is_some() { 10 } else { 100 };
        let mut mqtt = format!(
            "protocol = \"{protocol}\"\nprofile = \"{profile}\"\nack_timeout = \"5s\"\nreplay_rate = {rate}\n"
        );
        if !batch.is_empty() {
            mqtt += &format!("\n[mqtt.batch]\n{batch}");
        }
        let url = format!("mqtt://127.0.0.1:{}", proxy.port);
        let cfg = v5(base_config(dir.path(), "gw", &url, &mqtt)) + &synthetic(300, 2000.0);
        let mut gw = Gateway::new(dir.path(), &cfg);
        gw.start();
        wait_until(&format!("{what}: 300 readings queued"), LONG, || {
            gw.pending() == 300
        });
        proxy.pass();
        wait_until(&format!("{what}: the first messages"), LONG, || {
            sub.messages().len() >= 3
        });
        proxy.reset_all();
        wait_until(&format!("{what}: an empty queue"), LONG, || {
            gw.pending() == 0
        });
        // Mosquitto forwards a message before it acknowledges it, but the subscriber's
        // thread may not have read the last ones yet: give it until a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = seqs(&sub.readings("site/"));
        while got.len() < 300 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            got = seqs(&sub.readings("site/"));
        }
        let missing: Vec<u64> = (1..=300).filter(|s| !got.contains_key(s)).collect();
        assert!(missing.is_empty(), "{what}: missing {missing:?}");
        assert_eq!(got.len(), 300, "{what}: only the readings sent");
        let msgs = sub.messages();
        for m in &msgs {
            assert_eq!(batch_name(m).as_deref(), *name, "{what}: {}", m.topic);
            let n = unpack(m).len();
            match name {
                None => assert_eq!(n, 1),
                Some(b) => {
                    assert!((1..=10).contains(&n), "{what}: a batch of {n}");
                    if *protocol == "5" {
                        assert_eq!(
                            m.topic, "site/gw/wx",
                            "{what}: v5 names the batch in its content type"
                        );
                    } else {
                        assert_eq!(m.topic, format!("site/gw/wx/{b}"));
                    }
                }
            }
        }
        if name.is_some() {
            assert!(
                msgs.len() <= 300 / 10 + 10,
                "{what}: {} messages for 300 readings",
                msgs.len()
            );
        }
    }
}

fn serial(dir: &std::path::Path, url: &str, pty: &Pty, mqtt: &str) -> String {
    base_config(dir, "gw", url, mqtt)
        + &format!(
            "[queue]\ncommit_every = 50\ncommit_linger = \"20ms\"\n\n\
             [[serial]]\nname = \"wx\"\ndevice = \"{}\"\nbaud = 9600\nformat = \"json\"\n\
             topic = \"site/{{gateway}}/{{input}}\"\nqos = 1\n",
            pty.path.display()
        )
}

#[test]
fn replay_is_paced_and_live_readings_overtake_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path());
    let sub = Sub5::start(broker.port, "site/#", "t-replay");
    let proxy = Proxy::start(broker.port);
    proxy.black_hole();
    let mut pty = Pty::open();
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let mut gw = Gateway::new(
        dir.path(),
        &serial(
            dir.path(),
            &url,
            &pty,
            "replay_rate = 20\nlive_first = true\n",
        ),
    );
    gw.start();
    for n in 0..80 {
        pty.line(&format!("{{\"n\": {n}}}"));
    }
    wait_until("80 readings queued", LONG, || gw.pending() == 80);
    proxy.pass();
    wait_until("the replay starts", LONG, || sub.messages().len() >= 25);
    pty.line("{\"n\": 1000}");
    wait_until("81 readings delivered", LONG, || sub.messages().len() >= 81);
    let order: Vec<(u64, Instant)> = sub
        .readings("site/")
        .iter()
        .map(|(r, at)| (r["n"].as_u64().unwrap(), *at))
        .collect();
    let pos = |n: u64| order.iter().position(|(m, _)| *m == n).unwrap();
    assert!(
        pos(1000) < pos(79),
        "the live reading overtook the backlog: {order:?}"
    );
    // 20 a second after a one-second burst: messages 21 to 61 take at least 2 s (1.6 s
    // allowed for timer slack); unpaced they arrive within milliseconds.
    let span = order[60].1.duration_since(order[20].1);
    assert!(
        span >= Duration::from_millis(1600),
        "40 messages in {span:?}"
    );
    writeln!(pty.writer(), "{{\"n\": 1001}}").unwrap();
    wait_until("an empty queue", LONG, || gw.pending() == 0);
}

#[test]
fn on_demand_sends_in_windows_and_is_off_the_air_between() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path());
    let sub = Sub5::start(broker.port, "#", "t-ondemand");
    let proxy = Proxy::start(broker.port);
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let cfg = base_config(
        dir.path(),
        "gw",
        &url,
        "connection = \"on_demand\"\nflush_every = \"3s\"\n",
    ) + &synthetic(50, 10.0);
    let mut gw = Gateway::new(dir.path(), &cfg);
    gw.start();
    // Readings keep coming for 5 s: at least two windows, and the link is closed between.
    let mut seen_closed = false;
    wait_until("a second window", LONG, || {
        seen_closed |= proxy.accepted() >= 1 && proxy.open_connections() == 0;
        seen_closed && proxy.accepted() >= 2
    });
    wait_until("all 50 readings", LONG, || {
        seqs(&sub.readings("site/")).len() == 50
    });
    wait_until("the link closed after the last window", LONG, || {
        proxy.open_connections() == 0
    });
    let status: Vec<String> = sub
        .messages()
        .iter()
        .filter(|m| m.topic == "sensorgate/gw/status")
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let asleep = status
        .iter()
        .rev()
        .find_map(|p| p.strip_prefix("asleep until "))
        .unwrap_or_else(|| panic!("an asleep message in {status:?}"));
    let next = humantime::parse_rfc3339(asleep).expect("an RFC 3339 time");
    let ahead = next.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(
        ahead <= Duration::from_secs(4),
        "the next window is {ahead:?} away"
    );
    assert!(status.iter().any(|p| p == "online"), "{status:?}");
    assert!(
        !status.iter().any(|p| p == "offline"),
        "a planned sleep is not a death: {status:?}"
    );
    wait_until("an empty queue", LONG, || gw.pending() == 0);
}

/// Readings that keep arriving while the sleep message waits for its PUBACK (a slow link)
/// wait for the next window: the link still closes, and windows keep coming.
#[test]
fn on_demand_keeps_its_windows_under_steady_input_on_a_slow_link() {
    use crate::support::proxy::Shape;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path());
    let sub = Sub5::start(broker.port, "site/#", "t-ondemand-steady");
    let proxy = Proxy::start_shaped(
        broker.port,
        Shape {
            delay: Duration::from_millis(200),
            bits_per_second: None,
        },
    );
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let cfg = base_config(
        dir.path(),
        "gw",
        &url,
        "connection = \"on_demand\"\nflush_every = \"2s\"\n",
    ) + &synthetic(150, 5.0);
    let mut gw = Gateway::new(dir.path(), &cfg);
    gw.start();
    let mut seen_closed = 0;
    let mut was_open = false;
    // Within 20 s, while the input still runs (30 s): a window that waited for the input
    // to pause would stay open until it ends.
    wait_until(
        "three windows, each closed after it",
        Duration::from_secs(20),
        || {
            let open = proxy.open_connections() > 0;
            if was_open && !open {
                seen_closed += 1;
            }
            was_open = open;
            seen_closed >= 3
        },
    );
    // Every reading arrives, none skipped by a window's end.
    wait_until("all 150 readings", LONG, || {
        let got = seqs(&sub.readings("site/"));
        (1..=150).all(|n| got.contains_key(&n))
    });
    wait_until("an empty queue", LONG, || gw.pending() == 0);
}

#[test]
fn the_satellite_profile_delivers_over_a_slow_long_link() {
    use crate::support::proxy::Shape;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path());
    let sub = Sub5::start(broker.port, "site/#", "t-sat");
    // 1.5 s round trip, 2,400 bit/s each way.
    let proxy = Proxy::start_shaped(
        broker.port,
        Shape {
            delay: Duration::from_millis(750),
            bits_per_second: Some(2400),
        },
    );
    // The profile's own timings (no base_config overrides); only the batch delay is cut
    // from 5 minutes so that the test is short.
    let cfg = format!(
        "[gateway]\nid = \"sat\"\nstate_dir = \"{}\"\nhealth_interval = \"0s\"\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nprofile = \"satellite\"\n\n\
         [mqtt.batch]\nmax_delay = \"2s\"\n\n",
        dir.path().join("state").display(),
        proxy.port
    ) + &synthetic(120, 60.0);
    let mut gw = Gateway::new(dir.path(), &cfg);
    let (_, out, _) = gw.cli(&["check"]);
    assert!(
        out.contains("profile satellite") && out.contains("batch.cbor.zst"),
        "{out}"
    );
    gw.start();
    wait_until(
        "every reading over the satellite link",
        Duration::from_secs(120),
        || seqs(&sub.readings("site/")).len() == 120,
    );
    let msgs = sub.messages();
    assert!(msgs.iter().all(|m| m.topic == "site/sat/wx/batch.cbor.zst"));
    assert!(msgs.len() <= 4, "{} messages for 120 readings", msgs.len());
    let t = proxy.bytes();
    assert!(
        t.up_bytes < 120 * 40,
        "{} bytes upstream for 120 readings: batching and compression at work",
        t.up_bytes
    );
    assert_eq!(proxy.accepted(), 1, "one connection, never timed out");
    wait_until("an empty queue", LONG, || gw.pending() == 0);
}

/// Deletes that fall behind the broker (here another process holds SQLite's write lock, so
/// none can commit) stop the sending once a window's worth of confirmed rows waits: what a
/// crash could send twice stays within three windows, and so does memory. Then, with the
/// lock released, everything is delivered.
#[test]
fn sending_waits_for_deletes_that_fall_behind() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path());
    let sub = Sub5::start(broker.port, "site/#", "t-lag");
    let proxy = Proxy::start(broker.port);
    proxy.black_hole();
    // A window is 4 messages of 10 readings: 40 rows.
    let mqtt = "inflight = 4\n\n[mqtt.batch]\nmax_readings = 10\nmax_delay = \"50ms\"\n";
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let cfg = base_config(dir.path(), "gw", &url, mqtt) + &synthetic(2000, 20000.0);
    let mut gw = Gateway::new(dir.path(), &cfg);
    gw.start();
    wait_until("2000 readings queued", LONG, || gw.pending() == 2000);

    let db = rusqlite::Connection::open(dir.path().join("state/queue.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    proxy.pass();
    wait_until("the first window delivered", LONG, || {
        seqs(&sub.readings("site/")).len() >= 40
    });
    // A delete waits out SQLite's busy timeout (10 s) under the lock, then fails; by then,
    // without the limit, all 2000 would have been delivered.
    gw.wait_log(
        "Queue delete failed; the rows stay confirmed in memory",
        LONG,
    );
    let seen = seqs(&sub.readings("site/")).len();
    assert!(
        seen <= 3 * 40,
        "{seen} readings delivered while none could be deleted (three windows are 120)"
    );
    assert_eq!(gw.pending(), 2000, "nothing was deleted under the lock");

    db.execute_batch("COMMIT").unwrap();
    wait_until("an empty queue", LONG, || gw.pending() == 0);
    let got = seqs(&sub.readings("site/"));
    let missing: Vec<u64> = (1..=2000).filter(|s| !got.contains_key(s)).collect();
    assert!(missing.is_empty(), "missing {missing:?}");
}

/// Rows confirmed before a restart but only released (the pending rows behind them kept the
/// queue from being truncated) are reclaimed once the uplink has nothing to do: here it is
/// offline, so it never will. The pending rows stay.
#[test]
fn released_rows_are_reclaimed_while_the_uplink_is_idle() {
    use sensorgate::config::{Qos, WhenFull};
    use sensorgate::mapping::NewMessage;
    use sensorgate::queue::{Confirmed, Queue, QueueOptions};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state/queue.db");
    let opts = QueueOptions {
        max_size: u64::MAX,
        when_full: WhenFull::DropOldest,
        synchronous_full: true,
    };
    let mut q = Queue::open(&db, opts).unwrap();
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let rows: Vec<NewMessage> = (1..=10_000)
        .map(|seq| NewMessage {
            seq,
            topic: "site/gw/old".into(),
            payload: format!("{{\"v\":{seq}}}").into_bytes(),
            qos: Qos::AtLeastOnce,
            retain: false,
            created_ms: now_ms,
            unsynced_mono_ms: None,
        })
        .collect();
    q.append(&rows).unwrap();
    let first: Confirmed = q
        .fetch_after(0, 9_000)
        .unwrap()
        .iter()
        .map(|r| (r.id, r.bytes()))
        .collect();
    assert_eq!(q.ack_known(&first).unwrap(), 9_000);
    drop(q);
    let physical = || -> i64 {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(physical(), 10_000, "released, not deleted");

    let url = format!("mqtt://127.0.0.1:{}", crate::support::free_port());
    let cfg = base_config(dir.path(), "gw", &url, "") + &synthetic(1, 10.0);
    let mut gw = Gateway::new(dir.path(), &cfg);
    gw.start();
    wait_until("the released rows reclaimed", LONG, || physical() == 1_001);
    assert_eq!(gw.pending(), 1_001, "the pending rows stay");
}

/// With batching on and the window full (the link swallows the PUBACKs), the uplink waits
/// for an ack; it does not spin on the due time of batches it cannot send (it did: a whole
/// core, until the link was found dead or the ack timeout struck).
#[test]
fn a_batch_that_cannot_be_sent_does_not_spin() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path());
    let proxy = Proxy::start(broker.port);
    proxy.black_hole();
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let mqtt = "inflight = 2\n\n[mqtt.batch]\nmax_readings = 10\nmax_delay = \"50ms\"\n";
    let cfg = base_config(dir.path(), "gw", &url, mqtt) + &synthetic(2000, 20000.0);
    let mut gw = Gateway::new(dir.path(), &cfg);
    gw.start();
    wait_until("2000 readings queued", LONG, || gw.pending() == 2000);
    proxy.pass();
    wait_until("some readings delivered", LONG, || gw.pending() < 2000);
    let lost = "Connection to the broker lost";
    let losses = gw.log().matches(lost).count();
    proxy.black_hole();
    let pid = gw.pid();
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    // The measurement ends when the keep-alive (2 s) finds the link dead: until then the
    // window stays full with batches due, the time the uplink once spun through.
    wait_until("the keep-alive finds the link dead", LONG, || {
        gw.log().matches(lost).count() > losses
    });
    let share = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    assert!(
        share < 0.2,
        "the gateway used {:.0} % of a core while it could send nothing",
        share * 100.0
    );
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // clock ticks (USER_HZ = 100)
}

/// With the link up and nothing older pending, readings leave from memory and the broker's
/// acknowledgements come before their commit: they are not written. `queue stats` counts them
/// after a clean stop, names the running gateway's writes while it runs, and the sequence
/// numbers handed out stay exact (no gap from what was reserved ahead).
#[test]
fn readings_acknowledged_before_their_commit_are_counted_and_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&dir.path().join("broker"));
    let sub = crate::support::subscriber::Subscriber::start(broker.port, "live/#", "t-live");
    let config = base_config(dir.path(), "gwl", &broker.url(), "")
        + "[queue]\ncommit_linger = \"5s\"\n\n\
           [[synthetic]]\nname = \"a\"\nrate = 4.0\ncount = 12\nfields = [\"t\"]\ntopic = \"live/a\"\n";
    let mut gw = Gateway::new(dir.path(), &config);
    gw.start();
    wait_until("six readings", LONG, || sub.messages().len() >= 6);
    let running = gw.stats().unwrap();
    assert!(running["gateway"]["bytes_written"].is_u64(), "{running}");
    assert_eq!(running["gateway"]["pid"].as_u64(), Some(gw.pid() as u64));
    wait_until("twelve readings", LONG, || sub.messages().len() >= 12);
    let (status, _) = gw.terminate(LONG);
    assert!(status.expect("exits").success());
    let stats = gw.stats().unwrap();
    let unwritten = stats["unwritten"].as_u64().unwrap();
    // The first readings may come before the connection, the last as the input ends.
    assert!(unwritten >= 6, "{stats}\n{}", gw.log());
    assert!(
        gw.log().contains(&format!("unwritten={unwritten}")),
        "{}",
        gw.log()
    );
    assert_eq!(stats["pending"], 0, "{stats}");
    assert_eq!(stats["last_seq"], 12, "{stats}");
    assert!(stats["gateway"].is_null(), "{stats}");
}
