//! The BLE input end to end without hardware: btleplug talks to a python-dbusmock BlueZ on a
//! private system bus, and readings travel the real pipeline and queue to a real Mosquitto.
//! Every wait is a condition with a deadline.

use crate::support::bluez::Bluez;
use crate::support::broker::Broker;
use crate::support::gateway::{base_config, Gateway};
use crate::support::subscriber::Subscriber;
use crate::support::wait_until;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// Hex to bytes (test vectors).
fn h(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

struct Rig {
    _broker: Broker,
    sub: Subscriber,
    bluez: Bluez,
    gw: Gateway,
}

/// Broker, subscriber on `ble/#`, bus and mock (no adapter), and a gateway with `ble`
/// appended to its `[[ble]]` table; the gateway is not started.
fn rig(dir: &Path, ble: &str) -> Rig {
    let broker = Broker::start_in(&dir.join("broker"));
    let sub = Subscriber::start(broker.port, "ble/#", "ble-sub");
    let bluez = Bluez::start(&dir.join("bluez"));
    let config = base_config(dir, "gw1", &broker.url(), "")
        + "[queue]\ncommit_every = 10\ncommit_linger = \"20ms\"\n\n\
           [[ble]]\nname = \"yard\"\ntopic = \"ble/{gateway}/{input}/{device}\"\n\
           retry_min = \"100ms\"\nretry_max = \"400ms\"\n"
        + ble;
    let mut gw = Gateway::new(dir, &config);
    gw.env.push(bluez.env());
    Rig {
        _broker: broker,
        sub,
        bluez,
        gw,
    }
}

/// The JSON payloads received on `topic`.
fn on(sub: &Subscriber, topic: &str) -> Vec<Value> {
    sub.messages()
        .into_iter()
        .filter(|(t, _)| t == topic)
        .map(|(_, p)| serde_json::from_str(&p).unwrap())
        .collect()
}

fn wait_for(sub: &Subscriber, topic: &str, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} messages on {topic}"), LONG, || {
        on(sub, topic).len() >= n
    });
    on(sub, topic)
}

#[test]
fn bthome_ruuvi_and_atc_adverts_reach_the_broker_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rig(
        dir.path(),
        "min_interval = \"60s\"\nallow_unknown = true\n\n\
         [[ble.device]]\naddress = \"A4:C1:38:8E:11:22\"\nalias = \"greenhouse\"\n",
    );
    r.bluez.add_adapter("hci0");
    r.gw.start();
    r.gw.wait_log("BLE scan started.", LONG);

    // BTHome v2: packet id 9, 25.06 °C, 50.55 %.
    let bthome = h("40000902ca0903bf13");
    r.bluez
        .advertise_service("hci0", "A4:C1:38:8E:11:22", 0xfcd2, &bthome, -60);
    // The same packet again: a repeat, not a reading.
    r.bluez
        .advertise_service("hci0", "A4:C1:38:8E:11:22", 0xfcd2, &bthome, -61);
    // Ruuvi RAWv2 (the format's documented valid-data vector), an unlisted device.
    let ruuvi = h("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F");
    r.bluez
        .advertise_manufacturer("hci0", "F4:A5:74:89:16:57", 0x0499, &ruuvi, -70);
    // ATC1441 (ble_monitor's vector): 16.2 °C, 47 %, 95 %, 3.064 V.
    let atc = h("a4c1380283f400a22f5f0bf819");
    r.bluez
        .advertise_service("hci0", "A4:C1:38:02:83:F4", 0x181a, &atc, -80);
    // A new BTHome packet with a new value: a reading at once despite min_interval.
    r.bluez
        .advertise_service("hci0", "A4:C1:38:8E:11:22", 0xfcd2, &h("40000a02cb09"), -60);

    let green = wait_for(&r.sub, "ble/gw1/yard/greenhouse", 2);
    assert_eq!(
        green.len(),
        2,
        "the repeated packet made a reading: {green:?}"
    );
    assert_eq!(green[0]["temperature"], 25.06);
    assert_eq!(green[0]["humidity"], 50.55);
    assert_eq!(green[0]["decoder"], "bthome_v2");
    assert_eq!(green[0]["packet_id"], 9);
    assert!(green[0]["rssi"].is_i64(), "{:?}", green[0]);
    assert_eq!(green[1]["temperature"], 25.07);
    assert_eq!(green[1]["_gw"], "gw1");

    let ruuvi = wait_for(&r.sub, "ble/gw1/yard/f4a574891657", 1);
    assert_eq!(ruuvi[0]["decoder"], "ruuvi_v5");
    assert_eq!(ruuvi[0]["temperature"], 24.3);
    assert_eq!(ruuvi[0]["pressure"], 1000.44);
    assert_eq!(ruuvi[0]["rssi"], -70);

    let atc = wait_for(&r.sub, "ble/gw1/yard/a4c1380283f4", 1);
    assert_eq!(atc[0]["decoder"], "atc1441");
    assert_eq!(atc[0]["temperature"], 16.2);
    assert_eq!(atc[0]["battery"], 95);
    assert_eq!(atc[0]["rssi"], -80);

    // A truncated BTHome frame is counted and logged, and changes nothing else.
    r.bluez
        .advertise_service("hci0", "A4:C1:38:8E:11:22", 0xfcd2, &h("4002ca"), -60);
    r.gw.wait_log("Skipped a malformed advertisement.", LONG);
    assert!(r.gw.log().contains("input=yard"));
    assert!(r.gw.is_running());
}

