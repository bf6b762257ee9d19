//! Per-field transforms end to end: the gateway binary reads a pseudo-terminal and
//! publishes to a real Mosquitto; scale, offset, rename and drop show in the payload, the
//! deadband holds readings back, and the count of those shows in the health message and in
//! `sensorgate queue stats --json`.

use crate::support::broker::Broker;
use crate::support::gateway::{base_config, Gateway};
use crate::support::pty::Pty;
use crate::support::subscriber::Subscriber;
use crate::support::wait_until;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

#[test]
fn transforms_shape_the_payload_and_the_deadband_holds_readings_back() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&tmp.path().join("broker"));
    let sub = Subscriber::start(broker.port, "#", "fields-sub");
    let mut pty = Pty::open();
    let config = base_config(tmp.path(), "gw1", &broker.url(), "")
        .replace("health_interval = \"0s\"", "health_interval = \"1s\"")
        + &format!(
            "[queue]\ncommit_linger = \"20ms\"\n\
             [[serial]]\nname = \"wx\"\ndevice = \"{}\"\nformat = \"kv\"\n\
             topic = \"site/{{gateway}}/{{input}}\"\n\
             fields.t = {{ rename = \"temp\", scale = 0.1, offset = -40, unit = \"°C\", deadband = 0.5 }}\n\
             fields.junk = {{ drop = true }}\n",
            pty.path.display()
        );
    let mut gw = Gateway::new(tmp.path(), &config);
    gw.start();
    gw.wait_log("Serial port open", LONG);
    // 21.5 °C; then 21.7 and 21.9, within 0.5 of it (a change of the dropped field does not
    // count); 22.1, past it; then the same temperature with another humidity (no deadband:
    // any change counts).
    for line in [
        "t=615 h=40 junk=1",
        "t=617 h=40 junk=2",
        "t=619 h=40 junk=3",
        "t=621 h=40",
        "t=621 h=41",
    ] {
        pty.line(line);
    }
    let readings = || -> Vec<serde_json::Value> {
        sub.messages()
            .iter()
            .filter(|(t, _)| t == "site/gw1/wx")
            .map(|(_, p)| serde_json::from_str(p).unwrap())
            .collect()
    };
    wait_until("the last reading arrives", LONG, || {
        readings().last().is_some_and(|v| v["h"] == 41)
    });
    // Delivery follows the order of reading: nothing held back can come later.
    let got = readings();
    let shown: Vec<(f64, i64)> = got
        .iter()
        .map(|v| (v["temp"].as_f64().unwrap(), v["h"].as_i64().unwrap()))
        .collect();
    assert_eq!(shown, [(21.5, 40), (22.1, 40), (22.1, 41)], "{got:?}");
    for v in &got {
        assert!(v.get("t").is_none() && v.get("junk").is_none(), "{v}");
    }
    let health = || -> Option<serde_json::Value> {
        let msgs = sub.messages();
        let (_, p) = msgs
            .iter()
            .rev()
            .find(|(t, _)| t == "sensorgate/gw1/health")?;
        serde_json::from_str(p).ok()
    };
    wait_until("the health message counts 2 held back", LONG, || {
        health().is_some_and(|h| h["held_back"] == 2)
    });
    // The queue file counts them with its next write, or at the latest at the clean stop.
    let (status, _) = gw.terminate(LONG);
    assert!(status.expect("exits").success());
    let stats = gw.stats().expect("queue stats");
    assert_eq!(stats["held_back"], 2, "{stats}");
    let (code, text, _) = gw.cli(&["queue", "stats"]);
    assert_eq!(code, 0);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["held_back", "2"]),
        "{text}"
    );
    // `check` shows the rules.
    let (code, text, _) = gw.cli(&["check"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("field t: scale 0.1, offset -40, published as temp, unit °C, deadband 0.5"),
        "{text}"
    );
    assert!(text.contains("field junk: dropped"), "{text}");
}

/// BLE readings carry their device: each device has its own deadband state. `packet_id` and
/// `rssi` change with every advertisement, so they are dropped for the deadband to hold
/// anything back.
#[cfg(feature = "ble")]
#[test]
fn ble_deadbands_are_kept_per_device() {
    use crate::support::bluez::Bluez;
    let h = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&tmp.path().join("broker"));
    let sub = Subscriber::start(broker.port, "#", "fields-ble-sub");
    let bluez = Bluez::start(&tmp.path().join("bluez"));
    let config = base_config(tmp.path(), "gw1", &broker.url(), "")
        .replace("health_interval = \"0s\"", "health_interval = \"1s\"")
        + "[queue]\ncommit_linger = \"20ms\"\n\n\
           [[ble]]\nname = \"yard\"\ntopic = \"ble/{gateway}/{input}/{device}\"\n\
           retry_min = \"100ms\"\nretry_max = \"400ms\"\nmin_interval = \"0s\"\n\
           fields.temperature = { rename = \"t\", deadband = 0.5 }\n\
           fields.packet_id = { drop = true }\nfields.rssi = { drop = true }\n\
           [[ble.device]]\naddress = \"A4:C1:38:8E:11:22\"\nalias = \"a\"\n\
           [[ble.device]]\naddress = \"A4:C1:38:8E:11:33\"\nalias = \"b\"\n";
    let mut gw = Gateway::new(tmp.path(), &config);
    gw.env.push(bluez.env());
    bluez.add_adapter("hci0");
    gw.start();
    gw.wait_log("BLE scan started.", LONG);
    let (a, b) = ("A4:C1:38:8E:11:22", "A4:C1:38:8E:11:33");
    let temps = |device: &str| -> Vec<f64> {
        sub.messages()
            .iter()
            .filter(|(t, _)| *t == format!("ble/gw1/yard/{device}"))
            .map(|(_, p)| {
                let v: serde_json::Value = serde_json::from_str(p).unwrap();
                assert!(
                    v.get("rssi").is_none() && v.get("packet_id").is_none(),
                    "{v}"
                );
                v["t"].as_f64().unwrap()
            })
            .collect()
    };
    let held_back = || -> u64 {
        let msgs = sub.messages();
        msgs.iter()
            .rev()
            .find(|(t, _)| t == "sensorgate/gw1/health")
            .and_then(|(_, p)| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|h| h["held_back"].as_u64())
            .unwrap_or(0)
    };
    // BTHome v2 with a packet id and a temperature in hundredths (little-endian).
    bluez.advertise_service("hci0", a, 0xfcd2, &h("40000102c409"), -60); // 25.00
    wait_until("a's first reading", LONG, || temps("a") == [25.0]);
    bluez.advertise_service("hci0", a, 0xfcd2, &h("40000202d809"), -61); // 25.20
    wait_until("one held back", LONG, || held_back() == 1);
    // The same value on another device is its first reading: published.
    bluez.advertise_service("hci0", b, 0xfcd2, &h("40000102d809"), -70); // 25.20
    wait_until("b's first reading", LONG, || temps("b") == [25.2]);
    bluez.advertise_service("hci0", a, 0xfcd2, &h("40000302ec09"), -62); // 25.40
    wait_until("two held back", LONG, || held_back() == 2);
    bluez.advertise_service("hci0", a, 0xfcd2, &h("40000402000a"), -63); // 25.60
    wait_until("a's second reading", LONG, || temps("a").len() == 2);
    assert_eq!(temps("a"), [25.0, 25.6]);
    assert_eq!(temps("b"), [25.2]);
    let (status, _) = gw.terminate(LONG);
    assert!(status.expect("exits").success());
    assert_eq!(gw.stats().expect("queue stats")["held_back"], 2);
}
