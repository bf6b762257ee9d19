//! Home Assistant MQTT discovery end to end: the gateway binary reads two pseudo-terminals
//! and publishes to a real Mosquitto. A subscriber on `#` sees one retained config per
//! entity before the entity's first state, with the keys Home Assistant reads; the state
//! topics carry values the templates extract; Home Assistant's birth on its status topic has
//! every config sent again; a restart keeps every `unique_id`.

use crate::support::broker::Broker;
use crate::support::gateway::{base_config, Gateway};
use crate::support::pty::Pty;
use crate::support::subscriber::{client, Subscriber};
use crate::support::wait_until;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// The config messages received so far: topic → payloads, in order.
fn configs(sub: &Subscriber) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (t, p) in sub.messages() {
        if t.starts_with("homeassistant/") && t.ends_with("/config") {
            let v = serde_json::from_str(&p).unwrap_or_else(|e| panic!("{t}: {e}: {p}"));
            out.entry(t).or_default().push(v);
        }
    }
    out
}

/// What Home Assistant's template `{{ value_json['x'] | is_defined }}` (or `{{ value }}`)
/// extracts.
fn extract(config: &Value, payload: &str) -> Value {
    let Some(t) = config["value_template"].as_str() else {
        return Value::String(payload.to_string());
    };
    let field = t
        .split("value_json['")
        .nth(1)
        .and_then(|r| r.split("']").next())
        .unwrap_or_else(|| panic!("template {t}"));
    let state: Value = serde_json::from_str(payload).unwrap();
    state[field].clone()
}

