//! ATC_MiThermometer custom firmware formats on service data UUID 0x181A
//! (Environmental Sensing), distinguished purely by length:
//!
//! | bytes | format                | decoder   |
//! |-------|-----------------------|-----------|
//! | 13    | atc1441 (big-endian)  | `atc1441` |
//! | 15    | pvvx custom (LE)      | `pvvx`    |
//! | 8     | atc1441 encrypted     | `atc1441` |
//! | 11    | pvvx custom encrypted | `pvvx`    |
//!
//! (Other write-ups quote 15/17 bytes because they count the 2 UUID bytes; our
//! `data` excludes the UUID.)
//!
//! Layouts: atc1441/ATC_MiThermometer README "Advertising format of the custom
//! firmware" (MAC BE, temp i16 BE ×0.1 °C, hum u8 %, batt u8 %, batt mV u16 BE,
//! counter u8); pvvx/ATC_MiThermometer README "Custom format (all data little
//! endian)" (MAC LE, temp i16 ×0.01, hum u16 ×0.01, batt mV u16, batt u8 %,
//! counter u8, flags u8). Encrypted variants follow the reference decoder
//! custom-components/ble_monitor `ble_parser/atc.py`: AES-CCM, 4-byte MIC,
//! AAD = 0x11, nonce = MAC (LE) || AD length || 0x16 || 0x1A 0x18 || counter.
//!
//! Invariants:
//! * Other lengths return `NotMine` so the sibling decoder can try.
//! * Encrypted frames report temperature, humidity, battery only: the voltage
//!   that ble_monitor derives from the battery percentage is an estimate, not
//!   a measurement, and is not reported. The pvvx trigger/flags byte is not
//!   reported either.
//! * `packet_id` is the frame counter byte.

use ccm::consts::U11;

use super::crypto::{self, MIC_LEN};
use super::{be_i16, be_u16, sint_le, uint_le, DecodeError, Decoded, Fields, Keys};

pub(crate) const UUID: u16 = 0x181A;

/// AD type "Service Data - 16-bit UUID".
const AD_SERVICE_DATA: u8 = 0x16;

pub(crate) fn decode_atc1441(d: &[u8], keys: &Keys) -> Result<Decoded, DecodeError> {
    let mut f = Fields::new();
    let counter = match d.len() {
        13 => {
            let bad = || DecodeError::Malformed("atc1441 frame".into());
            let temp = be_i16(d, 6).ok_or_else(bad)?;
            f.float("temperature", f64::from(temp) / 10.0);
            f.float("humidity", f64::from(d[8]));
            f.int("battery", i64::from(d[9]));
            f.float(
                "voltage",
                f64::from(be_u16(d, 10).ok_or_else(bad)?) / 1000.0,
            );
            d[12]
        }
        8 => {
            let p = decrypt(d, keys)?;
            // Decrypted layout (ble_monitor atc.py): temp = b0/2 - 40,
            // hum = b1/2, battery = b2 & 0x7f (bit 7 = trigger).
            f.float("temperature", f64::from(p[0]) / 2.0 - 40.0);
            f.float("humidity", f64::from(p[1]) / 2.0);
            f.int("battery", i64::from(p[2] & 0x7f));
            d[0]
        }
        _ => return Err(DecodeError::NotMine),
    };
    Ok(Decoded {
        decoder: "atc1441",
        fields: f.0,
        packet_id: Some(u32::from(counter)),
    })
}

pub(crate) fn decode_pvvx(d: &[u8], keys: &Keys) -> Result<Decoded, DecodeError> {
    let mut f = Fields::new();
    let counter = match d.len() {
        15 => {
            f.float("temperature", sint_le(&d[6..8]) as f64 / 100.0);
            f.float("humidity", uint_le(&d[8..10]) as f64 / 100.0);
            f.float("voltage", uint_le(&d[10..12]) as f64 / 1000.0);
            f.int("battery", i64::from(d[12]));
            d[13]
        }
        11 => {
            let p = decrypt(d, keys)?;
            // Decrypted layout (ble_monitor atc.py): temp i16 LE ×0.01,
            // hum u16 LE ×0.01, battery u8, trigger u8.
            f.float("temperature", sint_le(&p[0..2]) as f64 / 100.0);
            f.float("humidity", uint_le(&p[2..4]) as f64 / 100.0);
            f.int("battery", i64::from(p[4]));
            d[0]
        }
        _ => return Err(DecodeError::NotMine),
    };
    Ok(Decoded {
        decoder: "pvvx",
        fields: f.0,
        packet_id: Some(u32::from(counter)),
    })
}

