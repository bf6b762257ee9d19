//! MiBeacon test vectors, each citing its source.
//!
//! Invariant: the ble_monitor vectors are raw HCI events; we pass only the
//! FE95 service data (the bytes after `xx 16 95 fe`, without the trailing RSSI).

use super::super::test_util::*;
use super::super::{decode, Advert, DecodeError, Decoded, Keys};

fn run(hexdata: &str, mac: &str, key: Option<&str>) -> Result<Decoded, DecodeError> {
    let data = h(hexdata);
    let k = key.map(key16);
    let keys = Keys {
        bindkey: k.as_ref(),
        mac: mac6(mac),
    };
    decode(
        &Advert::ServiceData {
            uuid: 0xFE95,
            data: &data,
        },
        &keys,
    )
}

/// custom-components/ble_monitor `custom_components/ble_monitor/test/
/// test_xiaomi_parser.py`, unencrypted tests.
#[test]
fn plain_vectors() {
    // test_Xiaomi_LYWSDCGQ (MiBeacon V2, object 0x100D)
    let d = run(
        "5020aa01da219335342d580d1004fe004802",
        "58:2D:34:35:93:21",
        None,
    )
    .unwrap();
    assert_eq!(d.decoder, "mibeacon");
    assert_eq!(d.packet_id, Some(218));
    assert_f(&d, "temperature", 25.4);
    assert_f(&d, "humidity", 58.4);
    // test_Xiaomi_LYWSD03MMC (MiBeacon V3, object 0x100D)
    let d = run(
        "50305b05034c94b438c1a40d10041001ea01",
        "A4:C1:38:B4:94:4C",
        None,
    )
    .unwrap();
    assert_eq!(d.packet_id, Some(3));
    assert_f(&d, "temperature", 27.2);
    assert_f(&d, "humidity", 49.0);
    // test_Xiaomi_HHCCJCY01 (capability byte present, object 0x1004)
    let d = run(
        "7120980012f34f6b8d7cc40d041002c400",
        "C4:7C:8D:6B:4F:F3",
        None,
    )
    .unwrap();
    assert_eq!(d.packet_id, Some(18));
    assert_f(&d, "temperature", 19.6);
    // test_Xiaomi_GCLS002
    let d = run(
        "7120bc03cd3e596d8d7cc40d0410023c01",
        "C4:7C:8D:6D:59:3E",
        None,
    )
    .unwrap();
    assert_eq!(d.packet_id, Some(205));
    assert_f(&d, "temperature", 31.6);
}

/// home-assistant/core `tests/components/xiaomi_ble/test_sensor.py`
/// (test_xiaomi_hhccjcy01: illuminance 0, conductivity 599, moisture 64,
/// temperature 24.4; test_xiaomi_formaldeyhde: 2.44 mg/m³ and
/// test_xiaomi_battery_voltage: battery 100 — the last two are marked
/// "synthetic" by the source).
#[test]
fn plant_sensor_and_synthetic_vectors() {
    let mac = "C4:7C:8D:6A:3E:7A";
    let d = run("71209800667a3e6a8d7cc40d071003000000", mac, None).unwrap();
    assert_i(&d, "illuminance", 0);
    let d = run("71209800687a3e6a8d7cc40d0910025702", mac, None).unwrap();
    assert_i(&d, "conductivity", 599);
    let d = run("71209800477a3e6a8d7cc40d08100140", mac, None).unwrap();
    assert_i(&d, "moisture", 64);
    let d = run("71209800697a3e6a8d7cc40d041002f400", mac, None).unwrap();
    assert_f(&d, "temperature", 24.4);
    let d = run("71205d01697a3e6a8d7cc40d101002f400", mac, None).unwrap();
    assert_f(&d, "formaldehyde", 2.44);
    let d = run("71205d01697a3e6a8d7cc40d0a10026400", mac, None).unwrap();
    assert_i(&d, "battery", 100);
}

