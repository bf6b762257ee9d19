//! Small pure helpers shared by the BLE config, input and `decode ble` command: addresses,
//! hex, UUIDs, the fixed-width numbers a GATT characteristic holds, and the conversion of
//! decoder values into reading values.
//!
//! **Invariant:** nothing here panics on any input; parsers return `None` instead.

use crate::reading::Value;
use std::sync::Arc;

/// The Bluetooth base UUID 0000xxxx-0000-1000-8000-00805f9b34fb with xxxx = 0.
pub const BASE_UUID: u128 = 0x0000_0000_0000_1000_8000_0080_5f9b_34fb;

/// `A4:C1:38:8E:11:22` (or lower case) as big-endian bytes.
pub fn parse_address(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The address as `{device}` shows it without an alias: `a4c1388e1122`.
pub fn address_label(a: &[u8; 6]) -> String {
    a.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex digits (upper or lower case, no separators) as bytes.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A 128-bit UUID with or without dashes, or a 16-bit one (`181a`, `0x181a`) on the base UUID.
pub fn parse_uuid(s: &str) -> Option<u128> {
    let t = s.trim().trim_start_matches("0x");
    if t.len() == 4 {
        return u16::from_str_radix(t, 16).ok().map(uuid_from_u16);
    }
    let hex: String = t.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

pub fn uuid_from_u16(u: u16) -> u128 {
    BASE_UUID | (u128::from(u) << 96)
}

/// The 16-bit form of a UUID on the Bluetooth base, if it is one.
pub fn uuid16(u: u128) -> Option<u16> {
    let mask = !(0xffff_u128 << 96);
    (u & mask == BASE_UUID).then_some((u >> 96) as u16)
}

/// The fixed-width number a GATT characteristic holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumKind {
    U8,
    I8,
    U16Le,
    I16Le,
    U16Be,
    I16Be,
    U32Le,
    I32Le,
    U32Be,
    I32Be,
    F32Le,
}

impl NumKind {
    pub const NAMES: &'static [&'static str] = &[
        "u8", "i8", "u16le", "i16le", "u16be", "i16be", "u32le", "i32le", "u32be", "i32be", "f32le",
    ];
    const KINDS: [NumKind; 11] = [
        NumKind::U8,
        NumKind::I8,
        NumKind::U16Le,
        NumKind::I16Le,
        NumKind::U16Be,
        NumKind::I16Be,
        NumKind::U32Le,
        NumKind::I32Le,
        NumKind::U32Be,
        NumKind::I32Be,
        NumKind::F32Le,
    ];

    pub fn parse(s: &str) -> Option<NumKind> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::KINDS[i])
    }

    fn width(self) -> usize {
        match self {
            NumKind::U8 | NumKind::I8 => 1,
            NumKind::U16Le | NumKind::I16Le | NumKind::U16Be | NumKind::I16Be => 2,
            _ => 4,
        }
    }

    /// The number at the start of `b`, or `None` when `b` is too short.
    fn read(self, b: &[u8]) -> Option<f64> {
        let b = b.get(..self.width())?;
        let two = || [b[0], b[1]];
        let four = || [b[0], b[1], b[2], b[3]];
        Some(match self {
            NumKind::U8 => f64::from(b[0]),
            NumKind::I8 => f64::from(b[0] as i8),
            NumKind::U16Le => f64::from(u16::from_le_bytes(two())),
            NumKind::I16Le => f64::from(i16::from_le_bytes(two())),
            NumKind::U16Be => f64::from(u16::from_be_bytes(two())),
            NumKind::I16Be => f64::from(i16::from_be_bytes(two())),
            NumKind::U32Le => f64::from(u32::from_le_bytes(four())),
            NumKind::I32Le => f64::from(i32::from_le_bytes(four())),
            NumKind::U32Be => f64::from(u32::from_be_bytes(four())),
            NumKind::I32Be => f64::from(i32::from_be_bytes(four())),
            NumKind::F32Le => f64::from(f32::from_le_bytes(four())),
        })
    }
}

