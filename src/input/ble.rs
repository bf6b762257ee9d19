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
mod signals;

use crate::backoff::Backoff;
use crate::ble::advert::{Listed, Processor, Wanted};
use crate::ble::values::parse_address;
use crate::config::BleConfig;
use crate::input::InputId;
use crate::metrics::Metrics;
use crate::reading::Reading;
use bluez_async::DeviceId;
use btleplug::api::{Central, Manager as _, ScanFilter};
use btleplug::platform::{Adapter, Manager};
use gatt::GattValue;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// How often a scan session checks that its adapter and bluetoothd are still the same.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Devices whose address and RSSI are cached, at most.
const MAX_CACHED: usize = 4096;
/// How often the advertisement signals that arrived meanwhile are read and decoded.
pub const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Signals read in one round, at most; a full round is followed by another at once.
const MAX_DRAIN: usize = 1024;
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

/// Why a scan session ended.
enum Ended {
    /// Cancelled, or the pipeline is gone.
    Stop,
    /// BLE is unavailable or was lost; `scanned` says whether the session got to scan.
    Lost { why: String, scanned: bool },
}

fn lost(scanned: bool, why: impl std::fmt::Display) -> Ended {
    Ended::Lost {
        why: why.to_string(),
        scanned,
    }
}

/// Scan sessions one after another, with backoff between them, until stopped.
async fn sessions(
    processor: &mut Processor,
    config: &BleConfig,
    tx: &Out,
    stop: &CancellationToken,
) {
    let name = processor.input().name.clone();
    let mut backoff = Backoff::new(config.retry_min, config.retry_max);
    let mut reported: Option<String> = None;
    loop {
        match session(processor, config, tx, stop).await {
            Ended::Stop => return,
            Ended::Lost { why, scanned: true } => {
                warn!(input = %name, reason = %why, "BLE scan lost; rescanning.");
                backoff.reset();
                reported = None;
            }
            Ended::Lost { why, .. } if reported.as_deref() != Some(why.as_str()) => {
                warn!(input = %name, reason = %why, "BLE unavailable; retrying with backoff.");
                reported = Some(why);
            }
            Ended::Lost { why, .. } => {
                debug!(input = %name, reason = %why, "BLE still unavailable.")
            }
        }
        if backoff.pause(stop).await.is_err() {
            return;
        }
    }
}

/// A device seen by this session.
#[derive(Clone, Copy)]
struct Seen {
    address: [u8; 6],
    rssi: Option<i16>,
}

