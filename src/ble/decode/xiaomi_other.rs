//! Xiaomi formats besides MiBeacon that xiaomi-ble decodes (Bluetooth-Devices/xiaomi-ble
//! `src/xiaomi_ble/parser.py`, `_parse_hhcc`, `_parse_scale_v1`, `_parse_scale_v2`;
//! Apache-2.0), written from its description:
//! * HHCCJCY10 plant sensor (service data 0xFD50, 9 bytes, big-endian): moisture (u8 %),
//!   temperature (u16 ×0.1 °C), illuminance (u24 lx), battery (u8 %), conductivity (u16).
//! * Mi Smart Scale (0x181D, 10 bytes): control byte (bit 0 pounds, bit 4 catty, bit 5
//!   stabilized, bit 7 removed), mass u16 LE (kg ×200, lb ×100, catty ×100).
//! * Mi Body Composition Scale (0x181B, 13 bytes): two control bytes (byte 0 bit 0 pounds;
//!   byte 1: bit 7 removed, bit 6 catty, bit 5 stabilized, bit 1 impedance stabilized),
//!   date and time (7), impedance u16 LE (Ω), mass u16 LE as above.
//!
//! Scales -> `mass_non_stabilized_kg` always; once stabilized (and not removed, and not
//! zero) `mass_kg` (and `impedance`) with `stabilized` = true; otherwise `stabilized` =
//! false (when the mass is 0 or still moving).
//!
//! Invariant: 0x181D and 0x181B are the standard Weight Scale and Body Composition service
//! UUIDs: service data of any other length is `NotMine`, not malformed; no `packet_id`.

use super::{be_u16, uint_le, DecodeError, Decoded, Fields, Keys};

pub(crate) const HHCC_UUID: u16 = 0xFD50;
pub(crate) const SCALE1_UUID: u16 = 0x181D;
pub(crate) const SCALE2_UUID: u16 = 0x181B;

pub(crate) fn decode_hhcc(d: &[u8], _keys: &Keys) -> Result<Decoded, DecodeError> {
    if d.len() != 9 {
        return Err(DecodeError::NotMine);
    }
    let mut f = Fields::new();
    let temp = be_u16(d, 1).ok_or(DecodeError::NotMine)?;
    let lux = d[3..6].iter().fold(0i64, |a, &b| (a << 8) | i64::from(b));
    let cond = be_u16(d, 7).ok_or(DecodeError::NotMine)?;
    f.float("temperature", f64::from(temp) / 10.0);
    f.int("moisture", i64::from(d[0]));
    f.int("illuminance", lux);
    f.int("battery", i64::from(d[6]));
    f.int("conductivity", i64::from(cond));
    Ok(decoded("hhccjcy10", f))
}

pub(crate) fn decode_scale_v1(d: &[u8], _keys: &Keys) -> Result<Decoded, DecodeError> {
    if d.len() != 10 {
        return Err(DecodeError::NotMine);
    }
    let c = d[0];
    let unit = Unit::of(c & 1 != 0, c & 0x10 != 0);
    let mut f = Fields::new();
    scale(
        &mut f,
        unit,
        uint_le(&d[1..3]),
        c & 0x20 != 0,
        c & 0x80 != 0,
        None,
    );
    Ok(decoded("xiaomi_scale_v1", f))
}

pub(crate) fn decode_scale_v2(d: &[u8], _keys: &Keys) -> Result<Decoded, DecodeError> {
    if d.len() != 13 {
        return Err(DecodeError::NotMine);
    }
    let (c0, c1) = (d[0], d[1]);
    let unit = Unit::of(c0 & 1 != 0, c1 & 0x40 != 0);
    let impedance = (c1 & 0x02 != 0).then(|| uint_le(&d[9..11]));
    let mut f = Fields::new();
    let stable = c1 & 0x20 != 0;
    scale(
        &mut f,
        unit,
        uint_le(&d[11..13]),
        stable,
        c1 & 0x80 != 0,
        impedance,
    );
    Ok(decoded("xiaomi_scale_v2", f))
}

#[derive(Clone, Copy)]
enum Unit {
    Kilogram,
    Pound,
    Catty,
}

impl Unit {
    fn of(pounds: bool, catty: bool) -> Unit {
        match (pounds, catty) {
            (true, _) => Unit::Pound,
            (false, true) => Unit::Catty,
            _ => Unit::Kilogram,
        }
    }

