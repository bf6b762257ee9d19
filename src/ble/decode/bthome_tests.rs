//! BTHome v2 test vectors. Every vector cites where it was published.
//!
//! Invariant: expected values are copied from the cited source, never computed
//! here; where our behaviour deliberately differs from the source, the test says so.

use super::super::test_util::*;
use super::super::{decode as decode_any, Advert, DecodeError, Decoded, Keys, Value};

const MAC_18B2: &str = "A4:C1:38:8D:18:B2";
const MAC_80A5: &str = "54:48:E6:8F:80:A5";
const KEY_231D: &str = "231d39c1d7cc1ab1aee224cd096db932";

fn plain(hexdata: &str) -> Result<Decoded, DecodeError> {
    let data = h(hexdata);
    let keys = Keys {
        bindkey: None,
        mac: mac6(MAC_18B2),
    };
    decode_any(
        &Advert::ServiceData {
            uuid: 0xFCD2,
            data: &data,
        },
        &keys,
    )
}

fn enc(hexdata: &str, mac: &str, key: &str) -> Result<Decoded, DecodeError> {
    let data = h(hexdata);
    let k = key16(key);
    let keys = Keys {
        bindkey: Some(&k),
        mac: mac6(mac),
    };
    decode_any(
        &Advert::ServiceData {
            uuid: 0xFCD2,
            data: &data,
        },
        &keys,
    )
}

/// Source: bthome.io format page, "Sensor data" table, column "Example" ->
/// "Result" (home-assistant/bthome.io `src/format.html`). Each example is
/// prefixed with the unencrypted v2 device-info byte 0x40.
#[test]
fn spec_sensor_table_examples() {
    let floats: &[(&str, &str, f64)] = &[
        ("518756", "acceleration", 22.151),
        ("434E34", "current", 13.39),
        ("5D02EA", "current", -5.63),
        ("08CA06", "dewpoint", 17.38),
        ("414E00", "distance_m", 7.8),
        ("424E3400", "duration", 13.390),
        ("4d12138a14", "energy", 344593.170),
        ("0A138A14", "energy", 1346.067),
        ("4B138A14", "gas", 1346.067),
        ("4C41018A01", "gas", 25821.505),
        ("528756", "gyroscope", 22.151),
        ("03BF13", "humidity", 50.55),
        ("05138A14", "illuminance", 13460.67),
        ("065E1F", "mass_kg", 80.3),
        ("073E1D", "mass_lb", 74.86),
        ("14020C", "moisture", 30.74),
        ("0B021B00", "power", 69.14),
        ("5C02FBFFFF", "power", -12.78),
        ("04138A01", "pressure", 1008.83),
        ("3F020C", "rotation", 307.4),
        ("444E34", "speed", 133.90),
        ("58EA", "temperature", -7.7),
        ("451101", "temperature", 27.3),
        ("02CA09", "temperature", 25.06),
        ("0C020C", "voltage", 3.074),
        ("4A020C", "voltage", 307.4),
        ("4E87562A01", "volume", 19551.879),
        ("478756", "volume", 2215.1),
        ("5587562A01", "volume_storage", 19551.879),
        ("49DC87", "volume_flow_rate", 34.780),
        ("4632", "uv_index", 5.0),
        ("4F87562A01", "water", 19551.879),
        ("5E9F8C", "direction", 359.99),
    ];
    for (obj, name, want) in floats {
        let d = plain(&format!("40{obj}")).unwrap_or_else(|e| panic!("{obj}: {e}"));
        assert_eq!(d.fields.len(), 1, "{obj}");
        assert_f(&d, name, *want);
    }
    let ints: &[(&str, &str, i64)] = &[
        ("0161", "battery", 97),
        ("12E204", "co2", 1250),
        ("56E803", "conductivity", 1000),
        ("0960", "count", 96),
        ("3D0960", "count", 24585),
        ("3E2A2C0960", "count", 1611213866),
        ("59EA", "count", -22),
        ("5AEAEA", "count", -5398),
        ("5BEA0234EA", "count", -365690134),
        ("400C00", "distance_mm", 12),
        ("2E23", "humidity", 35),
        ("2F23", "moisture", 35),
        ("0D120C", "pm25", 3090),
        ("0E021C", "pm10", 7170),
        ("57EA", "temperature", -22),
        ("505d396164", "timestamp", 1684093277),
        ("133301", "tvoc", 307),
        ("48DC87", "volume_ml", 34780),
        ("F00100", "device_type_id", 1),
        ("0009", "packet_id", 9),
    ];
    for (obj, name, want) in ints {
        let d = plain(&format!("40{obj}")).unwrap_or_else(|e| panic!("{obj}: {e}"));
        assert_i(&d, name, *want);
    }
    // Misc / device information ("Text and Raw sensors", "Device information").
    assert_t(
        &plain("40530C48656C6C6F20576F726C6421").unwrap(),
        "text",
        "Hello World!",
    );
    assert_t(
        &plain("40540C48656C6C6F20576F726C6421").unwrap(),
        "raw",
        "48656c6c6f20576f726c6421",
    );
    assert_t(
        &plain("40F100010204").unwrap(),
        "firmware_version",
        "4.2.1.0",
    );
    assert_t(&plain("40F2000106").unwrap(), "firmware_version", "6.1.0");
    assert_eq!(plain("400009").unwrap().packet_id, Some(9));
}

