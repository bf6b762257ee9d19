//! The durability contract against a real Mosquitto: broker restart, SIGKILL of the gateway
//! (with the broker down, and while draining), and a half-open link found by keep-alive.
//! Each test feeds numbered readings through a pseudo-terminal and checks, by number, that
//! every committed reading reaches a subscriber and that the queue ends empty.

use crate::support::broker::Broker;
use crate::support::gateway::{base_config, Gateway};
use crate::support::proxy::Proxy;
use crate::support::pty::Pty;
use crate::support::subscriber::Subscriber;
use crate::support::wait_until;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn serial_config(dir: &Path, url: &str, pty: &Pty) -> String {
    base_config(dir, "gw1", url, "")
        + &format!(
            "[queue]\ncommit_every = 50\ncommit_linger = \"50ms\"\n\n\
             [[serial]]\nname = \"wx\"\ndevice = \"{}\"\nbaud = 9600\nformat = \"json\"\n\
             topic = \"site/{{gateway}}/{{input}}\"\nqos = 1\nreopen_min = \"50ms\"\nreopen_max = \"200ms\"\n",
            pty.path.display()
        )
}

/// Writes readings `range` to the pty, `per_sec` a second, from a thread.
fn write_readings(
    pty: &Pty,
    range: std::ops::Range<u64>,
    per_sec: u64,
) -> std::thread::JoinHandle<()> {
    let mut w = pty.writer();
    std::thread::spawn(move || {
        let pause = Duration::from_micros(1_000_000 / per_sec);
        for n in range {
            writeln!(w, "{{\"seq\": {n}, \"temp\": {}.5}}", n % 40).unwrap();
            // Paces the sensor; nothing waits on this for correctness.
            std::thread::sleep(pause);
        }
    })
}

/// The sensor sequence numbers in payloads, with how often each was seen.
fn seqs<'a>(payloads: impl Iterator<Item = &'a str>) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for p in payloads {
        let v: serde_json::Value =
            serde_json::from_str(p).unwrap_or_else(|e| panic!("payload {p:?}: {e}"));
        *m.entry(v["seq"].as_u64().expect("seq")).or_insert(0) += 1;
    }
    m
}

fn delivered(sub: &Subscriber, topic: &str) -> HashMap<u64, usize> {
    let msgs = sub.messages();
    seqs(
        msgs.iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p.as_str()),
    )
}

fn queued(gw: &Gateway) -> BTreeSet<u64> {
    gw.export()
        .iter()
        .map(|m| {
            let p: serde_json::Value =
                serde_json::from_str(m["payload"].as_str().unwrap()).unwrap();
            p["seq"].as_u64().unwrap()
        })
        .collect()
}

fn duplicates(d: &HashMap<u64, usize>) -> usize {
    d.values().map(|n| n - 1).sum()
}

#[test]
fn broker_restart_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_in(&tmp.path().join("broker"));
    let sub = Subscriber::start(broker.port, "site/#", "restart-sub");
    let pty = Pty::open();
    let mut gw = Gateway::new(tmp.path(), &serial_config(tmp.path(), &broker.url(), &pty));
    gw.start();
    gw.wait_log("Serial port open", LONG);

    const N: u64 = 600;
    let writer = write_readings(&pty, 0..N, 200);
    wait_until("100 readings delivered", LONG, || {
        delivered(&sub, "site/gw1/wx").len() >= 100
    });
    broker.stop();
    wait_until("the gateway queues while the broker is down", LONG, || {
        gw.pending() >= 100
    });
    broker.start();
    writer.join().unwrap();

    wait_until("every reading delivered", LONG, || {
        delivered(&sub, "site/gw1/wx").len() as u64 == N
    });
    wait_until("the queue is empty", LONG, || gw.pending() == 0);
    let d = delivered(&sub, "site/gw1/wx");
    assert_eq!(d.keys().copied().collect::<BTreeSet<_>>(), (0..N).collect());
    // Only what was in flight at the outage may come twice: at most three windows of 64
    // (in flight, being deleted, acked meanwhile; see uplink::pump), one outage.
    assert!(duplicates(&d) <= 192, "{} duplicates", duplicates(&d));
    let (status, took) = gw.terminate(Duration::from_secs(10));
    assert!(status.expect("exits").success());
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}

