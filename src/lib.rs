//! sensorgate: an edge IoT gateway. Sensor readings from serial ports (and synthetic
//! sources) are mapped to MQTT messages, committed to an on-disk SQLite queue, and forwarded
//! to a broker; a message leaves the queue only when the broker acknowledged it.
//!
//! The components, in pipeline order:
//! - [`config`]: the TOML config, validated in two stages; every error names file, line, key.
//! - [`ble`]: the BLE protocol, pure: advertisement decoders, the duplicate filter.
//! - [`input`]: serial ports ([`input::format`] parses their lines), synthetic generators and
//!   (feature `ble`) the BLE runtime on its own thread; each sends [`reading::Reading`]s into
//!   one channel.
//! - [`transform`]: per-field transforms (drop, scale, rename) and report by exception
//!   (deadbands, `max_interval`), applied by the pipeline before mapping. Pure.
//! - [`mapping`]: reading → messages (topic from a [`topic::Template`], payload). Pure.
//! - [`pipeline`]: batches messages and commits each batch to the [`queue`] in one
//!   transaction (group commit).
//! - [`queue`]: the SQLite store-and-forward queue, the only place a message waits; its work
//!   runs on two threads of the gateway's own ([`queue::threads`]).
//! - [`uplink`]: the rumqttc client; publishes the oldest rows, deletes a row on its PUBACK.
//! - [`gateway`]: wires the parts together, applies a reloaded config part by part, and
//!   runs them until shutdown; [`housekeeping`]: stamps, expiry, health.
//! - [`reload`]: signals; SIGHUP reloads the config (what changed restarts, in-process).
//! - [`reading`], [`metrics`] and [`backoff`]: the ground every part stands on.
//! - [`service`]: systemd notify (READY, STATUS, WATCHDOG while healthy, STOPPING);
//!   [`logging`]: journald or stderr.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod ble;
pub mod config;
pub mod describe;
pub mod discovery;
pub mod gateway;
pub mod housekeeping;
pub mod input;
pub mod logging;
pub mod mapping;
pub mod metrics;
pub mod pipeline;
pub mod queue;
pub mod reading;
pub mod reload;
pub mod service;
pub mod topic;
pub mod transform;
pub mod uplink;