fn unique_ids(sub: &Subscriber) -> BTreeSet<String> {
    configs(sub)
        .values()
        .flat_map(|v| {
            v.iter()
                .map(|c| c["unique_id"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn every_entity_is_announced_before_its_state_and_again_when_home_assistant_comes_online() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&tmp.path().join("broker"));
    let sub = Subscriber::start(broker.port, "#", "ha-sub");
    let mut wx = Pty::open();
    let mut tank = Pty::open();
    let config = base_config(tmp.path(), "gwd", &broker.url(), "")
        + &format!(
            "[homeassistant]\ndiscovery = true\n\n\
             [queue]\ncommit_linger = \"20ms\"\n\n\
             [[serial]]\nname = \"wx\"\ndevice = \"{}\"\nformat = \"kv\"\n\
             topic = \"site/{{gateway}}/{{input}}\"\nqos = 1\n\
             fields.t1 = {{ rename = \"outdoor\", unit = \"°C\" }}\n\n\
             [[serial]]\nname = \"tank\"\ndevice = \"{}\"\nformat = \"kv\"\n\
             topic = \"site/{{gateway}}/{{input}}/{{field}}\"\nqos = 1\n",
            wx.path.display(),
            tank.path.display()
        );
    let mut gw = Gateway::new(tmp.path(), &config);
    gw.start();
    gw.wait_log_count("Serial port open.", 2, LONG);
    wx.line("t1=21.5 motion=true button=press");
    tank.line("level=3");
    wait_until("the states of both inputs", LONG, || {
        let m = sub.messages();
        m.iter().any(|(t, _)| t == "site/gwd/wx")
            && m.iter().any(|(t, _)| t == "site/gwd/tank/level")
    });

    let c = configs(&sub);
    let topics: Vec<&str> = c.keys().map(String::as_str).collect();
    assert_eq!(
        topics,
        [
            "homeassistant/binary_sensor/sensorgate_gwd/connectivity/config",
            "homeassistant/binary_sensor/sensorgate_gwd/wx_motion/config",
            "homeassistant/event/sensorgate_gwd/wx_button/config",
            "homeassistant/sensor/sensorgate_gwd/tank_level/config",
            "homeassistant/sensor/sensorgate_gwd/wx_outdoor/config",
        ],
        "one config per entity and one for the gateway"
    );
    for (topic, each) in &c {
        assert_eq!(each.len(), 1, "{topic} announced once so far");
        let v = &each[0];
        for key in ["name", "unique_id", "state_topic", "device", "origin"] {
            assert!(v.get(key).is_some(), "{topic} lacks {key}: {v}");
        }
        if !topic.contains("/connectivity/") {
            assert_eq!(
                v["availability"][0]["topic"], "sensorgate/gwd/status",
                "{v}"
            );
            assert_eq!(v["device"]["via_device"], "sensorgate_gwd", "{v}");
        }
    }

    // Each config went before its entity's first state, and the templates read the states.
    let all = sub.messages();
    let first = |topic: &str| all.iter().position(|(t, _)| t == topic).unwrap();
    let state = |topic: &str| all.iter().find(|(t, _)| t == topic).unwrap().1.clone();
    let outdoor = &c["homeassistant/sensor/sensorgate_gwd/wx_outdoor/config"][0];
    assert_eq!(
        outdoor["device_class"], "temperature",
        "from the rule's unit"
    );
    assert_eq!(outdoor["unit_of_measurement"], "°C");
    assert_eq!(outdoor["state_class"], "measurement");
    assert_eq!(outdoor["state_topic"], "site/gwd/wx");
    assert!(first("homeassistant/sensor/sensorgate_gwd/wx_outdoor/config") < first("site/gwd/wx"));
    assert_eq!(extract(outdoor, &state("site/gwd/wx")), 21.5);
    let motion = &c["homeassistant/binary_sensor/sensorgate_gwd/wx_motion/config"][0];
    assert_eq!(motion["device_class"], "motion");
    assert_eq!(
        motion["value_template"],
        "{{ 'ON' if (value_json['motion'] | is_defined) else 'OFF' }}"
    );
    assert_eq!(extract(motion, &state("site/gwd/wx")), true);
    let button = &c["homeassistant/event/sensorgate_gwd/wx_button/config"][0];
    assert!(button["event_types"]
        .as_array()
        .unwrap()
        .contains(&"press".into()));
    let level = &c["homeassistant/sensor/sensorgate_gwd/tank_level/config"][0];
    assert_eq!(level["state_topic"], "site/gwd/tank/level");
    assert!(
        level.get("value_template").is_none(),
        "a plain value: {level}"
    );
    assert_eq!(extract(level, &state("site/gwd/tank/level")), "3");
    assert!(
        first("homeassistant/sensor/sensorgate_gwd/tank_level/config")
            < first("site/gwd/tank/level")
    );

    // A field first seen later gets its own config when it appears.
    wx.line("t1=21.6 humidity=40");
    let hum = "homeassistant/sensor/sensorgate_gwd/wx_humidity/config";
    wait_until("humidity's config", LONG, || {
        configs(&sub).contains_key(hum)
    });
    assert_eq!(configs(&sub)[hum][0]["device_class"], "humidity");
    let before = configs(&sub);
    assert!(
        before.values().all(|v| v.len() == 1),
        "nothing announced twice yet"
    );

    // Home Assistant comes online: every config again.
    let status = client("mosquitto_pub", broker.port)
        .args(["-t", "homeassistant/status", "-m", "online"])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("every config sent again", LONG, || {
        configs(&sub).values().all(|v| v.len() == 2)
    });
    gw.wait_log("Home Assistant is online", LONG);

    // A restart announces again, before the first state after it, with the same unique ids.
    // (Messages in flight at the stop may come twice: at least once.)
    let ids = unique_ids(&sub);
    assert_eq!(ids.len(), 6);
    gw.terminate(LONG);
    let mark = sub.messages().len();
    gw.start();
    gw.wait_log_count("Serial port open.", 4, LONG);
    wx.line("t1=21.7 humidity=41 motion=false button=long_press");
    let after = || sub.messages()[mark..].to_vec();
    wait_until("the first state after the restart", LONG, || {
        after()
            .iter()
            .any(|(t, p)| t == "site/gwd/wx" && p.contains("21.7"))
    });
    let after = after();
    let state = after
        .iter()
        .position(|(t, p)| t == "site/gwd/wx" && p.contains("21.7"))
        .unwrap();
    for entity in ["wx_outdoor", "wx_humidity", "wx_motion", "wx_button"] {
        assert!(
            after[..state]
                .iter()
                .any(|(t, _)| t.contains(&format!("/{entity}/config"))),
            "{entity} not announced again before its state: {after:?}"
        );
    }
    assert_eq!(unique_ids(&sub), ids, "a restart changed a unique_id");
    gw.terminate(LONG);
}

#[test]
fn batched_routes_get_no_discovery_and_check_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let config = base_config(tmp.path(), "gwb", "mqtt://127.0.0.1:1", "")
        + "[mqtt.batch]\nmax_readings = 10\n\n[homeassistant]\ndiscovery = true\n\n\
           [[synthetic]]\nname = \"s\"\nrate = 1\nfields = [\"temperature\"]\n\
           topic = \"site/{gateway}/{input}\"\n";
    let gw = Gateway::new(tmp.path(), &config);
    let (code, out, err) = gw.cli(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Home Assistant discovery: off: [mqtt.batch] sends batches"),
        "{out}"
    );
}

/// A BLE device gets its configs when it is first heard (with `expire_after`, and its own
/// device in Home Assistant, via the gateway); a button's presses are an event entity.
#[cfg(feature = "ble")]
#[test]
fn a_ble_device_is_announced_when_first_heard() {
    use crate::support::bluez::Bluez;
    let h = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&tmp.path().join("broker"));
    let sub = Subscriber::start(broker.port, "#", "ha-ble-sub");
    let bluez = Bluez::start(&tmp.path().join("bluez"));
    let config = base_config(tmp.path(), "gwb", &broker.url(), "")
        + "[homeassistant]\ndiscovery = true\nexpire_after = \"10m\"\n\n\
           [queue]\ncommit_linger = \"20ms\"\n\n\
           [[ble]]\nname = \"yard\"\ntopic = \"ble/{gateway}/{input}/{device}\"\n\
           retry_min = \"100ms\"\nretry_max = \"400ms\"\n\n\
           [[ble.device]]\naddress = \"A4:C1:38:8E:11:22\"\nalias = \"greenhouse\"\n";
    let mut gw = Gateway::new(tmp.path(), &config);
    gw.env.push(bluez.env());
    bluez.add_adapter("hci0");
    gw.start();
    gw.wait_log("BLE scan started.", LONG);
    assert!(
        configs(&sub).keys().all(|t| t.contains("/connectivity/")),
        "nothing heard, nothing announced: {:?}",
        configs(&sub).keys()
    );
    // BTHome v2: packet 1, 25.06 °C and a press.
    bluez.advertise_service(
        "hci0",
        "A4:C1:38:8E:11:22",
        0xfcd2,
        &h("4400013a0102ca09"),
        -60,
    );
    let temp = "homeassistant/sensor/sensorgate_gwb/yard_greenhouse_temperature/config";
    let button = "homeassistant/event/sensorgate_gwb/yard_greenhouse_button/config";
    wait_until("the device's configs", LONG, || {
        let c = configs(&sub);
        c.contains_key(temp) && c.contains_key(button)
    });
    let c = configs(&sub);
    let t = &c[temp][0];
    assert_eq!(t["device_class"], "temperature");
    assert_eq!(t["unit_of_measurement"], "°C");
    assert_eq!(t["expire_after"], 600);
    assert_eq!(t["state_topic"], "ble/gwb/yard/greenhouse");
    assert_eq!(
        t["device"]["identifiers"][0],
        "sensorgate_gwb_yard_greenhouse"
    );
    assert_eq!(t["device"]["model"], "ble");
    assert_eq!(t["device"]["via_device"], "sensorgate_gwb");
    let b = &c[button][0];
    assert!(
        b.get("expire_after").is_none(),
        "an event does not expire: {b}"
    );
    assert!(b["event_types"]
        .as_array()
        .unwrap()
        .contains(&"press".into()));
    let states = || -> Vec<Value> {
        sub.messages()
            .iter()
            .filter(|(t, _)| t == "ble/gwb/yard/greenhouse")
            .map(|(_, p)| serde_json::from_str(p).unwrap())
            .collect()
    };
    wait_until("the states", LONG, || states().len() >= 2);
    let all = states();
    assert!(
        all.iter().any(|s| extract(t, &s.to_string()) == 25.06),
        "{all:?}"
    );
    assert!(
        all.iter().any(|s| extract(b, &s.to_string()) == "press"),
        "{all:?}"
    );
    gw.terminate(LONG);
}
