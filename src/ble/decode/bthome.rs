//! BTHome v2 decoder (service data UUID 0xFCD2), plain and AES-CCM encrypted.
//!
//! Layout (bthome.io "format" and "encryption" pages): one device-information
//! byte (bit 0 encrypted, bit 1 MAC-in-payload as still accepted by the
//! reference implementation, bit 2 trigger-based, bits 5-7 version = 2), an
//! optional 6-byte little-endian MAC, then a sequence of `object id || value`.
//! Encrypted frames carry `ciphertext || counter(4, LE) || MIC(4)`; the nonce is
//! `MAC(6, as printed) || UUID16 LE (d2 fc) || device info || counter`.
//!
//! Invariants:
//! * An unknown object id stops parsing (its length is unknown) and keeps the objects
//!   decoded before it, as the spec says; with none decoded it is `Malformed`.
//! * A device with a configured bindkey that sends *unencrypted* data is
//!   rejected as `Unsupported` (downgrade protection, as in bthome-ble).
//! * Repeated properties are numbered in order of appearance (`temperature_1`,
//!   `temperature_2`, ...) exactly like the reference implementation; a
//!   "no event" (0x00) button/dimmer entry counts for numbering but emits nothing.
//! * Events: `button` -> Text(event name); `dimmer` -> Text("rotate_left" |
//!   "rotate_right") plus `dimmer_steps` -> Int; `command` -> Text("on" | "off" |
//!   "toggle" | "step_up" | "step_down") plus `command_args` -> Text (hex, may be empty).
//! * `packet_id`: object 0x00 if present, else the encryption counter.

use std::borrow::Cow;

use ccm::consts::U13;

use super::bthome_objects::{button_event, command_event, dimmer_event, lookup, Kind};
use super::crypto::{self, MIC_LEN};
use super::{hex, mac_from_le, sint_le, uint_le, DecodeError, Decoded, Keys, Reader, Value};

pub(crate) const UUID: u16 = 0xFCD2;

const FLAG_ENCRYPTED: u8 = 0x01;
const FLAG_MAC_INCLUDED: u8 = 0x02;
const COUNTER_LEN: usize = 4;

pub(crate) fn decode(data: &[u8], keys: &Keys) -> Result<Decoded, DecodeError> {
    let mut r = Reader::new(data);
    let info = r
        .u8()
        .ok_or_else(|| DecodeError::Malformed("empty BTHome service data".into()))?;
    let version = info >> 5;
    if version != 2 {
        return Err(DecodeError::Unsupported(format!(
            "BTHome version {version} on UUID 0xFCD2"
        )));
    }
    let mut mac = keys.mac;
    if info & FLAG_MAC_INCLUDED != 0 {
        let raw = r
            .take(6)
            .ok_or_else(|| DecodeError::Malformed("truncated MAC".into()))?;
        mac = mac_from_le(raw).ok_or_else(|| DecodeError::Malformed("truncated MAC".into()))?;
    }
    let body = r.rest();

    let (payload, counter): (Cow<[u8]>, Option<u32>) = if info & FLAG_ENCRYPTED != 0 {
        if body.len() < COUNTER_LEN + MIC_LEN {
            return Err(DecodeError::Malformed(format!(
                "encrypted BTHome payload too short ({} bytes)",
                body.len()
            )));
        }
        let key = keys.bindkey.ok_or(DecodeError::NeedsKey)?;
        let (ciphertext, tail) = body.split_at(body.len() - COUNTER_LEN - MIC_LEN);
        let (ctr, mic) = tail.split_at(COUNTER_LEN);
        let mut nonce = [0u8; 13];
        nonce[..6].copy_from_slice(&mac);
        nonce[6..8].copy_from_slice(&UUID.to_le_bytes());
        nonce[8] = info;
        nonce[9..].copy_from_slice(ctr);
        let plain = crypto::open::<U13>(key, &nonce, &[], ciphertext, mic)?;
        (Cow::Owned(plain), Some(uint_le(ctr) as u32))
    } else {
        if keys.bindkey.is_some() {
            return Err(DecodeError::Unsupported(
                "unencrypted BTHome data from a device with a bindkey (possible downgrade)".into(),
            ));
        }
        (Cow::Borrowed(body), None)
    };

    let (fields, packet_id) = parse_objects(&payload)?;
    Ok(Decoded {
        decoder: "bthome_v2",
        fields,
        packet_id: packet_id.or(counter),
    })
}

type FieldList = Vec<(String, Value)>;

