//! Soak: the real `sensorgate` binary for N minutes against a real Mosquitto, through the
//! fault proxy of the tests, with every fault of issue 12 mixed on a seeded schedule; then
//! every reading written is accounted for.
//!
//! `cargo bench --bench soak -- --minutes N` (default 2; `--quick` = 1; `--seed S` repeats a
//! schedule). Not run in CI.
//!
//! - Input: two serial inputs on pseudo-terminals, [`RATE`] JSON lines a second each, every
//!   line numbered (`n`, per input) and padded to [`PAD`] bytes; QoS 1, topic
//!   `soak/{gateway}/{input}`, one message per reading (no batching).
//! - Poison: `[mqtt] max_message_size = "1KiB"`, and about every [`POISON_EVERY`] lines of
//!   the first input a line of [`POISON_PAD`] bytes (`poison: true`, its own `n` range):
//!   each must become a dead letter, and nothing behind it may wait.
//! - Broker: Mosquitto with persistence, restarted with SIGTERM, so that the subscriber's
//!   persistent session (`mosquitto_sub -c -i soak-sub -q 1`, directly on the broker, not
//!   through the proxy) keeps what arrives while it is away.
//! - Faults ([`plan`]): broker restarts of a few seconds, link resets (the proxy closes every
//!   connection), half-open periods (the proxy swallows every byte for three keep-alives),
//!   and long outages in which the queue reaches `max_size` and `drop_oldest` must drop.
//! - Disk: the state directory is a 16 MiB tmpfs (unmounted at the end, also on a panic).
//! - Clock: the gateway starts under libfaketime at 1970-01-02; after a tenth of the run its
//!   clock steps to the real time, in the middle of the first outage, so that a backlog
//!   stamped in 1970 is waiting. With `max_age = "1h"`, nothing may expire. (Without the
//!   `faketime` package the soak says so and runs without the jump.)
//!
//! At the end the faults stop, the inputs stop, the gateway drains (until `queue stats` shows
//! nothing pending and nothing new committed) and is stopped with SIGTERM, and one table
//! accounts for every reading: unaccounted = written - delivered (unique `n` seen) - dead
//! letters - dropped by policy. The bench exits 1 unless that is 0, nothing expired, no
//! poison reading arrived, the queue drained and the gateway exited 0; the work directory
//! (gateway and broker logs) is then kept. The gateway's peak RSS (VmHWM), CPU time and the
//! state directory's size are sampled every second; its CPU includes libfaketime reading
//! its clock file at every clock call.

mod common;
#[path = "soak/fixtures.rs"]
mod fixtures;
#[path = "soak/plan.rs"]
mod plan;
#[path = "soak/procs.rs"]
mod procs;
#[path = "soak/report.rs"]
mod report;

use common::broker::Broker;
use common::gateway::Gateway;
use common::{proxy, pty};

use common::fake_clock::{self, FakeClock, BOOT_1970};
use fixtures::{Poison, Sensor, StateDir};
use plan::Fault;
use procs::Subscriber;
use report::{Done, Outcome, Samples};
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines a second per input.
const RATE: f64 = 50.0;
const INPUTS: [&str; 2] = ["s0", "s1"];
/// Padding of a normal line: its message is about 780 bytes, below the 1 KiB limit.
const PAD: usize = 700;
/// Padding of a poison line: its message is above the 1 KiB limit.
const POISON_PAD: usize = 1500;
/// One poison line per this many lines of the first input, on average (about every 5 s).
const POISON_EVERY: u64 = 250;
const KEEP_ALIVE: Duration = Duration::from_secs(2);
const MAX_SIZE: &str = "2MiB";
const MAX_SIZE_BYTES: f64 = 2.0 * 1024.0 * 1024.0;
/// The queue's accounting of one normal message: topic + payload + 24 bytes per row.
const MESSAGE_BYTES: f64 = 820.0;
const TMPFS: &str = "16m";
/// How long the drain at the end may take.
const DRAIN: Duration = Duration::from_secs(300);
const TOPIC_PREFIX: &str = "soak/gw1/";

struct Args {
    minutes: f64,
    seed: u64,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        let i = argv.iter().position(|a| a == name)?;
        Some(
            argv.get(i + 1)
                .unwrap_or_else(|| panic!("{name} needs a value"))
                .clone(),
        )
    };
    let minutes = match value("--minutes") {
        Some(m) => m.parse().expect("--minutes N (a number)"),
        None if common::quick() => 1.0,
        None => 2.0,
    };
    let seed = match value("--seed") {
        Some(s) => s.parse().expect("--seed S (an integer)"),
        None => fastrand::u64(..),
    };
    Args { minutes, seed }
}

