//! Validation of `[queue]`, of topic routes (and whether they fit an MQTT topic), and of
//! serial inputs: port settings, line endings and formats, one input per device.

use super::locate::Cx;
use super::{limits, raw, units, ConfigError, Qos, QueueConfig, Route, SerialConfig, WhenFull};
use crate::input::format::{nmea, LineEnding, LineFormat};
use crate::topic::{Labels, Template};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

impl Cx<'_> {
    /// `reopen_min` and `reopen_max` of a device input (`[[serial]]`, `[[modbus]]`): the
    /// backoff between attempts to open it again; `key` names the input's keys.
    pub(super) fn reopen(
        &self,
        min: &Option<Spanned<String>>,
        max: &Option<Spanned<String>>,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(Duration, Duration), ConfigError> {
        let reopen_min = self.duration(
            min,
            &key("reopen_min"),
            Duration::from_millis(500),
            limits::REOPEN_MIN,
        )?;
        let reopen_max = self.duration(
            max,
            &key("reopen_max"),
            Duration::from_secs(30).max(reopen_min),
            limits::REOPEN_MAX,
        )?;
        if reopen_max < reopen_min {
            let at = max.as_ref().expect("the default is at least reopen_min");
            return Err(self.at(at, &key("reopen_max"), "must be at least reopen_min"));
        }
        Ok((reopen_min, reopen_max))
    }

    pub(super) fn queue(&self, q: raw::RawQueue) -> Result<QueueConfig, ConfigError> {
        let d = QueueConfig::default();
        let max_size = match &q.max_size {
            None => d.max_size,
            Some(s) => {
                let n =
                    units::parse_size(s.get_ref()).map_err(|m| self.at(s, "queue.max_size", &m))?;
                if n < *limits::QUEUE_SIZE.start() {
                    return Err(self.at(s, "queue.max_size", "must be at least 64KiB"));
                }
                if n > *limits::QUEUE_SIZE.end() {
                    return Err(self.at(s, "queue.max_size", "must be at most 1TiB"));
                }
                n
            }
        };
        let max_age = match &q.max_age {
            None => None,
            Some(_) => {
                Some(self.duration(&q.max_age, "queue.max_age", Duration::ZERO, limits::MAX_AGE)?)
            }
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
                limits::COMMIT_LINGER,
            )?,
            synchronous_full,
        })
    }

    /// Two inputs cannot read one device (each would get part of its lines): refuses the
    /// second, naming the first. Paths are compared as written and as resolved (a udev link
    /// and the tty it points to are one device).
    pub(super) fn one_reader(
        &self,
        seen: &mut Vec<(String, PathBuf, Arc<str>)>,
        device: &Spanned<String>,
        name: &Arc<str>,
        key: &str,
    ) -> Result<(), ConfigError> {
        let path = device.get_ref();
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
        if let Some((first, _, reader)) = seen.iter().find(|(p, r, _)| p == path || *r == real) {
            return Err(self.at(
                device,
                key,
                &format!("`{path}` is already read by input `{reader}` (device = \"{first}\"); one device, one input"),
            ));
        }
        seen.push((path.clone(), real, name.clone()));
        Ok(())
    }

    pub(super) fn route(
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
            fields: Arc::default(),
        })
    }

    /// Refuses a topic template whose expansion cannot fit an MQTT topic (65,535 bytes), as
    /// far as the load can know it: literals, gateway id and input name, and the longest
    /// `{device}` and `{field}` the config names (`device`, `field` bytes). Longer field
    /// names from sensor data are the mapping's to refuse.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn topic_fits(
        &self,
        route: &Route,
        topic: &Spanned<String>,
        key: &str,
        gateway: &str,
        input: &str,
        device: usize,
        field: usize,
    ) -> Result<(), ConfigError> {
        let (d, f) = ("d".repeat(device), "f".repeat(field));
        let labels = Labels {
            device: Some(&d),
            sentence: Some(&"s".repeat(nmea::LONGEST_NAME)),
        };
        let len = route
            .topic
            .render_labels(gateway, input, labels, Some(&f))
            .len();
        if len > limits::MQTT_STRING {
            return Err(self.at(
                topic,
                key,
                &format!("expands to at least {len} bytes; an MQTT topic holds at most 65535"),
            ));
        }
        Ok(())
    }

    /// `{device}` has a meaning in BLE and Modbus topics only.
    pub(super) fn no_device(
        &self,
        route: &Route,
        topic: &Spanned<String>,
        key: &str,
    ) -> Result<(), ConfigError> {
        if route.topic.uses_device() {
            return Err(self.at(
                topic,
                key,
                "{device} belongs to [[ble]] and [[modbus]] inputs only",
            ));
        }
        Ok(())
    }

    /// The port and line settings of `[[serial]]` number `i`, read with `format`.
    pub(super) fn serial(
        &self,
        s: &raw::RawSerial,
        i: usize,
        format: LineFormat,
    ) -> Result<SerialConfig, ConfigError> {
        let key = |k: &str| format!("serial[{i}].{k}");
        let max_line = match &s.max_line {
            None => 4096,
            Some(v) if (16..=1 << 20).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                return Err(self.at(v, &key("max_line"), "must be between 16 and 1048576 bytes"))
            }
        };
        if s.device.get_ref().is_empty() {
            return Err(self.at(
                &s.device,
                &key("device"),
                "must name a device such as /dev/ttyUSB0",
            ));
        }
        let baud = match &s.baud {
            None => 9600,
            Some(b) if limits::BAUD.contains(b.get_ref()) => *b.get_ref() as u32,
            Some(b) => {
                let (lo, hi) = (limits::BAUD.start(), limits::BAUD.end());
                return Err(self.at(b, &key("baud"), &format!("must be between {lo} and {hi}")));
            }
        };
        let (reopen_min, reopen_max) = self.reopen(&s.reopen_min, &s.reopen_max, &key)?;
        Ok(SerialConfig {
            device: PathBuf::from(s.device.get_ref()),
            baud,
            format,
            line_ending: self.line_ending(s, i)?,
            max_line,
            reopen_min,
            reopen_max,
        })
    }

    fn line_ending(&self, s: &raw::RawSerial, i: usize) -> Result<LineEnding, ConfigError> {
        let Some(e) = &s.line_ending else {
            return Ok(LineEnding::Auto);
        };
        Ok(match e.get_ref().as_str() {
            "auto" => LineEnding::Auto,
            "lf" => LineEnding::Lf,
            "cr" => LineEnding::Cr,
            "crlf" => LineEnding::CrLf,
            other => {
                return Err(self.at(
                    e,
                    &format!("serial[{i}].line_ending"),
                    &format!("`{other}`: expected \"auto\", \"lf\", \"cr\" or \"crlf\""),
                ))
            }
        })
    }

    pub(super) fn line_format(
        &self,
        s: &raw::RawSerial,
        i: usize,
    ) -> Result<LineFormat, ConfigError> {
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
            "nmea" => self.nmea(s, i)?,
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
                    &format!("`{other}` is not a format; use json, kv, csv, regex, raw or nmea"),
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
        if !matches!(format, LineFormat::Nmea { .. }) {
            if let Some(v) = &s.sentences {
                only("nmea", true, v.span(), "sentences")?;
            }
            if let Some(v) = &s.min_interval {
                only("nmea", true, v.span(), "min_interval")?;
            }
            self.no_sentence(&s.topic, &key("topic"))?;
        }
        Ok(format)
    }
}
