//! Google Eddystone (service data UUID 0xFEAA): UID, URL and unencrypted TLM frames.
//!
//! Layouts (google/eddystone `eddystone-uid/README.md`,
//! `eddystone-tlm/tlm-plain.md`), all multi-byte values big-endian:
//! * UID (0x00): tx power at 0 m (i8), namespace (10), instance (6), [RFU (2)].
//!   -> `namespace`, `instance` (lower-case hex Text), `tx_power` (Int dBm).
//! * TLM (0x20, version 0x00): battery mV (u16, 0 = not supported),
//!   temperature 8.8 signed fixed point (0x8000 = not supported),
//!   advertising PDU count (u32), time since power-on (u32, 0.1 s).
//!   -> `voltage` (V), `temperature` (°C), `adv_count`, `uptime` (s, Float).
//! * URL (0x10; google/eddystone `eddystone-url/README.md`): tx power at 0 m (i8), the
//!   scheme prefix (0 `http://www.`, 1 `https://www.`, 2 `http://`, 3 `https://`), then
//!   up to 17 bytes of URL, printable ASCII or expansion codes 0x00-0x0D (`.com/`,
//!   `.org/`, ..., `.gov`). -> `url` (Text), `tx_power` (Int dBm). A reserved scheme or
//!   byte (0x0E-0x20, 0x7F-0xFF) makes the frame `Malformed`.
//!
//! Invariants: encrypted TLM (version 0x01) and EID (0x30) frames
//! are `Unsupported`; unknown frame types are `NotMine`. For TLM, `packet_id`
//! is the low 32 bits of `adv_count` (it changes with every advertisement PDU,
//! so identical values identify a re-received frame); UID has no `packet_id`.

use super::{be_i16, be_u16, hex, DecodeError, Decoded, Fields, Keys};

pub(crate) const UUID: u16 = 0xFEAA;

pub(crate) fn decode(d: &[u8], _keys: &Keys) -> Result<Decoded, DecodeError> {
    match d.first() {
        Some(0x00) => uid(d),
        Some(0x20) => tlm(d),
        Some(0x10) => url(d),
        Some(0x30) => Err(DecodeError::Unsupported("Eddystone-EID frame".into())),
        _ => Err(DecodeError::NotMine),
    }
}

fn uid(d: &[u8]) -> Result<Decoded, DecodeError> {
    if d.len() < 18 {
        return Err(DecodeError::Malformed(format!(
            "Eddystone-UID frame has {} bytes, need 18",
            d.len()
        )));
    }
    let mut f = Fields::new();
    f.text("namespace", hex(&d[2..12]));
    f.text("instance", hex(&d[12..18]));
    f.int("tx_power", i64::from(d[1] as i8));
    Ok(Decoded {
        decoder: "eddystone_uid",
        fields: f.0,
        packet_id: None,
    })
}

const SCHEMES: [&str; 4] = ["http://www.", "https://www.", "http://", "https://"];
const EXPANSIONS: [&str; 14] = [
    ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/", ".com", ".org", ".edu", ".net",
    ".info", ".biz", ".gov",
];

fn url(d: &[u8]) -> Result<Decoded, DecodeError> {
    let bad = |why: String| DecodeError::Malformed(format!("Eddystone-URL frame: {why}"));
    let (Some(&tx), Some(&scheme)) = (d.get(1), d.get(2)) else {
        return Err(bad(format!("{} bytes, need at least 3", d.len())));
    };
    let mut url = SCHEMES
        .get(usize::from(scheme))
        .ok_or_else(|| bad(format!("reserved URL scheme 0x{scheme:02x}")))?
        .to_string();
    for &b in d.get(3..).unwrap_or_default() {
        match EXPANSIONS.get(usize::from(b)) {
            Some(e) => url.push_str(e),
            None if (0x21..0x7F).contains(&b) => url.push(char::from(b)),
            None => return Err(bad(format!("reserved byte 0x{b:02x} in the URL"))),
        }
    }
    let mut f = Fields::new();
    f.text("url", url);
    f.int("tx_power", i64::from(tx as i8));
    Ok(Decoded {
        decoder: "eddystone_url",
        fields: f.0,
        packet_id: None,
    })
}

