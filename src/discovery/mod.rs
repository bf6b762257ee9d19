//! Home Assistant MQTT discovery: one retained config message per entity (input, device,
//! field), published through the queue like any reading, before the entity's first state
//! message; and one for the gateway itself, a device of its own (its connectivity, from the
//! availability topic), which every sensor's device names as `via_device`.
//!
//! [`classes`] says what a field becomes; [`config`] writes the config message; [`Announcer`]
//! remembers which entities were announced, so that a new device or a field first seen later
//! gets its config when it appears, and all of them can be sent again when Home Assistant
//! comes online (its birth message on `status_topic`).
//!
//! **Invariant:** pure: no I/O, no clock. A `unique_id` depends only on the gateway id, the
//! input's name, the device's alias (or address) and the field's name, so it is stable across
//! restarts and reloads.

pub mod classes;

use crate::reading::Value;
use classes::{classify, Component};
use serde_json::{json, Map, Value as Json};
use std::collections::HashMap;
use std::sync::Arc;

/// What every config message shares: where discovery lives and how availability is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// The discovery prefix (`homeassistant`).
    pub prefix: String,
    pub gateway: String,
    pub availability_topic: String,
    pub online: String,
    pub offline: String,
}

/// One entity to announce.
#[derive(Debug, Clone)]
pub struct Entity<'a> {
    pub input: &'a str,
    /// BLE devices and Modbus slaves; `None` for an input that is one device.
    pub device: Option<&'a str>,
    /// NMEA: the sentence type whose field this is (`GGA`): part of the entity's name.
    pub sentence: Option<&'a str>,
    /// What kind of input (`serial`, `ble`, `modbus`, ...), the device's model in HA.
    pub model: &'a str,
    pub field: &'a str,
    /// The field's first value: a number, a boolean or text.
    pub value: &'a Value,
    /// A transform's `unit`, which wins over the one the name implies.
    pub unit: Option<&'a str>,
    pub state_topic: &'a str,
    /// The state topic carries the reading's JSON object (else the plain value).
    pub json: bool,
    /// Seconds after which HA marks the entity unavailable without a new state (BLE).
    pub expire_after: Option<u64>,
}

/// The characters HA allows in a node or object id and in a `unique_id` we make.
fn id_part(out: &mut String, s: &str) {
    for c in s.chars() {
        out.push(if c.is_ascii_alphanumeric() || c == '-' {
            c
        } else {
            '_'
        });
    }
}

/// `sensorgate_<gateway>`: the gateway device's identifier and the node id of every topic.
pub fn gateway_id(gateway: &str) -> String {
    let mut s = String::from("sensorgate_");
    id_part(&mut s, gateway);
    s
}

/// `sensorgate_<gateway>_<input>[_<device>]`: a sensor device's identifier.
pub fn device_id(gateway: &str, input: &str, device: Option<&str>) -> String {
    let mut s = gateway_id(gateway);
    s.push('_');
    id_part(&mut s, input);
    if let Some(d) = device {
        s.push('_');
        id_part(&mut s, d);
    }
    s
}

