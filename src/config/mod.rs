//! Configuration, in two stages: [`raw`] is the strict serde layer (unknown keys are errors,
//! toml reports their line), [`Config`] the validated result that the rest of the gateway
//! uses. Templates, durations, sizes and cross-references are checked here.
//!
//! **Invariant:** every config error surfaces in [`Config::load`] and names the file, the
//! line and the key; nothing later can fail because of a config value.

pub mod ble;
pub mod fields;
pub mod homeassistant;
pub mod limits;
pub mod link;
mod locate;
pub mod modbus;
mod mqtt;
mod nmea;
pub mod raw;
mod registers;
mod tables;
pub mod tls;
pub mod units;

pub(crate) use locate::Cx;

pub use ble::{BleConfig, BleDevice, GattConfig, GattMode};
pub use fields::{FieldRule, FieldRules};
pub use homeassistant::HomeAssistantConfig;
pub use link::{BatchConfig, Compression, Connection, Encoding, Profile, Protocol};
pub use modbus::ModbusConfig;

use crate::input::format::{LineEnding, LineFormat};
use crate::topic::Template;
use raw::RawConfig;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// A config error, located in its file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The dotted key, e.g. `mqtt.keep_alive` or `serial[1].topic`.
    pub key: String,
    pub message: String,
}

/// The file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: cannot read the config: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// What the uplink does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Qos {
    AtMostOnce,
    #[default]
    AtLeastOnce,
}

impl Qos {
    pub fn as_u8(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }
}

/// The queue's policy when it reaches `max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Delete the oldest messages to make room (the default): fresh data wins.
    DropOldest,
    /// Refuse new messages: the backlog wins.
    DropNewest,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub gateway: GatewayConfig,
    pub mqtt: MqttConfig,
    pub queue: QueueConfig,
    pub inputs: Vec<InputConfig>,
    /// `[homeassistant] discovery = true`.
    pub homeassistant: Option<HomeAssistantConfig>,
    pub log_level: Option<String>,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub id: String,
    pub state_dir: PathBuf,
    pub health_interval: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub keep_alive: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub inflight: u16,
    pub ack_timeout: Duration,
    pub availability_topic: String,
    pub birth_payload: String,
    pub will_payload: String,
    /// on_demand: retained before each planned disconnect; `{next}` is the next window.
    pub sleep_payload: String,
    pub protocol: Protocol,
    pub profile: Profile,
    pub batch: Option<BatchConfig>,
    pub connection: Connection,
    /// Messages per second at most.
    pub replay_rate: Option<f64>,
    pub live_first: bool,
    /// MQTT 5: the message expiry interval follows the queue's `max_age` (set from [queue]).
    pub max_age: Option<Duration>,
    /// Home Assistant's status topic, subscribed to after every CONNACK (set from
    /// `[homeassistant]` with discovery on): "online" there has every config sent again.
    pub status_topic: Option<String>,
    /// Set for `mqtts://`: the rustls client config (roots, optional client certificate).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The largest packet the broker accepts (`[mqtt] max_message_size`): a message that
    /// cannot fit is a dead letter, and batches are cut to fit.
    pub max_message_size: usize,
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub max_size: u64,
    pub max_age: Option<Duration>,
    pub when_full: WhenFull,
    pub commit_every: usize,
    pub commit_linger: Duration,
    pub synchronous_full: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_size: 256 << 20,
            max_age: None,
            when_full: WhenFull::DropOldest,
            commit_every: 500,
            commit_linger: Duration::from_millis(1000),
            synchronous_full: true,
        }
    }
}

/// Where an input's readings go, and what is done to them on the way (`fields`).
#[derive(Debug, Clone)]
pub struct Route {
    pub topic: Template,
    pub qos: Qos,
    pub retain: bool,
    /// The per-field transforms; none until the input's validation sets them.
    pub fields: Arc<FieldRules>,
}

#[derive(Debug, Clone)]
pub struct InputConfig {
    pub name: Arc<str>,
    pub route: Route,
    pub kind: InputKind,
}

#[derive(Debug, Clone)]
pub enum InputKind {
    Serial(SerialConfig),
    Synthetic(SyntheticConfig),
    Ble(BleConfig),
    Modbus(ModbusConfig),
}

#[derive(Debug, Clone)]
pub struct SerialConfig {
    pub device: PathBuf,
    pub baud: u32,
    pub format: LineFormat,
    pub line_ending: LineEnding,
    pub max_line: usize,
    pub reopen_min: Duration,
    pub reopen_max: Duration,
}

#[derive(Debug, Clone)]
pub struct SyntheticConfig {
    pub rate: f64,
    pub fields: Vec<Arc<str>>,
    pub count: Option<u64>,
}

