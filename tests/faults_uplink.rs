//! Faults of the uplink that are not crashes: a message the broker will not take must not
//! hold up the ones behind it (dead letters), and a broker that lets the gateway in and then
//! drops it must not see a reconnect storm.

use crate::support::broker::Broker;
use crate::support::fake_broker::FakeBroker;
use crate::support::gateway::{base_config, Gateway};
use crate::support::pty::Pty;
use crate::support::subscriber::Subscriber;
use crate::support::wait_until;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(40);

fn serial_config(dir: &std::path::Path, url: &str, pty: &Pty, mqtt: &str, batch: &str) -> String {
    base_config(dir, "gw", url, mqtt)
        + batch
        + &format!(
            "[queue]\ncommit_every = 50\ncommit_linger = \"20ms\"\n\n\
             [[serial]]\nname = \"wx\"\ndevice = \"{}\"\nbaud = 9600\nformat = \"json\"\n\
             topic = \"site/{{gateway}}/{{input}}\"\nqos = 1\n",
            pty.path.display()
        )
}

/// Writes `n` small JSON lines numbered from `first`, with the 300-byte line `big` (if
/// any) after the first half.
fn feed(pty: &mut Pty, first: usize, n: usize, big: Option<&str>) {
    for i in first..first + n {
        pty.line(&format!("{{\"n\": {i}}}"));
        if i == first + n / 2 {
            if let Some(b) = big {
                pty.line(b);
            }
        }
    }
}

fn big_line() -> String {
    let line = format!("{{\"n\": 9999, \"note\": \"{}\"}}", "x".repeat(270));
    assert!(line.len() >= 290);
    line
}

/// The `n` values the subscriber has seen on `site/gw/wx`.
fn numbers(sub: &Subscriber) -> std::collections::BTreeSet<i64> {
    sub.messages()
        .iter()
        .filter(|(t, _)| t == "site/gw/wx")
        .filter_map(|(_, p)| serde_json::from_str::<serde_json::Value>(p).ok())
        .filter_map(|v| v["n"].as_i64())
        .collect()
}

fn stat(gw: &Gateway, key: &str) -> u64 {
    gw.stats().and_then(|s| s[key].as_u64()).unwrap_or(0)
}

/// What [`one_message_too_large`] leaves running.
struct Case {
    _dir: tempfile::TempDir,
    _broker: Broker,
    sub: Subscriber,
    pty: Pty,
    gw: Gateway,
}

/// Mosquitto with `max_packet_size 200`, the gateway speaking `mqtt` (extra `[mqtt]` keys),
/// and 40 small readings with one of 300 bytes among them: returns once the 40 arrived and
/// the large one is a dead letter.
fn one_message_too_large(mqtt: &str, sub_id: &str) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_with(
        &dir.path().join("broker"),
        crate::support::free_port(),
        "max_packet_size 200\n",
    );
    let sub = Subscriber::start(broker.port, "site/#", sub_id);
    let mut pty = Pty::open();
    let mut gw = Gateway::new(
        dir.path(),
        &serial_config(dir.path(), &broker.url(), &pty, mqtt, "")
            .replace("keep_alive = \"2s\"", "keep_alive = \"5s\""),
    );
    gw.start();
    gw.wait_log("Connected to the broker", LONG);
    feed(&mut pty, 0, 40, Some(&big_line()));
    wait_until("all 40 small readings arrive", LONG, || {
        numbers(&sub).len() == 40
    });
    wait_until("the large one is a dead letter", LONG, || {
        stat(&gw, "dead") == 1
    });
    Case {
        _dir: dir,
        _broker: broker,
        sub,
        pty,
        gw,
    }
}