/// The gateway's config: one `[[serial]]` per pseudo-terminal.
fn config(state: &std::path::Path, proxy_port: u16, ptys: &[pty::Pty]) -> String {
    let mut text = format!(
        "[gateway]\nid = \"gw1\"\nstate_dir = \"{}\"\nhealth_interval = \"0s\"\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{proxy_port}\"\nkeep_alive = \"{}s\"\n\
         connect_timeout = \"2s\"\nbackoff_min = \"100ms\"\nbackoff_max = \"2s\"\n\
         max_message_size = \"1KiB\"\n\n\
         [queue]\nmax_size = \"{MAX_SIZE}\"\nmax_age = \"1h\"\nwhen_full = \"drop_oldest\"\n\
         commit_linger = \"200ms\"\n",
        state.display(),
        KEEP_ALIVE.as_secs()
    );
    for (name, pty) in INPUTS.iter().zip(ptys) {
        text += &format!(
            "\n[[serial]]\nname = \"{name}\"\ndevice = \"{}\"\nbaud = 9600\nformat = \"json\"\n\
             topic = \"soak/{{gateway}}/{{input}}\"\nqos = 1\nreopen_min = \"50ms\"\nreopen_max = \"200ms\"\n",
            pty.path.display()
        );
    }
    text
}