#[test]
fn sigkill_loses_no_committed_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let broker_dir = tmp.path().join("broker");
    let port = crate::support::free_port();
    let pty = Pty::open();
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut gw = Gateway::new(tmp.path(), &serial_config(tmp.path(), &url, &pty));

    // 1. No broker: readings pile up in the queue; kill -9 in the middle of the stream.
    gw.start();
    gw.wait_log("Serial port open", LONG);
    let writer = write_readings(&pty, 0..400, 200);
    wait_until("150 readings committed", LONG, || gw.pending() >= 150);
    gw.kill();
    let committed_before_kill = queued(&gw);
    assert!(committed_before_kill.len() >= 150);

    // 2. Restart; the rest of the stream (buffered in the terminal meanwhile) arrives.
    gw.start();
    writer.join().unwrap();
    let writer = write_readings(&pty, 400..500, 500);
    writer.join().unwrap();
    wait_until("reading 499 committed", LONG, || queued(&gw).contains(&499));

    // 3. The broker comes up and the backlog drains; kill -9 again while draining. The
    // gateway is held (SIGSTOP) until the subscriber is in: what the broker confirms
    // before that would never reach it.
    let gw_pid = nix::unistd::Pid::from_raw(gw.pid() as i32);
    nix::sys::signal::kill(gw_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let mut broker = Broker::start_on(&broker_dir, port);
    let sub = Subscriber::start(port, "site/#", "kill-sub");
    nix::sys::signal::kill(gw_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    wait_until("the drain has started", LONG, || {
        !delivered(&sub, "site/gw1/wx").is_empty()
    });
    gw.kill();
    let committed_at_second_kill = queued(&gw);

    // 4. Restart once more, send a last batch, and let everything drain.
    gw.start();
    gw.wait_log("Serial port open", LONG);
    write_readings(&pty, 500..600, 500).join().unwrap();
    wait_until("reading 599 delivered", LONG, || {
        delivered(&sub, "site/gw1/wx").contains_key(&599)
    });
    wait_until("the queue is empty", LONG, || gw.pending() == 0);

    let d = delivered(&sub, "site/gw1/wx");
    let got: BTreeSet<u64> = d.keys().copied().collect();
    let missing: Vec<_> = committed_before_kill.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "committed before the first kill, never delivered: {missing:?}"
    );
    let missing: Vec<_> = committed_at_second_kill.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "pending at the second kill, never delivered: {missing:?}"
    );
    assert!(
        (500..600).all(|n| got.contains(&n)),
        "readings after the last restart are all delivered"
    );
    assert!(
        (400..500).all(|n| got.contains(&n)),
        "readings sent while running are all delivered"
    );
    // What a kill can lose is only what was read and not yet committed (one linger's worth).
    let lost = (0..600).filter(|n| !got.contains(n)).count();
    assert!(lost <= 40, "{lost} readings lost around the kills");
    // One kill while draining: at most three windows of 64 (see uplink::pump).
    assert!(duplicates(&d) <= 192, "{} duplicates", duplicates(&d));
    broker.stop();
}

#[test]
fn half_open_link_is_detected_by_keep_alive() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&tmp.path().join("broker"));
    let proxy = Proxy::start(broker.port);
    let sub = Subscriber::start(broker.port, "site/#", "halfopen-sub");
    let pty = Pty::open();
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let mut gw = Gateway::new(tmp.path(), &serial_config(tmp.path(), &url, &pty));
    gw.start();
    gw.wait_log("Connected to the broker", LONG);
    gw.wait_log("Serial port open", LONG);

    const N: u64 = 300;
    let writer = write_readings(&pty, 0..N, 50);
    wait_until("50 readings delivered", LONG, || {
        delivered(&sub, "site/gw1/wx").len() >= 50
    });
    proxy.black_hole();
    let delivered_at_hole = delivered(&sub, "site/gw1/wx").len();
    wait_until("the gateway queues behind the dead link", LONG, || {
        gw.pending() >= 40
    });
    assert!(
        delivered(&sub, "site/gw1/wx").len() <= delivered_at_hole + 1,
        "nothing passes a black hole"
    );
    proxy.pass();
    writer.join().unwrap();

    wait_until("every reading delivered", LONG, || {
        delivered(&sub, "site/gw1/wx").len() as u64 == N
    });
    wait_until("the queue is empty", LONG, || gw.pending() == 0);
    assert!(proxy.accepted() >= 2, "the gateway reconnected");
    // The proxy never closed the black-holed connection: no FIN or RST told the gateway.
    // Its missing PINGRESP did.
    gw.wait_log("Last pingreq isn't acked", Duration::from_secs(1));
    let d = delivered(&sub, "site/gw1/wx");
    assert!(duplicates(&d) <= 192, "{} duplicates", duplicates(&d));
}

