//! Shared by the bench binaries: the tests' own harness (`tests/support`: Mosquitto, the
//! gateway process, the proxy, the BlueZ mock, the waits), RSS and CPU readings, medians.
#![allow(dead_code)]

#[cfg(feature = "ble")]
#[path = "../../tests/support/bluez.rs"]
pub mod bluez;
#[path = "../../tests/support/broker.rs"]
pub mod broker;
#[path = "../../tests/support/fake_clock.rs"]
pub mod fake_clock;
#[path = "../../tests/support/gateway.rs"]
pub mod gateway;
#[path = "../../tests/support/modbus.rs"]
pub mod modbus;
#[path = "../../tests/support/process.rs"]
mod process;
#[path = "../../tests/support/proxy.rs"]
pub mod proxy;
#[path = "../../tests/support/pty.rs"]
pub mod pty;
#[path = "../../tests/support/runtime.rs"]
pub mod runtime;
#[path = "../../tests/support/subscriber.rs"]
pub mod subscriber;

pub use process::{free_port, port_open, signal, wait_exit, wait_until};

use std::time::Instant;

/// (VmRSS, VmHWM) of a process in kB.
pub fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `--quick` (or SENSORGATE_BENCH_QUICK) shrinks the work, for a smoke run.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick") || std::env::var_os("SENSORGATE_BENCH_QUICK").is_some()
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // utime, stime in clock ticks (USER_HZ = 100)
}

/// Reading `i` of the benchmarks' synthetic weather station: three fields.
pub fn reading(i: usize, stamp: sensorgate::reading::Stamp) -> sensorgate::reading::Reading {
    use sensorgate::reading::Value;
    use std::sync::Arc;
    sensorgate::reading::Reading {
        input: 0,
        stamp,
        at: Instant::now(),
        device: None,
        sentence: None,
        fields: vec![
            (
                Arc::from("temperature"),
                Value::Float(20.0 + (i % 100) as f64 / 10.0),
            ),
            (
                Arc::from("humidity"),
                Value::Float(50.0 + (i % 37) as f64 / 10.0),
            ),
            (
                Arc::from("pressure"),
                Value::Float(1013.0 + (i % 11) as f64 / 10.0),
            ),
        ],
    }
}