/// Samples the gateway `pid` and the state directory every second until `stop`.
fn sampler(pid: u32, state: PathBuf, stop: Arc<AtomicBool>) -> Arc<Mutex<Samples>> {
    let out = Arc::new(Mutex::new(Samples::default()));
    let o = out.clone();
    std::thread::spawn(move || {
        let size = |name: &str| std::fs::metadata(state.join(name)).map_or(0, |m| m.len());
        while !stop.load(Ordering::SeqCst) {
            let (hwm, cpu) = (common::rss_kb(pid).1, common::cpu_seconds(pid));
            let (disk, db, wal) = (
                fixtures::dir_size(&state),
                size("queue.db"),
                size("queue.db-wal"),
            );
            let mut s = o.lock().unwrap();
            s.hwm_kb = s.hwm_kb.max(hwm);
            s.cpu_s = s.cpu_s.max(cpu);
            s.disk = s.disk.max(disk);
            s.db = s.db.max(db);
            s.wal = s.wal.max(wal);
            drop(s);
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    out
}

/// The running soak: what the schedule acts on, and what it does while it waits.
struct Soak<'a> {
    t0: Instant,
    broker: &'a mut Broker,
    proxy: &'a proxy::Proxy,
    gateway: &'a mut Gateway,
    sub: &'a Subscriber,
    sensors: &'a [Sensor],
    clock: Option<(&'a FakeClock, Duration)>,
    next_progress: Duration,
    done: Done,
}

impl Soak<'_> {
    /// Waits until `at` into the run, stepping the clock and printing progress meanwhile.
    fn idle_until(&mut self, at: Duration) {
        loop {
            let now = self.t0.elapsed();
            if let Some((clock, jump)) = self.clock.filter(|_| self.done.jumped.is_none()) {
                if now >= jump {
                    clock.set(fake_clock::real_now_s());
                    self.done.jumped = Some(now);
                    println!(
                        "  {:>6.1}s clock steps from 1970 to the real time",
                        now.as_secs_f64()
                    );
                }
            }
            if now >= self.next_progress {
                self.next_progress += Duration::from_secs(30);
                self.progress();
            }
            if !self.gateway.is_running() {
                let log = self.gateway.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "the gateway exited during the soak; the end of its log:\n{}",
                    tail.join("\n")
                );
            }
            if now >= at {
                return;
            }
            std::thread::sleep((at - now).min(Duration::from_millis(200)));
        }
    }

    fn progress(&self) {
        let written: u64 = self
            .sensors
            .iter()
            .map(|s| s.written.load(Ordering::SeqCst))
            .sum();
        let delivered = self.sub.tally.lock().unwrap().unique();
        let s = self.gateway.stats().unwrap_or(Value::Null);
        println!(
            "  {:>6.1}s written {written}, delivered {delivered}, pending {}, dropped {}, dead {}, \
             proxy connections {}",
            self.t0.elapsed().as_secs_f64(),
            s["pending"],
            s["dropped"],
            s["dead"],
            self.proxy.accepted()
        );
    }

    fn fault(&mut self, at: Duration, fault: Fault) {
        self.idle_until(at);
        println!("  {:>6.1}s {fault:?}", self.t0.elapsed().as_secs_f64());
        let end = self.t0.elapsed() + fault.length();
        match fault {
            Fault::Restart(_) | Fault::Outage(_) => {
                self.broker.stop();
                self.idle_until(end);
                self.broker.start();
                self.done.restarts += 1;
                if let Fault::Outage(d) = fault {
                    self.done.outages += 1;
                    self.done.outage_time += d;
                }
            }
            Fault::Reset => {
                self.proxy.reset_all();
                self.done.resets += 1;
            }
            Fault::HalfOpen(_) => {
                self.proxy.black_hole();
                self.idle_until(end);
                self.proxy.pass();
                self.done.half_open += 1;
            }
        }
    }
}

fn main() {
    let ok = run(args());
    std::process::exit(if ok { 0 } else { 1 });
}

/// The whole soak; false if it failed (see [`Outcome::ok`]). Every process and fixture is
/// dropped (killed, unmounted) before this returns, also when a panic unwinds.
fn run(args: Args) -> bool {
    let run_for = Duration::from_secs_f64(args.minutes * 60.0);
    let work = tempfile::Builder::new().prefix("soak-").tempdir().unwrap();
    let dir = work.path();
    println!(
        "soak: {:.1} min, seed {} (repeat with --seed {}), work dir {}",
        args.minutes,
        args.seed,
        args.seed,
        dir.display()
    );
    let mut rng = fastrand::Rng::with_seed(args.seed);
    // Declared first, dropped last: the gateway is gone before the unmount.
    let state = StateDir::mount(&dir.join("state"), TMPFS);
    let mut broker = Broker::start_in(&dir.join("broker"));
    let proxy = proxy::Proxy::start(broker.port);
    let names: Vec<String> = INPUTS.iter().map(|s| s.to_string()).collect();
    let sub = Subscriber::start(broker.port, "soak-sub", TOPIC_PREFIX, &names);
    let ptys: Vec<pty::Pty> = INPUTS.iter().map(|_| pty::Pty::open()).collect();
    let mut gateway = Gateway::new(dir, &config(&state.path, proxy.port, &ptys));

    let clock = match fake_clock::libfaketime() {
        Some(lib) => Some(FakeClock::starting_at(dir, lib, BOOT_1970)),
        None => {
            println!(
                "note: libfaketime is not installed (apt-get install faketime): no clock jump"
            );
            None
        }
    };
    gateway.env.push(("RUST_LOG", "sensorgate=info".into()));
    gateway
        .env
        .extend(clock.as_ref().map(FakeClock::env).unwrap_or_default());
    gateway.start();
    gateway.wait_log_count("Serial port open", INPUTS.len(), Duration::from_secs(30));

    let fill =
        Duration::from_secs_f64(MAX_SIZE_BYTES / (MESSAGE_BYTES * RATE * INPUTS.len() as f64));
    let shape = plan::Shape {
        run: run_for,
        keep_alive: KEEP_ALIVE,
        fill,
        jump: clock.as_ref().map(|_| run_for / 10),
    };
    let schedule = plan::schedule(&mut rng, &shape);
    let poison = Poison {
        seed: rng.u64(..),
        every: POISON_EVERY,
        bytes: POISON_PAD,
    };
    let mut sensors: Vec<Sensor> = ptys
        .iter()
        .enumerate()
        .map(|(i, p)| Sensor::start(p, RATE, PAD, (i == 0).then_some(poison)))
        .collect();
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let samples = sampler(gateway.pid(), state.path.clone(), stop_sampler.clone());
    println!(
        "  {} inputs x {RATE} lines/s, max_size {MAX_SIZE} (full after ~{:.0}s of outage), \
         faults scheduled: {}",
        INPUTS.len(),
        fill.as_secs_f64(),
        schedule.len()
    );

    let t0 = Instant::now();
    let mut soak = Soak {
        t0,
        broker: &mut broker,
        proxy: &proxy,
        gateway: &mut gateway,
        sub: &sub,
        sensors: &sensors,
        clock: clock.as_ref().map(|c| (c, run_for / 10)),
        next_progress: Duration::from_secs(30),
        done: Done::default(),
    };
    for (at, fault) in schedule {
        soak.fault(at, fault);
    }
    soak.idle_until(run_for);
    let done = std::mem::take(&mut soak.done);

    // Faults stop (the last one has ended); the inputs stop; the gateway drains.
    proxy.pass();
    for s in &mut sensors {
        s.finish();
    }
    let written: Vec<u64> = sensors
        .iter()
        .map(|s| s.written.load(Ordering::SeqCst))
        .collect();
    let poison_written = sensors[0].poison_written.load(Ordering::SeqCst);
    let drained = drain(&gateway);
    stop_sampler.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1100));
    let samples = *samples.lock().unwrap();
    let up = t0.elapsed();
    let (exit, _) = gateway.terminate(Duration::from_secs(10));
    settle(&sub);
    let tally = sub.tally.lock().unwrap();
    // Dead letters held, by reading: (input, n), input None for a poison one.
    let dead: HashSet<(Option<usize>, u64)> = dead_letters(&gateway)
        .iter()
        .filter_map(|dead| {
            let payload: Value = serde_json::from_str(dead["payload"].as_str()?).ok()?;
            let input = dead["topic"]
                .as_str()?
                .strip_prefix(TOPIC_PREFIX)
                .and_then(|t| INPUTS.iter().position(|i| *i == t));
            let poison = payload["poison"].as_bool() == Some(true);
            Some(((!poison).then_some(input?), payload["n"].as_u64()?))
        })
        .collect();
    let poison_dead = dead.iter().filter(|(i, _)| i.is_none()).count() as u64;
    let normal_dead = dead.len() as u64 - poison_dead;
    let delivered_dead = dead
        .iter()
        .filter(|(i, n)| i.is_some_and(|i| tally.seen_once_or_more(i, *n)))
        .count() as u64;
    // Readings neither seen nor held as dead letters: those dropped by policy, if nothing
    // was lost and nothing was both dropped and delivered.
    let missing = (0..poison_written)
        .filter(|n| !dead.contains(&(None, *n)))
        .count() as u64
        + (0..INPUTS.len())
            .map(|i| {
                (0..written[i])
                    .filter(|n| !tally.seen_once_or_more(i, *n) && !dead.contains(&(Some(i), *n)))
                    .count() as u64
            })
            .sum::<u64>();
    let outcome = Outcome {
        minutes: args.minutes,
        seed: args.seed,
        normal: written.iter().sum(),
        poison: poison_written,
        delivered: tally.unique(),
        messages: tally.messages,
        poison_delivered: tally.poison,
        stats: gateway.stats().unwrap_or(Value::Null),
        dead_held: (poison_dead, normal_dead, delivered_dead),
        missing,
        done,
        samples,
        up,
        connections: proxy.accepted(),
        disk_note: if state.mounted {
            format!("a {TMPFS} tmpfs, max_size {MAX_SIZE}")
        } else {
            format!("a plain directory, max_size {MAX_SIZE}")
        },
        drained,
        exit,
        log: gateway.log(),
    };
    outcome.print();
    if tally.strange > 0 {
        println!(
            "  note: {} subscriber lines were not readings of a known input",
            tally.strange
        );
    }
    let ok = outcome.ok();
    if !ok {
        let kept = work.keep();
        println!("FAILED; logs kept in {}", kept.display());
    }
    ok
}

/// Waits until nothing is pending and nothing more was committed for a second; None after
/// [`DRAIN`]. Returns how long it took.
/// `sensorgate queue dead export`: one JSON object per dead letter held.
fn dead_letters(gateway: &Gateway) -> Vec<Value> {
    let (code, out, _) = gateway.cli(&["queue", "dead", "export"]);
    out.lines()
        .filter(|_| code == 0)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn drain(gateway: &Gateway) -> Option<Duration> {
    let t = Instant::now();
    let mut last = None;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let s = gateway.stats().unwrap_or(Value::Null);
        let now = (s["pending"].as_u64(), s["last_seq"].as_i64());
        if now.0 == Some(0) && last == Some(now) {
            return Some(t.elapsed());
        }
        last = Some(now);
        if t.elapsed() > DRAIN {
            println!("  not drained after {DRAIN:?}: {s}");
            return None;
        }
    }
}

/// Waits until the subscriber has received nothing new for 3 s (at most 60 s).
fn settle(sub: &Subscriber) {
    let t = Instant::now();
    let mut last = (u64::MAX, Instant::now());
    while t.elapsed() < Duration::from_secs(60) {
        let m = sub.tally.lock().unwrap().messages;
        if m != last.0 {
            last = (m, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