/// Decrypt `counter(1) || ciphertext || MIC(4)`; the returned plaintext has
/// exactly `d.len() - 5` bytes (3 for atc1441, 6 for pvvx).
fn decrypt(d: &[u8], keys: &Keys) -> Result<Vec<u8>, DecodeError> {
    let key = keys.bindkey.ok_or(DecodeError::NeedsKey)?;
    if d.len() < 1 + MIC_LEN {
        return Err(DecodeError::Malformed("encrypted frame too short".into()));
    }
    let (head, mic) = d.split_at(d.len() - MIC_LEN);
    let (counter, ciphertext) = head.split_at(1);
    let mut nonce = [0u8; 11];
    for (dst, src) in nonce[..6].iter_mut().zip(keys.mac.iter().rev()) {
        *dst = *src;
    }
    // AD length byte = AD type (1) + UUID (2) + service data.
    nonce[6] = u8::try_from(d.len() + 3).unwrap_or(u8::MAX);
    nonce[7] = AD_SERVICE_DATA;
    nonce[8..10].copy_from_slice(&UUID.to_le_bytes());
    nonce[10] = counter[0];
    crypto::open::<U11>(key, &nonce, &[0x11], ciphertext, mic)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::{decode, Advert, DecodeError, Decoded, Keys};
    use ccm::consts::U11;

    fn run(hexdata: &str, mac: &str, key: Option<&[u8; 16]>) -> Result<Decoded, DecodeError> {
        let data = h(hexdata);
        let keys = Keys {
            bindkey: key,
            mac: mac6(mac),
        };
        decode(
            &Advert::ServiceData {
                uuid: 0x181A,
                data: &data,
            },
            &keys,
        )
    }

    /// custom-components/ble_monitor `custom_components/ble_monitor/test/
    /// test_atc_parser.py`: test_atc_atc1441 and test_atc_atc1441_ext. The HCI
    /// dumps there contain AD `10 16 1a18 <13 bytes>`; we pass the 13 bytes.
    #[test]
    fn atc1441_vectors() {
        let d = run("a4c1380283f400a22f5f0bf819", "A4:C1:38:02:83:F4", None).unwrap();
        assert_eq!(d.decoder, "atc1441");
        assert_f(&d, "temperature", 16.2);
        assert_f(&d, "humidity", 47.0);
        assert_f(&d, "voltage", 3.064);
        assert_i(&d, "battery", 95);
        assert_eq!(d.packet_id, Some(25));
        let d = run("a4c138bc7c4e0102284f0b6720", "A4:C1:38:BC:7C:4E", None).unwrap();
        assert_f(&d, "temperature", 25.8);
        assert_f(&d, "humidity", 40.0);
        assert_f(&d, "voltage", 2.919);
        assert_i(&d, "battery", 79);
        assert_eq!(d.packet_id, Some(32));
    }

    /// Same file: test_atc_custom, test_atc_custom_v2_9, test_atc_custom_ext.
    #[test]
    fn pvvx_vectors() {
        let d = run("f4830238c1a4a9066911b60b58f70d", "A4:C1:38:02:83:F4", None).unwrap();
        assert_eq!(d.decoder, "pvvx");
        assert_f(&d, "temperature", 17.05);
        assert_f(&d, "humidity", 44.57);
        assert_f(&d, "voltage", 2.998);
        assert_i(&d, "battery", 88);
        assert_eq!(d.packet_id, Some(247));
        let d = run("b2188d38c1a42b089011f70a43200f", "A4:C1:38:8D:18:B2", None).unwrap();
        assert_f(&d, "temperature", 20.91);
        assert_f(&d, "humidity", 44.96);
        assert_f(&d, "voltage", 2.807);
        assert_i(&d, "battery", 67);
        assert_eq!(d.packet_id, Some(32));
        let d = run("8b376338c1a4ce0913107f0b521204", "A4:C1:38:63:37:8B", None).unwrap();
        assert_f(&d, "temperature", 25.1);
        assert_f(&d, "humidity", 41.15);
        assert_f(&d, "voltage", 2.943);
        assert_i(&d, "battery", 82);
        assert_eq!(d.packet_id, Some(18));
    }

    /// Same file: test_atc_custom_encrypted (key b9ea895f..., MAC A4C1388D18B2).
    #[test]
    fn pvvx_encrypted_vector() {
        let key = key16("b9ea895fac7eea6d30532432a516f3a3");
        let frame = "11d603fbfa7b6dfb1e26fd";
        let d = run(frame, "A4:C1:38:8D:18:B2", Some(&key)).unwrap();
        assert_eq!(d.decoder, "pvvx");
        assert_f(&d, "temperature", 23.45);
        assert_f(&d, "humidity", 41.73);
        assert_i(&d, "battery", 61);
        assert_eq!(d.packet_id, Some(17));
        assert_eq!(
            run(frame, "A4:C1:38:8D:18:B2", None),
            Err(DecodeError::NeedsKey)
        );
        let wrong = key16("00000000000000000000000000000000");
        assert_eq!(
            run(frame, "A4:C1:38:8D:18:B2", Some(&wrong)),
            Err(DecodeError::BadKey)
        );
    }

    /// No public atc1441-encrypted vector was found. This one is BUILT from the
    /// layout in ble_monitor `ble_parser/atc.py` (nonce/AAD above; plaintext
    /// bytes temp=(b0/2)-40, hum=b1/2, batt=b2&0x7f): plaintext 7c 5a 3c ->
    /// 22.0 °C, 45.0 %, 60 %. It checks our framing, not interoperability.
    #[test]
    fn atc1441_encrypted_built_from_layout() {
        let key = key16("b9ea895fac7eea6d30532432a516f3a3");
        let mac = mac6("A4:C1:38:8D:18:B2");
        let mut nonce = mac;
        nonce.reverse();
        let nonce = [&nonce[..], &[0x0b, 0x16, 0x1a, 0x18, 0x07]].concat();
        let sealed = super::crypto::seal::<U11>(&key, &nonce, &[0x11], &[0x7c, 0x5a, 0x3c]);
        let frame = [&[0x07][..], &sealed].concat();
        assert_eq!(frame.len(), 8);
        let keys = Keys {
            bindkey: Some(&key),
            mac,
        };
        let d = decode(
            &Advert::ServiceData {
                uuid: 0x181A,
                data: &frame,
            },
            &keys,
        )
        .unwrap();
        assert_eq!(d.decoder, "atc1441");
        assert_f(&d, "temperature", 22.0);
        assert_f(&d, "humidity", 45.0);
        assert_i(&d, "battery", 60);
        assert_eq!(d.packet_id, Some(7));
    }

    #[test]
    fn other_lengths_not_mine() {
        assert_eq!(
            run("0102", "A4:C1:38:8D:18:B2", None),
            Err(DecodeError::NotMine)
        );
    }
}