#[test]
fn gatt_notify_and_read_reach_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rig(
        dir.path(),
        "min_interval = \"0s\"\n\n\
         [[ble.device]]\naddress = \"C0:98:E5:49:00:01\"\nalias = \"notifier\"\n\
         [[ble.device]]\naddress = \"C0:98:E5:49:00:02\"\nalias = \"reader\"\n\n\
         [[ble.gatt]]\naddress = \"C0:98:E5:49:00:01\"\nservice = \"0000181a-0000-1000-8000-00805f9b34fb\"\n\
         characteristic = \"00002a6e-0000-1000-8000-00805f9b34fb\"\nmode = \"notify\"\n\
         decode = { type = \"i16le\", scale = 0.01, field = \"temperature\" }\n\n\
         [[ble.gatt]]\naddress = \"C0:98:E5:49:00:02\"\nservice = \"181a\"\ncharacteristic = \"2a6f\"\n\
         mode = \"read\"\nevery = \"200ms\"\ndecode = { type = \"u16le\", scale = 0.01, field = \"humidity\" }\n",
    );
    let svc = "0000181a-0000-1000-8000-00805f9b34fb";
    r.bluez.add_adapter("hci0");
    r.bluez.add_gatt_device(
        "hci0",
        "C0:98:E5:49:00:01",
        svc,
        "00002a6e-0000-1000-8000-00805f9b34fb",
        &[0, 0],
    );
    r.bluez.add_gatt_device(
        "hci0",
        "C0:98:E5:49:00:02",
        svc,
        "00002a6f-0000-1000-8000-00805f9b34fb",
        &5000u16.to_le_bytes(),
    );
    r.gw.start();

    // read: the value now, then a changed one; unchanged reads in between are not readings.
    let reads = wait_for(&r.sub, "ble/gw1/yard/reader", 1);
    assert_eq!(reads[0]["humidity"], 50.0);
    assert_eq!(reads[0]["decoder"], "gatt");
    assert!(reads[0]["rssi"].is_i64(), "{:?}", reads[0]);
    r.bluez
        .set_gatt_value("hci0", "C0:98:E5:49:00:02", &5100u16.to_le_bytes());
    let reads = wait_for(&r.sub, "ble/gw1/yard/reader", 2);
    assert_eq!(reads[1]["humidity"], 51.0);
    assert_eq!(reads.len(), 2, "{reads:?}");

    // notify: once subscribed (the gateway watches for notifications before it calls
    // StartNotify), each new value is a reading.
    let notifier = "C0:98:E5:49:00:01";
    wait_until("the notifier is subscribed", LONG, || {
        r.bluez.gatt_calls("hci0", notifier, "StartNotify") >= 1
    });
    r.bluez
        .set_gatt_value("hci0", notifier, &2151i16.to_le_bytes());
    let notes = wait_for(&r.sub, "ble/gw1/yard/notifier", 1);
    assert_eq!(notes[0]["temperature"], 21.51);
    r.bluez
        .set_gatt_value("hci0", notifier, &(-150i16).to_le_bytes());
    let notes = wait_for(&r.sub, "ble/gw1/yard/notifier", 2);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert_eq!(notes[1]["temperature"], -1.5);
    assert_eq!(notes[1]["decoder"], "gatt");
}

