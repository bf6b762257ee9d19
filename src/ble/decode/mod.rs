//! BLE advertisement decoders: turn one service-data or manufacturer-data blob
//! into named, unit-normalised measurements.
//!
//! Role: [`decode`] is the single entry point. It routes an [`Advert`] to every
//! decoder that claims its 16-bit service UUID or company id (see `DECODERS`)
//! and returns the first success, or the most informative error.
//!
//! Invariants (all decoders):
//! * Pure functions of `(advert, keys)`: no I/O, no global state, no clocks.
//! * Never panic on any input: every read goes through the bounds-checked
//!   [`Reader`] or `get()`; slices are only taken after an explicit length check.
//! * Bounded allocation: output size is proportional to the input length (an
//!   advertisement is at most a few hundred bytes), never to a length field.
//! * Field names follow BTHome property names in snake_case and BTHome units:
//!   temperature/dewpoint °C, humidity/moisture/battery %, pressure hPa,
//!   illuminance lx, voltage V, acceleration m/s², conductivity µS/cm,
//!   tx_power dBm. Format-specific extras are documented in each module.
//! * Binary sensors are `Bool` named for their `true` state; events are `Text` naming the
//!   event, under the names [`field_kind`] recognises.
//! * Sensor "not available" sentinels are omitted, never reported as values.
//! * `packet_id` is only a de-duplication hint (BTHome packet id, MiBeacon frame
//!   counter, Ruuvi measurement sequence...); replay protection of encrypted
//!   counters is the caller's job.

mod atc;
mod bthome;
mod bthome_objects;
mod crypto;
mod eddystone;
mod ibeacon;
mod mibeacon;
mod mibeacon_buttons;
mod mibeacon_objects;
mod ruuvi;
mod xiaomi_other;

#[cfg(test)]
mod mibeacon_vectors_tests;
#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
pub(crate) mod test_util;

/// A decoded value: numbers stay numbers (the gateway's own reading value).
pub use crate::reading::Value;

/// The result of a successful decode.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// "bthome_v2", "ruuvi_v5", "ruuvi_v3", "atc1441", "pvvx", "mibeacon",
    /// "ibeacon", "eddystone_uid", "eddystone_url", "eddystone_tlm", "hhccjcy10",
    /// "xiaomi_scale_v1", "xiaomi_scale_v2"
    pub decoder: &'static str,
    /// BTHome property names in snake_case with BTHome units.
    pub fields: Vec<(String, Value)>,
    /// BTHome packet id / MiBeacon frame counter / Ruuvi measurement sequence:
    /// used to drop repeated advertisements.
    pub packet_id: Option<u32>,
}

/// What a decoded field is to a consumer such as Home Assistant: a state (a measurement
/// or a text that holds until the next one), a binary state, or an event (a button press:
/// it happens, it does not hold) or a property of the event beside it (`dimmer_steps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    State,
    Binary,
    Event,
    EventProperty,
}

