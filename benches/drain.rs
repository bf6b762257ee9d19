//! Drain and memory: the real `sensorgate` binary delivering a queued backlog at QoS 1 to a
//! local Mosquitto, against `mosquitto_pub -q 1 -l` sending the same messages to the same
//! broker, in the same run; and the peak RSS of a gateway holding (and then draining) a
//! backlog of a million messages.
//!
//! `cargo bench --bench drain` (add `-- --quick` for a smoke run).

mod common;

use common::{median, rss_kb, Mosquitto};
use sensorgate::config::{Config, Qos, WhenFull};
use sensorgate::mapping::{Mapper, NewMessage};
use sensorgate::queue::{read_stats, Queue, QueueOptions};
use sensorgate::reading::Stamp;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sensorgate");

/// The messages the mapper makes for `n` readings of 3 fields (JSON payloads, ~110 bytes).
fn messages(n: usize) -> Vec<NewMessage> {
    let cfg = Config::parse(
        Path::new("bench.toml"),
        "[gateway]\nid = \"bench\"\nstate_dir = \"/tmp\"\n[mqtt]\nurl = \"mqtt://h\"\n\
         [[synthetic]]\nname = \"s\"\nrate = 1.0\nfields = [\"t\"]\ntopic = \"site/{gateway}/{input}\"\n",
    )
    .unwrap();
    let mapper = Mapper::new(&cfg);
    let stamp = Stamp::now();
    let mut out = Vec::with_capacity(n);
    let mut seq = 1;
    for i in 0..n {
        let r = common::reading(i, stamp);
        mapper.map(&r, &mut seq, &mut out);
    }
    debug_assert!(out.iter().all(|m| m.qos == Qos::AtLeastOnce));
    out
}

fn prefill(state: &Path, msgs: &[NewMessage]) {
    let opts = QueueOptions {
        max_size: u64::MAX,
        when_full: WhenFull::DropOldest,
        synchronous_full: false,
    };
    let mut q = Queue::open(&state.join("queue.db"), opts).unwrap();
    for chunk in msgs.chunks(10_000) {
        q.append(chunk).unwrap();
    }
}

fn gateway_config(dir: &Path, url: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\nhealth_interval = \"0s\"\n\
             [mqtt]\nurl = \"{url}\"\nkeep_alive = \"30s\"\nbackoff_min = \"100ms\"\nbackoff_max = \"1s\"\n{extra}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn spawn_gateway(config: &Path) -> std::process::Child {
    Command::new(BIN)
        .arg("run")
        .arg("-c")
        .arg(config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs the gateway on a prefilled queue until it is empty. Returns (messages/s, peak RSS kB).
fn gateway_drain(broker: &Mosquitto, msgs: &[NewMessage]) -> (f64, u64) {
    gateway_drain_with(broker, msgs, "")
}

/// The same, with more config (e.g. `[mqtt.batch]`). Rates are queue rows (readings) per second.
fn gateway_drain_with(broker: &Mosquitto, msgs: &[NewMessage], extra: &str) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    prefill(&dir.path().join("state"), msgs);
    let cfg = gateway_config(
        dir.path(),
        &format!("mqtt://127.0.0.1:{}", broker.port),
        extra,
    );
    let db = dir.path().join("state/queue.db");
    let t0 = Instant::now();
    let mut child = spawn_gateway(&cfg);
    let mut peak = 0;
    // A cheap probe (not count(*)), so that watching costs the gateway no CPU.
    let probe =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        peak = peak.max(rss_kb(child.id()).1);
        let empty: bool = probe
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM outbox)", [], |r| r.get(0))
            .unwrap_or(false);
        if empty {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "drain took too long"
        );
    }
    let secs = t0.elapsed().as_secs_f64();
    peak = peak.max(rss_kb(child.id()).1);
    let cpu = common::cpu_seconds(child.id());
    eprintln!(
        "    (gateway: {secs:.2} s wall, {cpu:.2} s CPU, {:.2} us CPU per reading)",
        cpu * 1e6 / msgs.len() as f64
    );
    let _ = child.kill();
    let _ = child.wait();
    (msgs.len() as f64 / secs, peak)
}

/// `mosquitto_pub -q 1 -l` with the same payloads, one per line.
fn mosquitto_pub(broker: &Mosquitto, msgs: &[NewMessage]) -> f64 {
    let mut input = Vec::with_capacity(msgs.len() * 120);
    for m in msgs {
        input.extend_from_slice(&m.payload);
        input.push(b'\n');
    }
    let t0 = Instant::now();
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-q",
            "1",
            "-l",
            "-t",
            "site/bench/s",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    assert!(child.wait().unwrap().success());
    msgs.len() as f64 / t0.elapsed().as_secs_f64()
}

