//! The range of every duration, rate, size and length in the config, in one place.
//!
//! **Invariant:** a value inside these ranges cannot make the gateway panic, spin or flood:
//! durations stay far below what `Instant + d` can hold (the longest is ten years), rates
//! give periods between a microsecond and a few hours, and every string that reaches the
//! wire fits MQTT's 65,535-byte strings with room for the rest of the topic.

use std::ops::RangeInclusive;
use std::time::Duration;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}
const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// `gateway.health_interval` ("0s", off, is accepted besides).
pub const HEALTH_INTERVAL: RangeInclusive<Duration> = s(1)..=s(7 * DAY);
/// `mqtt.keep_alive`: MQTT carries it as 16-bit seconds.
pub const KEEP_ALIVE: RangeInclusive<Duration> = s(1)..=s(65_535);
/// `mqtt.connect_timeout`: TCP, TLS and CONNACK.
pub const CONNECT_TIMEOUT: RangeInclusive<Duration> = s(1)..=s(HOUR);
/// `mqtt.backoff_max` (and at least `backoff_min`): below a second, a broker that refuses
/// the gateway would be hammered with connections.
pub const BACKOFF_MAX: RangeInclusive<Duration> = s(1)..=s(DAY);
/// `mqtt.backoff_min`.
pub const BACKOFF_MIN: RangeInclusive<Duration> = ms(10)..=s(HOUR);
/// `mqtt.ack_timeout`: below a second, a PUBACK's round trip alone forces reconnects.
pub const ACK_TIMEOUT: RangeInclusive<Duration> = s(1)..=s(HOUR);
/// `mqtt.flush_every` (on_demand).
pub const FLUSH_EVERY: RangeInclusive<Duration> = s(1)..=s(7 * DAY);
/// The largest packet the gateway hands to rumqttc (its own limit for outgoing packets), the
/// default and the highest `mqtt.max_message_size`; an MQTT 5 broker's CONNACK may lower it.
pub const MAX_PACKET: usize = 1 << 20;
/// `mqtt.replay_rate`, messages per second (0 turns pacing off).
pub const REPLAY_RATE: RangeInclusive<f64> = 0.01..=1_000_000.0;
/// `mqtt.batch.max_delay`.
pub const BATCH_DELAY: RangeInclusive<Duration> = s(0)..=s(DAY);
/// `queue.max_size`, bytes.
pub const QUEUE_SIZE: RangeInclusive<u64> = (64 << 10)..=(1 << 40);
/// `queue.max_age`.
pub const MAX_AGE: RangeInclusive<Duration> = s(1)..=s(3650 * DAY);
/// `queue.commit_linger`: readings wait in memory at most this long before their commit.
pub const COMMIT_LINGER: RangeInclusive<Duration> = s(0)..=s(MINUTE);
/// `serial.baud`.
pub const BAUD: RangeInclusive<i64> = 50..=12_000_000;
/// `serial.reopen_max` (and at least `reopen_min`).
pub const REOPEN_MAX: RangeInclusive<Duration> = ms(100)..=s(DAY);
/// `serial.reopen_min`.
pub const REOPEN_MIN: RangeInclusive<Duration> = ms(10)..=s(HOUR);
/// `serial.min_interval` (format "nmea"; 0: no limit).
pub const NMEA_MIN_INTERVAL: RangeInclusive<Duration> = s(0)..=s(DAY);
/// `synthetic.rate`, readings per second.
pub const SYNTHETIC_RATE: RangeInclusive<f64> = 0.001..=1_000_000.0;
/// `ble.min_interval` (0: publish changes only).
pub const BLE_MIN_INTERVAL: RangeInclusive<Duration> = s(0)..=s(DAY);
/// `ble.scan_stall`.
pub const SCAN_STALL: RangeInclusive<Duration> = ms(500)..=s(DAY);
/// `ble.retry_max` (and at least `retry_min`).
pub const BLE_RETRY_MAX: RangeInclusive<Duration> = ms(100)..=s(DAY);
/// `ble.retry_min`.
pub const BLE_RETRY_MIN: RangeInclusive<Duration> = ms(10)..=s(HOUR);
/// `ble.gatt.every` (mode "read").
pub const GATT_EVERY: RangeInclusive<Duration> = ms(100)..=s(DAY);

/// `max_interval` of any input (report by exception: the longest silence of an unchanged
/// value).
pub const MAX_INTERVAL: RangeInclusive<Duration> = s(1)..=s(30 * DAY);

/// `gateway.id`, an input's name, a BLE alias: bytes. They end up in topics and the
/// default client id.
pub const NAME_BYTES: usize = 128;
/// `mqtt.client_id`, bytes.
pub const CLIENT_ID_BYTES: usize = 256;
/// An MQTT string (topic, user name, password): a 16-bit length.
pub const MQTT_STRING: usize = 65_535;