/// One scan session: connect to BlueZ, pick the adapter, scan, decode, until lost or stopped.
async fn session(
    processor: &mut Processor,
    config: &BleConfig,
    tx: &Out,
    stop: &CancellationToken,
) -> Ended {
    let name = processor.input().name.clone();
    let manager = match Manager::new().await {
        Ok(m) => m,
        Err(e) => {
            return lost(
                false,
                format!("cannot reach BlueZ on the system D-Bus: {e}"),
            )
        }
    };
    let bus = match dbus::blocking::Connection::new_system() {
        Ok(c) => c,
        Err(e) => return lost(false, format!("cannot open the system D-Bus: {e}")),
    };
    let Some(owner) = bluez_owner(&bus) else {
        return lost(
            false,
            "org.bluez is not on the system D-Bus (is bluetoothd running?)",
        );
    };
    let (adapter, adapter_name) = match pick_adapter(&manager, config.adapter.as_deref()).await {
        Ok(a) => a,
        Err(why) => return lost(false, why),
    };
    // Adverts are read from `bus`, which the runtime does not watch (see `signals`), not
    // from btleplug's stream (a GetAll round trip to bluetoothd per advert) nor from
    // bluez-async's (a wakeup and a map of boxed values per advert). bluez-async answers
    // the look-up of a device seen for the first time.
    let (bz, bz_conn) = match bluez_async::BluetoothSession::new().await {
        Ok((resource, session)) => (session, tokio::spawn(resource)),
        Err(e) => {
            return lost(
                false,
                format!("cannot reach BlueZ on the system D-Bus: {e}"),
            )
        }
    };
    let _conn_guard = AbortOnDrop(bz_conn);
    let adapter_path = match bz.get_adapters().await {
        Ok(list) => list
            .into_iter()
            .find(|a| a.id.to_string() == adapter_name)
            .map(|a| dbus::Path::from(a.id)),
        Err(e) => return lost(false, format!("cannot list adapters: {e}")),
    };
    let Some(adapter_path) = adapter_path else {
        return lost(false, format!("adapter {adapter_name} vanished"));
    };
    if let Err(e) = signals::watch(&bus, &adapter_path) {
        return lost(false, format!("cannot watch adapter {adapter_name}: {e}"));
    }
    if let Err(e) = adapter.start_scan(ScanFilter::default()).await {
        return lost(false, format!("cannot scan on {adapter_name}: {e}"));
    }
    info!(input = %name, adapter = %adapter_name, "BLE scan started.");

    let (gatt_tx, mut gatt_rx) = mpsc::channel::<GattValue>(64);
    let mut gatts = tokio::task::JoinSet::new();
    for spec in &config.gatt {
        gatts.spawn(gatt::run(
            name.clone(),
            adapter.clone(),
            spec.clone(),
            gatt_tx.clone(),
            Backoff::new(config.retry_min, config.retry_max),
        ));
    }
    drop(gatt_tx);

    let expect_adverts = !config.devices.is_empty();
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut last_advert = Instant::now();
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.tick().await;
    let mut drain = tokio::time::interval(DRAIN_EVERY);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut msgs: Vec<dbus::Message> = Vec::new();
    let ended = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ended::Stop,
            Some(v) = gatt_rx.recv() => {
                let now = Instant::now();
                if let Some(r) = processor.gatt(v.address, &v.source, &v.field, v.value, v.rssi, now) {
                    if tx.send(vec![r]).await.is_err() {
                        break Ended::Stop;
                    }
                }
            }
            _ = check.tick() => {
                if bluez_owner(&bus).as_deref() != Some(owner.as_str()) {
                    break lost(true, "bluetoothd restarted (org.bluez changed owner)");
                }
                // One small call on our adapter, not a listing of every BlueZ object (which
                // grows with the devices in range and cost more CPU than the adverts).
                match adapter.adapter_info().await {
                    Ok(info) if info.split(' ').next() == Some(adapter_name.as_str()) => {}
                    Ok(_) | Err(_) => break lost(true, format!("adapter {adapter_name} vanished")),
                }
                if expect_adverts && last_advert.elapsed() >= config.scan_stall {
                    warn!(input = %name, adapter = %adapter_name, silent_s = last_advert.elapsed().as_secs(), "No advertisement while devices are listed; restarting the scan.");
                    let _ = adapter.stop_scan().await;
                    if let Err(e) = adapter.start_scan(ScanFilter::default()).await {
                        break lost(true, format!("cannot restart the scan: {e}"));
                    }
                    last_advert = Instant::now();
                }
            }
            _ = drain.tick() => {
                let got = match signals::drain(&bus, MAX_DRAIN, |m| msgs.push(m)) {
                    Ok(n) => n,
                    Err(signals::Closed) => break lost(true, "the D-Bus connection closed"),
                };
                if got == MAX_DRAIN {
                    drain.reset_immediately(); // more are waiting
                }
                let now = Instant::now();
                let mut batch = Vec::new();
                for msg in msgs.drain(..) {
                    if let Some(u) = signals::parse(&msg) {
                        if advert(processor, &bz, &mut seen, u, now, &mut batch).await {
                            last_advert = now;
                        }
                    }
                }
                if !batch.is_empty() && tx.send(batch).await.is_err() {
                    break Ended::Stop;
                }
            }
        }
    };
    gatts.abort_all();
    if matches!(ended, Ended::Stop) {
        let _ = tokio::time::timeout(Duration::from_secs(1), adapter.stop_scan()).await;
    }
    ended
}

