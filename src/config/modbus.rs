//! `[[modbus]]` inputs (Modbus RTU on a serial bus, or Modbus TCP) with their
//! `[[modbus.slave]]` tables: the strict serde layer and its validation into
//! [`ModbusConfig`], whose slaves carry their register plans ([`plan::plan`]).
//!
//! **Invariant:** like the rest of the config, every error names the file, the line and
//! the key (`modbus[0].slave[1].registers[2].type`); a register that does not fit the
//! address space, a type the table cannot hold or two slaves with one unit id on a bus
//! never reach the running input.

use super::{limits, ConfigError, Cx, Route};
use crate::input::modbus::plan::{self, Field, Read};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModbus {
    pub name: Spanned<String>,
    /// A serial port (Modbus RTU); or `url`.
    pub device: Option<Spanned<String>>,
    /// `tcp://host:port` (Modbus TCP; port 502 by default); or `device`.
    pub url: Option<Spanned<String>>,
    pub baud: Option<Spanned<i64>>,
    /// "none" (default), "even" or "odd".
    pub parity: Option<Spanned<String>>,
    /// 1 (default) or 2.
    pub stop_bits: Option<Spanned<i64>>,
    /// 8 (default) or 7.
    pub data_bits: Option<Spanned<i64>>,
    /// How long one request may wait for its answer.
    pub timeout: Option<Spanned<String>>,
    /// How often every slave of the bus is polled.
    pub every: Option<Spanned<String>>,
    pub topic: Spanned<String>,
    pub qos: Option<Spanned<i64>>,
    #[serde(default)]
    pub retain: bool,
    pub reopen_min: Option<Spanned<String>>,
    pub reopen_max: Option<Spanned<String>>,
    /// Per-field transforms (`src/transform.rs`), by the registers' field names.
    #[serde(default)]
    pub fields: super::fields::RawFields,
    /// Report by exception: publish a slave's reading at least this often.
    pub max_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub slave: Vec<RawSlave>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlave {
    pub unit: Spanned<i64>,
    pub alias: Option<Spanned<String>>,
    pub registers: Spanned<Vec<Spanned<RawRegister>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegister {
    pub field: Spanned<String>,
    pub kind: Spanned<String>,
    pub address: Spanned<i64>,
    #[serde(rename = "type")]
    pub ty: Option<Spanned<String>>,
    pub order: Option<Spanned<String>>,
    pub bit: Option<Spanned<i64>>,
    pub scale: Option<Spanned<f64>>,
    pub offset: Option<Spanned<f64>>,
}

/// A validated `[[modbus]]` input: one bus and the slaves on it.
#[derive(Debug, Clone)]
pub struct ModbusConfig {
    pub bus: Bus,
    pub timeout: Duration,
    pub every: Duration,
    pub reopen_min: Duration,
    pub reopen_max: Duration,
    pub slaves: Vec<Slave>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Bus {
    Rtu {
        device: PathBuf,
        baud: u32,
        parity: Parity,
        stop_bits: u8,
        data_bits: u8,
    },
    Tcp {
        host: String,
        port: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// One slave: its unit id, its `{device}` name, its fields and the reads that cover them.
#[derive(Debug, Clone)]
pub struct Slave {
    pub unit: u8,
    /// The alias, else `unit<id>`.
    pub device: Arc<str>,
    pub fields: Vec<Field>,
    pub reads: Vec<Read>,
}

/// `timeout`: at least a few character times at low baud rates, at most a minute.
const TIMEOUT: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(60);
/// `every`: the poll period of a bus.
const EVERY: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(86_400);

/// Validates `[[modbus]]` number `i`; returns its route and its settings.
pub(super) fn validate(
    cx: &Cx,
    i: usize,
    m: &RawModbus,
) -> Result<(Route, ModbusConfig), ConfigError> {
    let key = |k: &str| format!("modbus[{i}].{k}");
    let route = cx.route(&m.topic, &m.qos, m.retain, &key("topic"), &key("qos"))?;
    cx.no_sentence(&m.topic, &key("topic"))?;
    let bus = bus(cx, i, m)?;
    let timeout = cx.duration(
        &m.timeout,
        &key("timeout"),
        Duration::from_millis(500),
        TIMEOUT,
    )?;
    let every = cx.duration(&m.every, &key("every"), Duration::from_secs(10), EVERY)?;
    let (reopen_min, reopen_max) = cx.reopen(&m.reopen_min, &m.reopen_max, &key)?;
    if m.slave.is_empty() {
        return Err(cx.at(
            &m.name,
            &key("slave"),
            "lists no [[modbus.slave]]: it would poll nothing",
        ));
    }
    let units = match bus {
        Bus::Rtu { .. } => 1..=247,
        Bus::Tcp { .. } => 0..=255,
    };
    let (mut seen, mut devices) = (HashSet::new(), HashSet::new());
    let mut slaves = Vec::new();
    for (s, raw) in m.slave.iter().enumerate() {
        let key = |k: &str| format!("modbus[{i}].slave[{s}].{k}");
        let unit = *raw.unit.get_ref();
        if !units.contains(&unit) {
            let (lo, hi) = (units.start(), units.end());
            return Err(cx.at(
                &raw.unit,
                &key("unit"),
                &format!("must be between {lo} and {hi} on this bus"),
            ));
        }
        if !seen.insert(unit) {
            return Err(cx.at(
                &raw.unit,
                &key("unit"),
                &format!("unit {unit} is listed twice on this bus"),
            ));
        }
        let device: Arc<str> = match &raw.alias {
            None => Arc::from(format!("unit{unit}")),
            Some(a) => {
                let v = a.get_ref();
                cx.bytes_at_most(a, &key("alias"), limits::NAME_BYTES)?;
                if v.is_empty() || v.contains(['/', '+', '#']) || v.chars().any(char::is_control) {
                    return Err(cx.at(
                        a,
                        &key("alias"),
                        "must be non-empty and hold no `/`, `+`, `#` or control characters",
                    ));
                }
                Arc::from(v.as_str())
            }
        };
        if !devices.insert(device.clone()) {
            let at = raw.alias.as_ref().map_or(raw.unit.span(), |a| a.span());
            return Err(cx.error(
                at,
                &key("alias"),
                &format!("`{device}` names two slaves of this bus"),
            ));
        }
        let fields = super::registers::validate(cx, i, s, raw)?;
        let reads = plan::plan(&fields);
        slaves.push(Slave {
            unit: unit as u8,
            device,
            fields,
            reads,
        });
    }
    let mut route = route;
    let known: Vec<&str> = slaves
        .iter()
        .flat_map(|s: &Slave| s.fields.iter().map(|f| &*f.name))
        .collect();
    let prefix = format!("modbus[{i}]");
    route.fields = Arc::new(super::fields::rules(
        cx,
        &m.fields,
        &m.max_interval,
        &prefix,
        Some(&known),
    )?);
    Ok((
        route,
        ModbusConfig {
            bus,
            timeout,
            every,
            reopen_min,
            reopen_max,
            slaves,
        },
    ))
}

/// The bus: `device` (RTU, with its line settings) or `url` (TCP), exactly one.
fn bus(cx: &Cx, i: usize, m: &RawModbus) -> Result<Bus, ConfigError> {
    let key = |k: &str| format!("modbus[{i}].{k}");
    match (&m.device, &m.url) {
        (Some(d), Some(_)) => Err(cx.at(
            d,
            &key("device"),
            "name a serial `device` (Modbus RTU) or a `url` (Modbus TCP), not both",
        )),
        (None, None) => Err(cx.at(
            &m.name,
            &key("device"),
            "name a serial `device` (Modbus RTU) or `url = \"tcp://host:502\"` (Modbus TCP)",
        )),
        (None, Some(u)) => {
            let serial_only = [
                (m.baud.as_ref().map(|v| v.span()), "baud"),
                (m.parity.as_ref().map(|v| v.span()), "parity"),
                (m.stop_bits.as_ref().map(|v| v.span()), "stop_bits"),
                (m.data_bits.as_ref().map(|v| v.span()), "data_bits"),
            ];
            if let Some((Some(at), k)) = serial_only.into_iter().find(|(s, _)| s.is_some()) {
                return Err(cx.error(at, &key(k), "belongs to a serial bus (`device`) only"));
            }
            let bad = || cx.at(u, &key("url"), "must be `tcp://host` or `tcp://host:port`");
            let rest = u.get_ref().strip_prefix("tcp://").ok_or_else(bad)?;
            let (host, port) = match rest.rsplit_once(':') {
                // An IPv6 literal is bracketed: `tcp://[::1]:502`.
                Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().map_err(|_| bad())?),
                _ => (rest, 502),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || host.contains(['/', ' ']) || port == 0 {
                return Err(bad());
            }
            Ok(Bus::Tcp {
                host: host.to_string(),
                port,
            })
        }
        (Some(d), None) => {
            if d.get_ref().is_empty() {
                return Err(cx.at(d, &key("device"), "must name a device such as /dev/ttyUSB0"));
            }
            let baud = match &m.baud {
                None => 9600,
                Some(b) if limits::BAUD.contains(b.get_ref()) => *b.get_ref() as u32,
                Some(b) => {
                    let (lo, hi) = (limits::BAUD.start(), limits::BAUD.end());
                    return Err(cx.at(b, &key("baud"), &format!("must be between {lo} and {hi}")));
                }
            };
            let parity = match m.parity.as_ref().map(|p| (p, p.get_ref().as_str())) {
                None | Some((_, "none")) => Parity::None,
                Some((_, "even")) => Parity::Even,
                Some((_, "odd")) => Parity::Odd,
                Some((p, other)) => {
                    return Err(cx.at(
                        p,
                        &key("parity"),
                        &format!("`{other}`: use \"none\", \"even\" or \"odd\""),
                    ))
                }
            };
            let stop_bits = match &m.stop_bits {
                None => 1,
                Some(s) if matches!(s.get_ref(), 1 | 2) => *s.get_ref() as u8,
                Some(s) => return Err(cx.at(s, &key("stop_bits"), "must be 1 or 2")),
            };
            let data_bits = match &m.data_bits {
                None => 8,
                Some(s) if matches!(s.get_ref(), 7 | 8) => *s.get_ref() as u8,
                Some(s) => return Err(cx.at(s, &key("data_bits"), "must be 7 or 8")),
            };
            Ok(Bus::Rtu {
                device: PathBuf::from(d.get_ref()),
                baud,
                parity,
                stop_bits,
                data_bits,
            })
        }
    }
}