/// Parse the (decrypted) object sequence into numbered fields.
fn parse_objects(payload: &[u8]) -> Result<(FieldList, Option<u32>), DecodeError> {
    // `None` values are placeholders ("no event", undecodable text) that only
    // take part in numbering.
    let mut entries: Vec<(&'static str, Option<Value>)> = Vec::new();
    let mut packet_id = None;
    let mut r = Reader::new(payload);
    while r.remaining() > 0 {
        let at = r.position();
        let id = r.u8().unwrap_or_default();
        let Some(obj) = lookup(id) else {
            // The spec: an unknown object's length is unknown, so parsing stops there and
            // what was decoded before it is kept. With nothing decoded, the frame is useless.
            if entries.is_empty() {
                return Err(DecodeError::Malformed(format!(
                    "unknown BTHome object id 0x{id:02x} at offset {at}; length unknown, nothing decoded"
                )));
            }
            break;
        };
        let truncated = || DecodeError::Malformed(format!("object 0x{id:02x} truncated"));
        match obj.kind {
            Kind::Num {
                len,
                signed,
                mul,
                div,
            } => {
                let raw = r.take(usize::from(len)).ok_or_else(truncated)?;
                let v = if signed {
                    sint_le(raw)
                } else {
                    uint_le(raw) as i64
                };
                let value = if mul == 1 && div == 1 {
                    Value::Int(v)
                } else {
                    Value::Float(v as f64 * mul as f64 / div as f64)
                };
                entries.push((obj.name, Some(value)));
            }
            Kind::Binary => {
                let v = r.u8().ok_or_else(truncated)?;
                entries.push((obj.name, Some(Value::Bool(v != 0))));
            }
            Kind::PacketId => {
                let v = r.u8().ok_or_else(truncated)?;
                packet_id.get_or_insert(u32::from(v));
                entries.push((obj.name, Some(Value::Int(i64::from(v)))));
            }
            Kind::Button => {
                let ev = r.u8().ok_or_else(truncated)?;
                let value = button_event(ev).map(|n| Value::Text(n.to_owned()));
                entries.push((obj.name, value));
            }
            Kind::Dimmer => {
                let raw = r.take(2).ok_or_else(truncated)?;
                match dimmer_event(raw[0]) {
                    Some(n) => {
                        entries.push((obj.name, Some(Value::Text(n.to_owned()))));
                        entries.push(("dimmer_steps", Some(Value::Int(i64::from(raw[1])))));
                    }
                    None => {
                        entries.push((obj.name, None));
                        entries.push(("dimmer_steps", None));
                    }
                }
            }
            Kind::Command => {
                let n = r.u8().ok_or_else(truncated)?;
                let op = r.u8().ok_or_else(truncated)?;
                let args = r.take(usize::from(n & 0x1F)).ok_or_else(truncated)?;
                match command_event(op) {
                    Some(name) => {
                        entries.push((obj.name, Some(Value::Text(name.to_owned()))));
                        entries.push(("command_args", Some(Value::Text(hex(args)))));
                    }
                    None => {
                        entries.push((obj.name, None));
                        entries.push(("command_args", None));
                    }
                }
            }
            Kind::Text | Kind::Raw => {
                let n = r.u8().ok_or_else(truncated)?;
                let bytes = r.take(usize::from(n)).ok_or_else(truncated)?;
                let value = if obj.kind == Kind::Raw {
                    Some(Value::Text(hex(bytes)))
                } else {
                    std::str::from_utf8(bytes)
                        .ok()
                        .map(|s| Value::Text(s.to_owned()))
                };
                entries.push((obj.name, value));
            }
            Kind::Firmware { len } => {
                let raw = r.take(usize::from(len)).ok_or_else(truncated)?;
                let parts: Vec<String> = raw.iter().rev().map(|b| b.to_string()).collect();
                entries.push((obj.name, Some(Value::Text(parts.join(".")))));
            }
        }
    }
    Ok((number_repeats(entries), packet_id))
}

/// Suffix `_1.._n` onto names that occur more than once, then drop placeholders.
fn number_repeats(entries: Vec<(&'static str, Option<Value>)>) -> FieldList {
    let total = |name: &str| entries.iter().filter(|(n, _)| *n == name).count();
    let mut seen: Vec<(&'static str, usize)> = Vec::new();
    let mut out = Vec::with_capacity(entries.len());
    for (name, value) in &entries {
        let idx = match seen.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => {
                *c += 1;
                *c
            }
            None => {
                seen.push((name, 1));
                1
            }
        };
        if let Some(v) = value {
            let key = if total(name) > 1 {
                format!("{name}_{idx}")
            } else {
                (*name).to_owned()
            };
            out.push((key, v.clone()));
        }
    }
    out
}

#[cfg(test)]
#[path = "bthome_tests.rs"]
mod tests;
