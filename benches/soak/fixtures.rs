//! The soak's fixtures, undone when dropped: a tmpfs state directory (unmounted) and sensors
//! writing numbered lines to pseudo-terminals (stopped). The clock is the tests' own
//! (`common::fake_clock`).

use crate::common::pty::Pty;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
/// The state directory: a tmpfs of a fixed size when it can be mounted (as root), else a
/// plain directory. Unmounted when dropped.
pub struct StateDir {
    pub path: PathBuf,
    pub mounted: bool,
}

impl StateDir {
    pub fn mount(path: &Path, size: &str) -> StateDir {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        let mounted = matches!(&out, Ok(o) if o.status.success());
        if !mounted {
            let why = match &out {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            println!(
                "note: could not mount a {size} tmpfs on {} ({why}); the state directory is a \
                 plain directory, only max_size bounds it",
                path.display()
            );
        }
        StateDir {
            path: path.to_path_buf(),
            mounted,
        }
    }
}

/// Bytes of the files in a directory now.
pub fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.mounted {
            let ok = Command::new("umount")
                .arg(&self.path)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                // Something still holds a file: detach it now, freed when that ends.
                let _ = Command::new("umount").arg("-l").arg(&self.path).status();
            }
        }
    }
}

/// Poison lines to mix into a sensor's stream: one after a normal line with probability
/// `1 / every`, drawn from a generator seeded with `seed`; `bytes` of padding each.
#[derive(Clone, Copy)]
pub struct Poison {
    pub seed: u64,
    pub every: u64,
    pub bytes: usize,
}

/// A thread writing numbered JSON lines to a pseudo-terminal at a steady rate.
pub struct Sensor {
    stop: Arc<AtomicBool>,
    pub written: Arc<AtomicU64>,
    pub poison_written: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Sensor {
    /// `rate` lines a second, each `{"n": i, "pad": "..."}` with `pad` bytes of padding.
    /// A writer that falls more than a second behind (the terminal was full) does not
    /// catch up in a burst: it restarts its pace.
    pub fn start(pty: &Pty, rate: f64, pad: usize, poison: Option<Poison>) -> Sensor {
        let mut w = pty.writer();
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let poison_written = Arc::new(AtomicU64::new(0));
        let (s, wr, pw) = (stop.clone(), written.clone(), poison_written.clone());
        let thread = std::thread::spawn(move || {
            let padding = "x".repeat(pad);
            let mut rng = fastrand::Rng::with_seed(poison.map_or(0, |p| p.seed));
            let poison_pad = "p".repeat(poison.map_or(0, |p| p.bytes));
            let period = Duration::from_secs_f64(1.0 / rate);
            let (mut t0, mut since) = (Instant::now(), 0u32);
            while !s.load(Ordering::SeqCst) {
                let n = wr.load(Ordering::SeqCst);
                if w.write_all(format!("{{\"n\":{n},\"pad\":\"{padding}\"}}\n").as_bytes())
                    .is_err()
                {
                    break;
                }
                wr.fetch_add(1, Ordering::SeqCst);
                if poison.is_some_and(|p| rng.u64(0..p.every) == 0) {
                    let k = pw.load(Ordering::SeqCst);
                    let line = format!("{{\"n\":{k},\"poison\":true,\"pad\":\"{poison_pad}\"}}\n");
                    if w.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                    pw.fetch_add(1, Ordering::SeqCst);
                }
                since += 1;
                let next = t0 + period * since;
                let now = Instant::now();
                if now < next {
                    std::thread::sleep(next - now);
                } else if now - next > Duration::from_secs(1) {
                    (t0, since) = (now, 0);
                }
            }
        });
        Sensor {
            stop,
            written,
            poison_written,
            thread: Some(thread),
        }
    }

    /// Stops writing and waits for the thread: the counts are final.
    pub fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        // Not joined: the thread may be blocked on a full terminal whose reader is gone.
        self.stop.store(true, Ordering::SeqCst);
    }
}
