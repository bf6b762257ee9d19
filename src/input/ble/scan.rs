//! The BLE input's scan sessions, on the BLE thread's runtime: one session picks the adapter,
//! starts the scan and the GATT connections, reads the advertisement signals every
//! [`DRAIN_EVERY`] and hands the readings over in batches, until BlueZ, the adapter or
//! bluetoothd is lost, the scan stalls, or it is stopped; [`sessions`] runs them one after
//! another with backoff.

use super::{gatt, signals, Out, DRAIN_EVERY};
use crate::backoff::Backoff;
use crate::ble::advert::Processor;
use crate::ble::values::parse_address;
use crate::config::BleConfig;
use crate::reading::Reading;
use bluez_async::DeviceId;
use btleplug::api::{Central, Manager as _, ScanFilter};
use btleplug::platform::{Adapter, Manager};
use gatt::GattValue;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often a scan session checks that its adapter and bluetoothd are still the same.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Devices whose address and RSSI are cached, at most.
const MAX_CACHED: usize = 4096;
/// Signals read in one round, at most; a full round is followed by another at once.
const MAX_DRAIN: usize = 1024;

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
pub(super) async fn sessions(
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
pub(super) async fn pick_adapter(
    manager: &Manager,
    want: Option<&str>,
) -> Result<(Adapter, String), String> {
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
        // A device BlueZ has just found (or found again after forgetting it): its first
        // advertisement comes with it, and BlueZ will not repeat that data as a change. A
        // button that sleeps between presses is a new device at every press.
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
    } else if let (Some(rssi), Some(s)) = (u.rssi, seen.get_mut(&*u.path)) {
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
pub(super) fn address_from_path(path: &str) -> Option<[u8; 6]> {
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
