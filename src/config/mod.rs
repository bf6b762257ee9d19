//! Configuration, in two stages: [`raw`] is the strict serde layer (unknown keys are errors,
//! toml reports their line), [`Config`] the validated result that the rest of the gateway
//! uses. Templates, durations, sizes and cross-references are checked here.
//!
//! **Invariant:** every config error surfaces in [`Config::load`] and names the file, the
//! line and the key; nothing later can fail because of a config value.

pub mod ble;
pub mod raw;
pub mod units;

pub use ble::{BleConfig, BleDevice, GattConfig, GattMode};

use crate::format::LineFormat;
use crate::topic::Template;
use raw::RawConfig;
use std::collections::HashSet;
use std::ops::Range;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
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
    /// Set for `mqtts://`: the rustls client config (roots, optional client certificate).
    pub tls: Option<Arc<rustls::ClientConfig>>,
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

/// Where an input's readings go.
#[derive(Debug, Clone)]
pub struct Route {
    pub topic: Template,
    pub qos: Qos,
    pub retain: bool,
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
}

#[derive(Debug, Clone)]
pub struct SerialConfig {
    pub device: PathBuf,
    pub baud: u32,
    pub format: LineFormat,
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
        let health_interval = cx.duration(
            &raw.gateway.health_interval,
            "gateway.health_interval",
            Duration::from_secs(300),
        )?;
        let gateway = GatewayConfig {
            id: id.clone(),
            state_dir,
            health_interval: (!health_interval.is_zero()).then_some(health_interval),
        };
        let mqtt = cx.mqtt(raw.mqtt, &gateway.id)?;
        let queue = cx.queue(raw.queue)?;

        let mut inputs = Vec::new();
        let mut names = HashSet::new();
        let mut check_name = |name: &Spanned<String>, key: &str| -> Result<Arc<str>, ConfigError> {
            let n = name.get_ref();
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
            let route = cx.route(&s.topic, &s.qos, s.retain, &key("topic"), &key("qos"))?;
            cx.no_device(&route, &s.topic, &key("topic"))?;
            let format = cx.line_format(&s, i)?;
            let max_line = match &s.max_line {
                None => 4096,
                Some(v) if (16..=1 << 20).contains(v.get_ref()) => *v.get_ref() as usize,
                Some(v) => {
                    return Err(cx.at(v, &key("max_line"), "must be between 16 and 1048576 bytes"))
                }
            };
            if s.device.get_ref().is_empty() {
                return Err(cx.at(
                    &s.device,
                    &key("device"),
                    "must name a device such as /dev/ttyUSB0",
                ));
            }
            let serial = SerialConfig {
                device: PathBuf::from(s.device.get_ref()),
                baud: s.baud,
                format,
                max_line,
                reopen_min: cx.duration(
                    &s.reopen_min,
                    &key("reopen_min"),
                    Duration::from_millis(500),
                )?,
                reopen_max: cx.duration(
                    &s.reopen_max,
                    &key("reopen_max"),
                    Duration::from_secs(30),
                )?,
            };
            inputs.push(InputConfig {
                name,
                route,
                kind: InputKind::Serial(serial),
            });
        }
        for (i, s) in raw.synthetic.into_iter().enumerate() {
            let key = |k: &str| format!("synthetic[{i}].{k}");
            let name = check_name(&s.name, &key("name"))?;
            let route = cx.route(&s.topic, &s.qos, s.retain, &key("topic"), &key("qos"))?;
            cx.no_device(&route, &s.topic, &key("topic"))?;
            let rate = *s.rate.get_ref();
            if !(rate > 0.0 && rate <= 1_000_000.0) {
                return Err(cx.at(
                    &s.rate,
                    &key("rate"),
                    "readings per second: more than 0, at most 1000000",
                ));
            }
            if s.fields.get_ref().is_empty() {
                return Err(cx.at(&s.fields, &key("fields"), "name at least one field"));
            }
            let count = match &s.count {
                None => None,
                Some(c) if *c.get_ref() > 0 => Some(*c.get_ref() as u64),
                Some(c) => return Err(cx.at(c, &key("count"), "must be at least 1")),
            };
            let fields = s
                .fields
                .get_ref()
                .iter()
                .map(|f| Arc::from(f.as_str()))
                .collect();
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
        for (i, b) in raw.ble.iter().enumerate() {
            let name = check_name(&b.name, &format!("ble[{i}].name"))?;
            let (route, ble) = ble::validate(cx, i, b)?;
            inputs.push(InputConfig {
                name,
                route,
                kind: InputKind::Ble(ble),
            });
        }
        Ok(Config {
            file: cx.path.to_path_buf(),
            gateway,
            mqtt,
            queue,
            inputs,
            log_level: raw.log.level,
        })
    }

