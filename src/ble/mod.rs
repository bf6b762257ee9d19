//! The BLE protocol, pure: advertisement decoders, the duplicate filter, and what makes one
//! advertisement or GATT value a reading. No I/O: the BLE runtime that scans and connects
//! through BlueZ (feature `ble`) is an input, `crate::input::ble`, and feeds these.
//!
//! - [`decode`]: pure decoders (BTHome v2, Ruuvi, ATC/pvvx, MiBeacon, iBeacon, Eddystone).
//! - [`values`]: addresses, UUIDs, GATT number types. [`filter`]: repeats and rate limit.
//! - [`advert`]: one advertisement or GATT value of one device to at most one reading.
//! - [`cli`]: `sensorgate decode ble`. [`survey`]: what `sensorgate ble scan` heard, and its
//!   report.
//!
//! **Invariant:** nothing here imports `config` or the runtime: `config` validates into
//! [`values`]' types, and the input hands [`advert::Processor`] what it needs of `[[ble]]`.

pub mod advert;
pub mod cli;
pub mod decode;
pub mod filter;
pub mod survey;
pub mod values;
