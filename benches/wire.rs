//! Bytes on the wire: the real `sensorgate` binary sending synthetic readings of 3 fields
//! through the counting proxy of the tests (`tests/support/proxy.rs`) to a local Mosquitto,
//! once per uplink configuration ([`CASES`], one line each); and the idle cost of each link
//! profile's keep-alive ([`IDLE`]).
//!
//! `cargo bench --bench wire` (add `-- --quick` for a smoke run).
//!
//! Method:
//! - wire bytes = MQTT bytes in both directions + 40 bytes of TCP/IP headers per segment, a
//!   segment being one chunk one `read()` returned at the proxy (pure ACKs are not seen;
//!   segments that arrive together count once);
//! - a data run starts the gateway with a `[[synthetic]]` input of `count` readings and stops
//!   counting when the gateway logged that every input finished and `queue stats` shows
//!   nothing pending (every row acknowledged, so every PUBACK was counted);
//! - the handshake (CONNECT, CONNACK, birth PUBLISH, PUBACK) is measured by a run of the same
//!   config without input, until the link is quiet, and subtracted: data = total - handshake;
//! - idle: the gateway with no input and `keep_alive = "2s"` for a fixed window after the
//!   handshake; exchanges = upstream bytes / 2 (a PINGREQ is 2 bytes, as is a PINGRESP);
//!   bytes per hour = bytes per exchange x 3600 / the profile's keep-alive.
//!
//! Cases whose keys this build does not accept (`sensorgate check` fails) are reported as such.

mod common;

use common::broker::Broker;
use common::median;
use common::proxy::{Proxy, Traffic};
use std::time::{Duration, Instant};

/// A per-field topic: each field of a reading is its own message with a plain payload.
const PER_FIELD: &str = "site/{gateway}/{input}/{field}";
/// A per-reading topic: one JSON object (or, batched, one array) per reading.
const PER_READING: &str = "site/{gateway}/{input}";

/// One uplink configuration: `mqtt` is TOML appended to the `[mqtt]` table (it may open
/// `[mqtt.batch]`); `topic` is the synthetic input's topic template.
struct Case {
    label: &'static str,
    mqtt: &'static str,
    topic: &'static str,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { label: "(a) a message per field, QoS 1", mqtt: "", topic: PER_FIELD },
    Case { label: "(b) a JSON message per reading", mqtt: "", topic: PER_READING },
    Case { label: "(c) satellite profile", mqtt: "profile = \"satellite\"", topic: PER_READING },
    Case { label: "(d) cellular profile", mqtt: "profile = \"cellular\"", topic: PER_READING },
    Case { label: "(e) MQTT 5, JSON per reading", mqtt: "protocol = \"5\"", topic: PER_READING },
];

/// A profile whose idle keep-alive traffic is measured. `keep_alive` is used when this build
/// cannot say (`sensorgate check` rejects the profile): it must match the profile defaults in
/// src/config.
struct Idle {
    label: &'static str,
    mqtt: &'static str,
    keep_alive: Duration,
}

#[rustfmt::skip]
const IDLE: &[Idle] = &[
    Idle { label: "lan", mqtt: "profile = \"lan\"", keep_alive: Duration::from_secs(30) },
    Idle { label: "cellular", mqtt: "profile = \"cellular\"", keep_alive: Duration::from_secs(240) },
    Idle { label: "satellite, persistent", mqtt: "profile = \"satellite\"\nconnection = \"persistent\"", keep_alive: Duration::from_secs(1200) },
];

/// The keep-alive of the idle runs, so that a short window holds several exchanges.
const IDLE_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// The tests' gateway process, in a temporary directory of its own, with a config this build
/// accepts.
struct Gateway {
    process: common::gateway::Gateway,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Writes the config (`[gateway]`, `[mqtt]` with `mqtt`, then `inputs`) and checks it.
    fn new(url: &str, mqtt: &str, inputs: &str) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\nhealth_interval = \"0s\"\n\n\
             [mqtt]\nurl = \"{url}\"\n{mqtt}\n\n{inputs}",
            dir.path().join("state").display()
        );
        let mut process = common::gateway::Gateway::new(dir.path(), &text);
        process.env.push(("RUST_LOG", "sensorgate=info".into()));
        let (code, _, err) = process.cli(&["check"]);
        if code != 0 {
            let why = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            // "...: mqtt.profile: unknown field `profile`, expected one of ...": the key is enough.
            let why = why.split(", expected").next().unwrap_or(why);
            let why = why.rsplit(".toml:").next().unwrap_or(why);
            return Err(format!("this build rejects the config: {}", why.trim()));
        }
        Ok(Gateway { process, _dir: dir })
    }

    fn start(&mut self) {
        self.process.start();
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// Messages still in the queue, or None while there is no queue.
    fn pending(&self) -> Option<u64> {
        self.process.stats()?["pending"].as_u64()
    }

    /// The keep-alive `sensorgate check` reports ("keep-alive 30s").
    fn keep_alive(&self) -> Option<Duration> {
        let (code, out, _) = self.process.cli(&["check"]);
        let rest = out.split_once("keep-alive ").filter(|_| code == 0)?.1;
        let value = rest.split([',', ')']).next()?;
        humantime::parse_duration(value.trim()).ok()
    }
}

