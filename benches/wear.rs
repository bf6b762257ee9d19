//! SD-card wear and latency, as a user of a Pi would measure them: the gateway binary on a
//! real filesystem with default `[queue]` settings, one synthetic input of three fields
//! (about 80-byte payloads), a local Mosquitto, and for each load:
//! - bytes written per reading: the gateway's `/proc/PID/io` `write_bytes` over a window,
//!   divided by the readings its input made in that window;
//! - fsyncs per reading: `fsync`/`fdatasync` calls in the window, counted by strace with a
//!   seccomp filter (only those calls stop the process), when strace is installed;
//! - latency: from a reading's stamp (`_ts`) to its arrival at a subscriber, p50 and p99.
//!
//! Loads: 1 and 100 readings/s, with the link up and with no broker listening.
//! `cargo bench --bench wear [-- --window SECS] [--quick]`. With
//! `SENSORGATE_BENCH_BASELINE_BIN=<binary>` (a build of an earlier commit) that binary runs
//! the same loads in the same session, alternating with this one, and ratios are printed.
//! The state directory is under the target directory: `write_bytes` is zero on a tmpfs.

#[path = "common/mod.rs"]
mod common;

use common::broker::Broker;
use common::{median, quick};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Messages a subscriber received: (arrival ms, the reading's `_ts`).
type Arrivals = Arc<Mutex<Vec<(i64, i64)>>>;

/// A subscriber to `topic`; it stops when the client is dropped.
fn subscribe(port: u16, topic: &str) -> (rumqttc::Client, Arrivals) {
    let got: Arrivals = Arc::default();
    let id = format!("wear-sub-{}", topic.replace('/', "-"));
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = rumqttc::Client::new(opts, 1000);
    client.subscribe(topic, rumqttc::QoS::AtLeastOnce).unwrap();
    let g = got.clone();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let at = now_ms();
                    let ts = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        .ok()
                        .and_then(|v| v["_ts"].as_i64());
                    if let Some(ts) = ts {
                        g.lock().unwrap().push((at, ts));
                    }
                }
                Ok(_) => {}
                Err(_) => return, // the client was dropped: the run is over
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    // The subscription is in place once a retained probe comes back.
    let probe = format!("{}/probe", topic.trim_end_matches("/#"));
    while got.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the subscriber did not connect");
        let _ = client.publish(
            &probe,
            rumqttc::QoS::AtMostOnce,
            false,
            format!("{{\"_ts\":{}}}", now_ms()),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    got.lock().unwrap().clear();
    (client, got)
}

/// One load: readings per second, and whether a broker listens.
#[derive(Debug, Clone, Copy)]
struct Load {
    rate: f64,
    up: bool,
}

impl Load {
    fn name(&self) -> String {
        format!(
            "{} reading{}/s, link {}",
            self.rate,
            if self.rate == 1.0 { "" } else { "s" },
            if self.up { "up" } else { "down" }
        )
    }
}

#[derive(Debug, Clone)]
struct Figures {
    bytes_per_reading: f64,
    fsyncs_per_reading: Option<f64>,
    /// Latencies in ms of the readings stamped in the window (link up).
    latencies: Vec<i64>,
}

fn percentile(v: &[i64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1] as f64
}

fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The gateway's pid: the child itself, or the traced process under strace.
fn gateway_pid(child: &Child, traced: bool) -> u32 {
    if !traced {
        return child.id();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "strace did not start the gateway"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of an strace log (`-ttt`) with an fsync or fdatasync between `from` and `to` (s).
fn fsyncs(log: &Path, from: f64, to: f64) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .filter(|t| (from..to).contains(t))
        .count() as u64
}

fn run_load(bin: &Path, work: &Path, broker: &Broker, load: Load, window: Duration) -> Figures {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).unwrap();
    let topic = format!("wear/{}", work.file_name().unwrap().to_string_lossy());
    let port = if load.up {
        broker.port
    } else {
        // Nothing listens there.
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let config = format!(
        "[gateway]\nid = \"wear\"\nstate_dir = \"{}\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n\n\
         [[synthetic]]\nname = \"station\"\nrate = {}\nfields = [\"temperature\", \"humidity\", \"pressure\"]\n\
         topic = \"{topic}\"\nqos = 1\n",
        work.join("state").display(),
        load.rate
    );
    let path = work.join("sensorgate.toml");
    std::fs::write(&path, config).unwrap();
    let (subscriber, arrivals) = match load.up {
        true => {
            let (c, a) = subscribe(broker.port, &format!("{topic}/#"));
            (Some(c), Some(a))
        }
        false => (None, None),
    };
    let trace = work.join("strace.log");
    let traced = Command::new("strace").arg("-V").output().is_ok()
        && std::env::var_os("SENSORGATE_BENCH_NO_STRACE").is_none();
    let mut cmd = if traced {
        let mut c = Command::new("strace");
        c.args([
            "-f",
            "-qq",
            "--seccomp-bpf",
            "-e",
            "trace=fsync,fdatasync",
            "-ttt",
            "-o",
        ])
        .arg(&trace)
        .arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let mut child = cmd
        .args(["run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway");
    let pid = gateway_pid(&child, traced);
    // Warm up: the queue exists and, with the link up, readings arrive.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = match &arrivals {
            Some(a) => a.lock().unwrap().len() >= 2,
            None => work.join("state/queue.db").exists(),
        };
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (w0, t0) = (write_bytes(pid), now_ms());
    std::thread::sleep(window);
    let (w1, t1) = (write_bytes(pid), now_ms());
    // Readings stamped in the window get time to arrive before the count.
    std::thread::sleep(Duration::from_millis(1500));
    let gateway = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(gateway, nix::sys::signal::Signal::SIGTERM);
    // A clean stop takes well under a second. Under strace a SIGTERM now and then goes
    // unanswered (seen with this build and earlier ones, never without strace): it is sent
    // again after 5 s, and the gateway killed after 15.
    let sent = Instant::now();
    let mut again = false;
    while child.try_wait().ok().flatten().is_none() {
        if !again && sent.elapsed() > Duration::from_secs(5) {
            eprintln!("wear: no stop 5 s after SIGTERM; sending it again");
            let _ = nix::sys::signal::kill(gateway, nix::sys::signal::Signal::SIGTERM);
            again = true;
        }
        if sent.elapsed() > Duration::from_secs(15) {
            eprintln!("wear: the gateway did not stop within 15 s of SIGTERM; killing it");
            let _ = nix::sys::signal::kill(gateway, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(subscriber);
    let readings = load.rate * (t1 - t0) as f64 / 1000.0;
    let latencies = arrivals
        .map(|a| {
            a.lock()
                .unwrap()
                .iter()
                .filter(|(_, ts)| (t0..t1).contains(ts))
                .map(|(at, ts)| at - ts)
                .collect()
        })
        .unwrap_or_default();
    Figures {
        bytes_per_reading: (w1 - w0) as f64 / readings,
        fsyncs_per_reading: traced
            .then(|| fsyncs(&trace, t0 as f64 / 1000.0, t1 as f64 / 1000.0) as f64 / readings),
        latencies,
    }
}

fn show(f: &Figures) -> String {
    let mut s = format!("{:.0} B written per reading", f.bytes_per_reading);
    match f.fsyncs_per_reading {
        Some(n) => s += &format!(", {n:.2} fsyncs per reading"),
        None => s += ", fsyncs not counted (no strace)",
    }
    if !f.latencies.is_empty() {
        s += &format!(
            ", latency p50 {:.0} ms, p99 {:.0} ms, mean {:.0} ms ({} readings)",
            percentile(&f.latencies, 0.5),
            percentile(&f.latencies, 0.99),
            f.latencies.iter().sum::<i64>() as f64 / f.latencies.len() as f64,
            f.latencies.len()
        );
    }
    s
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let window = args
        .iter()
        .position(|a| a == "--window")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(if quick() { 10 } else { 60 }));
    let runs = if quick() { 1 } else { 2 };
    let new = PathBuf::from(env!("CARGO_BIN_EXE_sensorgate"));
    let baseline = std::env::var_os("SENSORGATE_BENCH_BASELINE_BIN").map(PathBuf::from);
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wear");
    let broker_dir = root.join("broker");
    std::fs::create_dir_all(&broker_dir).unwrap();
    let broker = Broker::start_bare(&broker_dir);
    println!(
        "wear: {}-second windows, {runs} run(s) per load and binary, state under {}",
        window.as_secs(),
        root.display()
    );
    let loads = [
        Load {
            rate: 1.0,
            up: true,
        },
        Load {
            rate: 1.0,
            up: false,
        },
        Load {
            rate: 100.0,
            up: true,
        },
        Load {
            rate: 100.0,
            up: false,
        },
    ];
    for load in loads {
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let f = run_load(&new, &root.join(format!("new-{i}")), &broker, load, window);
            println!("  {} run {i}: {}", load.name(), show(&f));
            mine.push(f);
            if let Some(bin) = &baseline {
                let f = run_load(bin, &root.join(format!("base-{i}")), &broker, load, window);
                println!("  {} run {i}, baseline binary: {}", load.name(), show(&f));
                theirs.push(f);
            }
        }
        let merged = |v: &[Figures]| Figures {
            bytes_per_reading: median(v.iter().map(|f| f.bytes_per_reading).collect()),
            fsyncs_per_reading: v
                .iter()
                .map(|f| f.fsyncs_per_reading)
                .collect::<Option<Vec<f64>>>()
                .map(median),
            latencies: v.iter().flat_map(|f| f.latencies.clone()).collect(),
        };
        let m = merged(&mine);
        println!("wear: {}: {}", load.name(), show(&m));
        if !theirs.is_empty() {
            let b = merged(&theirs);
            println!("wear: {}, baseline binary: {}", load.name(), show(&b));
            let mut ratio = format!(
                "wear: {}: ratio new/baseline: bytes per reading {:.3}",
                load.name(),
                m.bytes_per_reading / b.bytes_per_reading
            );
            if let (Some(x), Some(y)) = (m.fsyncs_per_reading, b.fsyncs_per_reading) {
                ratio += &format!(", fsyncs {:.2}", x / y);
            }
            if !m.latencies.is_empty() && !b.latencies.is_empty() {
                ratio += &format!(
                    ", latency p50 {:.3}, p99 {:.3}",
                    percentile(&m.latencies, 0.5) / percentile(&b.latencies, 0.5),
                    percentile(&m.latencies, 0.99) / percentile(&b.latencies, 0.99)
                );
            }
            println!("{ratio}");
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
