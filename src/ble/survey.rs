//! What `sensorgate ble scan` heard, and its report: per device the address, name and RSSI,
//! the decoder and the fields it would publish, or why it is not decoded; then the
//! `[[ble.device]]` tables to paste into the config. Pure: the BLE input's `survey` feeds
//! it what BlueZ reported.
//!
//! **Invariant:** bounded: at most [`MAX_DEVICES`] devices, and per device one value per
//! field name and one line per reason; decoding is the gateway's own, without keys.

use crate::ble::advert::Payload;
use crate::ble::decode::{self, field_kind, Advert, DecodeError, FieldKind, Keys, Value};
use crate::ble::values::uuid16;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write;

/// Devices remembered at most (the rest of a crowded place is counted, not listed).
pub const MAX_DEVICES: usize = 1024;

#[derive(Debug, Default)]
struct Heard {
    name: Option<String>,
    rssi: Option<i16>,
    /// Decoder -> its fields, the latest value of each.
    decoded: BTreeMap<&'static str, Vec<(String, Value)>>,
    /// Encrypted, and a bindkey would decode it.
    needs_key: BTreeSet<String>,
    /// Why the other elements are not decoded.
    refused: BTreeSet<String>,
}

/// The devices heard so far.
#[derive(Debug, Default)]
pub struct Survey {
    devices: BTreeMap<[u8; 6], Heard>,
    /// Devices beyond [`MAX_DEVICES`].
    dropped: usize,
}

impl Survey {
    pub fn new() -> Survey {
        Survey::default()
    }

    fn device(&mut self, address: [u8; 6]) -> Option<&mut Heard> {
        if !self.devices.contains_key(&address) && self.devices.len() >= MAX_DEVICES {
            self.dropped += 1;
            return None;
        }
        Some(self.devices.entry(address).or_default())
    }

    /// The device was heard: its name and signal strength, when known.
    pub fn heard(&mut self, address: [u8; 6], name: Option<&str>, rssi: Option<i16>) {
        if let Some(d) = self.device(address) {
            if let Some(n) = name.filter(|n| !n.trim().is_empty()) {
                d.name = Some(n.chars().filter(|c| !c.is_control()).take(64).collect());
            }
            d.rssi = rssi.or(d.rssi);
        }
    }