fn url(proxy: &Proxy) -> String {
    format!("mqtt://127.0.0.1:{}", proxy.port)
}

fn synthetic(topic: &str, count: usize) -> String {
    format!(
        "[[synthetic]]\nname = \"wx\"\nrate = 2000.0\nfields = [\"temperature\", \"humidity\", \"pressure\"]\n\
         topic = \"{topic}\"\nqos = 1\ncount = {count}\n"
    )
}

/// Waits until the proxy has carried a broker reply and then nothing for 500 ms.
fn wait_connected_and_quiet(proxy: &Proxy, timeout: Duration) -> Result<Traffic, String> {
    let deadline = Instant::now() + timeout;
    let mut last = proxy.bytes();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = proxy.bytes();
        if now != last {
            last = now;
            since = Instant::now();
        } else if now.down_bytes > 0 && since.elapsed() >= Duration::from_millis(500) {
            return Ok(now);
        }
        if Instant::now() > deadline {
            return Err(format!("no quiet connection within {timeout:?}"));
        }
    }
}

/// The wire cost of connecting: the same config without input, until the link is quiet.
fn handshake(broker: u16, case: &Case) -> Result<Traffic, String> {
    let proxy = Proxy::start(broker);
    let mut gw = Gateway::new(&url(&proxy), case.mqtt, "")?;
    gw.start();
    wait_connected_and_quiet(&proxy, Duration::from_secs(15))
}

/// What one data run counted.
struct Run {
    traffic: Traffic,
    connections: usize,
    secs: f64,
}

