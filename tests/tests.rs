//! The integration tests: one binary (see STYLE.md), real processes, no network beyond
//! loopback. Shared helpers live in `support/`.

mod support;

#[cfg(feature = "ble")]
mod ble;
mod ble_decode;
mod cli;
mod config_errors;
mod discovery;
mod durability;
mod faults_config;
mod faults_disk;
mod faults_state;
mod faults_uplink;
mod fields;
mod hotplug;
mod journal;
mod layers;
mod logs;
mod modbus;
mod modbus_config;
mod nmea;
mod notify;
mod proxy;
mod puback;
mod queue_model;
mod queue_policy;
mod tls;
mod uplink;
