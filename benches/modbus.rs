//! Modbus: the gateway binary's CPU time while it polls 10 slaves of 32 holding registers
//! each once a second over RTU (a socat pseudo-terminal pair; pymodbus's RTU server on the
//! other end, tests/support/modbus_server.py), as a share of one core (target: under 1%),
//! from utime + stime in /proc over a fixed window after a warm-up.
//!
//! `cargo bench --bench modbus` (60 s window; `-- --quick` for 10 s). `SENSORGATE_BENCH_BIN`
//! names another gateway binary to measure.

mod common;

use common::broker::Broker;
use common::gateway::Gateway;
use common::modbus::{ModbusServer, PtyPair, Transport};
use common::subscriber::Subscriber;
use std::time::{Duration, Instant};

const SLAVES: u8 = 10;
const REGISTERS: u16 = 32;

fn main() {
    let secs = if common::quick() { 10.0 } else { 60.0 };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Broker::start_bare(&d.join("broker"));
    let pair = PtyPair::start(d);
    let slaves: Vec<_> = (1..=SLAVES)
        .map(|unit| {
            let holding: Vec<_> = (0..REGISTERS)
                .map(|a| serde_json::json!([a, "u16", "abcd", u16::from(unit) * 1000 + a]))
                .collect();
            serde_json::json!({"unit": unit, "holding": holding})
        })
        .collect();
    let server = ModbusServer::start(
        d,
        &serde_json::json!({ "slaves": slaves }),
        Transport::Rtu(&pair.server_end, 19200),
    );
    let registers: Vec<String> = (0..REGISTERS)
        .map(|a| format!("{{ field = \"r{a}\", kind = \"holding\", address = {a} }}"))
        .collect();
    let mut config = format!(
        "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\nhealth_interval = \"0s\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n\
         [[modbus]]\nname = \"bus\"\ndevice = \"{}\"\nbaud = 19200\nevery = \"1s\"\ntimeout = \"500ms\"\n\
         topic = \"mb/{{gateway}}/{{input}}/{{device}}\"\n",
        d.join("state").display(),
        broker.port,
        pair.gateway_end.display()
    );
    for unit in 1..=SLAVES {
        config += &format!(
            "[[modbus.slave]]\nunit = {unit}\nregisters = [{}]\n",
            registers.join(", ")
        );
    }
    let mut gw = Gateway::new(d, &config);
    if let Some(bin) = std::env::var_os("SENSORGATE_BENCH_BIN") {
        gw.bin = bin.into();
    }
    gw.env.push(("RUST_LOG", "info".into()));
    let sub = Subscriber::start(broker.port, "mb/#", "modbus-bench");
    gw.start();
    let pid = gw.pid();
    // Warm-up: the port is open and every slave has answered once.
    common::wait_until(
        "a reading from every slave",
        Duration::from_secs(30),
        || sub.messages().len() >= usize::from(SLAVES),
    );
    let (cpu0, srv0, got0) = (
        common::cpu_seconds(pid),
        common::cpu_seconds(server.pid()),
        sub.messages().len(),
    );
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs)); // the measured window
    let cpu = common::cpu_seconds(pid) - cpu0;
    let srv = common::cpu_seconds(server.pid()) - srv0;
    let wall = t0.elapsed().as_secs_f64();
    let got = sub.messages().len() - got0;
    let expected = f64::from(SLAVES) * wall;
    println!(
        "gateway CPU: {cpu:.3} s in {wall:.1} s = {:.2}% of one core ({SLAVES} slaves x {REGISTERS} holding registers at 1 Hz over RTU; \
         {got} readings delivered of about {expected:.0}; pymodbus server {:.1}% of one core)",
        100.0 * cpu / wall,
        100.0 * srv / wall
    );
    let failing = gw.log().matches("Modbus device failing").count();
    assert_eq!(failing, 0, "a slave failed during the run:\n{}", gw.log());
    let (rss, hwm) = common::rss_kb(pid);
    println!("gateway RSS {rss} kB (peak {hwm} kB)");
}
