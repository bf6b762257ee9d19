//! The strict serde layer of the config: exactly what the TOML file says.
//!
//! Every table denies unknown keys, so a typo is an error with a line number rather than a
//! setting silently ignored. Values that need validation beyond their TOML type (durations,
//! sizes, templates, URLs) are kept as `Spanned<String>` so that stage two
//! ([`super::Config::from_raw`]) can point at their line.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub gateway: RawGateway,
    pub mqtt: RawMqtt,
    #[serde(default)]
    pub queue: RawQueue,
    #[serde(default)]
    pub serial: Vec<RawSerial>,
    #[serde(default)]
    pub synthetic: Vec<RawSynthetic>,
    #[serde(default)]
    pub ble: Vec<super::ble::RawBle>,
    pub homeassistant: Option<super::homeassistant::RawHomeAssistant>,
    #[serde(default)]
    pub modbus: Vec<super::modbus::RawModbus>,
    #[serde(default)]
    pub log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub id: Spanned<String>,
    pub state_dir: Spanned<String>,
    /// How often the gateway publishes its own health; "0s" turns it off.
    pub health_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    pub url: Spanned<String>,
    pub keep_alive: Option<Spanned<String>>,
    pub client_id: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub backoff_min: Option<Spanned<String>>,
    pub backoff_max: Option<Spanned<String>>,
    /// Messages published and not yet acknowledged, at most.
    pub inflight: Option<Spanned<i64>>,
    /// A PUBACK that takes longer than this forces a reconnect (and a resend).
    pub ack_timeout: Option<Spanned<String>>,
    pub availability_topic: Option<Spanned<String>>,
    /// mqtts://: PEM CA certificates to trust instead of the system's roots.
    pub ca_file: Option<Spanned<String>>,
    /// mqtts://: PEM client certificate (chain) for mutual TLS; needs `key_file`.
    pub cert_file: Option<Spanned<String>>,
    /// mqtts://: PEM private key of `cert_file`.
    pub key_file: Option<Spanned<String>>,
    /// "3.1.1" (default) or "5".
    pub protocol: Option<Spanned<String>>,
    /// "lan" (default), "cellular" or "satellite": defaults for the keys above and batching.
    pub profile: Option<Spanned<String>>,
    /// "persistent" (default) or "on_demand".
    pub connection: Option<Spanned<String>>,
    /// on_demand: how often to connect and send the backlog.
    pub flush_every: Option<Spanned<String>>,
    /// Messages per second at most (0: no limit).
    pub replay_rate: Option<Spanned<f64>>,
    /// Send readings taken since the connection came up before the older backlog.
    pub live_first: Option<bool>,
    /// Retained on the availability topic after every CONNACK.
    pub birth_payload: Option<Spanned<String>>,
    /// The last will, retained on the availability topic; also sent on a clean shutdown.
    pub will_payload: Option<Spanned<String>>,
    /// on_demand: retained on the availability topic before each planned disconnect;
    /// `{next}` becomes the time of the next window (RFC 3339, UTC).
    pub sleep_payload: Option<Spanned<String>>,
    pub batch: Option<RawBatch>,
    /// The largest MQTT packet the broker accepts (MQTT 3.1.1 brokers cannot say so).
    pub max_message_size: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    /// Readings per message at most; 0 turns batching off.
    pub max_readings: Option<Spanned<i64>>,
    /// How long a reading may wait for its batch to fill.
    pub max_delay: Option<Spanned<String>>,
    /// "json" (an array) or "cbor".
    pub encoding: Option<Spanned<String>>,
    /// "none", "zstd" or "deflate".
    pub compression: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub max_size: Option<Spanned<String>>,
    pub max_age: Option<Spanned<String>>,
    pub when_full: Option<Spanned<String>>,
    pub commit_every: Option<Spanned<i64>>,
    pub commit_linger: Option<Spanned<String>>,
    /// "full" (default: a committed reading survives a power cut) or "normal".
    pub synchronous: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// A tracing filter such as "info" or "sensorgate=debug"; RUST_LOG wins when set.
    pub level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSerial {
    pub name: Spanned<String>,
    pub device: Spanned<String>,
    /// Bits per second (default 9600).
    pub baud: Option<Spanned<i64>>,
    pub format: Spanned<String>,
    pub topic: Spanned<String>,
    pub qos: Option<Spanned<i64>>,
    #[serde(default)]
    pub retain: bool,
    /// csv: the names of the columns, in order.
    pub columns: Option<Spanned<Vec<String>>>,
    /// csv: the separator (default ",").
    pub delimiter: Option<Spanned<String>>,
    /// regex: a pattern with named captures.
    pub pattern: Option<Spanned<String>>,
    /// "auto" (default: CR, LF or CRLF), "lf", "cr" or "crlf".
    pub line_ending: Option<Spanned<String>>,
    /// Longest accepted line in bytes; longer frames are counted and skipped.
    pub max_line: Option<Spanned<i64>>,
    pub reopen_min: Option<Spanned<String>>,
    pub reopen_max: Option<Spanned<String>>,
    /// Per-field transforms (`fields.<name> = { ... }`) and report by exception.
    #[serde(default)]
    pub fields: super::fields::RawFields,
    pub max_interval: Option<Spanned<String>>,
    /// nmea: the sentence types to publish, e.g. ["GGA", "RMC"] (default: all).
    pub sentences: Option<Spanned<Vec<String>>>,
    /// nmea: at most one reading per sentence type per this long, but a change of fix now.
    pub min_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSynthetic {
    pub name: Spanned<String>,
    /// Readings per second.
    pub rate: Spanned<f64>,
    /// The generated fields, a list of names or a table of names with their transforms.
    pub fields: Spanned<super::fields::RawSyntheticFields>,
    pub max_interval: Option<Spanned<String>>,
    pub topic: Spanned<String>,
    pub qos: Option<Spanned<i64>>,
    #[serde(default)]
    pub retain: bool,
    /// Stop after this many readings (default: never).
    pub count: Option<Spanned<i64>>,
}