/// Source: bthome.io format page, "Binary Sensor data" table (example -> 0/1).
#[test]
fn spec_binary_table_examples() {
    let cases: &[(&str, &str, bool)] = &[
        ("1501", "battery_low", true),
        ("1601", "battery_charging", true),
        ("1700", "carbon_monoxide", false),
        ("1801", "cold", true),
        ("1900", "connectivity", false),
        ("1A00", "door", false),
        ("1B01", "garage_door", true),
        ("1C01", "gas_detected", true),
        ("0F01", "generic_boolean", true),
        ("1D00", "heat", false),
        ("1E01", "light", true),
        ("1F01", "lock", true),
        ("2001", "moisture_detected", true),
        ("2100", "motion", false),
        ("2201", "moving", true),
        ("2301", "occupancy", true),
        ("1100", "opening", false),
        ("2400", "plug", false),
        ("1001", "power_on", true),
        ("2500", "presence", false),
        ("2601", "problem", true),
        ("2701", "running", true),
        ("2800", "safety", false),
        ("2901", "smoke", true),
        ("2A00", "sound", false),
        ("2B00", "tamper", false),
        ("2C01", "vibration", true),
        ("2D01", "window", true),
    ];
    for (obj, name, want) in cases {
        assert_b(&plain(&format!("40{obj}")).unwrap(), name, *want);
    }
}

/// Source: bthome.io format page, "Events" table and "Multiple events of the
/// same type" (`3A003A01`: no event for button 1, press for button 2).
#[test]
fn spec_event_examples() {
    for (obj, want) in [
        ("3A01", "press"),
        ("3A02", "double_press"),
        ("3A03", "triple_press"),
        ("3A04", "long_press"),
        ("3A05", "long_double_press"),
        ("3A06", "long_triple_press"),
        ("3A80", "hold_press"),
    ] {
        assert_t(&plain(&format!("40{obj}")).unwrap(), "button", want);
    }
    assert!(plain("403A00").unwrap().fields.is_empty());
    assert!(plain("403C0000").unwrap().fields.is_empty());
    let d = plain("403C0103").unwrap();
    assert_t(&d, "dimmer", "rotate_left");
    assert_i(&d, "dimmer_steps", 3);
    let d = plain("403C020A").unwrap();
    assert_t(&d, "dimmer", "rotate_right");
    assert_i(&d, "dimmer_steps", 10);
    let d = plain("403A003A01").unwrap();
    assert_eq!(
        d.fields,
        vec![("button_2".to_owned(), Value::Text("press".into()))]
    );
}