/// ble_monitor `test_xiaomi_parser.py`, MiBeacon V5 encrypted tests (bindkeys
/// from the same tests).
#[test]
fn encrypted_vectors() {
    // test_Xiaomi_CGG1 (humidity 59.6, packet 104)
    let d = run(
        "5858480b685f12342d585a0b1841e2aa000e00a4964fb5",
        "5A:58:2D:34:12:5F",
        Some("814aac74c4f17b6c1581e1ab87816b99"),
    )
    .unwrap();
    assert_eq!(d.packet_id, Some(104));
    assert_f(&d, "humidity", 59.6);
    // test_Xiaomi_CGDK2 (temperature 22.6, packet 7)
    let d = run(
        "58586f0607892012342d585f176dd54f0200002fa453fa",
        "58:2D:34:12:20:89",
        Some("a3bfe9853dd85a620debe3620caaa351"),
    )
    .unwrap();
    assert_eq!(d.packet_id, Some(7));
    assert_f(&d, "temperature", 22.6);
    // test_Xiaomi_LYWSD03MMC_encrypted (humidity 46.7, packet 80)
    let d = run(
        "58585b0550f4830238c1a495ef58763c26000097e2abb5",
        "A4:C1:38:02:83:F4",
        Some("e9ea895fac7cca6d30532432a516f3a8"),
    )
    .unwrap();
    assert_eq!(d.packet_id, Some(80));
    assert_f(&d, "humidity", 46.7);
    // test_Xiaomi_LYWSD02MMC (humidity 58, packet 44)
    let d = run(
        "5858e4162c84535638c1a42b6ef2e91200006c884d9e",
        "A4:C1:38:56:53:84",
        Some("a115210eed7a88e50ad52662e732a9fb"),
    )
    .unwrap();
    assert_eq!(d.packet_id, Some(44));
    assert_f(&d, "humidity", 58.0);
    // test_Xiaomi_XMWSDJ04MMC (no MAC in frame -> Keys.mac; humidity 45.0)
    let d = run(
        "48590312a41b776e7c96add7000000f2bf545b",
        "2C:11:65:25:70:04",
        Some("b2cf9a553d53571b5657defd582d676e"),
    )
    .unwrap();
    assert_eq!(d.packet_id, Some(164));
    assert_f(&d, "humidity", 45.0);
    // test_Xiaomi_MJWSD06MMC (humidity 39, packet 52)
    let d = run(
        "5859b5553407158038c1a4bcc732980e000066960f10",
        "A4:C1:38:80:15:07",
        Some("4d8f1373fb4d3bab557d0ebd1c78f8c4"),
    )
    .unwrap();
    assert_eq!(d.packet_id, Some(52));
    assert_f(&d, "humidity", 39.0);
    // test_linptech_HS1BB_battery (battery 100, packet 158)
    let d = run(
        "5859eb2a9ee98e0538c1a4d07ad3e338000033635d10",
        "A4:C1:38:05:8E:E9",
        Some("7475a4a77584401780ffc3ee62dd353c"),
    )
    .unwrap();
    assert_eq!(d.packet_id, Some(158));
    assert_i(&d, "battery", 100);
    // test_MJZNZ018H_battery (battery 76, packet 10)
    let d = run(
        "5859db200a7b37d6d1b5cce79fcf95020000a0e4f773",
        "CC:B5:D1:D6:37:7B",
        Some("13f072b8c8469f54ac2c333ee746d771"),
    )
    .unwrap();
    assert_eq!(d.packet_id, Some(10));
    assert_i(&d, "battery", 76);
}

#[test]
fn key_errors() {
    let frame = "5858480b685f12342d585a0b1841e2aa000e00a4964fb5";
    assert_eq!(
        run(frame, "5A:58:2D:34:12:5F", None),
        Err(DecodeError::NeedsKey)
    );
    // test_Xiaomi_RTCGQ02LM: ble_monitor feeds a wrong key and expects
    // data == False; for us that is a MIC mismatch.
    assert_eq!(
        run(
            "58598d0a170fc4e044ef547cc27a5c03a1000000790df258",
            "54:EF:44:E0:C4:0F",
            Some("FFD8CE9C08AE7533A79BDAF0BB755E96"),
        ),
        Err(DecodeError::BadKey)
    );
    // test_Xiaomi_YLKG07YL_press: MiBeacon V3 encrypted (legacy scheme).
    assert!(matches!(
        run(
            "5830b603d28b98c54124f8c3491476757e00000099",
            "F8:24:41:C5:98:8B",
            None
        ),
        Err(DecodeError::Unsupported(_))
    ));
    assert!(matches!(
        run("5020aa01", "00:00:00:00:00:00", None),
        Err(DecodeError::Malformed(_))
    ));
}
