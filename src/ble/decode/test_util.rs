//! Test helpers shared by the decoder unit tests (compiled only under `cfg(test)`).
//!
//! Invariant: helpers panic loudly on bad *test* input (e.g. odd hex) so a typo
//! in a vector can never silently pass.

use super::{decode, Advert, DecodeError, Decoded, Keys, Value};

/// Parse a hex string (whitespace allowed) into bytes.
pub(crate) fn h(s: &str) -> Vec<u8> {
    let clean: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert_eq!(clean.len() % 2, 0, "odd hex length: {s}");
    clean
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).expect("hex"))
        .collect()
}

pub(crate) fn key16(s: &str) -> [u8; 16] {
    h(s).try_into().expect("16-byte key")
}

pub(crate) fn mac6(s: &str) -> [u8; 6] {
    h(&s.replace(':', "")).try_into().expect("6-byte mac")
}

/// Look up a field by name.
pub(crate) fn get<'a>(d: &'a Decoded, name: &str) -> &'a Value {
    d.fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("field {name} missing in {:?}", d.fields))
}

pub(crate) fn has(d: &Decoded, name: &str) -> bool {
    d.fields.iter().any(|(n, _)| n == name)
}

/// Assert a float field within 1e-9 (or an exact Int/Bool/Text match).
pub(crate) fn assert_f(d: &Decoded, name: &str, want: f64) {
    match get(d, name) {
        Value::Float(v) => assert!((v - want).abs() < 1e-9, "{name}: {v} != {want}"),
        other => panic!("{name}: expected Float({want}), got {other:?}"),
    }
}

pub(crate) fn assert_i(d: &Decoded, name: &str, want: i64) {
    assert_eq!(get(d, name), &Value::Int(want), "{name}");
}

pub(crate) fn assert_b(d: &Decoded, name: &str, want: bool) {
    assert_eq!(get(d, name), &Value::Bool(want), "{name}");
}

pub(crate) fn assert_t(d: &Decoded, name: &str, want: &str) {
    assert_eq!(get(d, name), &Value::Text(want.to_owned()), "{name}");
}

/// Decodes service data `hexdata` under the 16-bit `uuid`, with no key and a zero MAC.
pub(crate) fn service(uuid: u16, hexdata: &str) -> Result<Decoded, DecodeError> {
    let data = h(hexdata);
    decode(
        &Advert::ServiceData { uuid, data: &data },
        &Keys {
            bindkey: None,
            mac: [0; 6],
        },
    )
}

/// Decodes manufacturer data `hexdata` of `company`, with no key and a zero MAC.
pub(crate) fn manufacturer(company: u16, hexdata: &str) -> Result<Decoded, DecodeError> {
    let data = h(hexdata);
    decode(
        &Advert::ManufacturerData {
            company,
            data: &data,
        },
        &Keys {
            bindkey: None,
            mac: [0; 6],
        },
    )
}