/// How a GATT characteristic's value becomes one field: `type` at `offset`, times `scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct GattDecode {
    pub kind: NumKind,
    pub scale: f64,
    pub offset: usize,
    pub field: Arc<str>,
}

impl GattDecode {
    /// The value, or `None` when the characteristic is too short (a malformed frame).
    /// Integers with scale 1 stay integers.
    pub fn decode(&self, bytes: &[u8]) -> Option<Value> {
        let raw = self.kind.read(bytes.get(self.offset..)?)?;
        if self.scale == 1.0 && self.kind != NumKind::F32Le {
            return Some(Value::Int(raw as i64));
        }
        let v = raw * self.scale;
        // 0.01 * 2150 is 21.500000000000004: round to the scale's precision.
        let digits = (-self.scale.abs().log10()).ceil().clamp(0.0, 12.0) as i32 + 2;
        let p = 10f64.powi(digits);
        Some(Value::Float((v * p).round() / p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_hex_and_uuids() {
        assert_eq!(
            parse_address("A4:C1:38:8e:11:22"),
            Some([0xa4, 0xc1, 0x38, 0x8e, 0x11, 0x22])
        );
        for bad in [
            "",
            "A4:C1:38:8E:11",
            "A4:C1:38:8E:11:22:33",
            "A4C1388E1122",
            "G4:C1:38:8E:11:22",
            "A:C1:38:8E:11:223",
        ] {
            assert_eq!(parse_address(bad), None, "{bad}");
        }
        assert_eq!(
            address_label(&[0xa4, 0xc1, 0x38, 0x8e, 0x11, 0x22]),
            "a4c1388e1122"
        );
        assert_eq!(parse_hex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(parse_hex("0aF"), None);
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(parse_hex("é1"), None);
        let env = parse_uuid("0000181a-0000-1000-8000-00805f9b34fb").unwrap();
        assert_eq!(parse_uuid("181a"), Some(env));
        assert_eq!(parse_uuid("0x181A"), Some(env));
        assert_eq!(uuid16(env), Some(0x181a));
        assert_eq!(
            uuid16(parse_uuid("6e400001-b5a3-f393-e0a9-e50e24dcca9e").unwrap()),
            None
        );
        assert_eq!(parse_uuid("181"), None);
        assert_eq!(parse_uuid("0000181a-0000-1000-8000-00805f9b34fg"), None);
    }

    #[test]
    fn gatt_numbers() {
        let d = |kind: &str, scale: f64, offset: usize| GattDecode {
            kind: NumKind::parse(kind).unwrap(),
            scale,
            offset,
            field: Arc::from("t"),
        };
        assert_eq!(
            d("i16le", 0.01, 0).decode(&[0x66, 0x08]),
            Some(Value::Float(21.5))
        );
        assert_eq!(
            d("i16le", 0.01, 0).decode(&[0x9c, 0xff]),
            Some(Value::Float(-1.0))
        );
        assert_eq!(
            d("i16be", 1.0, 1).decode(&[9, 0xff, 0x9c]),
            Some(Value::Int(-100))
        );
        assert_eq!(
            d("u16le", 1.0, 0).decode(&[0xff, 0xff]),
            Some(Value::Int(65535))
        );
        assert_eq!(d("u8", 0.5, 0).decode(&[3]), Some(Value::Float(1.5)));
        assert_eq!(
            d("u32be", 1.0, 0).decode(&[0, 0, 1, 0]),
            Some(Value::Int(256))
        );
        assert_eq!(
            d("f32le", 1.0, 0).decode(&1.5f32.to_le_bytes()),
            Some(Value::Float(1.5))
        );
        assert_eq!(d("i16le", 1.0, 0).decode(&[1]), None);
        assert_eq!(d("u8", 1.0, 3).decode(&[1, 2]), None);
        assert_eq!(NumKind::parse("i24le"), None);
        for n in NumKind::NAMES {
            assert!(NumKind::parse(n).is_some(), "{n}");
        }
    }
}