/// A Jinja expression for `field` of a JSON payload: `value_json['temp'] | is_defined`.
/// One topic may carry readings without the field (a BLE device's events and values, NMEA
/// sentences of several types): Home Assistant's `is_defined` makes such a message leave the
/// entity as it was, as Theengs and OpenMQTTGateway do.
fn json_value(field: &str) -> String {
    let quoted: String = field
        .chars()
        .flat_map(|c| match c {
            '\'' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("value_json['{quoted}'] | is_defined")
}

fn origin() -> Json {
    json!({"name": "sensorgate", "sw_version": env!("CARGO_PKG_VERSION")})
}

fn availability(site: &Site) -> Json {
    json!([{
        "topic": site.availability_topic,
        "payload_available": site.online,
        "payload_not_available": site.offline,
    }])
}

/// The config message of `e`: its topic (`<prefix>/<component>/<node>/<object>/config`)
/// and JSON payload.
pub fn config(site: &Site, e: &Entity) -> (String, Vec<u8>) {
    let class = classify(e.field, e.value, e.unit);
    let device = device_id(&site.gateway, e.input, e.device);
    let mut object = String::new();
    id_part(&mut object, e.input);
    if let Some(d) = e.device {
        object.push('_');
        id_part(&mut object, d);
    }
    let mut field = String::new();
    if let Some(s) = e.sentence {
        id_part(&mut field, s);
        field.push('_');
    }
    id_part(&mut field, e.field);
    object.push('_');
    object.push_str(&field);
    let topic = format!(
        "{}/{}/{}/{object}/config",
        site.prefix,
        class.component.name(),
        gateway_id(&site.gateway)
    );
    let mut m = Map::new();
    let name = match e.sentence {
        Some(s) => format!("{s} {}", e.field),
        None => e.field.to_string(),
    };
    m.insert("name".into(), name.into());
    m.insert("unique_id".into(), format!("{device}_{field}").into());
    m.insert("state_topic".into(), e.state_topic.into());
    let value = if e.json {
        json_value(e.field)
    } else {
        "value".to_string()
    };
    match class.component {
        Component::Sensor => {
            if e.json {
                m.insert("value_template".into(), format!("{{{{ {value} }}}}").into());
            }
        }
        Component::BinarySensor => {
            if e.json {
                let t = format!("{{{{ 'ON' if ({value}) else 'OFF' }}}}");
                m.insert("value_template".into(), t.into());
            } else {
                m.insert("payload_on".into(), "true".into());
                m.insert("payload_off".into(), "false".into());
            }
        }
        Component::Event => {
            let t = format!("{{{{ {{'event_type': ({value})}} | to_json }}}}");
            m.insert("value_template".into(), t.into());
            m.insert("event_types".into(), class.event_types.into());
        }
    }
    if let Some(c) = class.device_class {
        m.insert("device_class".into(), c.into());
    }
    if let Some(u) = &class.unit {
        m.insert("unit_of_measurement".into(), u.as_str().into());
    }
    if let Some(s) = class.state_class {
        m.insert("state_class".into(), s.into());
    }
    if let (Some(secs), false) = (e.expire_after, class.component == Component::Event) {
        m.insert("expire_after".into(), secs.into());
    }
    m.insert("availability".into(), availability(site));
    let name = match e.device {
        Some(d) => format!("{} {d}", e.input),
        None => e.input.to_string(),
    };
    m.insert(
        "device".into(),
        json!({
            "identifiers": [device],
            "name": name,
            "model": e.model,
            "manufacturer": "sensorgate",
            "via_device": gateway_id(&site.gateway),
        }),
    );
    m.insert("origin".into(), origin());
    (topic, Json::Object(m).to_string().into_bytes())
}

/// The gateway's own device: a connectivity binary sensor on the availability topic.
pub fn gateway_config(site: &Site) -> (String, Vec<u8>) {
    let id = gateway_id(&site.gateway);
    let topic = format!("{}/binary_sensor/{id}/connectivity/config", site.prefix);
    let payload = json!({
        "name": "connectivity",
        "unique_id": format!("{id}_connectivity"),
        "state_topic": site.availability_topic,
        "payload_on": site.online,
        "payload_off": site.offline,
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "device": {
            "identifiers": [id],
            "name": format!("sensorgate {}", site.gateway),
            "model": "gateway",
            "manufacturer": "sensorgate",
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
        "origin": origin(),
    });
    (topic, payload.to_string().into_bytes())
}

/// An entity: the input slot, the device, the sentence type (NMEA) and the field.
pub type Key = (usize, Option<Arc<str>>, Option<Arc<str>>, Arc<str>);

/// The entities announced so far, with their config messages (to send again).
#[derive(Debug, Default)]
pub struct Announcer {
    announced: HashMap<Key, (String, Vec<u8>)>,
    /// Whether the gateway's own config went out.
    gateway: bool,
}

impl Announcer {
    /// Whether the entity of `field` of `device` of input `slot` still needs its config.
    pub fn needs(&self, key: &Key) -> bool {
        !self.announced.contains_key(key)
    }

    /// Records the config of an entity; returns it to be sent. The gateway's own config comes
    /// first, the first time.
    pub fn announce(
        &mut self,
        site: &Site,
        key: Key,
        e: &Entity,
        out: &mut Vec<(String, Vec<u8>)>,
    ) {
        if !std::mem::replace(&mut self.gateway, true) {
            out.push(gateway_config(site));
        }
        let message = config(site, e);
        out.push(message.clone());
        self.announced.insert(key, message);
    }

    /// Every config announced so far (Home Assistant came online: it may have lost them).
    pub fn all(&self, site: &Site) -> Vec<(String, Vec<u8>)> {
        let mut out = vec![gateway_config(site)];
        let mut each: Vec<_> = self.announced.values().cloned().collect();
        each.sort();
        out.extend(each);
        out
    }

    /// Forgets the entities of a slot a reload replaced.
    pub fn forget(&mut self, keep: impl Fn(usize) -> bool) {
        self.announced.retain(|(slot, ..), _| keep(*slot));
    }

    pub fn len(&self) -> usize {
        self.announced.len()
    }

    pub fn is_empty(&self) -> bool {
        self.announced.is_empty()
    }
}

#[cfg(test)]
mod tests;
