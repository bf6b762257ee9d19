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
//! Objects: every object xiaomi-ble decodes, with its values (see `mibeacon_objects`);
//! buttons, remotes, dimmers and locks in `mibeacon_buttons`.
//!
//! Invariants:
//! * The MAC for the nonce comes from the frame when included, else `Keys.mac`.
//! * Legacy v2/v3 encryption carries no MIC: it is decrypted (AES-CCM's keystream, nonce
//!   `header || ext counter || MAC (LE) without its last byte`) but cannot be verified, so
//!   a wrong key gives unknown objects or wrong values, never `BadKey`. Its 12-byte keys
//!   are used as 16: the first 6 bytes, `8d3d3c97`, the last 6 (as xiaomi-ble does).
//!   Frames without objects or with only unknown objects are `Unsupported`.
//! * Unknown object ids are skipped (MiBeacon objects are length-prefixed);
//!   a known id with an unexpected length is skipped as well, and so is an empty
//!   object other than the button presses that may be empty.
//! * temperature/humidity are always `Float`; counts and percentages `Int`; binary
//!   sensors `Bool`; events `Text`.
//! * `packet_id` is the 8-bit frame counter.

use ccm::consts::U12;

use super::crypto::{self, MIC_LEN};
use super::mibeacon_objects::object;
use super::{mac_from_le, uint_le, DecodeError, Decoded, Fields, Keys, Reader};

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
    let product = uint_le(&header[2..4]) as u16;
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
            // v2/v3: `ciphertext || ext counter (3) || 1 byte`, no MIC; nonce
            // `header (5) || ext counter || MAC (LE) without its last byte`.
            let key = keys.bindkey.ok_or(DecodeError::NeedsKey)?;
            if body.len() < 7 {
                return Err(short());
            }
            let (ciphertext, tail) = body.split_at(body.len() - 4);
            let mut nonce = [0u8; 13];
            nonce[..5].copy_from_slice(header);
            nonce[5..8].copy_from_slice(&tail[..3]);
            for (dst, src) in nonce[8..].iter_mut().zip(mac.iter().rev()) {
                *dst = *src;
            }
            crypto::ccm_unauthenticated(key, &nonce, ciphertext)
        } else {
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
        }
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
        // Empty objects mean nothing, except presses of some buttons.
        let may_be_empty = matches!(id, 0x4A0C..=0x4A0E | 0x4E0C..=0x4E0E | 0x560C..=0x560E);
        if v.is_empty() && !may_be_empty {
            continue;
        }
        if !object(id, v, product, &mut f) {
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

#[cfg(test)]
#[path = "mibeacon_tests.rs"]
mod tests;