/// MQTT 3.1.1 cannot say how large a packet the broker takes: Mosquitto with
/// `max_packet_size 200` drops the connection on the 300-byte message. The gateway sends it
/// alone after two such drops, and after a third gives it up as a dead letter; every other
/// reading arrives.
#[test]
fn a_message_the_broker_drops_the_connection_for_becomes_a_dead_letter() {
    let mut case = one_message_too_large("", "t-dead-v4");
    let (sub, gw) = (&case.sub, &case.gw);
    wait_until("nothing is pending", LONG, || stat(gw, "pending") == 0);
    assert!(!numbers(sub).contains(&9999));
    gw.wait_log("moved to the dead letters", LONG);
    let (code, list, _) = gw.cli(&["queue", "dead", "list"]);
    assert_eq!(code, 0);
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.contains("site/gw/wx"), "{list}");
    // Readings after it are not held up either.
    feed(&mut case.pty, 100, 10, None);
    wait_until("later readings arrive", LONG, || {
        numbers(&case.sub).len() == 50
    });
}

/// Under MQTT 5 Mosquitto's CONNACK says how large a packet it takes: the message that
/// cannot fit is a dead letter before it is sent, and the connection never drops.
#[test]
fn mqtt5_learns_the_maximum_packet_size_from_the_connack() {
    let case = one_message_too_large("protocol = \"5\"\n", "t-dead-v5");
    let log = case.gw.log();
    assert_eq!(
        log.matches("Connected to the broker").count(),
        1,
        "one connection: {log}"
    );
    assert!(!log.contains("Connection to the broker lost"), "{log}");
}