    fn kg(self, raw: u64) -> f64 {
        let raw = raw as f64;
        match self {
            Unit::Kilogram => raw / 200.0,
            Unit::Pound => raw * 0.004_535_923_7,
            Unit::Catty => raw * 0.005,
        }
    }
}

fn scale(f: &mut Fields, unit: Unit, raw: u64, stable: bool, removed: bool, ohm: Option<u64>) {
    let kg = unit.kg(raw);
    f.float("mass_non_stabilized_kg", kg);
    if stable && !removed && raw > 0 {
        f.float("mass_kg", kg);
        if let Some(ohm) = ohm {
            f.int("impedance", ohm as i64);
        }
        f.bool("stabilized", true);
    } else {
        f.bool("stabilized", false);
    }
}

fn decoded(decoder: &'static str, f: Fields) -> Decoded {
    Decoded {
        decoder,
        fields: f.0,
        packet_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;

    /// The non-MiBeacon payloads of xiaomi-ble's `tests/test_parser.py` (Apache-2.0), with
    /// the values xiaomi-ble 1.21.2 decodes from them (`mass` -> `mass_kg`,
    /// `mass_non_stabilized` -> `mass_non_stabilized_kg`).
    #[test]
    fn xiaomi_ble_vectors() {
        // test_Xiaomi_HHCCJCY10
        let d = service(0xFD50, "0e006e0134a428005b").unwrap();
        assert_eq!(d.decoder, "hhccjcy10");
        assert_f(&d, "temperature", 11.0);
        assert_i(&d, "moisture", 14);
        assert_i(&d, "illuminance", 79012);
        assert_i(&d, "battery", 40);
        assert_i(&d, "conductivity", 91);
        // test_Xiaomi_Scale1
        let d = service(0x181D, "229e43e507040b101301").unwrap();
        assert_f(&d, "mass_non_stabilized_kg", 86.55);
        assert_f(&d, "mass_kg", 86.55);
        assert_b(&d, "stabilized", true);
        // test_Xiaomi_Scale1_mass_removed
        let d = service(0x181D, "a22044b20701010a1a15").unwrap();
        assert_f(&d, "mass_non_stabilized_kg", 87.2);
        assert!(!has(&d, "mass_kg"));
        assert_b(&d, "stabilized", false);
        // test_Xiaomi_Scale1_non_stabilized, test_Xiaomi_Scale1_reset
        let d = service(0x181D, "821400e507040b101708").unwrap();
        assert_f(&d, "mass_non_stabilized_kg", 0.1);
        assert_b(&d, "stabilized", false);
        let d = service(0x181D, "800000e507040b101301").unwrap();
        assert_f(&d, "mass_non_stabilized_kg", 0.0);
        assert_b(&d, "stabilized", false);
        // test_Xiaomi_Scale2
        let d = service(0x181B, "0226b20705040f0201ac018642").unwrap();
        assert_eq!(d.decoder, "xiaomi_scale_v2");
        assert_f(&d, "mass_non_stabilized_kg", 85.15);
        assert_f(&d, "mass_kg", 85.15);
        assert_i(&d, "impedance", 428);
        assert_b(&d, "stabilized", true);
        // test_Xiaomi_Scale2_non_stabilized, test_Xiaomi_Scale2_reset
        let d = service(0x181B, "0204b207010112101a0000a852").unwrap();
        assert_f(&d, "mass_non_stabilized_kg", 105.8);
        assert!(!has(&d, "impedance"));
        assert_b(&d, "stabilized", false);
        let d = service(0x181B, "0282b20705040f020100000000").unwrap();
        assert_f(&d, "mass_non_stabilized_kg", 0.0);
        assert_b(&d, "stabilized", false);
    }

    #[test]
    fn other_lengths_are_not_ours_and_units_convert() {
        use super::super::DecodeError;
        assert_eq!(service(0xFD50, "0e006e"), Err(DecodeError::NotMine));
        assert_eq!(service(0x181D, "0102"), Err(DecodeError::NotMine));
        assert_eq!(service(0x181B, ""), Err(DecodeError::NotMine));
        // Pounds (bit 0): 10000 hundredths of a pound; catty (bit 4): 10000 hundredths.
        let lb = service(0x181D, "211027e507040b101301").unwrap();
        assert_f(&lb, "mass_kg", 45.359237);
        let catty = service(0x181D, "301027e507040b101301").unwrap();
        assert_f(&catty, "mass_kg", 50.0);
    }
}
