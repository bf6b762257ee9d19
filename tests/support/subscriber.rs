//! `mosquitto_sub` as a persistent-session subscriber; every line it prints is kept.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<(String, String)>>>,
}

impl Subscriber {
    /// Subscribes to `topic` at QoS 1 with a persistent session (`-c -i id`), so messages
    /// published while it reconnects after a broker restart are kept for it.
    pub fn start(port: u16, topic: &str, id: &str) -> Subscriber {
        let mut child = client("mosquitto_sub", port)
            .args(["-c", "-i", id, "-v", "-t", topic])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub must be installed (see .ci/run)");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let (t, p) = line.split_once(' ').unwrap_or((&line, ""));
                sink.lock().unwrap().push((t.to_string(), p.to_string()));
            }
        });
        // The subscription exists once the broker has the session: wait for the CONNACK by
        // publishing a probe until it arrives.
        let probe = format!(
            "{}/probe",
            topic.trim_end_matches('#').trim_end_matches('/')
        );
        let s = Subscriber { child, lines };
        super::wait_until(
            "the subscriber receives its probe",
            Duration::from_secs(10),
            || {
                let _ = client("mosquitto_pub", port)
                    .args(["-t", &probe, "-m", "probe"])
                    .status();
                s.lines.lock().unwrap().iter().any(|(t, _)| *t == probe)
            },
        );
        s
    }

    /// Every (topic, payload) received so far, probes excluded.
    pub fn messages(&self) -> Vec<(String, String)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| !t.ends_with("/probe"))
            .cloned()
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program` (`mosquitto_sub`, `mosquitto_pub`) for the local broker on `port`, at QoS 1.
pub fn client(program: &str, port: u16) -> Command {
    let mut c = Command::new(program);
    c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"]);
    c
}