/// A bad sector under a queue that was closed cleanly: the start skips the integrity check,
/// so the damage is met later; the gateway then stops with an error instead of retrying
/// forever, and its restart checks the file and moves it aside.
#[test]
fn damage_under_a_cleanly_closed_queue_stops_the_gateway_and_the_restart_checks_it() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{}", crate::support::free_port());
    let config = base_config(tmp.path(), "gw1", &url, "")
        + "[queue]\ncommit_every = 500\n\n\
           [[synthetic]]\nname = \"wx\"\nrate = 5000.0\n\
           fields = [\"temperature\", \"humidity\", \"pressure\"]\n\
           topic = \"site/{gateway}/{input}\"\nqos = 1\ncount = 2000\n";
    let mut gw = Gateway::new(tmp.path(), &config);
    gw.start();
    wait_until("2000 readings queued", LONG, || gw.pending() == 2000);
    let (status, _) = gw.terminate(LONG);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    crate::support::damage_a_middle_page(&tmp.path().join("state/queue.db"));

    gw.start();
    let status = gw.wait_stopped(LONG);
    assert!(
        status.is_some_and(|s| !s.success()),
        "the gateway stops with an error: {status:?}"
    );
    assert!(gw.log().contains("The queue file is damaged"));
    assert!(
        !gw.log().contains("moved it aside"),
        "not checked at the start"
    );

    gw.start();
    gw.wait_log("moved it aside", LONG);
    let aside = std::fs::read_dir(tmp.path().join("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("queue.db.corrupt-")
        });
    assert!(aside, "the damaged file is kept aside");
    wait_until("the fresh queue takes readings", LONG, || gw.pending() > 0);
    assert!(gw.is_running());
}

/// kill -9 while readings leave from memory before their commit (a linger of 2 s, so most
/// are acknowledged before any commit and never written): nothing committed is lost; a
/// reading missing at the end was read within one linger before the kill; duplicates stay
/// within the bound; and the sequence numbers after the restart are above every one handed
/// out before, written or not.
#[test]
fn sigkill_with_readings_in_flight_from_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&tmp.path().join("broker"));
    let sub = Subscriber::start(broker.port, "site/#", "live-kill-sub");
    let pty = Pty::open();
    let config = serial_config(tmp.path(), &broker.url(), &pty)
        .replace("commit_every = 50", "commit_every = 1000")
        .replace("commit_linger = \"50ms\"", "commit_linger = \"2s\"");
    let mut gw = Gateway::new(tmp.path(), &config);
    gw.start();
    gw.wait_log("Connected to the broker", LONG);
    gw.wait_log("Serial port open", LONG);
    let writer = write_readings(&pty, 0..300, 100);
    wait_until("150 readings delivered", LONG, || {
        delivered(&sub, "site/gw1/wx").len() >= 150
    });
    gw.kill();
    let before = delivered(&sub, "site/gw1/wx");
    let last_before = before.keys().max().copied().unwrap();
    let committed = queued(&gw);
    writer.join().unwrap();

    gw.start();
    gw.wait_log("Serial port open", LONG);
    write_readings(&pty, 300..350, 100).join().unwrap();
    wait_until("reading 349 delivered", LONG, || {
        delivered(&sub, "site/gw1/wx").contains_key(&349)
    });
    wait_until("the queue is empty", LONG, || gw.pending() == 0);

    let d = delivered(&sub, "site/gw1/wx");
    let lost: Vec<_> = committed.iter().filter(|n| !d.contains_key(n)).collect();
    assert!(lost.is_empty(), "committed, never delivered: {lost:?}");
    let missing: Vec<u64> = (0..350).filter(|n| !d.contains_key(n)).collect();
    // At 100 readings a second, one linger is 200 readings read before the kill.
    assert!(
        missing.iter().all(|&n| n + 200 > last_before && n <= last_before + 200),
        "missing beyond one linger of the kill (last delivered before it: {last_before}): {missing:?}"
    );
    assert!(duplicates(&d) <= 192, "{} duplicates", duplicates(&d));
    // One sequence number, one reading: none handed out again after the restart.
    let mut by_seq: HashMap<u64, u64> = HashMap::new();
    for (t, p) in sub.messages() {
        if t != "site/gw1/wx" {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        let (seq, n) = (v["_seq"].as_u64().unwrap(), v["seq"].as_u64().unwrap());
        let first = *by_seq.entry(seq).or_insert(n);
        assert_eq!(first, n, "_seq {seq} was given to readings {first} and {n}");
    }
    let (status, _) = gw.terminate(LONG);
    assert!(status.expect("exits").success());
}
