//! `sensorgate decode ble` through the binary: the JSON object, and exit 1 with a reason.

use crate::support::gateway::BIN;
use std::process::Command;

fn decode(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["decode", "ble"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn decode_ble_prints_one_json_object() {
    let (code, out, err) = decode(&["--service-data", "fcd2=40000902ca0903bf13"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["temperature"], 25.06);
    assert_eq!(v["humidity"], 50.55);
    assert_eq!(v["packet_id"], 9);
    assert_eq!(v["decoder"], "bthome_v2");

    // Ruuvi RAWv2 by company id, in hex.
    let (code, out, _) = decode(&[
        "--manufacturer-data",
        "0x0499=0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decoder"], "ruuvi_v5");
    assert_eq!(v["temperature"], 24.3);

    // Encrypted BTHome (bthome.io's example) with its bindkey and address.
    let (code, out, err) = decode(&[
        "--service-data",
        "0000fcd2-0000-1000-8000-00805f9b34fb=41e445f3c9962b332211006c7c4519",
        "--bindkey",
        "231d39c1d7cc1ab1aee224cd096db932",
        "--mac",
        "54:48:E6:8F:80:A5",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["temperature"], 25.06);
}

#[test]
fn decode_ble_explains_what_no_decoder_accepts() {
    // Encrypted without a key.
    let (code, out, err) = decode(&["--service-data", "fcd2=41e445f3c9962b332211006c7c4519"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("bindkey required"), "{err}");
    // Nobody's format.
    let (code, _, err) = decode(&["--manufacturer-data", "0x1234=0102"]);
    assert_eq!(code, 1);
    assert!(err.contains("not handled by any decoder"), "{err}");
    // Truncated Ruuvi.
    let (code, _, err) = decode(&["--manufacturer-data", "1177=0512fc"]);
    assert_eq!(code, 1);
    assert!(err.contains("malformed"), "{err}");
    // Not hex: a usage error, also exit 1.
    let (code, _, err) = decode(&["--service-data", "fcd2=xyz"]);
    assert_eq!(code, 1);
    assert!(err.contains("not hex"), "{err}");
}