    /// One element of its advertisement, decoded as the gateway would without a key.
    pub fn payload(&mut self, address: [u8; 6], payload: Payload) {
        let Some(d) = self.device(address) else {
            return;
        };
        let (advert, what) = match payload {
            Payload::Service { uuid, data } => match uuid16(uuid) {
                Some(u) => (
                    Advert::ServiceData { uuid: u, data },
                    format!("service data {u:04x}"),
                ),
                None => {
                    d.refused
                        .insert("unknown format (service data under a 128-bit UUID)".into());
                    return;
                }
            },
            Payload::Manufacturer { company, data } => (
                Advert::ManufacturerData { company, data },
                format!("manufacturer data 0x{company:04x}"),
            ),
        };
        let keys = Keys {
            bindkey: None,
            mac: address,
        };
        match decode::decode(&advert, &keys) {
            Ok(got) => {
                let fields = d.decoded.entry(got.decoder).or_default();
                for (name, value) in got.fields {
                    match fields.iter_mut().find(|(n, _)| *n == name) {
                        Some(slot) => slot.1 = value,
                        None => fields.push((name, value)),
                    }
                }
            }
            Err(DecodeError::NeedsKey) => {
                d.needs_key.insert(format!("encrypted {what}"));
            }
            Err(DecodeError::NotMine) => {
                d.refused.insert(format!("unknown format ({what})"));
            }
            Err(e) => {
                d.refused.insert(format!("{what}: {e}"));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The report: one block per device (decoded first, then those that need a key, then
    /// the rest, each by address), then the `[[ble.device]]` tables of the first two kinds.
    pub fn render(&self, adapter: &str, seconds: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Heard {} device(s) on {adapter} in {seconds} s.",
            self.devices.len() + self.dropped
        );
        if self.dropped > 0 {
            let _ = writeln!(out, "({} more not listed.)", self.dropped);
        }
        let rank = |h: &Heard| match (h.decoded.is_empty(), h.needs_key.is_empty()) {
            (false, _) => 0,
            (true, false) => 1,
            _ => 2,
        };
        let mut order: Vec<_> = self.devices.iter().collect();
        order.sort_by_key(|(a, h)| (rank(h), **a));
        for (address, h) in &order {
            out.push('\n');
            let _ = write!(out, "{}", printed(address));
            if let Some(n) = &h.name {
                let _ = write!(out, "  {n:?}");
            }
            match h.rssi {
                Some(r) => {
                    let _ = writeln!(out, "  {r} dBm");
                }
                None => out.push('\n'),
            }
            for (decoder, fields) in &h.decoded {
                let shown: Vec<String> = fields.iter().map(|(n, v)| show(n, v)).collect();
                let _ = writeln!(out, "  {decoder}: {}", shown.join(" "));
            }
            for what in &h.needs_key {
                let _ = writeln!(
                    out,
                    "  not decoded: {what} (give its bindkey in [[ble.device]])"
                );
            }
            if h.decoded.is_empty() && h.needs_key.is_empty() {
                if h.refused.is_empty() {
                    out.push_str("  not decoded: no service or manufacturer data heard\n");
                }
                for why in &h.refused {
                    let _ = writeln!(out, "  not decoded: {why}");
                }
            }
        }
        let listed: Vec<_> = order.iter().filter(|(_, h)| rank(h) < 2).collect();
        if listed.is_empty() {
            return out;
        }
        out.push_str("\n# Paste into a [[ble]] input of the config:\n");
        let mut aliases = HashSet::new();
        for (address, h) in listed {
            let _ = writeln!(out, "[[ble.device]]\naddress = \"{}\"", printed(address));
            if let Some(a) = h.name.as_deref().and_then(|n| alias(n, &mut aliases)) {
                let _ = writeln!(out, "alias = \"{a}\"");
            }
            if !h.needs_key.is_empty() {
                out.push_str("# bindkey = \"<32 hex digits>\"   # required: it encrypts its advertisements\n");
            }
        }
        out
    }
}

/// `A4:C1:38:8E:11:22`.
fn printed(a: &[u8; 6]) -> String {
    let parts: Vec<String> = a.iter().map(|b| format!("{b:02X}")).collect();
    parts.join(":")
}

/// `name=value`, events marked as such.
fn show(name: &str, v: &Value) -> String {
    let mut s = format!("{name}=");
    match v {
        Value::Text(t) => {
            let _ = write!(s, "{t:?}");
        }
        other => other.write_json(&mut s),
    }
    if matches!(field_kind(name, v), FieldKind::Event) {
        s.push_str("(event)");
    }
    s
}

/// An alias made of the device's name: lower case letters, digits and `_`, unique.
fn alias(name: &str, taken: &mut HashSet<String>) -> Option<String> {
    let mut a = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            a.push(c);
        } else if !a.ends_with('_') {
            a.push('_');
        }
    }
    let a = a.trim_matches('_').chars().take(100).collect::<String>();
    if a.is_empty() {
        return None;
    }
    let mut candidate = a.clone();
    let mut n = 1;
    while !taken.insert(candidate.clone()) {
        n += 1;
        candidate = format!("{a}_{n}");
    }
    Some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ble::values::{parse_hex, uuid_from_u16};

    const ATC: [u8; 6] = [0xa4, 0xc1, 0x38, 0x8e, 0x11, 0x22];
    const MI: [u8; 6] = [0xa4, 0xc1, 0x38, 0x02, 0x83, 0xf4];
    const PHONE: [u8; 6] = [0x40, 0x4e, 0x36, 0, 0, 1];

    #[test]
    fn reports_decoded_encrypted_and_unknown_devices_with_a_snippet() {
        let mut s = Survey::new();
        let bthome = parse_hex("40000902ca0903bf13").unwrap();
        let press = parse_hex("40000a3a01").unwrap();
        let fcd2 = uuid_from_u16(0xfcd2);
        s.heard(ATC, Some("ATC 8E1122"), Some(-60));
        s.payload(
            ATC,
            Payload::Service {
                uuid: fcd2,
                data: &bthome,
            },
        );
        s.payload(
            ATC,
            Payload::Service {
                uuid: fcd2,
                data: &press,
            },
        );
        // test_Xiaomi_LYWSD03MMC_encrypted, without its key.
        let mi = parse_hex("58585b0550f4830238c1a495ef58763c26000097e2abb5").unwrap();
        s.heard(MI, Some("LYWSD03MMC"), Some(-80));
        s.payload(
            MI,
            Payload::Service {
                uuid: uuid_from_u16(0xfe95),
                data: &mi,
            },
        );
        s.heard(PHONE, None, Some(-50));
        s.payload(
            PHONE,
            Payload::Manufacturer {
                company: 0x004c,
                data: &[1, 2],
            },
        );
        s.heard([0, 0, 0, 0, 0, 9], Some("TV"), None);
        assert_eq!(s.len(), 4);
        let r = s.render("hci0", 30);
        let expect = [
            "Heard 4 device(s) on hci0 in 30 s.",
            "A4:C1:38:8E:11:22  \"ATC 8E1122\"  -60 dBm",
            "  bthome_v2: packet_id=10 temperature=25.06 humidity=50.55 button=\"press\"(event)",
            "A4:C1:38:02:83:F4  \"LYWSD03MMC\"  -80 dBm",
            "  not decoded: encrypted service data fe95 (give its bindkey in [[ble.device]])",
            "00:00:00:00:00:09  \"TV\"",
            "  not decoded: no service or manufacturer data heard",
            "40:4E:36:00:00:01  -50 dBm",
            "  not decoded: unknown format (manufacturer data 0x004c)",
            "[[ble.device]]\naddress = \"A4:C1:38:8E:11:22\"\nalias = \"atc_8e1122\"\n",
            "[[ble.device]]\naddress = \"A4:C1:38:02:83:F4\"\nalias = \"lywsd03mmc\"\n# bindkey",
        ];
        let mut at = 0;
        for e in expect {
            let found = r[at..]
                .find(e)
                .unwrap_or_else(|| panic!("{e:?} not in order in:\n{r}"));
            at += found + e.len();
        }
        // The snippet is valid TOML with what `[[ble.device]]` accepts.
        let snippet = &r[r.find("# Paste").unwrap()..];
        let v: toml::Value = toml::from_str(snippet).unwrap();
        assert_eq!(v["ble"]["device"].as_array().unwrap().len(), 2);
        assert!(!snippet.contains("40:4E:36"), "{snippet}");
    }

    #[test]
    fn aliases_are_unique_and_memory_is_bounded() {
        let mut taken = HashSet::new();
        assert_eq!(
            alias("Kitchen / Temp+#", &mut taken).as_deref(),
            Some("kitchen_temp")
        );
        assert_eq!(
            alias("kitchen temp", &mut taken).as_deref(),
            Some("kitchen_temp_2")
        );
        assert_eq!(alias("::", &mut taken), None);
        let mut s = Survey::new();
        for i in 0..(MAX_DEVICES as u32 + 10) {
            let b = i.to_be_bytes();
            s.heard([0, 0, b[0], b[1], b[2], b[3]], None, Some(-90));
        }
        assert_eq!(s.len(), MAX_DEVICES);
        assert!(s.render("hci0", 1).contains("(10 more not listed.)"));
    }
}
