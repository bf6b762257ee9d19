//! The real `sensorgate` binary as a child process, with a generated config, its stderr in a
//! log file, and its queue read through its own CLI.

use super::{signal, wait_exit, wait_until};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sensorgate");

pub struct Gateway {
    pub dir: PathBuf,
    pub config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// The binary `start` runs ([`BIN`]; a benchmark may compare another build).
    pub bin: PathBuf,
    /// Extra environment for the process (e.g. DBUS_SYSTEM_BUS_ADDRESS), set after the
    /// defaults (`RUST_LOG=sensorgate=debug`, `NO_COLOR=1`), which it may override.
    pub env: Vec<(&'static str, String)>,
}

/// The `[gateway]` and `[mqtt]` tables every test config starts with.
pub fn base_config(dir: &Path, id: &str, url: &str, mqtt_extra: &str) -> String {
    format!(
        "[gateway]\nid = \"{id}\"\nstate_dir = \"{}\"\nhealth_interval = \"0s\"\n\n\
         [mqtt]\nurl = \"{url}\"\nkeep_alive = \"2s\"\nbackoff_min = \"100ms\"\nbackoff_max = \"1s\"\n\
         connect_timeout = \"2s\"\n{mqtt_extra}\n",
        dir.join("state").display()
    )
}

impl Gateway {
    /// Writes `config` to `dir/sensorgate.toml`; does not start the process.
    pub fn new(dir: &Path, config: &str) -> Gateway {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("sensorgate.toml");
        std::fs::write(&path, config).unwrap();
        Gateway {
            dir: dir.to_path_buf(),
            config: path,
            log: dir.join("gateway.log"),
            child: None,
            bin: PathBuf::from(BIN),
            env: Vec::new(),
        }
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the gateway with extra environment variables.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "gateway already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .args(["run", "-c"])
            .arg(&self.config)
            .env("RUST_LOG", "sensorgate=debug")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (*k, v)))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: a power cut, as far as the gateway can tell.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status and how long the exit took.
    pub fn terminate(&mut self, timeout: Duration) -> (Option<ExitStatus>, Duration) {
        let mut c = self.child.take().expect("gateway running");
        let t0 = Instant::now();
        signal(&c, Signal::SIGTERM);
        let status = wait_exit(&mut c, timeout);
        (status, t0.elapsed())
    }

    /// Waits for the gateway to exit by itself; None (and killed) after `timeout`.
    pub fn wait_stopped(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take().expect("gateway running");
        wait_exit(&mut c, timeout)
    }

    /// The running gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway running").id()
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        self.wait_log_count(needle, 1, timeout);
    }

    /// Waits until the log says `needle` `count` times.
    pub fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) {
        wait_until(
            &format!("the gateway logs {needle:?} {count} times"),
            timeout,
            || self.log().matches(needle).count() >= count,
        );
    }

    /// Runs `sensorgate ARGS -c CONFIG` and returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&self.bin)
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `sensorgate queue stats --json`, or None while there is no queue yet.
    pub fn stats(&self) -> Option<serde_json::Value> {
        let (code, out, _) = self.cli(&["queue", "stats", "--json"]);
        (code == 0).then(|| serde_json::from_str(&out).expect("stats is JSON"))
    }

    pub fn pending(&self) -> u64 {
        self.stats()
            .and_then(|s| s["pending"].as_u64())
            .unwrap_or(0)
    }

    /// Every pending message, oldest first (`sensorgate queue export`).
    pub fn export(&self) -> Vec<serde_json::Value> {
        let (code, out, err) = self.cli(&["queue", "export"]);
        assert_eq!(code, 0, "queue export failed: {err}");
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- gateway log ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}