pub const DEFAULT_PATH: &str = "/etc/sensorgate/sensorgate.toml";

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            file: path.display().to_string(),
            source,
        })?;
        Ok(Config::parse(path, &text)?)
    }

    /// Validates config `text` that came from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cx = Cx { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| cx.serde_error(&e))?;
        Config::from_raw(&cx, raw)
    }

    fn from_raw(cx: &Cx, raw: RawConfig) -> Result<Config, ConfigError> {
        let id = raw.gateway.id.get_ref();
        cx.bytes_at_most(&raw.gateway.id, "gateway.id", limits::NAME_BYTES)?;
        if id.is_empty() || id.contains(['/', '+', '#']) || id.chars().any(char::is_control) {
            return Err(cx.at(
                &raw.gateway.id,
                "gateway.id",
                "must be non-empty and hold no `/`, `+`, `#` or control characters",
            ));
        }
        let state_dir = PathBuf::from(raw.gateway.state_dir.get_ref());
        if state_dir.as_os_str().is_empty() {
            return Err(cx.at(
                &raw.gateway.state_dir,
                "gateway.state_dir",
                "must not be empty",
            ));
        }
        // "0s" turns the health topic off; anything else is within its range.
        let off = raw
            .gateway
            .health_interval
            .as_ref()
            .is_some_and(|v| units::parse_duration(v.get_ref()) == Ok(Duration::ZERO));
        let health_interval = match off {
            true => Duration::ZERO,
            false => cx.duration(
                &raw.gateway.health_interval,
                "gateway.health_interval",
                Duration::from_secs(300),
                limits::HEALTH_INTERVAL,
            )?,
        };
        let gateway = GatewayConfig {
            id: id.clone(),
            state_dir,
            health_interval: (!health_interval.is_zero()).then_some(health_interval),
        };
        let mut mqtt = cx.mqtt(raw.mqtt, &gateway.id)?;
        let queue = cx.queue(raw.queue)?;
        mqtt.max_age = queue.max_age;
        let homeassistant = cx.homeassistant(raw.homeassistant)?;
        mqtt.status_topic = homeassistant.as_ref().map(|h| h.status_topic.clone());

        let mut inputs = Vec::new();
        let mut names = HashSet::new();
        let mut devices = Vec::new();
        let mut check_name = |name: &Spanned<String>, key: &str| -> Result<Arc<str>, ConfigError> {
            let n = name.get_ref();
            cx.bytes_at_most(name, key, limits::NAME_BYTES)?;
            if n.is_empty() || n.contains(['/', '+', '#']) || n.chars().any(char::is_control) {
                return Err(cx.at(name, key, "an input name must be non-empty and hold no `/`, `+`, `#` or control characters"));
            }
            if !names.insert(n.clone()) {
                return Err(cx.at(name, key, &format!("input `{n}` is declared twice")));
            }
            Ok(Arc::from(n.as_str()))
        };
        for (i, s) in raw.serial.into_iter().enumerate() {
            let key = |k: &str| format!("serial[{i}].{k}");
            let name = check_name(&s.name, &key("name"))?;
            let mut route = cx.route(&s.topic, &s.qos, s.retain, &key("topic"), &key("qos"))?;
            cx.no_device(&route, &s.topic, &key("topic"))?;
            let format = cx.line_format(&s, i)?;
            let known: Option<Vec<&str>> = match &format {
                LineFormat::Csv { columns, .. } => Some(columns.iter().map(|c| &**c).collect()),
                LineFormat::Regex(re) => Some(re.capture_names().flatten().collect()),
                LineFormat::Raw => Some(vec!["value"]),
                _ => None,
            };
            let prefix = format!("serial[{i}]");
            let rules = fields::rules(cx, &s.fields, &s.max_interval, &prefix, known.as_deref())?;
            let field = known.map(|k| k.iter().map(|f| f.len()).max().unwrap_or(0));
            let field = field.unwrap_or(0).max(rules.longest_rename());
            route.fields = Arc::new(rules);
            let (gw, topic) = (&gateway.id, &s.topic);
            cx.topic_fits(&route, topic, &key("topic"), gw, &name, 0, field)?;
            let serial = cx.serial(&s, i, format)?;
            cx.one_reader(&mut devices, &s.device, &name, &key("device"))?;
            inputs.push(InputConfig {
                name,
                route,
                kind: InputKind::Serial(serial),
            });
        }
        for (i, s) in raw.synthetic.into_iter().enumerate() {
            let key = |k: &str| format!("synthetic[{i}].{k}");
            let name = check_name(&s.name, &key("name"))?;
            let mut route = cx.route(&s.topic, &s.qos, s.retain, &key("topic"), &key("qos"))?;
            cx.no_device(&route, &s.topic, &key("topic"))?;
            let names = s.fields.get_ref().names();
            let known: Vec<&str> = names.iter().map(String::as_str).collect();
            let rules = s.fields.get_ref().rules();
            let prefix = format!("synthetic[{i}]");
            let rules = fields::rules(cx, rules, &s.max_interval, &prefix, Some(&known))?;
            cx.no_sentence(&s.topic, &key("topic"))?;
            let rate = *s.rate.get_ref();
            if !limits::SYNTHETIC_RATE.contains(&rate) {
                let (lo, hi) = (limits::SYNTHETIC_RATE.start(), limits::SYNTHETIC_RATE.end());
                return Err(cx.at(
                    &s.rate,
                    &key("rate"),
                    &format!("readings per second: more than 0 (at least {lo}) and at most {hi}"),
                ));
            }
            if names.is_empty() {
                return Err(cx.at(&s.fields, &key("fields"), "name at least one field"));
            }
            let field = names.iter().map(String::len).max().unwrap_or(0);
            let field = field.max(rules.longest_rename());
            route.fields = Arc::new(rules);
            let (gw, topic) = (&gateway.id, &s.topic);
            cx.topic_fits(&route, topic, &key("topic"), gw, &name, 0, field)?;
            let count = match &s.count {
                None => None,
                Some(c) if *c.get_ref() > 0 => Some(*c.get_ref() as u64),
                Some(c) => return Err(cx.at(c, &key("count"), "must be at least 1")),
            };
            let fields = names.iter().map(|f| Arc::from(f.as_str())).collect();
            inputs.push(InputConfig {
                name,
                route,
                kind: InputKind::Synthetic(SyntheticConfig {
                    rate,
                    fields,
                    count,
                }),
            });
        }
        // One [[ble]] per adapter: two scans of one adapter would stop each other's.
        let mut adapters: Vec<(Option<&str>, usize)> = Vec::new();
        for (i, b) in raw.ble.iter().enumerate() {
            let name = check_name(&b.name, &format!("ble[{i}].name"))?;
            let (route, ble) = ble::validate(cx, i, b)?;
            let adapter = b.adapter.as_ref().map(|a| a.get_ref().as_str());
            if let Some((_, j)) = adapters.iter().find(|(a, _)| *a == adapter) {
                let what =
                    adapter.map_or("the first adapter".to_string(), |a| format!("adapter {a}"));
                let reason = format!(
                    "ble[{j}] already scans {what}; list the devices of both in one [[ble]], or name another adapter"
                );
                return Err(match &b.adapter {
                    Some(a) => cx.at(a, &format!("ble[{i}].adapter"), &reason),
                    None => cx.at(&b.name, &format!("ble[{i}].name"), &reason),
                });
            }
            adapters.push((adapter, i));
            // A device without an alias is named by its address (17 characters).
            let device = ble
                .devices
                .iter()
                .filter_map(|d| d.alias.as_ref())
                .map(|a| a.len());
            let field = ble.gatt.iter().map(|g| g.decode.field.len()).max();
            let field = field.unwrap_or(0).max(route.fields.longest_rename());
            let (gw, topic) = (&gateway.id, &b.topic);
            let (key, device) = (format!("ble[{i}].topic"), device.max().unwrap_or(0).max(17));
            cx.topic_fits(&route, topic, &key, gw, &name, device, field)?;
            inputs.push(InputConfig {
                name,
                route,
                kind: InputKind::Ble(ble),
            });
        }
        for (i, m) in raw.modbus.iter().enumerate() {
            let name = check_name(&m.name, &format!("modbus[{i}].name"))?;
            let (route, modbus) = modbus::validate(cx, i, m)?;
            if let Some(d) = &m.device {
                cx.one_reader(&mut devices, d, &name, &format!("modbus[{i}].device"))?;
            }
            // A slave without an alias is `unit<id>` (at most 7 bytes).
            let device = modbus
                .slaves
                .iter()
                .map(|s| s.device.len())
                .max()
                .unwrap_or(0);
            let field = modbus
                .slaves
                .iter()
                .flat_map(|s| s.fields.iter().map(|f| f.name.len()))
                .max()
                .unwrap_or(0)
                .max(route.fields.longest_rename());
            let (gw, topic) = (&gateway.id, &m.topic);
            let key = format!("modbus[{i}].topic");
            cx.topic_fits(&route, topic, &key, gw, &name, device, field)?;
            inputs.push(InputConfig {
                name,
                route,
                kind: InputKind::Modbus(modbus),
            });
        }
        Ok(Config {
            file: cx.path.to_path_buf(),
            gateway,
            mqtt,
            queue,
            inputs,
            homeassistant,
            log_level: raw.log.level,
        })
    }

    /// The queue file.
    pub fn queue_path(&self) -> PathBuf {
        self.gateway.state_dir.join("queue.db")
    }
}
