//! GATT connections of the BLE input: one task per `[[ble.gatt]]` on the BLE runtime. It
//! waits until the scan has seen the device, connects, finds the characteristic, then
//! subscribes (`notify`) or reads it `every` period, and sends each value to the scan
//! session, which owns the duplicate filter. Any failure disconnects, is reported once, and
//! is retried with backoff (not reset while the task lives); it never ends the input.

use crate::backoff::Backoff;
use crate::ble::values::address_label;
use crate::config::{GattConfig, GattMode};
use crate::reading::Value;
use btleplug::api::{Central, Characteristic, Peripheral as _};
use btleplug::platform::{Adapter, Peripheral};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a subscribed connection is checked while no notification arrives.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// One value read or notified.
#[derive(Debug)]
pub struct GattValue {
    pub address: [u8; 6],
    /// The characteristic, for the duplicate filter.
    pub source: Arc<str>,
    pub field: Arc<str>,
    /// `None`: shorter than the decode type.
    pub value: Option<Value>,
    pub rssi: Option<i16>,
}

/// Runs one GATT connection until the scan session drops `out`.
pub async fn run(
    input: Arc<str>,
    adapter: Adapter,
    spec: GattConfig,
    out: mpsc::Sender<GattValue>,
    mut backoff: Backoff,
) {
    let device = address_label(&spec.address);
    let mut reported: Option<String> = None;
    loop {
        let peripheral = find(&adapter, spec.address).await;
        let result = match &peripheral {
            Some(p) => connected(&input, p, &spec, &out).await,
            None => Err("not seen by the scan yet".to_string()),
        };
        match result {
            Ok(()) => return,
            Err(e) if reported.as_deref() != Some(e.as_str()) => {
                warn!(input = %input, device = %device, reason = %e, "GATT device unavailable; retrying with backoff.");
                reported = Some(e);
            }
            Err(e) => {
                debug!(input = %input, device = %device, reason = %e, "GATT device still unavailable.")
            }
        }
        if let Some(p) = peripheral {
            let _ = tokio::time::timeout(IO_TIMEOUT, p.disconnect()).await;
        }
        if out.is_closed() {
            return;
        }
        // The task is aborted when its scan session ends: no cancellation to watch.
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

async fn find(adapter: &Adapter, address: [u8; 6]) -> Option<Peripheral> {
    let list = adapter.peripherals().await.ok()?;
    list.into_iter()
        .find(|p| <[u8; 6]>::from(p.address()) == address)
}

fn err(what: &str) -> impl Fn(btleplug::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Connects and serves `spec` until the connection fails; `Ok` means `out` is closed.
async fn connected(
    input: &str,
    p: &Peripheral,
    spec: &GattConfig,
    out: &mpsc::Sender<GattValue>,
) -> Result<(), String> {
    if !p.is_connected().await.map_err(err("connected?"))? {
        tokio::time::timeout(CONNECT_TIMEOUT, p.connect())
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(err("connect"))?;
    }
    p.discover_services()
        .await
        .map_err(err("discover services"))?;
    let ch: Characteristic = p
        .characteristics()
        .into_iter()
        .find(|c| {
            c.uuid.as_u128() == spec.characteristic && c.service_uuid.as_u128() == spec.service
        })
        .ok_or("the device has no such service and characteristic")?;
    let source: Arc<str> = Arc::from(format!("gatt:{}", ch.uuid));
    info!(input = %input, device = %address_label(&spec.address), characteristic = %ch.uuid, "GATT device connected.");
    let value = |bytes: &[u8], rssi: Option<i16>| GattValue {
        address: spec.address,
        source: source.clone(),
        field: spec.decode.field.clone(),
        value: spec.decode.decode(bytes),
        rssi,
    };
    match spec.mode {
        GattMode::Notify => {
            let mut stream = p.notifications().await.map_err(err("notifications"))?;
            p.subscribe(&ch).await.map_err(err("subscribe"))?;
            let mut check = tokio::time::interval(CHECK_EVERY);
            loop {
                tokio::select! {
                    n = stream.next() => {
                        let Some(n) = n else { return Err("notifications ended".into()) };
                        if n.uuid != ch.uuid {
                            continue;
                        }
                        if out.send(value(&n.value, rssi(p).await)).await.is_err() {
                            return Ok(());
                        }
                    }
                    _ = check.tick() => {
                        if !p.is_connected().await.unwrap_or(false) {
                            return Err("disconnected".into());
                        }
                    }
                }
            }
        }
        GattMode::Read { every } => {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let bytes = tokio::time::timeout(IO_TIMEOUT, p.read(&ch))
                    .await
                    .map_err(|_| "read timed out".to_string())?
                    .map_err(err("read"))?;
                if out.send(value(&bytes, rssi(p).await)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

async fn rssi(p: &Peripheral) -> Option<i16> {
    p.properties().await.ok().flatten().and_then(|p| p.rssi)
}
