//! The soak's subscriber: a counting `mosquitto_sub`, killed when dropped (also while a
//! panic unwinds). The broker and the gateway are the tests' own (`benches/common`).

use crate::common::subscriber::client;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the subscriber received, by input (the index of its name in the topic's last level).
#[derive(Default)]
pub struct Tally {
    /// Per input, how often each reading number `n` arrived.
    pub seen: Vec<Vec<u32>>,
    /// Messages received, duplicates included (probes and poison excluded).
    pub messages: u64,
    /// Poison readings that arrived (they must not: the broker's limit is below their size).
    pub poison: u64,
    /// Lines that were not `topic {"n": ...}` of a known input.
    pub strange: u64,
}

impl Tally {
    pub fn unique(&self) -> u64 {
        self.seen
            .iter()
            .map(|v| v.iter().filter(|&&c| c > 0).count() as u64)
            .sum()
    }

    pub fn seen_once_or_more(&self, input: usize, n: u64) -> bool {
        self.seen[input].get(n as usize).is_some_and(|&c| c > 0)
    }

    fn add(&mut self, line: &str, topic_prefix: &str, inputs: &[String]) {
        let Some((topic, payload)) = line.split_once(' ') else {
            self.strange += 1;
            return;
        };
        if topic.ends_with("/probe") {
            return;
        }
        let input = topic
            .strip_prefix(topic_prefix)
            .and_then(|name| inputs.iter().position(|i| i == name));
        let v: Option<Value> = serde_json::from_str(payload).ok();
        let n = v.as_ref().and_then(|v| v["n"].as_u64());
        let (Some(input), Some(v), Some(n)) = (input, v, n) else {
            self.strange += 1;
            return;
        };
        if v["poison"].as_bool() == Some(true) {
            self.poison += 1;
            return;
        }
        let counts = &mut self.seen[input];
        if counts.len() <= n as usize {
            counts.resize(n as usize + 1, 0);
        }
        counts[n as usize] += 1;
        self.messages += 1;
    }
}

/// `mosquitto_sub -c -i ID -q 1 -v`: a persistent session directly on the broker.
pub struct Subscriber {
    child: Child,
    pub tally: Arc<Mutex<Tally>>,
}

impl Subscriber {
    /// Subscribes to `{topic_prefix}#` and waits until a probe comes back.
    pub fn start(port: u16, id: &str, topic_prefix: &str, inputs: &[String]) -> Subscriber {
        let filter = format!("{topic_prefix}#");
        let mut child = client("mosquitto_sub", port)
            .args(["-c", "-i", id, "-v", "-t", &filter])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub installed (apt-get install mosquitto-clients)");
        let out = child.stdout.take().unwrap();
        let tally = Arc::new(Mutex::new(Tally {
            seen: vec![Vec::new(); inputs.len()],
            ..Tally::default()
        }));
        let probed = Arc::new(AtomicBool::new(false));
        let (sink, p, prefix, names) = (
            tally.clone(),
            probed.clone(),
            topic_prefix.to_string(),
            inputs.to_vec(),
        );
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.starts_with(&format!("{prefix}probe ")) {
                    p.store(true, Ordering::SeqCst);
                }
                sink.lock().unwrap().add(&line, &prefix, &names);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !probed.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the subscriber got no probe");
            let _ = client("mosquitto_pub", port)
                .args(["-t", &format!("{topic_prefix}probe"), "-m", "probe"])
                .status();
            std::thread::sleep(Duration::from_millis(100));
        }
        Subscriber { child, tally }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