/// The unique bus name that owns `org.bluez`, if any.
fn bluez_owner(bus: &dbus::blocking::Connection) -> Option<String> {
    let proxy = bus.with_proxy(
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        Duration::from_millis(500),
    );
    let (owner,): (String,) = proxy
        .method_call("org.freedesktop.DBus", "GetNameOwner", ("org.bluez",))
        .ok()?;
    Some(owner)
}

/// The configured adapter (`hci0`), or the first one.
async fn pick_adapter(manager: &Manager, want: Option<&str>) -> Result<(Adapter, String), String> {
    let adapters = manager
        .adapters()
        .await
        .map_err(|e| format!("cannot list adapters: {e}"))?;
    for a in adapters {
        let Ok(info) = a.adapter_info().await else {
            continue;
        };
        // "hci0 (usb:v1D6Bp0246d0540)"
        let name = info.split(' ').next().unwrap_or_default().to_string();
        if want.is_none_or(|w| w == name) {
            return Ok((a, name));
        }
    }
    Err(match want {
        Some(w) => format!("no adapter {w}"),
        None => "no Bluetooth adapter".into(),
    })
}

/// One device signal: remembers a discovered device, updates its RSSI, and adds the readings
/// its advertisement makes to `out`. Returns whether it carried advertisement data.
async fn advert(
    processor: &mut Processor,
    bz: &bluez_async::BluetoothSession,
    seen: &mut HashMap<String, Seen>,
    u: signals::Update<'_>,
    now: Instant,
    out: &mut Vec<Reading>,
) -> bool {
    if u.discovered {
        // Like bluez-async's `Discovered`: only remembered; its data come with later changes.
        let address = u
            .address
            .and_then(parse_address)
            .or_else(|| address_from_path(&u.path));
        if let Some(address) = address {
            remember(
                seen,
                &u.path,
                Seen {
                    address,
                    rssi: u.rssi,
                },
            );
        }
        return false;
    }
    if let (Some(rssi), Some(s)) = (u.rssi, seen.get_mut(&*u.path)) {
        s.rssi = Some(rssi);
    }
    if u.payloads.is_empty() {
        return false;
    }
    let device = match seen.get(&*u.path) {
        Some(s) => *s,
        None => {
            let Some(s) = look_up(bz, &u.path).await else {
                return true;
            };
            remember(seen, &u.path, s);
            s
        }
    };
    for p in u.payloads {
        out.extend(processor.advert(device.address, p, device.rssi, now));
    }
    true
}

fn remember(seen: &mut HashMap<String, Seen>, path: &str, s: Seen) {
    if seen.len() >= MAX_CACHED && !seen.contains_key(path) {
        seen.clear();
    }
    seen.insert(path.to_string(), s);
}

/// `/org/bluez/hci0/dev_A4_C1_38_8E_11_22` -> its address.
fn address_from_path(path: &str) -> Option<[u8; 6]> {
    path.rsplit_once("dev_")
        .and_then(|(_, a)| parse_address(&a.replace('_', ":")))
}

/// A device's address (from its BlueZ object path, else by asking) and current RSSI.
async fn look_up(bz: &bluez_async::BluetoothSession, path: &str) -> Option<Seen> {
    let id: DeviceId = path.parse().ok()?;
    let from_path = address_from_path(path);
    let info = bz.get_device_info(&id).await.ok();
    let address = from_path.or_else(|| {
        info.as_ref()
            .and_then(|i| parse_address(&i.mac_address.to_string()))
    })?;
    Some(Seen {
        address,
        rssi: info.and_then(|i| i.rssi),
    })
}

/// Aborts a task when dropped (the bluez-async connection of a session).
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), bluez_async::SpawnError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