fn data_run(broker: u16, case: &Case, n: usize, timeout: Duration) -> Result<Run, String> {
    let proxy = Proxy::start(broker);
    let mut gw = Gateway::new(&url(&proxy), case.mqtt, &synthetic(case.topic, n))?;
    let t0 = Instant::now();
    gw.start();
    let deadline = t0 + timeout;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if gw.log().contains("Every input has finished") && gw.pending() == Some(0) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not delivered within {timeout:?} ({:?} pending)",
                gw.pending()
            ));
        }
    }
    Ok(Run {
        traffic: proxy.bytes(),
        connections: proxy.accepted(),
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// One row of the data table (medians over the runs).
struct Row {
    wire_per_reading: f64,
    mqtt_per_reading: f64,
    segments_per_reading: f64,
    handshake: Option<u64>,
    connections: usize,
    secs: f64,
}

fn measure_case(broker: u16, case: &Case, n: usize, runs: usize) -> Result<Row, String> {
    let hs = handshake(broker, case);
    let (hs_wire, hs_bytes, hs_segs) = match &hs {
        Ok(t) => (t.wire_bytes(), t.bytes(), t.segments()),
        Err(_) => (0, 0, 0),
    };
    let timeout = Duration::from_secs(180);
    let (mut wire, mut mqtt, mut segs, mut secs) = (vec![], vec![], vec![], vec![]);
    let mut connections = 0;
    for _ in 0..runs {
        let r = data_run(broker, case, n, timeout)?;
        let t = r.traffic;
        wire.push(t.wire_bytes().saturating_sub(hs_wire) as f64 / n as f64);
        mqtt.push(t.bytes().saturating_sub(hs_bytes) as f64 / n as f64);
        segs.push(t.segments().saturating_sub(hs_segs) as f64 / n as f64);
        secs.push(r.secs);
        connections = connections.max(r.connections);
    }
    Ok(Row {
        wire_per_reading: median(wire),
        mqtt_per_reading: median(mqtt),
        segments_per_reading: median(segs),
        handshake: hs.ok().map(|t| t.wire_bytes()),
        connections,
        secs: median(secs),
    })
}

/// Idle cost of one profile: (keep-alive, where it came from, wire bytes per exchange,
/// exchanges seen, a note).
struct IdleRow {
    keep_alive: Duration,
    keep_alive_from: &'static str,
    per_exchange: f64,
    exchanges: u64,
    note: String,
}

fn measure_idle(broker: u16, idle: &Idle, window: Duration) -> Result<IdleRow, String> {
    let proxy = Proxy::start(broker);
    let ka = format!("keep_alive = \"{}s\"", IDLE_KEEP_ALIVE.as_secs());
    // The profile's own keep-alive, as the gateway resolves it.
    let (keep_alive, keep_alive_from, mut note, mqtt) =
        match Gateway::new(&url(&proxy), idle.mqtt, "")
            .ok()
            .and_then(|g| g.keep_alive())
        {
            Some(k) => (
                k,
                "sensorgate check",
                String::new(),
                format!("{ka}\n{}", idle.mqtt),
            ),
            None => (
                idle.keep_alive,
                "hard-coded",
                "profile rejected by this build: exchange measured without it".to_string(),
                ka,
            ),
        };
    let mut gw = Gateway::new(&url(&proxy), &mqtt, "")?;
    gw.start();
    wait_connected_and_quiet(&proxy, Duration::from_secs(15))?;
    proxy.reset_counters();
    std::thread::sleep(window); // the measuring window, not a wait for an event
    let t = proxy.bytes();
    let exchanges = t.up_bytes / 2;
    if t.up_bytes != t.down_bytes || !t.up_bytes.is_multiple_of(2) || exchanges == 0 {
        note = format!(
            "{note}{}traffic other than PINGREQ/PINGRESP: {t:?}",
            if note.is_empty() { "" } else { "; " }
        );
    }
    Ok(IdleRow {
        keep_alive,
        keep_alive_from,
        per_exchange: t.wire_bytes() as f64 / exchanges.max(1) as f64,
        exchanges,
        note,
    })
}

fn main() {
    let quick = common::quick();
    let (n, runs, window) = if quick {
        (2_000, 1, Duration::from_secs(5))
    } else {
        (10_000, 3, Duration::from_secs(10))
    };
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start_bare(tmp.path());
    run_cases(broker.port, n, runs);
    println!();
    run_idle(broker.port, window);
}

fn run_cases(broker: u16, n: usize, runs: usize) {
    println!(
        "wire: {n} synthetic readings of 3 fields (QoS 1, 2000/s) through a counting proxy to a \
         local mosquitto, median of {runs} run(s)"
    );
    println!(
        "  wire bytes = MQTT bytes both ways + {} per segment (one read() at the proxy; pure \
         ACKs unseen); data = total - handshake",
        Traffic::HEADER_BYTES
    );
    println!(
        "  {:<34} {:>10} {:>10} {:>10} {:>10} {:>6} {:>7}  vs (a)",
        "case", "wire B/rdg", "MQTT B/rdg", "segs/rdg", "handshake", "conns", "secs"
    );
    let mut first = None;
    for case in CASES {
        match measure_case(broker, case, n, runs) {
            Ok(r) => {
                let base = *first.get_or_insert(r.wire_per_reading);
                println!(
                    "  {:<34} {:>10.1} {:>10.1} {:>10.3} {:>10} {:>6} {:>7.1}  {:.3}",
                    case.label,
                    r.wire_per_reading,
                    r.mqtt_per_reading,
                    r.segments_per_reading,
                    r.handshake.map_or("n/a".to_string(), |h| format!("{h} B")),
                    r.connections,
                    r.secs,
                    r.wire_per_reading / base,
                );
            }
            Err(e) => println!("  {:<34} {e}", case.label),
        }
    }
    println!("  target: (c) at most 1/8 of (a) per reading (vs (a) <= 0.125)");
    println!(
        "  note: at this rate the group commit sends messages in bursts that share segments; a \
         sensor reporting every few seconds pays at least one segment per message and one per PUBACK"
    );
}

fn run_idle(broker: u16, window: Duration) {
    println!(
        "idle: no readings, keep_alive = \"{}s\" for {window:?} after the handshake; bytes per \
         PINGREQ/PINGRESP exchange = wire bytes / (upstream bytes / 2); per hour = per exchange \
         x 3600 / the profile's keep-alive",
        IDLE_KEEP_ALIVE.as_secs()
    );
    println!(
        "  {:<24} {:>12} {:>20} {:>14} {:>10} {:>12}",
        "profile", "keep-alive", "from", "B/exchange", "exchanges", "B/idle hour"
    );
    for idle in IDLE {
        match measure_idle(broker, idle, window) {
            Ok(r) => {
                let per_hour = r.per_exchange * 3600.0 / r.keep_alive.as_secs_f64();
                println!(
                    "  {:<24} {:>12} {:>20} {:>14.1} {:>10} {:>12.0}{}",
                    idle.label,
                    format!("{:?}", r.keep_alive),
                    r.keep_alive_from,
                    r.per_exchange,
                    r.exchanges,
                    per_hour,
                    if r.note.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", r.note)
                    }
                );
            }
            Err(e) => println!("  {:<24} {e}", idle.label),
        }
    }
    println!("  target: satellite, persistent: at most 400 B per idle hour");
}
