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

use crate::ble::advert::{Payload, Processor};
use crate::ble::gatt::{self, GattValue};
use crate::ble::values::parse_address;
use crate::config::BleConfig;
use crate::input::serial::InputId;
use crate::metrics::Metrics;
use crate::reading::Reading;
use bluez_async::{BluetoothEvent, DeviceEvent, DeviceId};
use btleplug::api::{Central, Manager as _, ScanFilter};
use btleplug::platform::{Adapter, Manager};
use futures::StreamExt;
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

/// Runs the BLE input until `cancel` fires or the pipeline is gone.
pub async fn run(
    id: InputId,
    config: BleConfig,
    out: mpsc::Sender<Reading>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<Reading>(256);
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
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Some(r) => if out.send(r).await.is_err() { break },
                None => break,
            },
            _ = cancel.cancelled() => break,
        }
    }
    stop.cancel();
    while let Ok(r) = rx.try_recv() {
        if out.send(r).await.is_err() {
            break;
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
    tx: mpsc::Sender<Reading>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut processor = Processor::new(id.clone(), &config, metrics);
    let retry = (config.retry_min, config.retry_max);
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
/// again after a backoff between `retry.0` and `retry.1`, unless `gone()` says to stop.
/// **Invariant:** nothing that panics inside `body` leaves this function.
fn restart_on_panic(
    name: &str,
    retry: (Duration, Duration),
    gone: impl Fn() -> bool,
    mut body: impl FnMut() -> std::io::Result<()>,
) {
    let mut backoff = retry.0;
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
        let deadline = Instant::now() + backoff;
        while Instant::now() < deadline {
            if gone() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        backoff = (backoff * 2).min(retry.1);
    }
}

#[cfg(test)]
mod panic_tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_panicking_ble_stack_is_restarted_and_contained() {
        let calls = Cell::new(0);
        let retry = (Duration::from_millis(1), Duration::from_millis(4));
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
            (Duration::from_millis(1), Duration::from_millis(1)),
            || true,
            || {
                calls.set(calls.get() + 1);
                panic!("always");
            },
        );
        assert_eq!(calls.get(), 1);
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
    tx: &mpsc::Sender<Reading>,
    stop: &CancellationToken,
) {
    let name = processor.input().name.clone();
    let mut backoff = config.retry_min;
    let mut reported: Option<String> = None;
    loop {
        match session(processor, config, tx, stop).await {
            Ended::Stop => return,
            Ended::Lost { why, scanned: true } => {
                warn!(input = %name, reason = %why, "BLE scan lost; rescanning.");
                backoff = config.retry_min;
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
        tokio::select! {
            _ = tokio::time::sleep(backoff.mul_f64(0.75 + fastrand::f64() * 0.5)) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(config.retry_max);
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
    tx: &mpsc::Sender<Reading>,
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
    // Advertisements come from bluez-async's event stream for this adapter: btleplug's own
    // stream makes a D-Bus round trip to bluetoothd (GetAll on the device) for every single
    // advertisement, which cost more CPU than everything else the gateway does.
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
    let bz_adapter = match bz.get_adapters().await {
        Ok(list) => list
            .into_iter()
            .map(|a| a.id)
            .find(|id| id.to_string() == adapter_name),
        Err(e) => return lost(false, format!("cannot list adapters: {e}")),
    };
    let Some(bz_adapter) = bz_adapter else {
        return lost(false, format!("adapter {adapter_name} vanished"));
    };
    let mut events = match bz.adapter_event_stream(&bz_adapter).await {
        Ok(e) => e,
        Err(e) => return lost(false, format!("cannot watch adapter {adapter_name}: {e}")),
    };
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
            (config.retry_min, config.retry_max),
        ));
    }
    drop(gatt_tx);

    let expect_adverts = !config.devices.is_empty();
    let mut seen: HashMap<DeviceId, Seen> = HashMap::new();
    let mut last_advert = Instant::now();
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.tick().await;
    let ended = loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break Ended::Stop,
            ev = events.next() => match ev {
                Some(ev) => ev,
                None => break lost(true, format!("the event stream of {adapter_name} ended")),
            },
            Some(v) = gatt_rx.recv() => {
                let now = Instant::now();
                if let Some(r) = processor.gatt(v.address, &v.source, &v.field, v.value, v.rssi, now) {
                    if tx.send(r).await.is_err() {
                        break Ended::Stop;
                    }
                }
                continue;
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
                continue;
            }
        };
        let now = Instant::now();
        let BluetoothEvent::Device { id, event } = event else {
            continue;
        };
        match &event {
            DeviceEvent::ServiceData { .. } | DeviceEvent::ManufacturerData { .. } => {
                last_advert = now;
            }
            DeviceEvent::Rssi { rssi } => {
                if let Some(s) = seen.get_mut(&id) {
                    s.rssi = Some(*rssi);
                }
                continue;
            }
            DeviceEvent::Discovered => {}
            _ => continue,
        }
        let device = match seen.get(&id) {
            Some(s) => *s,
            None => {
                let Some(s) = look_up(&bz, &id).await else {
                    continue;
                };
                if seen.len() >= MAX_CACHED {
                    seen.clear();
                }
                seen.insert(id.clone(), s);
                s
            }
        };
        let mut readings = Vec::new();
        match &event {
            DeviceEvent::ServiceData { service_data } => {
                for (uuid, data) in service_data {
                    let p = Payload::Service {
                        uuid: uuid.as_u128(),
                        data,
                    };
                    readings.extend(processor.advert(device.address, p, device.rssi, now));
                }
            }
            DeviceEvent::ManufacturerData { manufacturer_data } => {
                for (company, data) in manufacturer_data {
                    let p = Payload::Manufacturer {
                        company: *company,
                        data,
                    };
                    readings.extend(processor.advert(device.address, p, device.rssi, now));
                }
            }
            _ => {}
        }
        let mut gone = false;
        for r in readings {
            if tx.send(r).await.is_err() {
                gone = true;
                break;
            }
        }
        if gone {
            break Ended::Stop;
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

/// A device's address (from its BlueZ object path, else by asking) and current RSSI.
async fn look_up(bz: &bluez_async::BluetoothSession, id: &DeviceId) -> Option<Seen> {
    let path = id.to_string();
    let from_path = path
        .rsplit_once("dev_")
        .and_then(|(_, a)| parse_address(&a.replace('_', ":")));
    let info = bz.get_device_info(id).await.ok();
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
