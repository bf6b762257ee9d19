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
    // test_Xiaomi_LYWSD03MMC_encrypted (packet 80): ble_monitor says humidity 46.7;
    // xiaomi-ble (and its test of the same frame) keeps the whole percent of this model.
    let d = run(
        "58585b0550f4830238c1a495ef58763c26000097e2abb5",
        "A4:C1:38:02:83:F4",
        Some("e9ea895fac7cca6d30532432a516f3a8"),
    )
    .unwrap();
    assert_eq!(d.packet_id, Some(80));
    assert_f(&d, "humidity", 46.0);
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
    // test_Xiaomi_YLKG07YL_press: MiBeacon V3 encrypted (legacy scheme) needs a key too.
    assert_eq!(
        run(
            "5830b603d28b98c54124f8c3491476757e00000099",
            "F8:24:41:C5:98:8B",
            None
        ),
        Err(DecodeError::NeedsKey)
    );
    assert!(matches!(
        run("5020aa01", "00:00:00:00:00:00", None),
        Err(DecodeError::Malformed(_))
    ));
}

/// The objects issue 17 names, from custom-components/ble_monitor
/// `custom_components/ble_monitor/test/test_xiaomi_parser.py` (MIT; the FE95 service data
/// cut from its HCI events): the PTX display's one-byte temperature (0x605D) and humidity
/// (0x6012), encrypted; the body thermometers (0x2000, 0x000A) and the Linptech/Xiaomi
/// motion sensors' illuminance (0x4A08 with motion, 0x4805).
#[test]
fn named_objects_from_ble_monitor() {
    let key = Some("00112233445566778899aabbccddeeff");
    let mac = "11:22:33:44:55:66";
    // test_Xiaomi_PTX_F1_Display_temperature
    let d = run("5859c56433665544332211997b546b0c01009089c35a", mac, key).unwrap();
    assert_eq!(d.packet_id, Some(51));
    assert_f(&d, "temperature", 25.0);
    // test_Xiaomi_PTX_F1_Display_humidity
    let d = run("5859c56433665544332211d67b54550c01001d8f98bb", mac, key).unwrap();
    assert_f(&d, "humidity", 39.0);
    // test_Xiaomi_MMC_T201_1 (0x2000: two temperatures and the battery)
    let d = run(
        "7022db006fc16fddf9810009002005c60d630d51",
        "00:81:F9:DD:6F:C1",
        None,
    )
    .unwrap();
    assert_f(&d, "temperature", 36.87199806168224);
    assert_i(&d, "battery", 81);
    // test_Xiaomi_MMC_W505 (0x000A, hundredths)
    let d = run(
        "702291030fdbab531824d0090a0002750d07",
        "D0:24:18:53:AB:DB",
        None,
    )
    .unwrap();
    assert_f(&d, "temperature", 34.45);
    // test_linptech_HS1BB_illuminance_motion (0x4A08)
    let d = run(
        "4859eb2ac2fce02ca0b43af2380000a2d9f05f",
        "A4:C1:38:05:8E:E9",
        Some("7475a4a77584401780ffc3ee62dd353c"),
    )
    .unwrap();
    assert_b(&d, "motion", true);
    assert_f(&d, "illuminance", 228.0);
    // test_linptech_ES3_illuminance (0x4805)
    let d = run(
        "4859fb50d986d27e8f5313e900000030ad6da8",
        "A4:C1:38:C7:C3:76",
        Some("b26295a7a08fbac306c8706ade7f0fe4"),
    )
    .unwrap();
    assert_f(&d, "illuminance", 173.0);
}

/// Plain frames built around single objects (frame control 0x5040: v5, objects, no MAC;
/// product 0x0000, counter 7), for the binary objects without a published vector; values
/// as xiaomi-ble's parser defines them.
#[test]
fn binary_objects() {
    let obj = |o: &str| run(&format!("40500000 07{o}"), "A4:C1:38:00:00:01", None);
    let b = |o: &str, name: &str, want: bool| assert_b(&obj(o).unwrap(), name, want);
    b("151001 01", "smoke", true);
    b("151001 00", "smoke", false);
    b("141001 02", "moisture_detected", true);
    b("064801 00", "moisture_detected", false);
    b("014a01 01", "battery_low", true);
    b("3c4801 01", "occupancy", true);
    b("4e4801 00", "occupancy", false);
    b("1b1001 00", "motion", false); // 0x101B: no motion
    b("181001 01", "light", true);
    b("0c4801 00", "opening", true);
    b("121001 01", "power_on", true);
    // 0x1017: 31 s without motion is "clear", 30 s still motion.
    b("171004 1f000000", "motion", false);
    b("171004 1e000000", "motion", true);
    // 0x0003 is an event only; an empty object is skipped (the frame is then empty).
    assert_t(
        &obj("030001 00").unwrap(),
        "motion_event",
        "motion_detected",
    );
    assert!(matches!(obj("1b1001 00 030000"), Ok(d) if d.fields.len() == 1));
}

/// xiaomi-ble rounds 0x4801 to 0.1 and 0x4C01 to 0.01 with Python's round(): ties go to
/// the even digit on the exact binary value (21.25 is exact: 21.2), others to the nearest.
#[test]
fn float_objects_round_like_python() {
    let obj = |o: &str| run(&format!("40500000 07{o}"), "A4:C1:38:00:00:01", None).unwrap();
    let f32le = |x: f32| {
        x.to_le_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    for (x, want) in [
        (21.25f32, 21.2),
        (21.75, 21.8),
        (-21.25, -21.2),
        (21.3, 21.3),
    ] {
        assert_f(&obj(&format!("014804{}", f32le(x))), "temperature", want);
    }
    // 0x4C01, two digits: 21.125 is exact (ties to even: 21.12); 21.13 as f32 is below.
    assert_f(
        &obj(&format!("014c04{}", f32le(21.125))),
        "temperature",
        21.12,
    );
    assert_f(
        &obj(&format!("014c04{}", f32le(21.13))),
        "temperature",
        21.13,
    );
}