/// The kind of a field the decoders produce. Events are `button` (also `button_left`,
/// `button_<command>`, numbered `button_2`), `dimmer`, `cube`, `command` and the names
/// ending in `_event` (`lock_event`, `motion_event`); their properties are
/// `dimmer_steps`, `dimmer_presses`, `dimmer_duration` and `command_args`.
pub fn field_kind(name: &str, value: &Value) -> FieldKind {
    let base = match name.rsplit_once('_') {
        Some((b, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => b,
        _ => name,
    };
    const PROPERTIES: &[&str] = &[
        "dimmer_steps",
        "dimmer_presses",
        "dimmer_duration",
        "command_args",
    ];
    if PROPERTIES.contains(&base) {
        FieldKind::EventProperty
    } else if matches!(base, "button" | "dimmer" | "cube" | "command")
        || base.starts_with("button_")
        || base.ends_with("_event")
    {
        FieldKind::Event
    } else if matches!(value, Value::Bool(_)) {
        FieldKind::Binary
    } else {
        FieldKind::State
    }
}

/// One AD structure handed to the decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advert<'a> {
    /// Service Data - 16-bit UUID (AD type 0x16); `data` excludes the UUID.
    ServiceData { uuid: u16, data: &'a [u8] },
    /// Manufacturer Specific Data (AD type 0xFF); `data` excludes the company id.
    ManufacturerData { company: u16, data: &'a [u8] },
}

/// Per-device secrets and identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys<'a> {
    /// AES-128 bindkey for encrypted formats, if configured for this device.
    pub bindkey: Option<&'a [u8; 16]>,
    /// Device address, big-endian as printed (A4:C1:...).
    pub mac: [u8; 6],
}

/// Why an advertisement could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// No decoder recognises this advertisement.
    #[error("advertisement not handled by any decoder")]
    NotMine,
    /// Recognised, but truncated or internally inconsistent.
    #[error("malformed advertisement: {0}")]
    Malformed(String),
    /// Encrypted, and no bindkey is configured for this device.
    #[error("encrypted advertisement, bindkey required")]
    NeedsKey,
    /// Encrypted, and the message integrity check failed with the given key.
    #[error("bindkey does not authenticate this advertisement (MIC mismatch)")]
    BadKey,
    /// Recognised format, but this variant is not implemented.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl DecodeError {
    /// How much a caller learns from this error; used to pick the error to
    /// report when several decoders claim the same advertisement.
    fn rank(&self) -> u8 {
        match self {
            DecodeError::NotMine => 0,
            DecodeError::Unsupported(_) => 1,
            DecodeError::Malformed(_) => 2,
            DecodeError::NeedsKey => 3,
            DecodeError::BadKey => 4,
        }
    }
}

type DecodeFn = fn(&[u8], &Keys) -> Result<Decoded, DecodeError>;

#[derive(Clone, Copy)]
enum Claim {
    Service(u16),
    Manufacturer(u16),
}

impl Claim {
    fn matches(self, advert: &Advert) -> bool {
        match (self, *advert) {
            (Claim::Service(u), Advert::ServiceData { uuid, .. }) => u == uuid,
            (Claim::Manufacturer(c), Advert::ManufacturerData { company, .. }) => c == company,
            _ => false,
        }
    }
}

/// Registry: which decoder claims which UUID / company id, tried in order.
const DECODERS: &[(Claim, DecodeFn)] = &[
    (Claim::Service(bthome::UUID), bthome::decode),
    (Claim::Service(atc::UUID), atc::decode_atc1441),
    (Claim::Service(atc::UUID), atc::decode_pvvx),
    (Claim::Service(mibeacon::UUID), mibeacon::decode),
    (Claim::Service(eddystone::UUID), eddystone::decode),
    (
        Claim::Service(xiaomi_other::HHCC_UUID),
        xiaomi_other::decode_hhcc,
    ),
    (
        Claim::Service(xiaomi_other::SCALE1_UUID),
        xiaomi_other::decode_scale_v1,
    ),
    (
        Claim::Service(xiaomi_other::SCALE2_UUID),
        xiaomi_other::decode_scale_v2,
    ),
    (Claim::Manufacturer(ruuvi::COMPANY_ID), ruuvi::decode),
    (Claim::Manufacturer(ibeacon::COMPANY_ID), ibeacon::decode),
];

/// Decode one advertisement element. Tries every decoder that claims the
/// UUID/company id; the first `Ok` wins, otherwise the most informative error
/// (BadKey > NeedsKey > Malformed > Unsupported > NotMine) is returned.
pub fn decode(advert: &Advert, keys: &Keys) -> Result<Decoded, DecodeError> {
    let data = match *advert {
        Advert::ServiceData { data, .. } | Advert::ManufacturerData { data, .. } => data,
    };
    let mut best = DecodeError::NotMine;
    for (claim, decoder) in DECODERS {
        if !claim.matches(advert) {
            continue;
        }
        match decoder(data, keys) {
            Ok(decoded) => return Ok(decoded),
            Err(e) if e.rank() > best.rank() => best = e,
            Err(_) => {}
        }
    }
    Err(best)
}

// ---------------------------------------------------------------------------
// Shared helpers for the decoder modules.
// ---------------------------------------------------------------------------

/// Bounds-checked cursor over a byte slice. Every accessor returns `None`
/// instead of panicking when the input is too short.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }
    pub(crate) fn position(&self) -> usize {
        self.pos
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = self.data.get(self.pos..).unwrap_or(&[]);
        self.pos = self.data.len();
        out
    }
}

