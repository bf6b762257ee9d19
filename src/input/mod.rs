//! Inputs turn bytes from the world into [`Reading`]s.
//!
//! - [`serial`]: a serial port read line by line, each line parsed by a [`format`]; its
//!   device path, a by-id symlink or not, is opened and watched by [`device`]; NMEA
//!   sentences also pass the filter and rate limit of [`nmea`].
//! - [`synthetic`]: readings at a rate, for the demo and benchmarks.
//! - [`modbus`]: Modbus RTU or TCP slaves polled on a bus; [`modbus::plan`] (pure, like
//!   [`format`]) plans the reads and decodes the registers.
//! - `ble` (feature `ble`): the BLE runtime (btleplug and BlueZ's D-Bus signals on a thread
//!   of its own, GATT connections); what it hears is decoded by the pure [`crate::ble`].
//!
//! [`format`], [`modbus::plan`] and [`InputId`] are pure and import only the ground, so that `config` can
//! name them; the running inputs import `config`.
//!
//! Each input is a free async function `(config, out, cancel)` run as its own task.
//! **Invariant:** an input never blocks the others and is never fatal: a device that
//! vanishes is reopened with backoff; a frame that does not parse is counted, logged at
//! debug with the input's name, and skipped. An input returns when `cancel` fires or the
//! pipeline is gone.

#[cfg(feature = "ble")]
pub mod ble;
pub mod device;
pub mod format;
pub mod modbus;
pub mod nmea;
pub mod serial;
pub mod synthetic;

use crate::reading::Reading;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Identifies an input in readings and logs.
#[derive(Debug, Clone)]
pub struct InputId {
    pub index: usize,
    pub name: Arc<str>,
}

/// Sends a reading; `false` means the pipeline is gone and the input should stop.
pub async fn send(out: &mpsc::Sender<Reading>, reading: Reading) -> bool {
    out.send(reading).await.is_ok()
}