/// Source: Bluetooth-Devices/bthome-ble `tests/test_parser_v2.py` (test names
/// given per vector).
#[test]
fn reference_parser_vectors() {
    // test_bthome_packet_id_temperature_humidity_battery
    let d = plain("400009015d025d0903b718").unwrap();
    assert_eq!(d.decoder, "bthome_v2");
    assert_eq!(d.packet_id, Some(9));
    assert_i(&d, "battery", 93);
    assert_f(&d, "temperature", 23.97);
    assert_f(&d, "humidity", 63.27);
    // test_bthome_triple_temperature_double_humidity_battery
    let d = plain("4002ca0902cf0902cf0803b71803b717015d").unwrap();
    assert_f(&d, "temperature_1", 25.06);
    assert_f(&d, "temperature_2", 25.11);
    assert_f(&d, "temperature_3", 22.55);
    assert_f(&d, "humidity_1", 63.27);
    assert_f(&d, "humidity_2", 60.71);
    assert_i(&d, "battery", 93);
    // test_bthome_double_voltage_different_object_id
    let d = plain("4000010b0000004a0d0901330ce90c").unwrap();
    assert_eq!(d.packet_id, Some(1));
    assert_f(&d, "power", 0.0);
    assert_f(&d, "voltage_1", 231.7);
    assert_i(&d, "battery", 51);
    assert_f(&d, "voltage_2", 3.305);
    // test_bthome_event_triple_button_device
    let d = plain("403a003a013a03").unwrap();
    assert_t(&d, "button_2", "press");
    assert_t(&d, "button_3", "triple_press");
    assert!(!has(&d, "button_1"));
    // test_bthome_shelly_button
    let d = plain("40005201643a01").unwrap();
    assert_eq!(d.packet_id, Some(82));
    assert_i(&d, "battery", 100);
    assert_t(&d, "button", "press");
    // test_shelly_blu_ht_display_zb
    let d = plain("40002e01641e012e34451601").unwrap();
    assert_eq!(d.packet_id, Some(46));
    assert_i(&d, "battery", 100);
    assert_b(&d, "light", true);
    assert_i(&d, "humidity", 52);
    assert_f(&d, "temperature", 27.8);
    // test_bthome_test
    let d = plain("4000a70c780b1000").unwrap();
    assert_eq!(d.packet_id, Some(167));
    assert_f(&d, "voltage", 2.936);
    assert_b(&d, "power_on", false);
    // test_bthome_with_mac (MAC-in-payload flag)
    assert_f(
        &plain("42b2188d38c1a404138a01").unwrap(),
        "pressure",
        1008.83,
    );
    // test_sleepy_device (trigger-based flag does not change decoding)
    assert_f(&plain("4404138a01").unwrap(), "pressure", 1008.83);
    // test_bthome_direction_precipitation (factor 0.1 for 0x5F per const.py)
    let d = plain("405e3f755f11d5").unwrap();
    assert_f(&d, "direction", 300.15);
    assert_f(&d, "precipitation", 5454.5);
    // test_bthome_channel, test_bthome_revolutions_per_minute, test_bthome_light_level
    assert_i(&plain("406001").unwrap(), "channel", 1);
    assert_i(&plain("4061ac0d").unwrap(), "rotational_speed", 3500);
    assert_i(&plain("406402").unwrap(), "light_level", 2);
    // test_bthome_speed_signed, test_bthome_acceleration_signed
    assert_f(&plain("40624099dfff").unwrap(), "speed", -2.123456);
    assert_f(&plain("40630057d0ff").unwrap(), "acceleration", -3.123456);
    // test_bthome_text_invalid: invalid UTF-8 text is dropped, not fatal.
    assert!(plain("44530187").unwrap().fields.is_empty());
    // test_bthome_invalid_button_event: unknown event id yields no event.
    assert!(plain("403afe").unwrap().fields.is_empty());
}

/// Error paths from `tests/test_parser_v2.py`.
#[test]
fn reference_error_vectors() {
    // test_bthome_wrong_object_id / test_bthome_battery_wrong_object_id_humidity.
    // As in bthome-ble: the objects before the unknown id are kept (battery 93), the
    // rest is ignored; an unknown id first of all leaves nothing, which is Malformed.
    assert!(matches!(plain("40feca09"), Err(DecodeError::Malformed(_))));
    let d = plain("40015dfe5d0903b718").unwrap();
    assert_i(&d, "battery", 93);
    assert_eq!(d.fields.len(), 1, "{:?}", d.fields);
    // test_bthome_invalid_object_payload_data_length
    assert!(matches!(
        plain("4002ca0903bf"),
        Err(DecodeError::Malformed(_))
    ));
    // test_has_incorrect_version (v7), test_incorrect_bthome_version (v0)
    assert!(matches!(
        plain("e102000c0404138a01"),
        Err(DecodeError::Unsupported(_))
    ));
    assert!(matches!(plain("00"), Err(DecodeError::Unsupported(_))));
    // test_encryption_key_needed: encrypted frame, no key configured
    assert_eq!(
        plain("41a47266c95f730011223378237214"),
        Err(DecodeError::NeedsKey)
    );
    // test_encryption_downgrade_fails
    assert!(matches!(
        enc("4004138a01", MAC_18B2, "814aac74c4f17b6c1581e1ab87816b99"),
        Err(DecodeError::Unsupported(_))
    ));
    // test_bindkey_verified_can_be_unset: wrong key -> MIC mismatch
    assert_eq!(
        enc(
            "41a47266c95f730011223378237214",
            MAC_18B2,
            "814aac74c4f17b6c1581e1ab87816b99"
        ),
        Err(DecodeError::BadKey)
    );
    // test_too_short_encryption_advertisement
    assert!(matches!(
        enc("41ba0db07aeef600", MAC_80A5, KEY_231D),
        Err(DecodeError::Malformed(_))
    ));
}

