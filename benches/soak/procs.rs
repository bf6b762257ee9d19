//! The soak's processes, each killed when dropped (also while a panic unwinds): a
//! persistent Mosquitto restarted with SIGTERM, the gateway binary (optionally under
//! libfaketime) and its CLI, and a counting `mosquitto_sub`.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sensorgate");

fn signal(child: &Child, sig: Signal) {
    let _ = kill(Pid::from_raw(child.id() as i32), sig);
}

/// Waits for a child to exit; kills it after `timeout`. Its status if it exited by itself.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn port_open(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Mosquitto with persistence, so that the subscriber's session and queued messages
/// survive a restart by SIGTERM.
pub struct Broker {
    pub port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n\
                 persistence_location {d}/\nmax_queued_messages 0\nmax_inflight_messages 0\n\
                 log_dest file {d}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n"
            ),
        )
        .unwrap();
        let mut b = Broker {
            port,
            conf,
            child: None,
        };
        b.up();
        b
    }

    /// Starts the broker and waits until it accepts connections.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto installed (apt-get install mosquitto mosquitto-clients)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port_open(self.port) {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: the broker saves sessions and queued messages, then exits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, Signal::SIGTERM);
            assert!(
                wait_exit(&mut c, Duration::from_secs(10)).is_some(),
                "mosquitto did not stop on SIGTERM"
            );
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The gateway binary with its config and log, and its queue read through its own CLI.
pub struct Gateway {
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Gateway {
    pub fn new(dir: &Path, config: &str) -> Gateway {
        let path = dir.join("sensorgate.toml");
        std::fs::write(&path, config).unwrap();
        Gateway {
            config: path,
            log: dir.join("gateway.log"),
            child: None,
        }
    }

    pub fn start(&mut self, env: &[(&'static str, String)]) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(BIN)
            .args(["run", "-c"])
            .arg(&self.config)
            .env("RUST_LOG", "sensorgate=info")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway running").id()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM; the exit status, or None if it had to be killed after `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        signal(&c, Signal::SIGTERM);
        wait_exit(&mut c, timeout)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log says `needle` `count` times.
    pub fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log_text().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "the gateway did not log {needle:?} within {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(BIN)
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `sensorgate queue stats --json`; None while there is no queue (or the CLI failed).
    pub fn stats(&self) -> Option<Value> {
        serde_json::from_str(&self.cli(&["queue", "stats", "--json"])?).ok()
    }

    /// `sensorgate queue dead export`: one JSON object per dead letter held.
    pub fn dead_letters(&self) -> Vec<Value> {
        self.cli(&["queue", "dead", "export"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

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
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-c"])
            .args(["-i", id, "-v", "-t", &filter])
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
            let _ = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
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
