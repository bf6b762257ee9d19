//! `sensorgate ble scan`: listens on an adapter for a while, without a config, and hands
//! what it heard to [`Survey`]. Like the BLE input, on its own current-thread runtime.
//!
//! What counts as heard: a device BlueZ reported during the scan (discovered, or a property
//! changed: RSSI, name or advertisement data). BlueZ signals advertisement data only when
//! it changes, so at the end the current properties of those devices are read as well
//! (`GetManagedObjects`): a sensor repeating the same bytes since before the scan is
//! decoded too. Devices BlueZ merely remembers from earlier are not listed.

use super::scan::{address_from_path, pick_adapter};
use super::signals;
use crate::ble::survey::Survey;
use crate::ble::values::parse_address;
use anyhow::{anyhow, Context};
use btleplug::api::{Central, ScanFilter};
use btleplug::platform::Manager;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How often the signals that arrived meanwhile are read.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Signals read in one round, at most.
const MAX_DRAIN: usize = 4096;

/// Listens on `adapter` (the first one by default) for `listen`; returns the adapter's name
/// and what was heard.
pub fn survey(adapter: Option<&str>, listen: Duration) -> anyhow::Result<(String, Survey)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(run(adapter, listen))
}

async fn run(want: Option<&str>, listen: Duration) -> anyhow::Result<(String, Survey)> {
    let manager = Manager::new()
        .await
        .context("cannot reach BlueZ on the system D-Bus")?;
    let bus = dbus::blocking::Connection::new_system().context("cannot open the system D-Bus")?;
    let (adapter, name) = pick_adapter(&manager, want).await.map_err(|e| anyhow!(e))?;
    let path = format!("/org/bluez/{name}");
    signals::watch(&bus, &path).with_context(|| format!("cannot watch adapter {name}"))?;
    adapter
        .start_scan(ScanFilter::default())
        .await
        .with_context(|| format!("cannot scan on {name}"))?;

    let mut survey = Survey::new();
    let mut heard: HashSet<String> = HashSet::new();
    let end = Instant::now() + listen;
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    let mut msgs = Vec::new();
    loop {
        tick.tick().await;
        signals::drain(&bus, MAX_DRAIN, |m| msgs.push(m))
            .map_err(|_| anyhow!("the D-Bus connection closed"))?;
        for msg in msgs.drain(..) {
            if let Some(u) = signals::parse(&msg) {
                if heard.len() < 4 * crate::ble::survey::MAX_DEVICES {
                    heard.insert(u.path.to_string());
                }
                add(&mut survey, &u);
            }
        }
        if Instant::now() >= end {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), adapter.stop_scan()).await;

    // The current data of every device heard (see the module's documentation).
    let call = dbus::Message::new_method_call(
        "org.bluez",
        "/",
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
    )
    .map_err(|e| anyhow!(e))?;
    let reply = bus
        .channel()
        .send_with_reply_and_block(call, Duration::from_secs(10))
        .context("cannot list BlueZ's devices")?;
    for u in signals::managed(&reply) {
        if heard.contains(&*u.path) {
            add(&mut survey, &u);
        }
    }
    Ok((name, survey))
}

/// One device signal (or listing) into the survey.
fn add(survey: &mut Survey, u: &signals::Update) {
    let address = u
        .address
        .and_then(parse_address)
        .or_else(|| address_from_path(&u.path));
    let Some(address) = address else {
        return;
    };
    survey.heard(address, u.name, u.rssi);
    for p in &u.payloads {
        survey.payload(address, *p);
    }
}