/// A bare rumqttc client (no queue, no correlation) publishing the same messages at QoS 1
/// with the same in-flight limit, until the broker acknowledged the last one: the floor that
/// the client library itself sets.
fn bare_rumqttc(broker: &Mosquitto, msgs: &[NewMessage]) -> f64 {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let payloads: Vec<Vec<u8>> = msgs.iter().map(|m| m.payload.clone()).collect();
    let n = payloads.len();
    rt.block_on(async move {
        let mut o = MqttOptions::new("bare-rumqttc", "127.0.0.1", broker.port);
        o.set_inflight(66);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(o, 128);
        let t0 = Instant::now();
        tokio::spawn(async move {
            for p in payloads {
                client
                    .publish("site/bench/s", QoS::AtLeastOnce, false, p)
                    .await
                    .unwrap();
            }
        });
        let mut acked = 0;
        while acked < n {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                acked += 1;
            }
        }
        n as f64 / t0.elapsed().as_secs_f64()
    })
}

/// Peak RSS while the gateway holds a backlog (no broker) and takes new readings.
fn holding(backlog: &[NewMessage], seconds: u64) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    prefill(&dir.path().join("state"), backlog);
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = gateway_config(
        dir.path(),
        &format!("mqtt://127.0.0.1:{nobody}"),
        "[[synthetic]]\nname = \"s\"\nrate = 2000.0\nfields = [\"temperature\", \"humidity\", \"pressure\"]\ntopic = \"site/{gateway}/{input}\"\n",
    );
    let mut child = spawn_gateway(&cfg);
    let t0 = Instant::now();
    let mut peak = 0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(50));
        peak = peak.max(rss_kb(child.id()).1);
    }
    let stats = read_stats(&dir.path().join("state/queue.db"), 0).unwrap();
    assert!(
        stats.pending as usize > backlog.len(),
        "the backlog grew while held"
    );
    let _ = child.kill();
    let _ = child.wait();
    peak
}

fn main() {
    let quick = common::quick();
    let (n, runs, big) = if quick {
        (20_000, 1, 100_000)
    } else {
        (200_000, 3, 1_000_000)
    };
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(tmp.path());
    let msgs = messages(n);
    println!(
        "drain: {n} QoS 1 messages of ~{} bytes to a local mosquitto, {runs} alternating runs",
        msgs[0].payload.len()
    );
    let (mut g, mut p, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let (x, rss) = gateway_drain(&broker, &msgs);
        let y = mosquitto_pub(&broker, &msgs);
        let z = bare_rumqttc(&broker, &msgs);
        println!(
            "  run {i}: sensorgate {x:>8.0} msg/s (peak RSS {} MB)   mosquitto_pub {y:>8.0} msg/s   bare rumqttc {z:>8.0} msg/s   ratio {:.2}",
            rss / 1024,
            x / y
        );
        g.push(x);
        p.push(y);
        r.push(z);
    }
    let (g, p, r) = (median(g), median(p), median(r));
    println!("drain median: sensorgate {g:.0} msg/s, mosquitto_pub -q 1 -l {p:.0} msg/s, ratio {:.2} (target >= 0.50)", g / p);
    println!(
        "drain median: bare rumqttc loop {r:.0} msg/s; sensorgate / bare rumqttc {:.2}",
        g / r
    );

    let backlog = messages(big);
    let held = holding(&backlog, if quick { 3 } else { 10 });
    println!("memory: holding a {big}-message backlog while taking 2000 readings/s: peak RSS {:.1} MB (target < 30 MB)", held as f64 / 1024.0);
    let (rate, rss) = gateway_drain(&broker, &backlog);
    println!(
        "memory: draining the {big}-message backlog: {rate:.0} msg/s, peak RSS {:.1} MB",
        rss as f64 / 1024.0
    );

    // Replay with batches of 100 (issue 5): rows are still deleted only on PUBACK.
    for (what, batch) in [
        (
            "JSON arrays",
            "[mqtt.batch]\nmax_readings = 100\nmax_delay = \"1s\"\n",
        ),
        (
            "JSON arrays, zstd",
            "[mqtt.batch]\nmax_readings = 100\nmax_delay = \"1s\"\ncompression = \"zstd\"\n",
        ),
    ] {
        let (rate, rss) = gateway_drain_with(&broker, &backlog, batch);
        println!(
            "replay: {big}-reading backlog in batches of 100 ({what}): {rate:.0} readings/s, peak RSS {:.1} MB (target >= 2000000/s, < 20 MB)",
            rss as f64 / 1024.0
        );
    }
}
