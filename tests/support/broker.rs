//! A real Mosquitto broker on a free port, with persistence so that a persistent subscriber
//! keeps its queue across a clean restart; or bare (no persistence, no log file), as the
//! benchmarks run it.

use super::{port_open, signal, wait_exit, wait_until};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Broker {
    pub port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts mosquitto on `port` with its files in `dir`.
    pub fn start_on(dir: &Path, port: u16) -> Broker {
        Broker::start_with(dir, port, "")
    }

    /// Starts mosquitto on `port`, with `extra` appended to its config (more listeners).
    pub fn start_with(dir: &Path, port: u16, extra: &str) -> Broker {
        let d = dir.display();
        Broker::start_conf(
            dir,
            port,
            &format!(
                "persistence true\npersistence_location {d}/\n\
                 log_dest file {d}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n{extra}"
            ),
        )
    }

    /// Mosquitto on a free port without persistence or a log file: what the benchmarks
    /// measure against.
    pub fn start_bare(dir: &Path) -> Broker {
        Broker::start_conf(dir, super::free_port(), "")
    }

    /// Starts mosquitto on `port` with the settings every broker here has, then `more`.
    fn start_conf(dir: &Path, port: u16, more: &str) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n\
             max_queued_messages 0\nmax_inflight_messages 0\n{more}"
        );
        std::fs::write(&conf, text).unwrap();
        let mut b = Broker {
            port,
            conf,
            child: None,
        };
        b.start();
        b
    }

    pub fn start_in(dir: &Path) -> Broker {
        Broker::start_on(dir, super::free_port())
    }

    /// (Re)starts the broker and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (see .ci/run)");
        self.child = Some(child);
        let port = self.port;
        wait_until(
            "mosquitto accepts connections",
            Duration::from_secs(10),
            || port_open(port),
        );
    }

    /// Stops the broker cleanly (SIGTERM: it saves its persistent state).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, Signal::SIGTERM);
            wait_exit(&mut c, Duration::from_secs(10)).expect("mosquitto stops on SIGTERM");
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
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
