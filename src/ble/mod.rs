//! BLE sensors: advertisement decoders, the duplicate filter, and (with the `ble` cargo
//! feature) the input that scans and connects through BlueZ with btleplug.
//!
//! - [`decode`]: pure decoders (BTHome v2, Ruuvi, ATC/pvvx, MiBeacon, iBeacon, Eddystone).
//! - [`values`]: addresses, UUIDs, GATT number types. [`filter`]: repeats and rate limit.
//! - [`advert`]: one advertisement or GATT value of one device to at most one reading.
//! - [`cli`]: `sensorgate decode ble`.
//! - `input`, `gatt` and `signals` (feature `ble`): the BLE runtime on its own thread;
//!   `signals` reads BlueZ's advertisement signals in bulk.
//!
//! **Architecture Invariant:** btleplug runs on its own thread with its own current-thread
//! tokio runtime, restarted with backoff after a panic; nothing in the BLE stack can stop
//! the gateway. Readings reach the pipeline through the same channel as every input.

pub mod advert;
pub mod cli;
pub mod decode;
pub mod filter;
pub mod values;

#[cfg(feature = "ble")]
mod gatt;
#[cfg(feature = "ble")]
pub mod input;
#[cfg(feature = "ble")]
mod signals;
