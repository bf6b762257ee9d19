//! Test infrastructure: real processes and real sockets, cleaned up on drop.
//!
//! - `bluez` (feature `ble`): a private D-Bus system bus with a python-dbusmock BlueZ.
//! - [`broker`]: a real `mosquitto` on a free port, stopped, killed and restarted at will.
//! - [`subscriber`]: `mosquitto_sub` collecting every message it receives.
//! - [`mqtt5`]: a binary-safe MQTT 5 subscriber that also unpacks batches.
//! - [`gateway`]: the `sensorgate` binary as a child process with a generated config.
//! - [`pty`]: pseudo-terminal pairs standing in for serial devices.
//! - [`proxy`]: a TCP proxy: pass, black-hole, reset; byte and segment counts; delay and rate.
//! - [`fake_broker`]: a scripted MQTT 3.1.1 server whose PUBACKs the test controls.

#![allow(dead_code)]

#[cfg(feature = "ble")]
pub mod bluez;
pub mod broker;
pub mod fake_broker;
pub mod gateway;
pub mod mqtt5;
pub mod proxy;
pub mod pty;
pub mod runtime;
pub mod subscriber;

use std::time::{Duration, Instant};

/// Waits until `cond` holds, checking every 20 ms; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

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

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().unwrap().port()
}

/// Whether something accepts TCP connections on `port`.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Sends `signal` to a child process.
pub fn signal(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
}

/// Waits for a child to exit; kills it after `timeout`. Returns its status if it exited.
pub fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