#[test]
fn a_late_adapter_a_vanished_adapter_and_a_restarted_bluetoothd_are_survived() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rig(
        dir.path(),
        "adapter = \"hci0\"\nmin_interval = \"0s\"\n\n\
         [[ble.device]]\naddress = \"A4:C1:38:8E:11:22\"\nalias = \"greenhouse\"\n",
    );
    let topic = "ble/gw1/yard/greenhouse";
    let addr = "A4:C1:38:8E:11:22";
    // No adapter at start: reported, retried.
    r.gw.start();
    r.gw.wait_log("BLE unavailable; retrying with backoff.", LONG);
    assert!(r.gw.log().contains("no adapter hci0"), "{}", r.gw.log());
    r.bluez.add_adapter("hci0");
    r.gw.wait_log("BLE scan started.", LONG);
    r.bluez
        .advertise_service("hci0", addr, 0xfcd2, &h("4000010150"), -50);
    wait_for(&r.sub, topic, 1);

    // The adapter vanishes and comes back.
    r.bluez.remove_adapter("hci0");
    r.gw.wait_log("adapter hci0 vanished", LONG);
    r.bluez.add_adapter("hci0");
    wait_until("a second scan starts", LONG, || {
        r.gw.log().matches("BLE scan started.").count() >= 2
    });
    r.bluez
        .advertise_service("hci0", addr, 0xfcd2, &h("4000020151"), -50);
    wait_for(&r.sub, topic, 2);

    // bluetoothd dies and restarts: org.bluez changes owner.
    r.bluez.kill_mock();
    r.gw.wait_log("BLE scan lost; rescanning.", LONG);
    r.bluez.start_mock();
    r.bluez.add_adapter("hci0");
    wait_until("a third scan starts", LONG, || {
        r.gw.log().matches("BLE scan started.").count() >= 3
    });
    r.bluez
        .advertise_service("hci0", addr, 0xfcd2, &h("4000030152"), -50);
    let got = wait_for(&r.sub, topic, 3);
    let ids: Vec<&Value> = got.iter().map(|v| &v["packet_id"]).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(r.gw.is_running());
}

#[test]
fn a_silent_scan_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rig(
        dir.path(),
        "scan_stall = \"600ms\"\n\n[[ble.device]]\naddress = \"A4:C1:38:8E:11:22\"\n",
    );
    r.bluez.add_adapter("hci0");
    r.gw.start();
    r.gw.wait_log("BLE scan started.", LONG);
    // Nothing advertises: the scan is stopped and started again, more than once.
    wait_until("the scan was restarted twice", LONG, || {
        r.bluez.adapter_calls("hci0", "StartDiscovery") >= 3
    });
    assert!(r.bluez.adapter_calls("hci0", "StopDiscovery") >= 2);
    assert!(r.gw.log().contains("restarting the scan"));
    // And it still hears advertisements afterwards.
    r.bluez
        .advertise_service("hci0", "A4:C1:38:8E:11:22", 0xfcd2, &h("4000070157"), -50);
    let got = wait_for(&r.sub, "ble/gw1/yard/a4c1388e1122", 1);
    assert_eq!(got[0]["packet_id"], 7);
}

#[test]
fn button_presses_are_events_of_their_own_that_min_interval_does_not_hold_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rig(
        dir.path(),
        "min_interval = \"60s\"\nallow_unknown = true\n\n\
         [[ble.device]]\naddress = \"A4:C1:38:8E:11:22\"\nalias = \"greenhouse\"\n",
    );
    r.bluez.add_adapter("hci0");
    r.gw.start();
    r.gw.wait_log("BLE scan started.", LONG);
    let green = "A4:C1:38:8E:11:22";
    // BTHome packet 1: 25.06 °C and a press; the same packet again; packet 2: the same
    // temperature (held back by min_interval) and another press (an event: published).
    for p in ["4400013a0102ca09", "4400013a0102ca09", "4400023a0102ca09"] {
        r.bluez.advertise_service("hci0", green, 0xfcd2, &h(p), -60);
    }
    // xiaomi-ble's test_Xiaomi_K9B (a one-button switch, frame counter 1), repeated, then
    // the next press (frame counter 2).
    let k9b = "A4:C1:38:15:68:01";
    for p in [
        "504068150101681538c1a4011003000000",
        "504068150101681538c1a4011003000000",
        "504068150201681538c1a4011003000000",
    ] {
        r.bluez.advertise_service("hci0", k9b, 0xfe95, &h(p), -70);
    }
    let msgs = wait_for(&r.sub, "ble/gw1/yard/greenhouse", 3);
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert_eq!(msgs[0]["temperature"], 25.06);
    assert!(msgs[0].get("button").is_none(), "{:?}", msgs[0]);
    for m in &msgs[1..] {
        assert_eq!(m["button"], "press", "{m:?}");
        assert_eq!(m["decoder"], "bthome_v2");
        assert!(m.get("temperature").is_none(), "{m:?}");
    }
    // A sleeping button is a new device to BlueZ at each press: the press arrives with the
    // discovery (InterfacesAdded), not as a change.
    let fresh = "A4:C1:38:15:68:02";
    r.bluez
        .discover_service("hci0", fresh, 0xfcd2, &h("4400073a01"), -65);
    let first = wait_for(&r.sub, "ble/gw1/yard/a4c138156802", 1);
    assert_eq!(first[0]["button"], "press", "{first:?}");
    let presses = wait_for(&r.sub, "ble/gw1/yard/a4c138156801", 2);
    assert_eq!(presses.len(), 2, "{presses:?}");
    assert!(presses
        .iter()
        .all(|m| m["button"] == "press" && m["decoder"] == "mibeacon"));
    // The repeats were sent before the second presses: had they made messages, they
    // would be here already; one more press shows nothing is waiting behind them.
    r.bluez
        .advertise_service("hci0", green, 0xfcd2, &h("4400033a04"), -60);
    let msgs = wait_for(&r.sub, "ble/gw1/yard/greenhouse", 4);
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    assert_eq!(msgs[3]["button"], "long_press");
}