    /// The queue file.
    pub fn queue_path(&self) -> PathBuf {
        self.gateway.state_dir.join("queue.db")
    }
}

/// The file being validated, for locating errors.
struct Cx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Cx<'_> {
    fn error(&self, span: Range<usize>, key: &str, message: &str) -> ConfigError {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError {
            file: self.path.display().to_string(),
            line,
            column,
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    fn at<T>(&self, spanned: &Spanned<T>, key: &str, message: &str) -> ConfigError {
        self.error(spanned.span(), key, message)
    }

    /// Turns a toml/serde error into a located one, recovering the key from the source.
    fn serde_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let key = self.key_at(span.start);
        let message = e.message().trim().replace('\n', " ");
        self.error(span, &key, &message)
    }

    /// The dotted key at byte `offset`: the enclosing `[table]` plus the key on that line.
    fn key_at(&self, offset: usize) -> String {
        let offset = offset.min(self.text.len());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        let line = self.text[line_start..line_end].trim();
        let mut table = String::new();
        for l in self.text[..line_start].lines().rev() {
            let l = l.trim();
            if l.starts_with('[') {
                table = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
                break;
            }
        }
        if line.starts_with('[') {
            return line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
        }
        let key = line
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        match (table.is_empty(), key.is_empty()) {
            (true, true) => "(top level)".into(),
            (true, false) => key.to_string(),
            (false, true) => table,
            (false, false) => format!("{table}.{key}"),
        }
    }

    fn duration(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => units::parse_duration(s.get_ref()).map_err(|m| self.at(s, key, &m)),
        }
    }

    fn mqtt(&self, m: raw::RawMqtt, gateway: &str) -> Result<MqttConfig, ConfigError> {
        let url = m.url.get_ref();
        let (host, port, tls) =
            parse_mqtt_url(url).map_err(|msg| self.at(&m.url, "mqtt.url", &msg))?;
        let tls = self.tls(&m, tls)?;
        let keep_alive =
            self.duration(&m.keep_alive, "mqtt.keep_alive", Duration::from_secs(60))?;
        if keep_alive < Duration::from_secs(1) || keep_alive > Duration::from_secs(65_535) {
            let v = m.keep_alive.as_ref().expect("the default is in range");
            return Err(self.at(
                v,
                "mqtt.keep_alive",
                "must be between 1s and 65535s (MQTT's limit)",
            ));
        }
        let password = match &m.password_file {
            None => None,
            Some(p) => Some(
                std::fs::read_to_string(p.get_ref())
                    .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                    .map_err(|e| {
                        self.at(
                            p,
                            "mqtt.password_file",
                            &format!("cannot read `{}`: {e}", p.get_ref()),
                        )
                    })?,
            ),
        };
        let backoff_min = self.duration(
            &m.backoff_min,
            "mqtt.backoff_min",
            Duration::from_millis(500),
        )?;
        let backoff_max =
            self.duration(&m.backoff_max, "mqtt.backoff_max", Duration::from_secs(60))?;
        if backoff_min > backoff_max || backoff_min.is_zero() {
            let v = m
                .backoff_min
                .as_ref()
                .or(m.backoff_max.as_ref())
                .expect("defaults are ordered");
            return Err(self.at(
                v,
                "mqtt.backoff_min",
                "must be more than 0 and at most mqtt.backoff_max",
            ));
        }
        let inflight = match &m.inflight {
            None => 64,
            Some(v) if (1..=1000).contains(v.get_ref()) => *v.get_ref() as u16,
            Some(v) => return Err(self.at(v, "mqtt.inflight", "must be between 1 and 1000")),
        };
        let client_id = match &m.client_id {
            None => format!("sensorgate-{gateway}"),
            Some(c) if !c.get_ref().is_empty() && c.get_ref().len() <= 256 => c.get_ref().clone(),
            Some(c) => return Err(self.at(c, "mqtt.client_id", "must be 1 to 256 characters")),
        };
        let availability_topic = match &m.availability_topic {
            None => format!("sensorgate/{gateway}/status"),
            Some(t) => {
                let tpl = Template::parse(t.get_ref())
                    .map_err(|e| self.at(t, "mqtt.availability_topic", &e))?;
                if tpl.per_field() {
                    return Err(self.at(
                        t,
                        "mqtt.availability_topic",
                        "{field} has no meaning here",
                    ));
                }
                tpl.render(gateway, "", None)
            }
        };
        Ok(MqttConfig {
            host,
            port,
            client_id,
            keep_alive,
            username: m.username,
            password,
            connect_timeout: self.duration(
                &m.connect_timeout,
                "mqtt.connect_timeout",
                Duration::from_secs(10),
            )?,
            backoff_min,
            backoff_max,
            inflight,
            ack_timeout: self.duration(
                &m.ack_timeout,
                "mqtt.ack_timeout",
                Duration::from_secs(60),
            )?,
            availability_topic,
            tls,
        })
    }

    /// Reads and checks the TLS files (only with `mqtts://`).
    fn tls(
        &self,
        m: &raw::RawMqtt,
        enabled: bool,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
        use crate::uplink::tls::{client_config, Which};
        let files = [
            ("mqtt.ca_file", &m.ca_file),
            ("mqtt.cert_file", &m.cert_file),
            ("mqtt.key_file", &m.key_file),
        ];
        if !enabled {
            if let Some((key, Some(v))) = files.iter().find(|(_, v)| v.is_some()) {
                return Err(self.at(v, key, "TLS files need an mqtts:// url"));
            }
            return Ok(None);
        }
        let client = match (&m.cert_file, &m.key_file) {
            (Some(c), Some(k)) => Some((
                Path::new(c.get_ref().as_str()),
                Path::new(k.get_ref().as_str()),
            )),
            (Some(c), None) => {
                return Err(self.at(c, "mqtt.cert_file", "mutual TLS needs key_file as well"))
            }
            (None, Some(k)) => {
                return Err(self.at(k, "mqtt.key_file", "mutual TLS needs cert_file as well"))
            }
            (None, None) => None,
        };
        let ca = m.ca_file.as_ref().map(|c| Path::new(c.get_ref().as_str()));
        client_config(ca, client).map(Some).map_err(|e| {
            let (key, at) = match e.which {
                Which::Ca => (
                    "mqtt.ca_file",
                    m.ca_file.as_ref().map_or(m.url.span(), |v| v.span()),
                ),
                Which::Cert => (
                    "mqtt.cert_file",
                    m.cert_file.as_ref().map_or(m.url.span(), |v| v.span()),
                ),
                Which::Key => (
                    "mqtt.key_file",
                    m.key_file.as_ref().map_or(m.url.span(), |v| v.span()),
                ),
            };
            self.error(at, key, &e.message)
        })
    }

    fn queue(&self, q: raw::RawQueue) -> Result<QueueConfig, ConfigError> {
        let d = QueueConfig::default();
        let max_size = match &q.max_size {
            None => d.max_size,
            Some(s) => {
                let n =
                    units::parse_size(s.get_ref()).map_err(|m| self.at(s, "queue.max_size", &m))?;
                if n < 64 * 1024 {
                    return Err(self.at(s, "queue.max_size", "must be at least 64KiB"));
                }
                n
            }
        };
        let max_age = match &q.max_age {
            None => None,
            Some(s) => Some(
                units::parse_duration(s.get_ref()).map_err(|m| self.at(s, "queue.max_age", &m))?,
            ),
        };
        let when_full = match q.when_full.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "drop_oldest")) => WhenFull::DropOldest,
            Some((_, "drop_newest")) => WhenFull::DropNewest,
            Some((s, other)) => {
                return Err(self.at(
                    s,
                    "queue.when_full",
                    &format!("`{other}` is not a policy; use \"drop_oldest\" or \"drop_newest\""),
                ))
            }
        };
        let commit_every = match &q.commit_every {
            None => d.commit_every,
            Some(n) if (1..=100_000).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                return Err(self.at(
                    n,
                    "queue.commit_every",
                    "must be between 1 and 100000 messages",
                ))
            }
        };
        let synchronous_full = match q.synchronous.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "full")) => true,
            Some((_, "normal")) => false,
            Some((s, other)) => {
                return Err(self.at(
                    s,
                    "queue.synchronous",
                    &format!("`{other}`: use \"full\" (survives power cuts) or \"normal\""),
                ))
            }
        };
        Ok(QueueConfig {
            max_size,
            max_age,
            when_full,
            commit_every,
            commit_linger: self.duration(
                &q.commit_linger,
                "queue.commit_linger",
                d.commit_linger,
            )?,
            synchronous_full,
        })
    }

    fn route(
        &self,
        topic: &Spanned<String>,
        qos: &Option<Spanned<i64>>,
        retain: bool,
        topic_key: &str,
        qos_key: &str,
    ) -> Result<Route, ConfigError> {
        let template =
            Template::parse(topic.get_ref()).map_err(|m| self.at(topic, topic_key, &m))?;
        let qos = match qos.as_ref().map(|q| (q, *q.get_ref())) {
            None | Some((_, 1)) => Qos::AtLeastOnce,
            Some((_, 0)) => Qos::AtMostOnce,
            Some((q, 2)) => return Err(self.at(q, qos_key, "QoS 2 is not supported; QoS 1 with the gateway's sequence numbers gives at-least-once delivery a consumer can deduplicate")),
            Some((q, _)) => return Err(self.at(q, qos_key, "must be 0 or 1")),
        };
        Ok(Route {
            topic: template,
            qos,
            retain,
        })
    }

    /// `{device}` has a meaning in BLE topics only.
    fn no_device(
        &self,
        route: &Route,
        topic: &Spanned<String>,
        key: &str,
    ) -> Result<(), ConfigError> {
        if route.topic.uses_device() {
            return Err(self.at(topic, key, "{device} belongs to [[ble]] inputs only"));
        }
        Ok(())
    }

    fn line_format(&self, s: &raw::RawSerial, i: usize) -> Result<LineFormat, ConfigError> {
        let key = |k: &str| format!("serial[{i}].{k}");
        let only =
            |what: &str, present: bool, at: Range<usize>, k: &str| -> Result<(), ConfigError> {
                if present {
                    Err(self.error(
                        at,
                        &key(k),
                        &format!("`{k}` belongs to format \"{what}\" only"),
                    ))
                } else {
                    Ok(())
                }
            };
        let format = match s.format.get_ref().as_str() {
            "json" => LineFormat::Json,
            "kv" => LineFormat::Kv,
            "raw" => LineFormat::Raw,
            "csv" => {
                let columns = s.columns.as_ref().ok_or_else(|| {
                    self.at(
                        &s.format,
                        &key("columns"),
                        "format \"csv\" needs `columns = [\"name\", ...]`",
                    )
                })?;
                if columns.get_ref().is_empty() || columns.get_ref().iter().any(|c| c.is_empty()) {
                    return Err(self.at(columns, &key("columns"), "name every column"));
                }
                let delimiter = match &s.delimiter {
                    None => ',',
                    Some(d) => {
                        let mut chars = d.get_ref().chars();
                        match (chars.next(), chars.next()) {
                            (Some(c), None) => c,
                            _ => {
                                return Err(self.at(d, &key("delimiter"), "must be one character"))
                            }
                        }
                    }
                };
                LineFormat::Csv {
                    columns: columns
                        .get_ref()
                        .iter()
                        .map(|c| Arc::from(c.as_str()))
                        .collect(),
                    delimiter,
                }
            }
            "regex" => {
                let pattern = s.pattern.as_ref().ok_or_else(|| {
                    self.at(&s.format, &key("pattern"), "format \"regex\" needs `pattern` with named captures such as (?P<temp>[0-9.]+)")
                })?;
                let re = regex::Regex::new(pattern.get_ref()).map_err(|e| {
                    self.at(pattern, &key("pattern"), &e.to_string().replace('\n', " "))
                })?;
                if re.capture_names().flatten().next().is_none() {
                    return Err(self.at(
                        pattern,
                        &key("pattern"),
                        "has no named capture; name each field like (?P<temp>...)",
                    ));
                }
                LineFormat::Regex(re)
            }
            other => {
                return Err(self.at(
                    &s.format,
                    &key("format"),
                    &format!("`{other}` is not a format; use json, kv, csv, regex or raw"),
                ))
            }
        };
        if !matches!(format, LineFormat::Csv { .. }) {
            if let Some(c) = &s.columns {
                only("csv", true, c.span(), "columns")?;
            }
            if let Some(d) = &s.delimiter {
                only("csv", true, d.span(), "delimiter")?;
            }
        }
        if !matches!(format, LineFormat::Regex(_)) {
            if let Some(p) = &s.pattern {
                only("regex", true, p.span(), "pattern")?;
            }
        }
        Ok(format)
    }
}

