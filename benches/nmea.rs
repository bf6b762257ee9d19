//! NMEA: the gateway binary's CPU time while 4 GPS receivers talk at 10 Hz, as a share of
//! one core (target: under 1%). Each receiver is a pseudo-terminal fed by a writer thread
//! with a real receiver's epochs (tests/data/nmea/neo-m8n.log, a u-blox NEO-M8N: GNRMC,
//! GNVTG, GNGGA, GNGSA x2, GPGSV x3 or 4, GLGSV x3, GNGLL; 12 or 13 sentences, about 800 bytes), ten
//! epochs a second; the gateway publishes to a local Mosquitto. CPU is utime + stime from
//! /proc/<pid>/stat over the window, after a warm-up.
//!
//! First, for scale: sentences per second through the decoder alone and through the whole
//! per-line path of the input (decode, filter, limiter, reading) on one core.
//!
//! Cases: `all` (every sentence published: 520 readings/s), `filter` (`sentences = ["GGA",
//! "RMC", "VTG"]`: 120/s), `limit` (every type, `min_interval = "1s"`: about 50/s), and
//! with `--case none` the floor: `sentences = ["ZDA"]`, which the log has none of (every line
//! read and checked, nothing published).
//! `cargo bench --bench nmea [-- --window SECS] [--case all|filter|limit|none] [--quick]`
//! (quick: a 10 s window). `SENSORGATE_BENCH_BIN` names another gateway binary to measure.

mod common;

use common::broker::Broker;
use common::gateway::Gateway;
use common::pty::Pty;
use common::subscriber::Subscriber;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECEIVERS: usize = 4;
const HZ: u32 = 10;

/// The epochs of the NEO-M8N log: each starts at a GNRMC, as the receiver's does.
fn epochs() -> Vec<Vec<u8>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nmea/neo-m8n.log");
    let text = std::fs::read_to_string(path).unwrap();
    let mut epochs: Vec<Vec<u8>> = Vec::new();
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with("$GNRMC") || epochs.is_empty() {
            epochs.push(Vec::new());
        }
        let e = epochs.last_mut().unwrap();
        e.extend_from_slice(line.as_bytes());
        e.extend_from_slice(b"\r\n");
    }
    epochs.retain(|e| e.windows(6).any(|w| w == b"$GNRMC")); // whole epochs only
    epochs
}

/// Sentences per second on one core: the decoder alone, then the NMEA input's whole
/// per-line path (decode, filter, limiter, the reading).
fn decode_rates(n: usize) -> (f64, f64) {
    use sensorgate::input::format::nmea::{decode, KindSet};
    use sensorgate::input::nmea::NmeaInput;
    let lines: Vec<String> = epochs()
        .concat()
        .split(|b| *b == b'\n')
        .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let t0 = Instant::now();
    let mut fields = 0;
    for line in lines.iter().cycle().take(n) {
        fields += decode(line).map_or(0, |s| s.fields.len());
    }
    let decode_rate = n as f64 / t0.elapsed().as_secs_f64();
    assert!(fields > n);
    let id = sensorgate::input::InputId {
        index: 0,
        name: Arc::from("gps"),
    };
    let metrics = sensorgate::metrics::Metrics::default();
    let mut input = NmeaInput::new(KindSet::ALL, Some(Duration::from_secs(1)));
    let t0 = Instant::now();
    let mut made = 0;
    for line in lines.iter().cycle().take(n) {
        let now = tokio::time::Instant::now();
        made += input.reading(&id, line.as_bytes(), &metrics, now).is_some() as usize;
    }
    assert!(made > 0);
    (decode_rate, n as f64 / t0.elapsed().as_secs_f64())
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn run(case: &str, window: f64) {
    let extra = match case {
        "all" => "",
        "filter" => "sentences = [\"GGA\", \"RMC\", \"VTG\"]\n",
        "limit" => "min_interval = \"1s\"\n",
        "none" => "sentences = [\"ZDA\"]\n", // the log has none: lines read, nothing published
        other => panic!("no case {other}: all, filter, limit or none"),
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Broker::start_bare(&d.join("broker"));
    let ptys: Vec<Pty> = (0..RECEIVERS).map(|_| Pty::open()).collect();
    let mut config = format!(
        "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\nhealth_interval = \"0s\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n",
        d.join("state").display(),
        broker.port
    );
    for (i, p) in ptys.iter().enumerate() {
        config += &format!(
            "[[serial]]\nname = \"gps{i}\"\ndevice = \"{}\"\nbaud = 115200\nformat = \"nmea\"\n\
             topic = \"nmea/{{gateway}}/{{input}}/{{sentence}}\"\n{extra}",
            p.path.display()
        );
    }
    let mut gw = Gateway::new(d, &config);
    if let Some(bin) = std::env::var_os("SENSORGATE_BENCH_BIN") {
        gw.bin = bin.into();
    }
    gw.env.push(("RUST_LOG", "info".into()));
    gw.start();
    let pid = gw.pid();
    gw.wait_log_count("Serial port open", RECEIVERS, Duration::from_secs(30));
    let sub = Subscriber::start(broker.port, "nmea/#", "nmea-bench");

    let epochs = Arc::new(epochs());
    let per_epoch: usize = epochs
        .iter()
        .map(|e| e.split(|b| *b == b'\n').count() - 1)
        .sum::<usize>()
        / epochs.len();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = ptys
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (mut w, epochs, stop) = (p.writer(), epochs.clone(), stop.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    w.write_all(&epochs[(n as usize + i) % epochs.len()])
                        .unwrap();
                    n += 1;
                    let next = start + Duration::from_secs(1) * n / HZ;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5)); // warm-up: the pipeline and the link settle
    let (cpu0, got0, t0) = (
        common::cpu_seconds(pid),
        sub.messages().len(),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(window)); // the measured window
    let cpu = common::cpu_seconds(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let got = sub.messages().len() - got0;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    println!(
        "case {case}: gateway CPU {:.3} s in {:.1} s = {:.2}% of one core ({RECEIVERS} receivers x {HZ} Hz x {per_epoch} sentences; {:.0} messages/s delivered)",
        cpu,
        wall,
        100.0 * cpu / wall,
        got as f64 / wall
    );
    let (rss, hwm) = common::rss_kb(pid);
    println!("case {case}: gateway RSS {rss} kB (peak {hwm} kB)");
    gw.terminate(Duration::from_secs(10));
}

fn main() {
    let window: f64 = arg("--window")
        .map(|w| w.parse().expect("--window SECS"))
        .unwrap_or(if common::quick() { 10.0 } else { 60.0 });
    let cases = match arg("--case") {
        Some(c) => vec![c],
        None => vec!["all".into(), "filter".into(), "limit".into()],
    };
    let (decode, input) = decode_rates(if common::quick() { 100_000 } else { 1_000_000 });
    println!("decode: {decode:.0} sentences/s on one core; decode + filter + limiter + reading: {input:.0}/s (NEO-M8N epochs)");
    for case in cases {
        run(&case, window);
    }
}
