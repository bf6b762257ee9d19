//! The BLE input: btleplug (BlueZ over D-Bus) on its own thread, with its own current-thread
//! tokio runtime, scanning for advertisements and running the configured GATT connections.
//!
//! Lifecycle: [`run`] (a task on the gateway's runtime) starts the thread and forwards its
//! readings to the pipeline. The thread runs `supervise`: it builds a runtime and runs
//! scan sessions in it under `catch_unwind`; a panic anywhere in the BLE stack ends only that
//! runtime, which is rebuilt after a backoff. A scan session ends when BlueZ is unreachable,
//! the adapter is missing or vanishes, `org.bluez` changes owner (bluetoothd restarted) or
//! the event stream ends; the next one starts after a backoff (doubling from `retry_min` to
//! `retry_max`), reported once per cause. While listed devices exist and nothing at all was
//! heard for `scan_stall`, the scan is stopped and started again.
//!
//! **Architecture Invariant:** nothing here is fatal to the gateway, and the BLE stack never
//! runs on the gateway's runtime (bluez-async can panic in a detached task during connect on
//! a multi-thread runtime). Shutdown: `run` stops forwarding when cancelled, passes on what
//! the thread already produced, and then drops its channel, so a stuck BLE stack cannot
//! hold the pipeline open.
//!
//! Advertisements are read on a timer, every [`DRAIN_EVERY`], from a D-Bus connection that
//! the runtime does not watch (see `signals`), and the readings of one round cross to the
//! gateway's runtime as one batch: the BLE thread and the gateway wake a few times a second
//! instead of once per advertisement. Readings wait at most that long in addition.

mod gatt;
mod scan;
mod signals;
mod survey;

pub use survey::survey;

use crate::backoff::Backoff;
use crate::ble::advert::{Listed, Processor, Wanted};
use crate::config::BleConfig;
use crate::input::InputId;
use crate::metrics::Metrics;
use crate::reading::Reading;
use scan::sessions;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// How often the advertisement signals that arrived meanwhile are read and decoded.
pub const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Batches of readings between the BLE thread and the gateway's runtime.
const BATCHES: usize = 16;

/// The BLE thread's side of the channel to the gateway: readings in batches.
type Out = mpsc::Sender<Vec<Reading>>;

/// Runs the BLE input until `cancel` fires or the pipeline is gone.
pub async fn run(
    id: InputId,
    config: BleConfig,
    out: mpsc::Sender<Reading>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<Vec<Reading>>(BATCHES);
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let stop = cancel.child_token();
    let name = id.name.clone();
    let thread_stop = stop.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("ble-{name}"))
        .spawn(move || {
            supervise(id, config, tx, metrics, thread_stop);
            let _ = done_tx.send(());
        });
    if let Err(e) = spawned {
        error!(input = %name, error = %e, "Cannot start the BLE thread; this input is off.");
        return;
    }
    'forward: loop {
        tokio::select! {
            r = rx.recv() => match r {
                Some(batch) => for r in batch {
                    if out.send(r).await.is_err() { break 'forward }
                },
                None => break,
            },
            _ = cancel.cancelled() => break,
        }
    }
    stop.cancel();
    'rest: while let Ok(batch) = rx.try_recv() {
        for r in batch {
            if out.send(r).await.is_err() {
                break 'rest;
            }
        }
    }
    drop(rx);
    if tokio::time::timeout(Duration::from_secs(2), done_rx)
        .await
        .is_err()
    {
        warn!(input = %name, "The BLE thread did not stop within 2 s; leaving it.");
    }
}

/// The thread's body: scan sessions in a fresh runtime, rebuilt after a panic.
fn supervise(
    id: InputId,
    config: BleConfig,
    tx: Out,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut processor = Processor::new(id.clone(), Wanted::from(&config), metrics);
    let retry = Backoff::new(config.retry_min, config.retry_max);
    let gone = || stop.is_cancelled() || tx.is_closed();
    restart_on_panic(&id.name, retry, gone, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(sessions(&mut processor, &config, &tx, &stop));
        Ok(())
    });
}

/// Runs `body` until it returns `Ok`; a panic or an error in it is logged and `body` runs
/// again after the next wait of `backoff`, unless `gone()` says to stop.
/// **Invariant:** nothing that panics inside `body` leaves this function.
fn restart_on_panic(
    name: &str,
    mut backoff: Backoff,
    gone: impl Fn() -> bool,
    mut body: impl FnMut() -> std::io::Result<()>,
) {
    loop {
        match std::panic::catch_unwind(AssertUnwindSafe(&mut body)) {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                error!(input = %name, error = %e, "Cannot build the BLE runtime; retrying.")
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                warn!(input = %name, panic = %what, "The BLE stack panicked; restarting it.");
            }
        }
        // A plain thread (the runtime is what failed): it sleeps in short steps to notice
        // a stop.
        let deadline = Instant::now() + backoff.next_wait();
        while Instant::now() < deadline {
            if gone() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl From<&BleConfig> for Wanted {
    fn from(config: &BleConfig) -> Wanted {
        Wanted {
            devices: config
                .devices
                .iter()
                .map(|d| Listed {
                    address: d.address,
                    alias: d.alias.clone(),
                    bindkey: d.bindkey,
                })
                .collect(),
            allow_unknown: config.allow_unknown,
            min_interval: config.min_interval,
        }
    }
}

#[cfg(test)]
mod panic_tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_panicking_ble_stack_is_restarted_and_contained() {
        let calls = Cell::new(0);
        let retry = Backoff::new(Duration::from_millis(1), Duration::from_millis(4));
        restart_on_panic(
            "yard",
            retry,
            || false,
            || {
                calls.set(calls.get() + 1);
                match calls.get() {
                    1 => panic!("messagestream.rs:40: No match with that id found"),
                    2 => Err(std::io::Error::other("no runtime")),
                    3 => {
                        // A panic in the main future of the BLE runtime, as in a session.
                        let rt = tokio::runtime::Builder::new_current_thread().build()?;
                        rt.block_on(async { panic!("inside the runtime") })
                    }
                    _ => Ok(()),
                }
            },
        );
        assert_eq!(calls.get(), 4);
    }

    #[test]
    fn a_panic_in_a_detached_task_does_not_reach_the_session() {
        // bluez-async's panic happens in a task it spawned: the runtime catches it and the
        // session goes on (the stall timeout notices if the scan went silent).
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let survived = rt.block_on(async {
            let task = tokio::spawn(async { panic!("detached") });
            task.await.is_err()
        });
        assert!(survived);
    }

    #[test]
    fn stop_ends_the_retries() {
        let calls = Cell::new(0);
        restart_on_panic(
            "yard",
            Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
            || true,
            || {
                calls.set(calls.get() + 1);
                panic!("always");
            },
        );
        assert_eq!(calls.get(), 1);
    }
}