/// `[mqtt] max_message_size` bounds batches by bytes: batches of 100 readings would be about
/// 2.5 KB, above the 1 KiB allowed, so they leave cut to fit, and nothing is lost or dead.
#[test]
fn batches_are_cut_by_bytes_to_fit_the_maximum_message_size() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&dir.path().join("broker"));
    let sub = Subscriber::start(broker.port, "site/#", "t-cut");
    let mut pty = Pty::open();
    let mut gw = Gateway::new(
        dir.path(),
        &serial_config(
            dir.path(),
            &broker.url(),
            &pty,
            "max_message_size = \"1KiB\"\n",
            "[mqtt.batch]\nmax_readings = 100\nmax_delay = \"200ms\"\n\n",
        ),
    );
    gw.start();
    gw.wait_log("Connected to the broker", LONG);
    feed(&mut pty, 0, 300, None);
    let readings = || -> Vec<i64> {
        sub.messages()
            .iter()
            .filter(|(t, _)| t.starts_with("site/gw/wx"))
            .flat_map(|(_, p)| {
                assert!(p.len() <= 1024, "a message of {} bytes", p.len());
                let v: serde_json::Value = serde_json::from_str(p).unwrap();
                v.as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| r["n"].as_i64())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    wait_until("all 300 readings arrive", LONG, || readings().len() >= 300);
    let mut got = readings();
    got.sort();
    got.dedup();
    assert_eq!(got, (0..300).collect::<Vec<_>>());
    assert_eq!(stat(&gw, "dead"), 0);
    let batches = sub
        .messages()
        .iter()
        .filter(|(t, _)| t.starts_with("site/gw/wx"))
        .count();
    assert!(batches >= 6, "{batches} messages for 300 readings");
}

/// Under MQTT 5 an ACL that denies one topic answers its publishes with PUBACK 0x87: those
/// become dead letters and the allowed readings flow, without reconnecting.
#[test]
fn a_topic_the_broker_refuses_for_good_does_not_hold_up_the_others() {
    refused_for_good(50, "20ms", true);
}

/// The same when the refusal comes before the commit (a reading sent from memory while its
/// commit lingers): it becomes a dead letter once committed, and nothing stays pending.
#[test]
fn a_refusal_before_the_commit_makes_a_dead_letter_after_it() {
    refused_for_good(1000, "3s", false);
}

fn refused_for_good(every: usize, linger: &str, requeue: bool) {
    let dir = tempfile::tempdir().unwrap();
    let bdir = dir.path().join("broker");
    std::fs::create_dir_all(&bdir).unwrap();
    let acl = bdir.join("acl");
    std::fs::write(
        &acl,
        "topic readwrite site/gw/ok\ntopic readwrite site/probe\ntopic readwrite sensorgate/#\ntopic read site/#\n",
    )
    .unwrap();
    let broker = Broker::start_with(
        &bdir,
        crate::support::free_port(),
        // Mosquitto 2.0.11 with `max_queued_messages 0` (the test brokers' default) closes
        // the connection after a denied MQTT 5 publish; with the stock limit it does not.
        &format!("acl_file {}\nmax_queued_messages 1000\n", acl.display()),
    );
    let sub = Subscriber::start(broker.port, "site/#", "t-acl");
    let mut ok = Pty::open();
    let mut denied = Pty::open();
    let config = base_config(dir.path(), "gw", &broker.url(), "protocol = \"5\"\n")
        .replace("keep_alive = \"2s\"", "keep_alive = \"5s\"")
        + &format!(
            "[queue]\ncommit_every = {every}\ncommit_linger = \"{linger}\"\n\n\
         [[serial]]\nname = \"ok\"\ndevice = \"{}\"\nbaud = 9600\nformat = \"json\"\n\
         topic = \"site/{{gateway}}/{{input}}\"\nqos = 1\n\n\
         [[serial]]\nname = \"denied\"\ndevice = \"{}\"\nbaud = 9600\nformat = \"json\"\n\
         topic = \"site/{{gateway}}/{{input}}\"\nqos = 1\n",
            ok.path.display(),
            denied.path.display(),
        );
    let mut gw = Gateway::new(dir.path(), &config);
    gw.start();
    gw.wait_log("Connected to the broker", LONG);
    for i in 0..30 {
        denied.line(&format!("{{\"n\": {i}}}"));
        ok.line(&format!("{{\"n\": {i}}}"));
    }
    let allowed = || {
        sub.messages()
            .iter()
            .filter(|(t, _)| t == "site/gw/ok")
            .count()
    };
    wait_until("the 30 allowed readings arrive", LONG, || allowed() >= 30);
    wait_until("the 30 refused ones are dead letters", LONG, || {
        stat(&gw, "dead") == 30
    });
    wait_until("nothing is pending", LONG, || stat(&gw, "pending") == 0);
    let log = gw.log();
    assert_eq!(log.matches("Connected to the broker").count(), 1, "{log}");
    let (_, export, _) = gw.cli(&["queue", "dead", "export"]);
    let first: serde_json::Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    assert_eq!(first["topic"], "site/gw/denied");
    assert!(
        first["reason"].as_str().unwrap().contains("0x87"),
        "{first}"
    );
    if !requeue {
        return;
    }
    // The operator may send them again: requeued while the gateway is stopped, the broker
    // refuses them once more and they come back as dead letters, nothing lost.
    let (code, _, err) = gw.cli(&["queue", "dead", "requeue"]);
    assert_ne!(code, 0, "requeue beside a running gateway: {err}");
    gw.terminate(LONG);
    let (code, out, err) = gw.cli(&["queue", "dead", "requeue"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("requeued 30"), "{out}");
    assert_eq!(stat(&gw, "pending"), 30);
    gw.start();
    wait_until("they are dead letters again", LONG, || {
        stat(&gw, "dead") == 60 && stat(&gw, "pending") == 0
    });
    let (code, out, _) = gw.cli(&["queue", "dead", "purge", "--yes"]);
    assert_eq!(code, 0);
    assert!(out.contains("purged 30"), "{out}");
}

/// A row whose topic is not UTF-8 (another program wrote the file, or a bit flipped where
/// SQLite's checks cannot see) is a dead letter; the 39 rows behind it are delivered.
#[test]
fn a_row_that_cannot_be_read_back_is_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let broker_port = crate::support::free_port();
    let mut pty = Pty::open();
    let url = format!("mqtt://127.0.0.1:{broker_port}");
    let mut gw = Gateway::new(dir.path(), &serial_config(dir.path(), &url, &pty, "", ""));
    gw.start();
    feed(&mut pty, 0, 40, None);
    wait_until("40 rows are queued", LONG, || stat(&gw, "pending") == 40);
    gw.terminate(LONG);
    let db = dir.path().join("state/queue.db");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             c.execute(\"UPDATE outbox SET topic = CAST(X'736974652fff' AS TEXT) WHERE id = (SELECT min(id) FROM outbox)\")\n\
             c.commit()\n\
             c.close()\n",
        )
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let broker = Broker::start_on(&dir.path().join("broker"), broker_port);
    let sub = Subscriber::start(broker.port, "site/#", "t-utf8");
    gw.start();
    wait_until("the 39 readable rows arrive", LONG, || {
        numbers(&sub).len() == 39
    });
    wait_until("the unreadable row is a dead letter", LONG, || {
        stat(&gw, "dead") == 1 && stat(&gw, "pending") == 0
    });
    assert!(!gw.log().contains("Queue read failed"), "{}", gw.log());
    let (_, export, _) = gw.cli(&["queue", "dead", "export"]);
    let d: serde_json::Value = serde_json::from_str(export.trim()).unwrap();
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("cannot be read back"),
        "{d}"
    );
    // The queue commands into a full stdout: an error, not a panic (exit 101).
    for args in [
        &["queue", "stats"][..],
        &["queue", "dead", "list"],
        &["queue", "stats", "--json"],
    ] {
        let status = std::process::Command::new(crate::support::gateway::BIN)
            .args(args)
            .arg("-c")
            .arg(&gw.config)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(1), "{args:?}");
    }
}