/// Encrypted vectors.
#[test]
fn encrypted_vectors() {
    // bthome.io encryption page, "Encrypting your messages": service data
    // d2fc41e445f3c9962b332211006c7c4519, key 231d..., MAC 5448E68F80A5,
    // counter 0x00112233 (1122867) -> 02ca09 03bf13 (25.06 °C, 50.55 %).
    let d = enc("41e445f3c9962b332211006c7c4519", MAC_80A5, KEY_231D).unwrap();
    assert_f(&d, "temperature", 25.06);
    assert_f(&d, "humidity", 50.55);
    assert_eq!(d.packet_id, Some(1122867));
    // test_parser_v2.py test_bindkey_correct
    let d = enc("41a47266c95f730011223378237214", MAC_80A5, KEY_231D).unwrap();
    assert_f(&d, "temperature", 25.06);
    assert_f(&d, "humidity", 50.55);
    // test_parser_v2.py test_bthome_with_mac_encrypted (MAC in payload)
    let d = enc(
        "43a5808fe64854f196c06ffb4900112233f08ecbde",
        MAC_80A5,
        KEY_231D,
    )
    .unwrap();
    assert_f(&d, "temperature", 25.06);
    assert_f(&d, "humidity", 50.55);
    // test_parser_v2.py test_bthome_motion
    assert_b(
        &enc("4187b90011223372b0231f", MAC_80A5, KEY_231D).unwrap(),
        "motion",
        true,
    );
    // test_increasing_encryption_counter (counter 1122868)
    let d = enc("413e932cc7175f34221100553876af", MAC_80A5, KEY_231D).unwrap();
    assert_eq!(d.packet_id, Some(1122868));
    // test_reset_encryption_counter (counter 4294967295, then 0)
    let d = enc("41ba0db07aeef6ffffffff21fd4600", MAC_80A5, KEY_231D).unwrap();
    assert_eq!(d.packet_id, Some(4294967295));
    let d = enc("41de40b50e676600000000d7cb95de", MAC_80A5, KEY_231D).unwrap();
    assert_eq!(d.packet_id, Some(0));
    // test_encrypted_shelly_blu_button_event: only "bindkey verified" is
    // asserted by the source, so we only assert a successful decrypt.
    let d = enc(
        "450aeb84467f85ba010000318878 8c",
        "B4:35:22:F5:3D:A4",
        "90bffd73cb6b26ef58a7a8eba9232036",
    )
    .unwrap();
    assert_eq!(d.decoder, "bthome_v2");
}

/// Objects newer than the stored format page, with the values bthome-ble 3.25.0 (MIT)
/// decodes from these payloads (each fed to `BTHomeBluetoothDeviceData.update`): 0x65
/// settings revision, the 0x3B command event with its arguments, the 0x81 hold-release
/// button event.
#[test]
fn bthome_ble_3_25_objects() {
    // 44650c -> settings_revision 12
    let d = plain("44650c").unwrap();
    assert_i(&d, "settings_revision", 12);
    // 443b0003 -> event command step_up, args ""
    let d = plain("443b0003").unwrap();
    assert_t(&d, "command", "step_up");
    assert_t(&d, "command_args", "");
    // 4400073b02030a0b -> packet_id 7, command step_up, args "0a0b"
    let d = plain("4400073b02030a0b").unwrap();
    assert_i(&d, "packet_id", 7);
    assert_t(&d, "command", "step_up");
    assert_t(&d, "command_args", "0a0b");
    // 443a81 -> event button hold_release
    assert_t(&plain("443a81").unwrap(), "button", "hold_release");
    // home-assistant/bthome.io `src/format.html` (2026-04-30): 6503 -> settings revision
    // 3; 3B0000 off, 3B0001 on, 3B010305 step up (argument 05: 5 steps).
    assert_i(&plain("406503").unwrap(), "settings_revision", 3);
    assert_t(&plain("403b0000").unwrap(), "command", "off");
    assert_t(&plain("403b0001").unwrap(), "command", "on");
    let d = plain("403b010305").unwrap();
    assert_t(&d, "command", "step_up");
    assert_t(&d, "command_args", "05");
    // The length byte's top 3 bits are reserved: 0x24 says 4 argument bytes, too few here.
    assert!(matches!(
        plain("443b2401aabb"),
        Err(DecodeError::Malformed(_))
    ));
    // An unknown opcode is no event (bthome-ble fires none), but its length is known.
    let d = plain("443b00070165").unwrap();
    assert!(!has(&d, "command"), "{:?}", d.fields);
    assert_i(&d, "battery", 101);
}