/// Splits `mqtt://host:port` or `mqtts://host:port` into host, port (1883, or 8883 with TLS)
/// and whether TLS is on.
fn parse_mqtt_url(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("mqtt://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true)
    } else {
        return Err(format!("`{url}` is not an MQTT URL; write it like mqtt://broker.example:1883 or mqtts://broker.example:8883"));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains(['/', '@', '?']) {
        return Err(format!("`{url}`: only mqtt://host[:port] is understood"));
    }
    let (host, port) = if let Some(h) = rest.strip_prefix('[') {
        // [::1]:1883
        let (h, p) = h
            .split_once(']')
            .ok_or_else(|| format!("`{url}`: unclosed [ in the host"))?;
        (h.to_string(), p.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    let port = match port {
        None if tls => 8883,
        None => 1883,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{url}`: `{p}` is not a port"))?,
    };
    Ok((host, port, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok = |h: &str, p: u16, tls: bool| Ok((h.to_string(), p, tls));
        assert_eq!(
            parse_mqtt_url("mqtt://127.0.0.1:1883"),
            ok("127.0.0.1", 1883, false)
        );
        assert_eq!(parse_mqtt_url("mqtt://broker"), ok("broker", 1883, false));
        assert_eq!(
            parse_mqtt_url("mqtt://[::1]:18830"),
            ok("::1", 18830, false)
        );
        assert_eq!(parse_mqtt_url("mqtts://broker"), ok("broker", 8883, true));
        assert_eq!(parse_mqtt_url("mqtts://b:443/"), ok("b", 443, true));
        assert!(parse_mqtt_url("http://x").is_err());
        assert!(parse_mqtt_url("mqtt://:1883").is_err());
        assert!(parse_mqtt_url("mqtt://h:0").is_err());
        assert!(parse_mqtt_url("mqtt://h:99999").is_err());
    }
}
