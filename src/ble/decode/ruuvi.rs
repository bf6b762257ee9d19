//! Ruuvi manufacturer data (company id 0x0499): data format 5 (RAWv2) and
//! data format 3 (RAWv1). Other Ruuvi formats are `Unsupported`.
//!
//! Layouts (docs.ruuvi.com "Data format 5 (RAWv2)" / "Data format 3 (RAWv1)",
//! ruuvi/docs `communication/bluetooth-advertisements/*.md`): all fields are
//! big-endian. RAWv2 is 24 bytes, RAWv1 is 14 bytes; trailing bytes are ignored.
//!
//! Invariants:
//! * RAWv2 "not available" sentinels (temperature/acceleration 0x8000,
//!   humidity/pressure/sequence 0xFFFF, battery 2047, tx power 31, movement 255,
//!   MAC FF:FF:FF:FF:FF:FF) are omitted. RAWv1 defines no sentinels.
//! * Units converted to BTHome: pressure Pa -> hPa, acceleration mG -> m/s²
//!   (× 9.80665 / 1000), battery mV -> V (`voltage`).
//! * Extra fields: `tx_power` (dBm), `movement_counter`, `measurement_sequence`
//!   (also `packet_id`), `mac` (Text "AA:BB:..").

use super::{be_i16, be_u16, mac_string, DecodeError, Decoded, Fields, Keys};

pub(crate) const COMPANY_ID: u16 = 0x0499;

const G: f64 = 9.80665;

pub(crate) fn decode(data: &[u8], _keys: &Keys) -> Result<Decoded, DecodeError> {
    match data.first() {
        Some(5) => decode_v5(data),
        Some(3) => decode_v3(data),
        Some(f) => Err(DecodeError::Unsupported(format!("Ruuvi data format {f}"))),
        None => Err(DecodeError::Malformed(
            "empty Ruuvi manufacturer data".into(),
        )),
    }
}

fn too_short(fmt: u8, len: usize, need: usize) -> DecodeError {
    DecodeError::Malformed(format!("Ruuvi format {fmt}: {len} bytes, need {need}"))
}

fn decode_v5(d: &[u8]) -> Result<Decoded, DecodeError> {
    if d.len() < 24 {
        return Err(too_short(5, d.len(), 24));
    }
    let bad = || too_short(5, d.len(), 24);
    let mut f = Fields::new();
    let temp = be_i16(d, 1).ok_or_else(bad)?;
    if temp != i16::MIN {
        f.float("temperature", f64::from(temp) * 5.0 / 1000.0);
    }
    let hum = be_u16(d, 3).ok_or_else(bad)?;
    if hum != u16::MAX {
        f.float("humidity", f64::from(hum) * 25.0 / 10000.0);
    }
    let pres = be_u16(d, 5).ok_or_else(bad)?;
    if pres != u16::MAX {
        f.float("pressure", (f64::from(pres) + 50_000.0) / 100.0);
    }
    for (i, axis) in ["acceleration_x", "acceleration_y", "acceleration_z"]
        .iter()
        .enumerate()
    {
        let a = be_i16(d, 7 + 2 * i).ok_or_else(bad)?;
        if a != i16::MIN {
            f.float(axis, f64::from(a) * G / 1000.0);
        }
    }
    let power = be_u16(d, 13).ok_or_else(bad)?;
    let batt = power >> 5;
    let tx = power & 0x1f;
    if batt != 0x7ff {
        f.float("voltage", (f64::from(batt) + 1600.0) / 1000.0);
    }
    if tx != 0x1f {
        f.int("tx_power", i64::from(tx) * 2 - 40);
    }
    let movement = d[15];
    if movement != u8::MAX {
        f.int("movement_counter", i64::from(movement));
    }
    let seq = be_u16(d, 16).ok_or_else(bad)?;
    let packet_id = (seq != u16::MAX).then_some(u32::from(seq));
    if let Some(s) = packet_id {
        f.int("measurement_sequence", i64::from(s));
    }
    let mac: [u8; 6] = d[18..24].try_into().map_err(|_| bad())?;
    if mac != [0xff; 6] {
        f.text("mac", mac_string(&mac));
    }
    Ok(Decoded {
        decoder: "ruuvi_v5",
        fields: f.0,
        packet_id,
    })
}

