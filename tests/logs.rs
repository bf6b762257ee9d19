//! Logs on stderr: plain text into a file (or a pipe), ANSI colour only on a terminal, and
//! none there either with `NO_COLOR` set (no-color.org).

use crate::support::gateway::{base_config, BIN};
use crate::support::{free_port, signal, wait_exit, wait_until};
use nix::sys::signal::Signal;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// Stops the gateway on drop, whatever the test did.
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        signal(&self.0, Signal::SIGTERM);
        wait_exit(&mut self.0, Duration::from_secs(10));
    }
}

/// `sensorgate run` with no broker (it queues) and its stderr on `stderr`, outside systemd.
fn start(dir: &Path, stderr: Stdio, no_color: Option<&str>) -> Stop {
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let cfg = dir.join("gw.toml");
    std::fs::write(&cfg, base_config(dir, "gwl", &url, "")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "sensorgate=info")
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    Stop(cmd.spawn().unwrap())
}

#[test]
fn logs_into_a_file_carry_no_colour() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("stderr");
    let gw = start(
        tmp.path(),
        std::fs::File::create(&path).unwrap().into(),
        None,
    );
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    wait_until("the gateway logs that it runs", LONG, || {
        read().contains("Gateway running.")
    });
    drop(gw);
    let log = read();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains("\x1b["), "ANSI escapes in a file: {log:?}");
}

/// Everything the gateway writes to a terminal, read from its master side.
fn on_a_terminal(no_color: Option<&str>) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut master = std::fs::File::from(pty.master);
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    // Ends when the master reports EIO: every slave handle (ours and the gateway's) is closed.
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let gw = start(tmp.path(), Stdio::from(pty.slave), no_color);
    let text = || String::from_utf8_lossy(&got.lock().unwrap()).into_owned();
    wait_until("the gateway logs that it runs", LONG, || {
        text().contains("Gateway running.")
    });
    drop(gw);
    reader.join().unwrap();
    text()
}

#[test]
fn colour_on_a_terminal_unless_no_color() {
    let coloured = on_a_terminal(None);
    assert!(coloured.contains("\x1b["), "{coloured:?}");
    let plain = on_a_terminal(Some("1"));
    assert!(plain.contains("Gateway running."), "{plain:?}");
    assert!(
        !plain.contains("\x1b["),
        "NO_COLOR=1 on a terminal: {plain:?}"
    );
}