/// `sensorgate ble scan` against the fake BlueZ: what it heard during the scan, decoded or
/// why not, and a `[[ble.device]]` snippet; a device BlueZ only remembers from before the
/// scan is not listed.
#[test]
fn ble_scan_lists_what_it_heard_and_a_config_snippet() {
    use crate::support::gateway::BIN;
    use crate::support::wait_exit;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let bluez = Bluez::start(&dir.path().join("bluez"));
    bluez.add_adapter("hci0");
    // Heard before the scan only.
    bluez.advertise_service("hci0", "C0:98:E5:49:00:09", 0xfcd2, &h("40000102ca09"), -90);

    let out_path = dir.path().join("scan.out");
    let (var, bus) = bluez.env();
    let mut scan = KillOnDrop(
        Command::new(BIN)
            .args(["ble", "scan", "--seconds", "4", "--adapter", "hci0"])
            .env(var, bus)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(dir.path().join("scan.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("the scan has started", LONG, || {
        bluez.adapter_calls("hci0", "StartDiscovery") >= 1
    });
    // BTHome: 25.06 °C and a button press.
    bluez.advertise_service(
        "hci0",
        "A4:C1:38:8E:11:22",
        0xfcd2,
        &h("4400093a0102ca09"),
        -60,
    );
    // MiBeacon, encrypted (xiaomi-ble's test_Xiaomi_LYWSD03MMC_encrypted), no key.
    let mi = h("58585b0550f4830238c1a495ef58763c26000097e2abb5");
    bluez.advertise_service("hci0", "A4:C1:38:02:83:F4", 0xfe95, &mi, -75);
    // Ruuvi RAWv2, and a phone's manufacturer data nobody decodes.
    let ruuvi = h("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F");
    bluez.advertise_manufacturer("hci0", "F4:A5:74:89:16:57", 0x0499, &ruuvi, -70);
    bluez.advertise_manufacturer("hci0", "40:4E:36:00:00:01", 0x0006, &[1, 9, 32, 2], -50);

    let status = wait_exit(&mut scan.0, LONG).expect("the scan ends by itself");
    let out = std::fs::read_to_string(&out_path).unwrap();
    let err = std::fs::read_to_string(dir.path().join("scan.err")).unwrap();
    assert!(status.success(), "{status:?}\n{out}\n{err}");
    assert!(
        out.starts_with("Heard 4 device(s) on hci0 in 4 s."),
        "{out}"
    );
    for want in [
        "A4:C1:38:8E:11:22  \"mock A4:C1:38:8E:11:22\"  -60 dBm\n  bthome_v2: packet_id=9 button=\"press\"(event) temperature=25.06\n",
        "F4:A5:74:89:16:57  \"mock F4:A5:74:89:16:57\"  -70 dBm\n  ruuvi_v5: temperature=24.3",
        "A4:C1:38:02:83:F4  \"mock A4:C1:38:02:83:F4\"  -75 dBm\n  not decoded: encrypted service data fe95",
        "40:4E:36:00:00:01  \"mock 40:4E:36:00:00:01\"  -50 dBm\n  not decoded: unknown format (manufacturer data 0x0006)",
        "[[ble.device]]\naddress = \"A4:C1:38:02:83:F4\"\nalias = \"mock_a4_c1_38_02_83_f4\"\n# bindkey",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert!(!out.contains("C0:98:E5:49:00:09"), "{out}");
    // The snippet, pasted under a [[ble]] input, is a config the gateway accepts.
    let snippet = &out[out.find("# Paste").expect("a snippet")..];
    assert!(!snippet.contains("40:4E:36"), "{snippet}");
    let config = base_config(dir.path(), "gw1", "mqtt://127.0.0.1:1", "")
        + "[[ble]]\nname = \"yard\"\ntopic = \"ble/{device}\"\n"
        + snippet;
    let path = dir.path().join("pasted.toml");
    std::fs::write(&path, config).unwrap();
    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// A child process killed when the test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