fn decode_v3(d: &[u8]) -> Result<Decoded, DecodeError> {
    if d.len() < 14 {
        return Err(too_short(3, d.len(), 14));
    }
    let bad = || too_short(3, d.len(), 14);
    let mut f = Fields::new();
    f.float("humidity", f64::from(d[1]) / 2.0);
    // Sign-magnitude: MSB of byte 2 is the sign, 7 bits integer part,
    // byte 3 is hundredths.
    let whole = i64::from(d[2] & 0x7f);
    let frac = i64::from(d[3]);
    let centi = whole * 100 + frac;
    let centi = if d[2] & 0x80 != 0 { -centi } else { centi };
    f.float("temperature", centi as f64 / 100.0);
    let pres = be_u16(d, 4).ok_or_else(bad)?;
    f.float("pressure", (f64::from(pres) + 50_000.0) / 100.0);
    for (i, axis) in ["acceleration_x", "acceleration_y", "acceleration_z"]
        .iter()
        .enumerate()
    {
        let a = be_i16(d, 6 + 2 * i).ok_or_else(bad)?;
        f.float(axis, f64::from(a) * G / 1000.0);
    }
    let mv = be_u16(d, 12).ok_or_else(bad)?;
    f.float("voltage", f64::from(mv) / 1000.0);
    Ok(Decoded {
        decoder: "ruuvi_v3",
        fields: f.0,
        packet_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::{DecodeError, Decoded};
    use super::G;

    fn run(hexdata: &str) -> Result<Decoded, DecodeError> {
        manufacturer(0x0499, hexdata)
    }

    fn mg(v: f64) -> f64 {
        v * G / 1000.0
    }

    /// docs.ruuvi.com "Data format 5 (RAWv2)", Test vectors, "Case: valid data"
    /// (ruuvi/docs communication/bluetooth-advertisements/data-format-5-rawv2.md).
    #[test]
    fn v5_valid() {
        let d = run("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F").unwrap();
        assert_eq!(d.decoder, "ruuvi_v5");
        assert_f(&d, "temperature", 24.3);
        assert_f(&d, "pressure", 1000.44); // 100044 Pa
        assert_f(&d, "humidity", 53.49);
        assert_f(&d, "acceleration_x", mg(4.0)); // 0.004 G
        assert_f(&d, "acceleration_y", mg(-4.0));
        assert_f(&d, "acceleration_z", mg(1036.0));
        assert_i(&d, "tx_power", 4);
        assert_f(&d, "voltage", 2.977);
        assert_i(&d, "movement_counter", 66);
        assert_i(&d, "measurement_sequence", 205);
        assert_eq!(d.packet_id, Some(205));
        assert_t(&d, "mac", "CB:B8:33:4C:88:4F");
    }

    /// Same page, "Case: maximum values".
    #[test]
    fn v5_maximum() {
        let d = run("057FFFFFFEFFFE7FFF7FFF7FFFFFDEFEFFFECBB8334C884F").unwrap();
        assert_f(&d, "temperature", 163.835);
        assert_f(&d, "pressure", 1155.34); // 115534 Pa
        assert_f(&d, "humidity", 163.835);
        for axis in ["acceleration_x", "acceleration_y", "acceleration_z"] {
            assert_f(&d, axis, mg(32767.0));
        }
        assert_i(&d, "tx_power", 20);
        assert_f(&d, "voltage", 3.646);
        assert_i(&d, "movement_counter", 254);
        assert_i(&d, "measurement_sequence", 65534);
    }

    /// Same page, "Case: minimum values".
    #[test]
    fn v5_minimum() {
        let d = run("058001000000008001800180010000000000CBB8334C884F").unwrap();
        assert_f(&d, "temperature", -163.835);
        assert_f(&d, "pressure", 500.0); // 50000 Pa
        assert_f(&d, "humidity", 0.0);
        for axis in ["acceleration_x", "acceleration_y", "acceleration_z"] {
            assert_f(&d, axis, mg(-32767.0));
        }
        assert_i(&d, "tx_power", -40);
        assert_f(&d, "voltage", 1.6);
        assert_i(&d, "movement_counter", 0);
        assert_i(&d, "measurement_sequence", 0);
    }

    /// Same page, "Case: Invalid values": every field is NAN -> all omitted.
    #[test]
    fn v5_invalid_sentinels_omitted() {
        let d = run("058000FFFFFFFF800080008000FFFFFFFFFFFFFFFFFFFFFF").unwrap();
        assert!(d.fields.is_empty(), "{:?}", d.fields);
        assert_eq!(d.packet_id, None);
    }

    /// ttu/ruuvitag-sensor `tests/decoders/test_df3_decoder.py`
    /// (test_df3decode_is_valid); the same raw bytes are docs.ruuvi.com RAWv1
    /// "Case: valid data". Source units: °C, hPa, %, mV, mG.
    #[test]
    fn v3_valid() {
        let d = run("03291A1ECE1EFC18F94202CA0B53").unwrap();
        assert_eq!(d.decoder, "ruuvi_v3");
        assert_f(&d, "temperature", 26.3);
        assert_f(&d, "pressure", 1027.66);
        assert_f(&d, "humidity", 20.5);
        assert_f(&d, "voltage", 2.899); // battery == 2899 mV
        assert_f(&d, "acceleration_x", mg(-1000.0));
        assert_eq!(d.packet_id, None);
    }

    /// Same file, test_df3decode_is_valid_max_values / _min_values.
    #[test]
    fn v3_max_min() {
        let d = run("03C87F63FFFF03E803E803E8FFFF00000000BB").unwrap();
        assert_f(&d, "temperature", 127.99);
        assert_f(&d, "pressure", 1155.35);
        assert_f(&d, "humidity", 100.0);
        assert_f(&d, "voltage", 65.535);
        for axis in ["acceleration_x", "acceleration_y", "acceleration_z"] {
            assert_f(&d, axis, mg(1000.0));
        }
        let d = run("0300FF630000FC18FC18FC18000000000000BB").unwrap();
        assert_f(&d, "temperature", -127.99);
        assert_f(&d, "pressure", 500.0);
        assert_f(&d, "humidity", 0.0);
        assert_f(&d, "voltage", 0.0);
        for axis in ["acceleration_x", "acceleration_y", "acceleration_z"] {
            assert_f(&d, axis, mg(-1000.0));
        }
    }

    #[test]
    fn short_and_unknown() {
        assert!(matches!(run("0512FC"), Err(DecodeError::Malformed(_))));
        assert!(matches!(run("03291A"), Err(DecodeError::Malformed(_))));
        assert!(matches!(run("06"), Err(DecodeError::Unsupported(_))));
    }
}
