//! Test infrastructure: real processes and real sockets, cleaned up on drop.
//!
//! - `bluez` (feature `ble`): a private D-Bus system bus with a python-dbusmock BlueZ.
//! - [`broker`]: a real `mosquitto` on a free port, stopped, killed and restarted at will.
//! - [`subscriber`]: `mosquitto_sub` collecting every message it receives.
//! - [`mqtt5`]: a binary-safe MQTT 5 subscriber that also unpacks batches.
//! - [`gateway`]: the `sensorgate` binary as a child process with a generated config.
//! - [`pty`]: pseudo-terminal pairs standing in for serial devices.
//! - [`modbus`]: a socat pseudo-terminal pair and a pymodbus server (RTU or TCP).
//! - [`proxy`]: a TCP proxy: pass, black-hole, reset; byte and segment counts; delay and rate.
//! - [`fake_broker`]: a scripted MQTT 3.1.1 server whose PUBACKs the test controls.
//! - [`fake_clock`]: a wall clock the test moves (libfaketime).
//! - [`runtime`]: a server task on its own thread and runtime; `process`: waits, ports, signals.

#![allow(dead_code)]

#[cfg(feature = "ble")]
pub mod bluez;
pub mod broker;
pub mod fake_broker;
pub mod fake_clock;
pub mod gateway;
pub mod modbus;
pub mod mqtt5;
mod process;
pub mod proxy;
pub mod pty;
pub mod runtime;
pub mod subscriber;

pub use process::{free_port, port_open, signal, wait_exit, wait_until};

/// Overwrites the page in the middle of a closed queue file (a leaf of `outbox` once it
/// holds a few hundred rows) with garbage: a bad sector under the queue.
pub fn damage_a_middle_page(path: &std::path::Path) {
    use std::io::{Seek, SeekFrom, Write};
    let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
    assert!(!wal.exists(), "the last close folds the WAL into the file");
    let pages = std::fs::metadata(path).unwrap().len() / 4096;
    assert!(pages > 20, "{pages} pages");
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(pages / 2 * 4096)).unwrap();
    f.write_all(&[0xa5; 4096]).unwrap();
}
