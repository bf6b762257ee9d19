use super::*;

fn site() -> Site {
    Site {
        prefix: "homeassistant".into(),
        gateway: "gw1".into(),
        availability_topic: "sensorgate/gw1/status".into(),
        online: "online".into(),
        offline: "offline".into(),
    }
}

fn entity<'a>(field: &'a str, value: &'a Value, json: bool) -> Entity<'a> {
    Entity {
        input: "yard",
        device: Some("kitchen"),
        sentence: None,
        model: "ble",
        field,
        value,
        unit: None,
        state_topic: "site/gw1/yard/kitchen",
        json,
        expire_after: Some(900),
    }
}

fn parse(m: &(String, Vec<u8>)) -> Json {
    serde_json::from_slice(&m.1).unwrap()
}

#[test]
fn a_json_sensor_gets_a_template_a_class_and_its_devices() {
    let v = Value::Float(21.5);
    let m = config(&site(), &entity("temperature", &v, true));
    assert_eq!(
        m.0,
        "homeassistant/sensor/sensorgate_gw1/yard_kitchen_temperature/config"
    );
    let c = parse(&m);
    assert_eq!(c["unique_id"], "sensorgate_gw1_yard_kitchen_temperature");
    assert_eq!(c["state_topic"], "site/gw1/yard/kitchen");
    assert_eq!(
        c["value_template"],
        "{{ value_json['temperature'] | is_defined }}"
    );
    assert_eq!(c["device_class"], "temperature");
    assert_eq!(c["unit_of_measurement"], "°C");
    assert_eq!(c["state_class"], "measurement");
    assert_eq!(c["expire_after"], 900);
    assert_eq!(c["availability"][0]["topic"], "sensorgate/gw1/status");
    assert_eq!(c["device"]["identifiers"][0], "sensorgate_gw1_yard_kitchen");
    assert_eq!(c["device"]["via_device"], "sensorgate_gw1");
    assert_eq!(c["origin"]["name"], "sensorgate");
}

#[test]
fn binary_sensors_and_events_read_their_payloads() {
    let v = Value::Bool(true);
    let c = parse(&config(&site(), &entity("motion", &v, true)));
    assert_eq!(
        c["value_template"],
        "{{ 'ON' if (value_json['motion'] | is_defined) else 'OFF' }}"
    );
    let c = parse(&config(&site(), &entity("motion", &v, false)));
    assert_eq!(
        (&c["payload_on"], &c["payload_off"]),
        (&json!("true"), &json!("false"))
    );
    assert!(c.get("value_template").is_none());
    let v = Value::Text("press".into());
    let m = config(&site(), &entity("button", &v, true));
    assert!(m.0.starts_with("homeassistant/event/"), "{}", m.0);
    let c = parse(&m);
    assert_eq!(
        c["value_template"],
        "{{ {'event_type': (value_json['button'] | is_defined)} | to_json }}"
    );
    assert!(c["event_types"]
        .as_array()
        .unwrap()
        .contains(&json!("double_press")));
    assert!(c.get("expire_after").is_none(), "an event does not expire");
}

#[test]
fn ids_hold_only_what_home_assistant_allows_and_quotes_are_escaped() {
    let v = Value::Int(1);
    let mut e = entity("it's/°", &v, true);
    e.device = Some("A4:C1:38:8E:11:22");
    let m = config(&site(), &e);
    let c = parse(&m);
    let id = c["unique_id"].as_str().unwrap();
    assert_eq!(id, "sensorgate_gw1_yard_A4_C1_38_8E_11_22_it_s__");
    assert!(m.0.split('/').all(|p| !p.is_empty()));
    assert_eq!(
        c["value_template"],
        "{{ value_json['it\\'s/°'] | is_defined }}"
    );
}

#[test]
fn the_announcer_announces_each_entity_once_and_the_gateway_first() {
    let s = site();
    let mut a = Announcer::default();
    let (dev, field): (Arc<str>, Arc<str>) = ("kitchen".into(), "temperature".into());
    let v = Value::Float(1.0);
    let mut out = Vec::new();
    assert!(a.needs(&(0, Some(dev.clone()), None, field.clone())));
    a.announce(
        &s,
        (0, Some(dev.clone()), None, field.clone()),
        &entity("temperature", &v, true),
        &mut out,
    );
    assert!(!a.needs(&(0, Some(dev.clone()), None, field.clone())));
    assert!(
        a.needs(&(1, Some(dev.clone()), None, field.clone())),
        "another slot is another entity"
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], gateway_config(&s));
    let hum: Arc<str> = "humidity".into();
    a.announce(
        &s,
        (0, Some(dev.clone()), None, hum.clone()),
        &entity("humidity", &v, true),
        &mut out,
    );
    assert_eq!(out.len(), 3, "the gateway's config goes once");
    let again = a.all(&s);
    assert_eq!(again.len(), 3);
    assert_eq!(again[0], gateway_config(&s));
    a.forget(|slot| slot != 0);
    assert!(a.is_empty());
}

/// The example in README.md's "Home Assistant discovery", as the code writes it.
#[test]
fn the_readme_example_is_what_the_code_writes() {
    let readme = include_str!("../../README.md");
    let at = readme
        .find("homeassistant/sensor/sensorgate_gw1/yard_greenhouse_temperature/config\n")
        .expect("the example in README.md");
    let rest = &readme[at..];
    let (topic, rest) = rest.split_once('\n').unwrap();
    let json: String = rest[..rest.find("\n```").unwrap()].lines().collect();
    let v = Value::Float(21.5);
    let e = Entity {
        input: "yard",
        device: Some("greenhouse"),
        sentence: None,
        model: "ble",
        field: "temperature",
        value: &v,
        unit: None,
        state_topic: "site/gw1/yard/greenhouse",
        json: true,
        expire_after: Some(900),
    };
    let (t, payload) = config(&site(), &e);
    assert_eq!(t, topic);
    let want: Json = serde_json::from_str(&json).unwrap();
    assert_eq!(parse(&(t, payload)), want);
}