fn tlm(d: &[u8]) -> Result<Decoded, DecodeError> {
    match d.get(1) {
        Some(0x00) => {}
        Some(0x01) => {
            return Err(DecodeError::Unsupported(
                "encrypted Eddystone-TLM (needs EID identity key)".into(),
            ))
        }
        Some(v) => {
            return Err(DecodeError::Unsupported(format!(
                "Eddystone-TLM version {v}"
            )))
        }
        None => {
            return Err(DecodeError::Malformed(
                "Eddystone-TLM frame truncated".into(),
            ))
        }
    }
    let bad = || {
        DecodeError::Malformed(format!(
            "Eddystone-TLM frame has {} bytes, need 14",
            d.len()
        ))
    };
    if d.len() < 14 {
        return Err(bad());
    }
    let mut f = Fields::new();
    let mv = be_u16(d, 2).ok_or_else(bad)?;
    if mv != 0 {
        f.float("voltage", f64::from(mv) / 1000.0);
    }
    let temp = be_i16(d, 4).ok_or_else(bad)?;
    if temp != i16::MIN {
        f.float("temperature", f64::from(temp) / 256.0);
    }
    let adv = u32::from_be_bytes(d[6..10].try_into().map_err(|_| bad())?);
    let secs = u32::from_be_bytes(d[10..14].try_into().map_err(|_| bad())?);
    f.int("adv_count", i64::from(adv));
    f.float("uptime", f64::from(secs) / 10.0);
    Ok(Decoded {
        decoder: "eddystone_tlm",
        fields: f.0,
        packet_id: Some(adv),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::{DecodeError, Decoded};

    fn run(hexdata: &str) -> Result<Decoded, DecodeError> {
        service(0xFEAA, hexdata)
    }

    /// custom-components/ble_monitor `custom_components/ble_monitor/test/
    /// test_eddystone_tlm_parser.py` test_eddystone_tlm: AD `11 16 AAFE ...`;
    /// temperature 30.0, voltage 3.183, packet (adv count) 131181. The uptime
    /// is not asserted by the source; 0x41DB9AB6 = 1104911030 tenths of a
    /// second is derived from the tlm-plain.md layout.
    #[test]
    fn tlm_vector() {
        let d = run("20000C6F1E000002006D41DB9AB6").unwrap();
        assert_eq!(d.decoder, "eddystone_tlm");
        assert_f(&d, "temperature", 30.0);
        assert_f(&d, "voltage", 3.183);
        assert_i(&d, "adv_count", 131181);
        assert_eq!(d.packet_id, Some(131181));
        assert_f(&d, "uptime", 110491103.0);
    }

    /// Same file, test_eddystone_tlm_unsupported_readings: vbatt 0 and
    /// temperature 0x8000 are "not supported" -> omitted.
    #[test]
    fn tlm_unsupported_readings_omitted() {
        let d = run("2000000080000002006D41DB9AB6").unwrap();
        assert!(!has(&d, "temperature"));
        assert!(!has(&d, "voltage"));
        assert_i(&d, "adv_count", 131181);
    }

    /// No public UID vector with decoded values was found. Input bytes are the
    /// UID frame from 4thjuly/Espruino-Experiments `puck-eddystone.js`
    /// (tx power 0xF8, namespace e157bd5df90aad1dc2fb, instance 000000000001,
    /// RFU 0000); the expected values are DERIVED from the eddystone-uid
    /// README layout, not published alongside the bytes.
    #[test]
    fn uid_built_from_layout() {
        let d = run("00F8e157bd5df90aad1dc2fb0000000000010000").unwrap();
        assert_eq!(d.decoder, "eddystone_uid");
        assert_t(&d, "namespace", "e157bd5df90aad1dc2fb");
        assert_t(&d, "instance", "000000000001");
        assert_i(&d, "tx_power", -8);
        // RFU bytes are optional.
        assert!(run("00F8e157bd5df90aad1dc2fb000000000001").is_ok());
    }

    /// Frames built from the layout of google/eddystone `eddystone-url/README.md`; the
    /// expected URLs are derived from its scheme and expansion tables.
    #[test]
    fn url_frames() {
        let d = run("10F803676f6f676c6507").unwrap();
        assert_eq!(d.decoder, "eddystone_url");
        assert_t(&d, "url", "https://google.com");
        assert_i(&d, "tx_power", -8);
        assert_eq!(d.packet_id, None);
        // Scheme 0 and a mid-URL expansion with a slash: http://www.example.org/ab
        let d = run("10EB006578616d706c65016162").unwrap();
        assert_t(&d, "url", "http://www.example.org/ab");
        assert_i(&d, "tx_power", -21);
        // Every expansion code in order.
        let d = run("100002000102030405060708090a0b0c0d").unwrap();
        assert_t(
            &d,
            "url",
            "http://.com/.org/.edu/.net/.info/.biz/.gov/.com.org.edu.net.info.biz.gov",
        );
        // A scheme alone is a URL; a reserved scheme or byte is malformed.
        assert_t(&run("100003").unwrap(), "url", "https://");
        assert!(matches!(run("100004"), Err(DecodeError::Malformed(_))));
        assert!(matches!(run("1000036120"), Err(DecodeError::Malformed(_))));
        assert!(matches!(run("10000361ff"), Err(DecodeError::Malformed(_))));
        assert!(matches!(run("1000"), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn other_frames() {
        assert!(matches!(run("2001"), Err(DecodeError::Unsupported(_))));
        assert!(matches!(run("2000"), Err(DecodeError::Malformed(_))));
        assert!(matches!(run("00F8e157"), Err(DecodeError::Malformed(_))));
        assert_eq!(run("ff"), Err(DecodeError::NotMine));
    }
}
