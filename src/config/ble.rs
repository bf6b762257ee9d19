//! `[[ble]]` inputs: the strict serde layer and its validation into [`BleConfig`].
//!
//! **Invariant:** like the rest of the config, every error names the file, the line and the
//! key (`ble[0].device[1].bindkey`); an address, a bindkey, a UUID or a GATT value type that
//! does not parse never reaches the running input.

use super::{limits, ConfigError, Cx, Route};
use crate::ble::values::{parse_address, parse_hex, parse_uuid, GattDecode, NumKind};
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBle {
    pub name: Spanned<String>,
    /// "hci0"; the first adapter by default.
    pub adapter: Option<Spanned<String>>,
    pub topic: Spanned<String>,
    pub qos: Option<Spanned<i64>>,
    #[serde(default)]
    pub retain: bool,
    pub min_interval: Option<Spanned<String>>,
    pub allow_unknown: Option<Spanned<bool>>,
    /// No advertisement from anyone for this long while devices are listed: restart the scan.
    pub scan_stall: Option<Spanned<String>>,
    pub retry_min: Option<Spanned<String>>,
    pub retry_max: Option<Spanned<String>>,
    #[serde(default)]
    pub device: Vec<RawBleDevice>,
    #[serde(default)]
    pub gatt: Vec<RawGatt>,
    /// Per-field transforms (`fields.<name> = { ... }`) and report by exception.
    #[serde(default)]
    pub fields: super::fields::RawFields,
    pub max_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBleDevice {
    pub address: Spanned<String>,
    pub alias: Option<Spanned<String>>,
    pub bindkey: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGatt {
    pub address: Spanned<String>,
    pub service: Spanned<String>,
    pub characteristic: Spanned<String>,
    pub mode: Spanned<String>,
    pub every: Option<Spanned<String>>,
    pub decode: Spanned<RawGattDecode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGattDecode {
    #[serde(rename = "type")]
    pub kind: String,
    pub scale: Option<f64>,
    pub offset: Option<i64>,
    pub field: String,
}

/// A validated `[[ble]]` input.
#[derive(Debug, Clone)]
pub struct BleConfig {
    pub adapter: Option<String>,
    pub min_interval: Duration,
    pub allow_unknown: bool,
    pub scan_stall: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub devices: Vec<BleDevice>,
    pub gatt: Vec<GattConfig>,
}

#[derive(Debug, Clone)]
pub struct BleDevice {
    /// Big-endian, as printed: A4:C1:38:8E:11:22 is `[0xa4, 0xc1, ...]`.
    pub address: [u8; 6],
    pub alias: Option<Arc<str>>,
    pub bindkey: Option<[u8; 16]>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GattMode {
    Notify,
    Read { every: Duration },
}

#[derive(Debug, Clone)]
pub struct GattConfig {
    pub address: [u8; 6],
    pub service: u128,
    pub characteristic: u128,
    pub mode: GattMode,
    pub decode: GattDecode,
}

/// Validates `[[ble]]` number `i`; returns its route and its settings.
pub(super) fn validate(cx: &Cx, i: usize, b: &RawBle) -> Result<(Route, BleConfig), ConfigError> {
    let key = |k: &str| format!("ble[{i}].{k}");
    if !cfg!(feature = "ble") {
        return Err(cx.at(
            &b.name,
            &key("name"),
            "this sensorgate was built without BLE support (cargo feature `ble`)",
        ));
    }
    let mut route = cx.route(&b.topic, &b.qos, b.retain, &key("topic"), &key("qos"))?;
    let prefix = format!("ble[{i}]");
    route.fields = Arc::new(super::fields::rules(
        cx,
        &b.fields,
        &b.max_interval,
        &prefix,
        None,
    )?);
    cx.no_sentence(&b.topic, &key("topic"))?;
    let adapter = match &b.adapter {
        None => None,
        Some(a) if !a.get_ref().is_empty() && !a.get_ref().contains(['/', ' ']) => {
            Some(a.get_ref().clone())
        }
        Some(a) => return Err(cx.at(a, &key("adapter"), "name an adapter such as \"hci0\"")),
    };
    let mut seen = HashSet::new();
    let mut aliases = HashSet::new();
    let mut devices = Vec::new();
    for (d, raw) in b.device.iter().enumerate() {
        let key = |k: &str| format!("ble[{i}].device[{d}].{k}");
        let address = address(cx, &raw.address, &key("address"))?;
        if !seen.insert(address) {
            return Err(cx.at(&raw.address, &key("address"), "is listed twice"));
        }
        let alias = match &raw.alias {
            None => None,
            Some(a) => {
                let s = a.get_ref();
                cx.bytes_at_most(a, &key("alias"), limits::NAME_BYTES)?;
                if s.is_empty() || s.contains(['/', '+', '#']) || s.chars().any(char::is_control) {
                    return Err(cx.at(
                        a,
                        &key("alias"),
                        "must be non-empty and hold no `/`, `+`, `#` or control characters",
                    ));
                }
                if !aliases.insert(s.clone()) {
                    return Err(cx.at(a, &key("alias"), &format!("`{s}` names two devices")));
                }
                Some(Arc::from(s.as_str()))
            }
        };
        let bindkey = match &raw.bindkey {
            None => None,
            Some(k) => Some(
                parse_hex(k.get_ref())
                    .and_then(|v| <[u8; 16]>::try_from(v).ok())
                    .ok_or_else(|| {
                        cx.at(k, &key("bindkey"), "must be 32 hex digits (a 128-bit key)")
                    })?,
            ),
        };
        devices.push(BleDevice {
            address,
            alias,
            bindkey,
        });
    }
    let mut gatt = Vec::new();
    for (g, raw) in b.gatt.iter().enumerate() {
        let key = |k: &str| format!("ble[{i}].gatt[{g}].{k}");
        let uuid = |s: &Spanned<String>, k: &str| {
            parse_uuid(s.get_ref()).ok_or_else(|| {
                cx.at(
                    s,
                    &key(k),
                    "must be a UUID such as 0000181a-0000-1000-8000-00805f9b34fb (or 181a)",
                )
            })
        };
        let mode = match (raw.mode.get_ref().as_str(), &raw.every) {
            ("notify", None) => GattMode::Notify,
            ("notify", Some(e)) => {
                return Err(cx.at(e, &key("every"), "belongs to mode \"read\" only"))
            }
            ("read", Some(e)) => {
                let every = cx.duration(
                    &Some(e.clone()),
                    &key("every"),
                    Duration::ZERO,
                    limits::GATT_EVERY,
                )?;
                GattMode::Read { every }
            }
            ("read", None) => {
                return Err(cx.at(
                    &raw.mode,
                    &key("every"),
                    "mode \"read\" needs `every = \"5m\"`",
                ))
            }
            (other, _) => {
                return Err(cx.at(
                    &raw.mode,
                    &key("mode"),
                    &format!("`{other}` is not a mode; use \"notify\" or \"read\""),
                ))
            }
        };
        let d = raw.decode.get_ref();
        let bad = |m: &str| cx.at(&raw.decode, &key("decode"), m);
        let kind = NumKind::parse(&d.kind).ok_or_else(|| {
            bad(&format!(
                "type `{}` is not one of {}",
                d.kind,
                NumKind::NAMES.join(", ")
            ))
        })?;
        let scale = d.scale.unwrap_or(1.0);
        if !scale.is_finite() || scale == 0.0 {
            return Err(bad("scale must be a finite number other than 0"));
        }
        let offset = match d.offset.unwrap_or(0) {
            o @ 0..=512 => o as usize,
            _ => return Err(bad("offset must be between 0 and 512 bytes")),
        };
        if d.field.is_empty() || d.field.chars().any(char::is_control) {
            return Err(bad("field must name the value, e.g. \"temperature\""));
        }
        gatt.push(GattConfig {
            address: address(cx, &raw.address, &key("address"))?,
            service: uuid(&raw.service, "service")?,
            characteristic: uuid(&raw.characteristic, "characteristic")?,
            mode,
            decode: GattDecode {
                kind,
                scale,
                offset,
                field: Arc::from(d.field.as_str()),
            },
        });
    }
    let allow_unknown = b.allow_unknown.as_ref().is_some_and(|a| *a.get_ref());
    if !allow_unknown && devices.is_empty() && gatt.is_empty() {
        let at = b.allow_unknown.as_ref().map_or(b.name.span(), |a| a.span());
        return Err(cx.error(
            at,
            &key("allow_unknown"),
            "lists no [[ble.device]] or [[ble.gatt]] and allow_unknown is false: it would publish nothing",
        ));
    }
    let retry_min = cx.duration(
        &b.retry_min,
        &key("retry_min"),
        Duration::from_secs(1),
        limits::BLE_RETRY_MIN,
    )?;
    let retry_max = cx.duration(
        &b.retry_max,
        &key("retry_max"),
        Duration::from_secs(60).max(retry_min),
        limits::BLE_RETRY_MAX,
    )?;
    if retry_min > retry_max {
        let at = b
            .retry_max
            .as_ref()
            .expect("the default is at least retry_min");
        return Err(cx.at(at, &key("retry_max"), "must be at least retry_min"));
    }
    let scan_stall = cx.duration(
        &b.scan_stall,
        &key("scan_stall"),
        Duration::from_secs(300),
        limits::SCAN_STALL,
    )?;
    Ok((
        route,
        BleConfig {
            adapter,
            min_interval: cx.duration(
                &b.min_interval,
                &key("min_interval"),
                Duration::from_secs(60),
                limits::BLE_MIN_INTERVAL,
            )?,
            allow_unknown,
            scan_stall,
            retry_min,
            retry_max,
            devices,
            gatt,
        },
    ))
}

fn address(cx: &Cx, s: &Spanned<String>, key: &str) -> Result<[u8; 6], ConfigError> {
    parse_address(s.get_ref()).ok_or_else(|| {
        cx.at(
            s,
            key,
            "must be a Bluetooth address such as A4:C1:38:8E:11:22",
        )
    })
}