/// A broker that accepts the connection and drops it at once: the backoff keeps growing
/// (a CONNACK alone does not reset it), so the gateway does not storm it. With backoff_min
/// 100ms the five waits between six connections take at least 50 + 100 + 200 + 400 + 500
/// ms (jitter takes off up to half); reset at every CONNACK they take 0.25 to 0.5 s.
#[test]
fn the_backoff_grows_while_the_broker_keeps_dropping_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = FakeBroker::start_flapping();
    let config = base_config(dir.path(), "gwf", &broker.url(), "")
        + "[[synthetic]]\nname = \"s\"\nrate = 10.0\nfields = [\"t\"]\n\
           topic = \"p/{gateway}/{input}\"\nqos = 1\n";
    let mut gw = Gateway::new(dir.path(), &config);
    gw.start();
    wait_until("the first connection", LONG, || broker.connections() >= 1);
    let start = Instant::now();
    let first = broker.connections();
    wait_until("five more connections", LONG, || {
        broker.connections() >= first + 5
    });
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1100),
        "five reconnects in {took:?}: the backoff did not grow"
    );
    let log = gw.log();
    assert_eq!(
        log.matches("accepts the connection and then drops it")
            .count(),
        1,
        "flapping is logged once per episode: {log}"
    );
}

/// `[mqtt.batch] max_readings = 10000` with 5 fields, which `check` accepts, makes batches
/// of about 1.3 MB, above the 1 MiB the gateway hands to its MQTT client: they leave cut in
/// parts that fit, and every reading arrives.
#[test]
fn batches_larger_than_the_client_takes_are_cut_to_fit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&dir.path().join("broker"));
    let sub = crate::support::mqtt5::Sub5::start(broker.port, "big/#", "t-bigbatch");
    let config = base_config(dir.path(), "gwb", &broker.url(), "")
        + "[mqtt.batch]\nmax_readings = 10000\nmax_delay = \"2s\"\n\n\
           [queue]\ncommit_every = 1000\ncommit_linger = \"20ms\"\n\n\
           [[synthetic]]\nname = \"s\"\nrate = 20000.0\ncount = 12000\n\
           fields = [\"temperature\", \"humidity\", \"pressure\", \"battery\", \"rssi\"]\n\
           topic = \"big/{gateway}/{input}\"\nqos = 1\n";
    let mut gw = Gateway::new(dir.path(), &config);
    gw.start();
    wait_until("12,000 readings arrive", LONG, || {
        sub.readings("big/").len() >= 12_000
    });
    let sizes: Vec<usize> = sub.messages().iter().map(|m| m.payload.len()).collect();
    assert!(
        sizes.iter().all(|s| *s < 1 << 20),
        "message sizes {sizes:?}"
    );
    assert!(
        sizes.iter().any(|s| *s > 512 << 10),
        "batches are cut no smaller than needed: {sizes:?}"
    );
    assert_eq!(stat(&gw, "dead"), 0);
}

