//! Xiaomi MiBeacon (service data UUID 0xFE95), plain v2-v5 and encrypted v4/v5.
//!
//! Frame layout (as parsed by custom-components/ble_monitor
//! `ble_parser/xiaomi.py` and Bluetooth-Devices/xiaomi-ble `parser.py`):
//! frame control u16 LE (bit 3 encrypted, bit 4 MAC included, bit 5 capability
//! included, bit 6 object included, bits 12-15 version), product id u16 LE,
//! frame counter u8, [MAC 6 LE], [capability u8 [+ IO u8 if capability & 0x20]],
//! then objects `id u16 LE || len u8 || value`. Encrypted v4/v5 payloads are
//! `ciphertext || ext counter (3) || MIC (4)`, AES-CCM with AAD 0x11 and nonce
//! `MAC (LE) || product id || frame counter || ext counter`.
//!
//! Supported object ids (units BTHome-style): 0x1004 temperature (i16 ×0.1),
//! 0x1006 humidity (u16 ×0.1), 0x1007 illuminance (u24 lx), 0x1008 moisture
//! (u8 %), 0x1009 conductivity (u16 µS/cm), 0x100A battery (u8 %), 0x100D
//! temperature + humidity, 0x1010 formaldehyde (u16 ×0.01 mg/m³), and the v5
//! miot-spec ids 0x4801 temperature (f32), 0x4802 humidity (u8), 0x4803
//! battery, 0x5403 battery, 0x4C01 temperature (f32), 0x4C02 humidity (u8), 0x4C03 battery,
//! 0x4C08 humidity (f32).
//!
//! Invariants:
//! * The MAC for the nonce comes from the frame when included, else `Keys.mac`.
//! * Legacy v2/v3 encryption (different cipher setup, 12-byte keys) is
//!   `Unsupported`; so are frames without objects or with only unknown objects.
//! * Unknown object ids are skipped (MiBeacon objects are length-prefixed);
//!   a known id with an unexpected length is skipped as well.
//! * temperature/humidity are always `Float`; counts and percentages `Int`.
//! * `packet_id` is the 8-bit frame counter.

use ccm::consts::U12;

use super::crypto::{self, MIC_LEN};
use super::{mac_from_le, sint_le, uint_le, DecodeError, Decoded, Fields, Keys, Reader};

pub(crate) const UUID: u16 = 0xFE95;

const EXT_COUNTER_LEN: usize = 3;

pub(crate) fn decode(data: &[u8], keys: &Keys) -> Result<Decoded, DecodeError> {
    let short = || DecodeError::Malformed("MiBeacon frame truncated".into());
    let mut r = Reader::new(data);
    let header = r.take(5).ok_or_else(short)?;
    let frctrl = uint_le(&header[0..2]) as u16;
    let version = frctrl >> 12;
    let encrypted = frctrl & (1 << 3) != 0;
    let counter = header[4];
    let mut mac = keys.mac;
    if frctrl & (1 << 4) != 0 {
        mac = mac_from_le(r.take(6).ok_or_else(short)?).ok_or_else(short)?;
    }
    if frctrl & (1 << 5) != 0 {
        let capability = r.u8().ok_or_else(short)?;
        if capability & 0x20 != 0 {
            r.u8().ok_or_else(short)?;
        }
    }
    if frctrl & (1 << 6) == 0 {
        return Err(DecodeError::Unsupported(
            "MiBeacon frame carries no object".into(),
        ));
    }
    let body = r.rest();
    let objects = if encrypted {
        if version < 4 {
            return Err(DecodeError::Unsupported(format!(
                "legacy MiBeacon v{version} encryption"
            )));
        }
        if body.len() < EXT_COUNTER_LEN + MIC_LEN {
            return Err(short());
        }
        let key = keys.bindkey.ok_or(DecodeError::NeedsKey)?;
        let (ciphertext, tail) = body.split_at(body.len() - EXT_COUNTER_LEN - MIC_LEN);
        let (ext, mic) = tail.split_at(EXT_COUNTER_LEN);
        let mut nonce = [0u8; 12];
        for (dst, src) in nonce[..6].iter_mut().zip(mac.iter().rev()) {
            *dst = *src;
        }
        nonce[6..9].copy_from_slice(&header[2..5]);
        nonce[9..].copy_from_slice(ext);
        crypto::open::<U12>(key, &nonce, &[0x11], ciphertext, mic)?
    } else {
        body.to_vec()
    };

    let mut f = Fields::new();
    let mut unknown = Vec::new();
    let mut r = Reader::new(&objects);
    while r.remaining() >= 3 {
        let head = r.take(3).ok_or_else(short)?;
        let id = uint_le(&head[0..2]) as u16;
        let v = r.take(usize::from(head[2])).ok_or_else(short)?;
        if !object(id, v, &mut f) {
            unknown.push(format!("0x{id:04x}"));
        }
    }
    if f.0.is_empty() {
        return Err(DecodeError::Unsupported(format!(
            "no supported MiBeacon object (ids: {})",
            unknown.join(", ")
        )));
    }
    Ok(Decoded {
        decoder: "mibeacon",
        fields: f.0,
        packet_id: Some(u32::from(counter)),
    })
}

/// Decode one object; returns false if the id/length combination is unknown.
fn object(id: u16, v: &[u8], f: &mut Fields) -> bool {
    let float32 =
        |b: &[u8]| -> Option<f64> { Some(f64::from(f32::from_le_bytes(b.try_into().ok()?))) };
    match (id, v.len()) {
        (0x1004, 2) => f.float("temperature", sint_le(v) as f64 / 10.0),
        (0x1006, 2) => f.float("humidity", uint_le(v) as f64 / 10.0),
        (0x1007, 3) => f.int("illuminance", uint_le(v) as i64),
        (0x1008, 1) => f.int("moisture", i64::from(v[0])),
        (0x1009, 2) => f.int("conductivity", uint_le(v) as i64),
        // Some devices append a second byte; only the first is the battery %.
        (0x100A, 1..=2) => f.int("battery", i64::from(v[0])),
        (0x100D, 4) => {
            f.float("temperature", sint_le(&v[0..2]) as f64 / 10.0);
            f.float("humidity", uint_le(&v[2..4]) as f64 / 10.0);
        }
        (0x1010, 2) => f.float("formaldehyde", uint_le(v) as f64 / 100.0),
        (0x4803 | 0x4C03 | 0x5403, 1) => f.int("battery", i64::from(v[0])),
        (0x4801 | 0x4C01, 4) => match float32(v) {
            Some(t) => f.float("temperature", t),
            None => return false,
        },
        (0x4802 | 0x4C02, 1) => f.float("humidity", f64::from(v[0])),
        (0x4C08, 4) => match float32(v) {
            Some(h) => f.float("humidity", h),
            None => return false,
        },
        _ => return false,
    }
    true
}

#[cfg(test)]
#[path = "mibeacon_tests.rs"]
mod tests;
