//! Logging to journald: with `$JOURNAL_STREAM` naming its stderr, the gateway sends each
//! event to the journal socket with the event's fields as journal fields. The journal socket
//! path is fixed (`/run/systemd/journal/socket`), so the gateway runs in its own mount
//! namespace (`unshare -r -m`) where that path is this test's datagram socket.

use crate::support::gateway::{base_config, BIN};
use crate::support::{free_port, wait_exit, wait_until};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn logs_go_to_the_journal_with_their_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let journal_dir = tmp.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let sock = UnixDatagram::bind(journal_dir.join("socket")).unwrap();
    let entries = Arc::new(Mutex::new(Vec::<Vec<(String, String)>>::new()));
    let sink = entries.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = sock.recv(&mut buf) {
            sink.lock().unwrap().push(parse_entry(&buf[..n]));
        }
    });

    let config = base_config(tmp.path(), "gwj", &format!("mqtt://127.0.0.1:{}", free_port()), "")
        + "[[serial]]\nname = \"wx\"\ndevice = \"/nonexistent/ttyUSB9\"\nformat = \"json\"\ntopic = \"t/{input}\"\n";
    let cfg = tmp.path().join("gw.toml");
    std::fs::write(&cfg, config).unwrap();
    let stderr = std::fs::File::create(tmp.path().join("stderr")).unwrap();
    let meta = stderr.metadata().unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());

    let script = r#"mount -t tmpfs none /run && mkdir -p /run/systemd/journal \
        && mount --bind "$J" /run/systemd/journal && exec "$BIN" run -c "$CFG""#;
    let child = Command::new("unshare")
        .args(["-r", "-m", "sh", "-c", script])
        .env("J", &journal_dir)
        .env("BIN", BIN)
        .env("CFG", &cfg)
        .env("JOURNAL_STREAM", &stream)
        .env("RUST_LOG", "sensorgate=info")
        .stdin(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("unshare (util-linux)");
    let mut child = KillOnDrop(child);

    let find = |message: &str| -> Option<Vec<(String, String)>> {
        let entries = entries.lock().unwrap();
        entries
            .iter()
            .find(|e| {
                e.iter()
                    .any(|(k, v)| k == "MESSAGE" && v.starts_with(message))
            })
            .cloned()
    };
    wait_until(
        "the serial warning reaches the journal",
        Duration::from_secs(30),
        || find("Serial device absent").is_some(),
    );
    let entry = find("Serial device absent").unwrap();
    let field = |k: &str| {
        entry
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("PRIORITY"), Some("4"), "{entry:?}");
    assert_eq!(field("INPUT"), Some("wx"), "{entry:?}");
    assert_eq!(field("DEVICE"), Some("/nonexistent/ttyUSB9"), "{entry:?}");
    assert_eq!(field("SYSLOG_IDENTIFIER"), Some("sensorgate"), "{entry:?}");
    assert!(
        field("ERROR").is_some_and(|e| e.contains("No such file")),
        "{entry:?}"
    );
    // Info events go there too, and nothing is written to stderr. (The serial input starts,
    // and may warn, before "Gateway running." is logged.)
    wait_until(
        "\"Gateway running.\" reaches the journal",
        Duration::from_secs(30),
        || find("Gateway running.").is_some(),
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(wait_exit(&mut child.0, Duration::from_secs(10))
        .expect("exits")
        .success());
    let written = std::fs::read_to_string(tmp.path().join("stderr")).unwrap();
    assert!(
        !written.contains("Gateway running"),
        "logs went to stderr too: {written}"
    );
}

/// Kills the gateway if the test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Parses one entry of journald's native protocol: `KEY=value` lines, or `KEY`, a newline,
/// a 64-bit little-endian length, the value's bytes and a newline.
fn parse_entry(mut b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            b = &b[(nl + 1).min(b.len())..];
        } else {
            let rest = &b[(nl + 1).min(b.len())..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            out.push((
                String::from_utf8_lossy(line).into_owned(),
                String::from_utf8_lossy(&rest[8..8 + len]).into_owned(),
            ));
            b = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    out
}