/// rumqttc records `Outgoing::Publish` before it writes a packet. A broker that stops
/// reading makes a write time out (FlushTimeout) with that event still recorded; unless the
/// uplink forgets it, it is handed out after the next CONNACK and matched to the birth
/// message, and every request after it to the wrong packet id ("Lost track of packet ids"),
/// where a PUBACK could confirm the wrong row.
#[test]
fn an_event_recorded_for_a_write_that_failed_is_not_matched_after_the_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let broker = FakeBroker::start("#");
    let mut pty = Pty::open();
    let config = base_config(dir.path(), "gws", &broker.url(), "ack_timeout = \"10m\"\n")
        + &format!(
            "[queue]\ncommit_every = 50\ncommit_linger = \"20ms\"\n\n\
             [[serial]]\nname = \"big\"\ndevice = \"{}\"\nbaud = 9600\nformat = \"raw\"\n\
             max_line = 1048576\ntopic = \"s/{{gateway}}/{{input}}\"\nqos = 1\n",
            pty.path.display()
        );
    let mut gw = Gateway::new(dir.path(), &config);
    gw.start();
    gw.wait_log("Connected to the broker", LONG);
    broker.stall();
    // 100 KB lines until the socket buffers are full and a flush times out (2 s).
    let mut written = 0;
    let deadline = Instant::now() + LONG;
    while !gw.log().contains("Connection to the broker lost") {
        assert!(Instant::now() < deadline, "no flush timed out");
        pty.line(&format!("{written:06}{}", "x".repeat(100_000)));
        written += 1;
        if written % 10 == 0 {
            wait_until("the gateway reads the lines", LONG, || {
                stat(&gw, "pending") >= written as u64 - 10
            });
        }
    }
    broker.drop_connection();
    let delivered = || {
        broker
            .received()
            .iter()
            .filter(|r| r.topic == "s/gws/big")
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.payload).ok())
            .filter_map(|v| v["value"].as_str().map(|s| s[..6].to_string()))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    wait_until("every line is delivered after the reconnect", LONG, || {
        delivered() == written && stat(&gw, "pending") == 0
    });
    let log = gw.log();
    assert!(!log.contains("Lost track of packet ids"), "{log}");
    assert!(!log.contains("collision"), "{log}");
}

/// Mosquitto's `message_size_limit` is not in its CONNACK; under MQTT 5 it answers a larger
/// publish with PUBACK 0x95. A batch refused so is sent again in smaller parts, not
/// dead-lettered; only a single reading larger than the limit becomes a dead letter.
#[test]
fn a_batch_refused_as_too_large_is_cut_and_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_with(
        &dir.path().join("broker"),
        crate::support::free_port(),
        "message_size_limit 1500\n",
    );
    let sub = crate::support::mqtt5::Sub5::start(broker.port, "site/#", "t-0x95");
    let mut pty = Pty::open();
    let mut gw = Gateway::new(
        dir.path(),
        &serial_config(
            dir.path(),
            &broker.url(),
            &pty,
            "protocol = \"5\"\n",
            "[mqtt.batch]\nmax_readings = 100\nmax_delay = \"300ms\"\n\n",
        )
        .replace("keep_alive = \"2s\"", "keep_alive = \"5s\""),
    );
    gw.start();
    gw.wait_log("Connected to the broker", LONG);
    feed(&mut pty, 0, 200, None);
    pty.line(&format!(
        "{{\"n\": 9999, \"note\": \"{}\"}}",
        "x".repeat(2000)
    ));
    wait_until("all 200 small readings arrive", LONG, || {
        let mut n: Vec<i64> = sub
            .readings("site/")
            .iter()
            .filter_map(|(v, _)| v["n"].as_i64())
            .collect();
        n.sort();
        n.dedup();
        n == (0..200).collect::<Vec<_>>()
    });
    wait_until("the large one is a dead letter", LONG, || {
        stat(&gw, "dead") == 1 && stat(&gw, "pending") == 0
    });
    assert!(
        gw.log().contains("sending it again in smaller parts"),
        "{}",
        gw.log()
    );
}