/// Little-endian unsigned integer of 1..=8 bytes.
pub(crate) fn uint_le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Little-endian two's-complement integer of 1..=8 bytes.
pub(crate) fn sint_le(bytes: &[u8]) -> i64 {
    let n = bytes.len().clamp(1, 8);
    let raw = uint_le(bytes);
    let shift = 64 - 8 * n as u32;
    ((raw << shift) as i64) >> shift
}

/// Big-endian 16-bit helpers over fixed offsets (caller checked the length).
pub(crate) fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}
pub(crate) fn be_i16(b: &[u8], at: usize) -> Option<i16> {
    be_u16(b, at).map(|v| v as i16)
}

/// Lower-case hex without separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// `AA:BB:CC:DD:EE:FF` from big-endian address bytes.
pub(crate) fn mac_string(mac: &[u8; 6]) -> String {
    let h = hex(mac).to_ascii_uppercase();
    let mut out = String::with_capacity(17);
    for (i, pair) in h.as_bytes().chunks(2).enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.extend(pair.iter().map(|&c| char::from(c)));
    }
    out
}

/// Reverse a little-endian address as sent on air into printed (big-endian) order.
pub(crate) fn mac_from_le(bytes: &[u8]) -> Option<[u8; 6]> {
    let mut mac: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
    mac.reverse();
    Some(mac)
}

/// Small builder to keep decoder bodies terse.
pub(crate) struct Fields(pub(crate) Vec<(String, Value)>);

impl Fields {
    pub(crate) fn new() -> Self {
        Fields(Vec::new())
    }
    pub(crate) fn float(&mut self, name: &str, v: f64) {
        self.0.push((name.to_owned(), Value::Float(v)));
    }
    pub(crate) fn int(&mut self, name: &str, v: i64) {
        self.0.push((name.to_owned(), Value::Int(v)));
    }
    pub(crate) fn text(&mut self, name: &str, v: String) {
        self.0.push((name.to_owned(), Value::Text(v)));
    }
    pub(crate) fn bool(&mut self, name: &str, v: bool) {
        self.0.push((name.to_owned(), Value::Bool(v)));
    }
}

#[cfg(test)]
mod kind_tests {
    use super::{field_kind, FieldKind, Value};

    #[test]
    fn field_kinds_by_name_and_value() {
        let t = |s: &str| Value::Text(s.into());
        let cases = [
            ("temperature", Value::Float(21.5), FieldKind::State),
            ("temperature_2", Value::Float(21.5), FieldKind::State),
            ("key_id", t("administrator"), FieldKind::State),
            ("motion", Value::Bool(true), FieldKind::Binary),
            ("moisture_detected", Value::Bool(false), FieldKind::Binary),
            ("button", t("press"), FieldKind::Event),
            ("button_2", t("press"), FieldKind::Event),
            ("button_left", t("long_press"), FieldKind::Event),
            ("button_timer_30_minutes", t("press"), FieldKind::Event),
            ("dimmer", t("rotate_left"), FieldKind::Event),
            ("cube", t("rotate_left"), FieldKind::Event),
            ("command", t("on"), FieldKind::Event),
            ("lock_event", t("locked"), FieldKind::Event),
            ("dimmer_steps", Value::Int(3), FieldKind::EventProperty),
            ("dimmer_steps_2", Value::Int(3), FieldKind::EventProperty),
            ("command_args", t("05"), FieldKind::EventProperty),
            ("lock", Value::Bool(true), FieldKind::Binary),
        ];
        for (name, value, want) in cases {
            assert_eq!(field_kind(name, &value), want, "{name}");
        }
    }
}
