//! Apple iBeacon (manufacturer data, company id 0x004C, type 0x02 length 0x15).
//!
//! Layout (Apple "Proximity Beacon Specification"): 0x02, 0x15, proximity UUID
//! (16 bytes), major (u16 BE), minor (u16 BE), measured power (i8, dBm at 1 m).
//!
//! Invariants: other Apple manufacturer data (AirDrop, Continuity, ...) is
//! `NotMine`; fields are `uuid` (Text, lower-case 8-4-4-4-12), `major`,
//! `minor`, `tx_power` (Int); no `packet_id` (iBeacons carry no counter).

use super::{be_u16, hex, DecodeError, Decoded, Fields, Keys};

pub(crate) const COMPANY_ID: u16 = 0x004C;

const LEN: usize = 23;

pub(crate) fn decode(d: &[u8], _keys: &Keys) -> Result<Decoded, DecodeError> {
    if d.get(..2) != Some(&[0x02, 0x15][..]) {
        return Err(DecodeError::NotMine);
    }
    if d.len() < LEN {
        return Err(DecodeError::Malformed(format!(
            "iBeacon frame has {} bytes, need {LEN}",
            d.len()
        )));
    }
    let u = hex(&d[2..18]);
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &u[0..8],
        &u[8..12],
        &u[12..16],
        &u[16..20],
        &u[20..32]
    );
    let bad = || DecodeError::Malformed("iBeacon frame".into());
    let mut f = Fields::new();
    f.text("uuid", uuid);
    f.int("major", i64::from(be_u16(d, 18).ok_or_else(bad)?));
    f.int("minor", i64::from(be_u16(d, 20).ok_or_else(bad)?));
    f.int("tx_power", i64::from(d[22] as i8));
    Ok(Decoded {
        decoder: "ibeacon",
        fields: f.0,
        packet_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::{DecodeError, Decoded};

    fn run(hexdata: &str) -> Result<Decoded, DecodeError> {
        manufacturer(0x004C, hexdata)
    }

    /// custom-components/ble_monitor `custom_components/ble_monitor/test/
    /// test_ibeacon_parser.py` test_ibeacon_sensor: AD `1A FF 4C00 0215 ...`;
    /// uuid e2c56db5-dffb-48d2-b060-d0f5a71096e0, major 100, minor 0,
    /// measured power -59.
    #[test]
    fn ibeacon_vector() {
        let d = run("0215E2C56DB5DFFB48D2B060D0F5A71096E000640000C5").unwrap();
        assert_eq!(d.decoder, "ibeacon");
        assert_t(&d, "uuid", "e2c56db5-dffb-48d2-b060-d0f5a71096e0");
        assert_i(&d, "major", 100);
        assert_i(&d, "minor", 0);
        assert_i(&d, "tx_power", -59);
        assert_eq!(d.packet_id, None);
    }

    /// Same file, test_ibeacon_iphone_ble_packet_var_1 / _var_2: other Apple
    /// manufacturer data must not be reported as iBeacon.
    #[test]
    fn other_apple_frames_not_mine() {
        assert_eq!(
            run("0F06A033BD08C500100244 0C".replace(' ', "").as_str()),
            Err(DecodeError::NotMine)
        );
        assert_eq!(run("1005441CBD08C5"), Err(DecodeError::NotMine));
        assert!(matches!(run("0215E2C5"), Err(DecodeError::Malformed(_))));
    }
}
