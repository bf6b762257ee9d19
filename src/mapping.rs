//! Mapping: a reading becomes zero or more messages (topic, payload, qos, retain).
//!
//! **Architecture Invariant:** mapping does no I/O and cannot fail; every template was
//! checked when the config loaded. Sensor values reach a topic only through
//! [`crate::topic::push_sanitised`].
//!
//! Payloads: a template without `{field}` gives one JSON object per reading: the reading's
//! fields, then `_ts` (wall-clock ms), `_gw` (gateway id) and `_seq` (the message's
//! per-gateway sequence number, equal to its queue row id), and `_clock: "unsynced"` when
//! the wall clock was not synchronised. A template with `{field}` gives one message per
//! field whose payload is the plain value (`21.5`).
//!
//! Routes are kept by input *slot*: a reading carries the slot of the input that read it,
//! and a slot is never reused. A reload that changes an input gives it a new slot, so the
//! readings it sent before, still on their way, map with the route they were read under.
//!
//! A message MQTT cannot carry as configured (a topic over 65,535 bytes; without `[mqtt.batch]`,
//! a PUBLISH larger than `[mqtt] max_message_size`) is found by [`Mapper::unsendable`]: the
//! pipeline commits it straight to the dead letters, and the uplink never tries it.

use crate::config::{Config, FieldRules, InputConfig, InputKind, Protocol, Qos, Route};
use crate::discovery::{Announcer, Entity, Site};
use crate::reading::{mono_ms, write_json_string, Reading, Stamp};
use crate::topic::Labels;
use std::fmt::Write;
use std::sync::Arc;

/// A message ready to be committed; `seq` becomes its row id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub seq: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: Qos,
    pub retain: bool,
    pub created_ms: i64,
    /// When the wall clock was not synchronised at the reading: its time since boot
    /// ([`crate::reading::mono_ms`]), from which the queue corrects `created_ms` once it is.
    pub unsynced_mono_ms: Option<i64>,
}

/// Maps readings of the configured inputs to messages.
#[derive(Debug, Clone)]
pub struct Mapper {
    gateway: String,
    /// Each input slot (see the module's notes).
    inputs: Vec<Slot>,
    limits: Limits,
    /// Home Assistant discovery, when on and the routes are readable (not batched).
    discovery: Option<Discovery>,
}

/// An input slot: the input's name and route, and its kind (a device's model in discovery).
#[derive(Debug, Clone)]
struct Slot {
    name: Arc<str>,
    route: Route,
    kind: &'static str,
}

#[derive(Debug, Clone)]
struct Discovery {
    site: Site,
    /// BLE entities: seconds without a state before Home Assistant marks them unavailable.
    expire_after: Option<u64>,
}

impl Discovery {
    fn of(config: &Config) -> Option<Discovery> {
        let h = config.homeassistant.as_ref()?;
        // A batch (an array, maybe compressed) is nothing Home Assistant can read.
        if config.mqtt.batch.is_some() {
            return None;
        }
        let m = &config.mqtt;
        Some(Discovery {
            site: Site {
                prefix: h.prefix.clone(),
                gateway: config.gateway.id.clone(),
                availability_topic: m.availability_topic.clone(),
                online: m.birth_payload.clone(),
                offline: m.will_payload.clone(),
            },
            expire_after: h.expire_after.map(|d| d.as_secs().max(1)),
        })
    }
}

/// The kind of an input, as discovery names a device's model.
fn kind(input: &InputConfig) -> &'static str {
    match input.kind {
        InputKind::Serial(_) => "serial",
        InputKind::Synthetic(_) => "synthetic",
        InputKind::Ble(_) => "ble",
        InputKind::Modbus(_) => "modbus",
    }
}

/// What the connection can carry, as far as the config tells before any broker is asked.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// `[mqtt] max_message_size`: the largest PUBLISH packet.
    max_packet: usize,
    /// Whether the size of a single message is known here: not under `[mqtt.batch]`,
    /// whose encoding and compression decide it.
    sized: bool,
    v5: bool,
    /// MQTT 5: a message expiry property is sent (`[queue] max_age`).
    expiry: bool,
}

/// MQTT carries topics of at most this many bytes (a two-byte length).
pub const MAX_TOPIC: usize = 65_535;

impl Mapper {
    /// A mapper with one slot per configured input, in the config's order.
    pub fn new(config: &Config) -> Mapper {
        let mut m = Mapper {
            gateway: String::new(),
            inputs: Vec::new(),
            limits: Limits::of(config),
            discovery: None,
        };
        m.configure(config);
        for i in &config.inputs {
            m.add(i);
        }
        m
    }

    /// Takes the gateway id, the connection's limits and discovery from `config` (a reload).
    pub fn configure(&mut self, config: &Config) {
        self.gateway = config.gateway.id.clone();
        self.limits = Limits::of(config);
        self.discovery = Discovery::of(config);
    }

    /// A new slot for an input (added or changed by a reload); returns it.
    pub fn add(&mut self, input: &InputConfig) -> usize {
        self.inputs.push(Slot {
            name: input.name.clone(),
            route: input.route.clone(),
            kind: kind(input),
        });
        self.inputs.len() - 1
    }

    /// Whether Home Assistant discovery is on.
    pub fn discovers(&self) -> bool {
        self.discovery.is_some()
    }

    /// Appends the discovery configs of the entities of `reading` not announced yet
    /// (retained, QoS 1), to go before the reading's own messages.
    pub fn announce(
        &self,
        reading: &Reading,
        announcer: &mut Announcer,
        seq: &mut i64,
        out: &mut Vec<NewMessage>,
    ) {
        let (Some(d), Some(slot)) = (&self.discovery, self.inputs.get(reading.input)) else {
            return;
        };
        let (device, sentence) = (reading.device.as_ref(), reading.sentence.as_ref());
        let labels = Labels {
            device: device.map(|d| &**d),
            sentence: sentence.map(|s| &**s),
        };
        let mut configs = Vec::new();
        for (field, value) in &reading.fields {
            let key = (
                reading.input,
                device.cloned(),
                sentence.cloned(),
                field.clone(),
            );
            if !announcer.needs(&key) {
                continue;
            }
            let per_field = slot.route.topic.per_field();
            let state_topic = slot.route.topic.render_labels(
                &self.gateway,
                &slot.name,
                labels,
                per_field.then_some(&**field),
            );
            let e = Entity {
                input: &slot.name,
                device: labels.device,
                sentence: labels.sentence,
                model: slot.kind,
                field,
                value,
                unit: slot.route.fields.unit_of(field),
                state_topic: &state_topic,
                json: !per_field,
                expire_after: d.expire_after.filter(|_| slot.kind == "ble"),
            };
            announcer.announce(&d.site, key, &e, &mut configs);
        }
        self.push_configs(configs, reading.stamp, reading.at, seq, out);
    }

    /// Appends every config announced so far again (Home Assistant came online).
    pub fn announce_again(&self, announcer: &Announcer, seq: &mut i64, out: &mut Vec<NewMessage>) {
        if let Some(d) = &self.discovery {
            let configs = announcer.all(&d.site);
            self.push_configs(configs, Stamp::now(), std::time::Instant::now(), seq, out);
        }
    }

    fn push_configs(
        &self,
        configs: Vec<(String, Vec<u8>)>,
        stamp: Stamp,
        at: std::time::Instant,
        seq: &mut i64,
        out: &mut Vec<NewMessage>,
    ) {
        for (topic, payload) in configs {
            out.push(NewMessage {
                seq: *seq,
                topic,
                payload,
                qos: Qos::AtLeastOnce,
                retain: true,
                created_ms: stamp.wall_ms,
                unsynced_mono_ms: (!stamp.synced).then(|| mono_ms(at)),
            });
            *seq += 1;
        }
    }

    /// Appends the messages of `reading` to `out`, numbering them from `*seq` on.
    pub fn map(&self, reading: &Reading, seq: &mut i64, out: &mut Vec<NewMessage>) {
        let Some(Slot {
            name: input, route, ..
        }) = self.inputs.get(reading.input)
        else {
            return; // no such input: a reading can only come from a configured one
        };
        let message = |seq: i64, topic: String, payload: Vec<u8>| NewMessage {
            seq,
            topic,
            payload,
            qos: route.qos,
            retain: route.retain,
            created_ms: reading.stamp.wall_ms,
            unsynced_mono_ms: (!reading.stamp.synced).then(|| mono_ms(reading.at)),
        };
        let labels = Labels {
            device: reading.device.as_deref(),
            sentence: reading.sentence.as_deref(),
        };
        if route.topic.per_field() {
            for (name, value) in &reading.fields {
                let topic = route
                    .topic
                    .render_labels(&self.gateway, input, labels, Some(name));
                out.push(message(*seq, topic, value.to_string().into_bytes()));
                *seq += 1;
            }
        } else {
            let topic = route
                .topic
                .render_labels(&self.gateway, input, labels, None);
            out.push(message(*seq, topic, self.json_payload(reading, *seq)));
            *seq += 1;
        }
    }

    fn json_payload(&self, reading: &Reading, seq: i64) -> Vec<u8> {
        let mut s = String::with_capacity(64 + 24 * reading.fields.len());
        s.push('{');
        for (name, value) in &reading.fields {
            write_json_string(&mut s, name);
            s.push(':');
            value.write_json(&mut s);
            s.push(',');
        }
        let _ = write!(s, "\"_ts\":{},\"_gw\":", reading.stamp.wall_ms);
        write_json_string(&mut s, &self.gateway);
        let _ = write!(s, ",\"_seq\":{seq}");
        if !reading.stamp.synced {
            s.push_str(",\"_clock\":\"unsynced\"");
        }
        s.push('}');
        s.into_bytes()
    }

    /// Whether `slot` is an input slot of this mapper.
    pub fn knows(&self, slot: usize) -> bool {
        slot < self.inputs.len()
    }

    /// Why MQTT cannot carry `m` as configured, if it cannot.
    pub fn unsendable(&self, m: &NewMessage) -> Option<String> {
        self.limits.refuse(m.seq, &m.topic, &m.payload, m.qos)
    }

    pub fn qos_of(&self, input: usize) -> Option<Qos> {
        self.inputs.get(input).map(|s| s.route.qos)
    }

    /// The per-field transforms of input slot `slot` (see [`crate::transform`]).
    pub fn fields(&self, slot: usize) -> Option<&FieldRules> {
        self.inputs.get(slot).map(|s| &*s.route.fields)
    }
}

impl Limits {
    fn of(config: &Config) -> Limits {
        let m = &config.mqtt;
        Limits {
            max_packet: m.max_message_size,
            sized: m.batch.is_none(),
            v5: m.protocol == Protocol::V5,
            expiry: m.max_age.is_some(),
        }
    }

    /// Why a message with this topic and payload can never be sent, if it cannot. The
    /// size counts every property the uplink may add to one message (a topic alias with
    /// the topic sent along: the most it can be).
    fn refuse(&self, seq: i64, topic: &str, payload: &[u8], qos: Qos) -> Option<String> {
        if topic.len() > MAX_TOPIC {
            return Some(format!(
                "its topic has {} bytes; MQTT carries at most {MAX_TOPIC}",
                topic.len()
            ));
        }
        if !self.sized {
            return None;
        }
        let props = self.v5.then(|| {
            let seq_property = 1 + 2 + "seq".len() + 2 + seq.to_string().len();
            let alias = 3;
            let expiry = if self.expiry { 5 } else { 0 };
            seq_property + alias + expiry
        });
        let size = publish_size(topic.len(), payload.len(), qos != Qos::AtMostOnce, props);
        (size > self.max_packet).then(|| {
            format!(
                "its packet has {size} bytes; [mqtt] max_message_size allows {}",
                self.max_packet
            )
        })
    }
}

/// The size of a PUBLISH packet, fixed header included, as a broker counts it against its
/// maximum packet size: topic and payload bytes, a packet id above QoS 0, and under MQTT 5
/// the bytes of its properties (`None` under 3.1.1).
pub fn publish_size(
    topic: usize,
    payload: usize,
    packet_id: bool,
    v5_props: Option<usize>,
) -> usize {
    let mut remaining = 2 + topic + payload;
    if packet_id {
        remaining += 2;
    }
    if let Some(props) = v5_props {
        remaining += varint_len(props) + props;
    }
    1 + varint_len(remaining) + remaining
}

/// Bytes of MQTT's variable byte integer for `n`.
pub fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Stamp, Value};
    use std::path::Path;
    use std::time::Instant;

    fn config(topic: &str) -> Config {
        let text = format!(
            r#"
[gateway]
id = "gw1"
state_dir = "/tmp/x"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[[serial]]
name = "wx"
device = "/dev/ttyUSB0"
format = "json"
topic = "{topic}"
qos = 1
"#
        );
        Config::parse(Path::new("t.toml"), &text).unwrap()
    }

    fn reading() -> Reading {
        Reading {
            input: 0,
            stamp: Stamp {
                wall_ms: 1_780_000_000_000,
                synced: true,
            },
            at: Instant::now(),
            device: None,
            sentence: None,
            fields: vec![
                (Arc::from("seq"), Value::Int(17)),
                (Arc::from("temp"), Value::Float(21.5)),
            ],
        }
    }

    #[test]
    fn one_json_message_per_reading() {
        let m = Mapper::new(&config("site/{gateway}/{input}"));
        let mut seq = 42;
        let mut out = Vec::new();
        m.map(&reading(), &mut seq, &mut out);
        assert_eq!(seq, 43);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "site/gw1/wx");
        assert_eq!(out[0].seq, 42);
        let v: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(v["seq"], 17);
        assert_eq!(v["temp"], 21.5);
        assert_eq!(v["_seq"], 42);
        assert_eq!(v["_gw"], "gw1");
        assert_eq!(v["_ts"], 1_780_000_000_000_i64);
        assert!(v.get("_clock").is_none());
    }

    #[test]
    fn the_sentence_label_fills_its_placeholder_whatever_the_fields_say() {
        let c = Config::parse(
            Path::new("t.toml"),
            "[gateway]\nid = \"gw1\"\nstate_dir = \"/tmp/x\"\n[mqtt]\nurl = \"mqtt://h\"\n\
             [[serial]]\nname = \"gps\"\ndevice = \"/dev/ttyACM0\"\nformat = \"nmea\"\n\
             topic = \"site/{gateway}/{input}/{sentence}/{field}\"\n",
        )
        .unwrap();
        let m = Mapper::new(&c);
        let mut r = reading();
        r.sentence = Some(Arc::from("GGA"));
        r.fields = vec![(Arc::from("sentence"), Value::Text("RMC".into()))];
        let (mut seq, mut out) = (1, Vec::new());
        m.map(&r, &mut seq, &mut out);
        assert_eq!(out[0].topic, "site/gw1/gps/GGA/sentence");
        r.sentence = None;
        m.map(&r, &mut seq, &mut out);
        assert_eq!(out[1].topic, "site/gw1/gps/_/sentence");
    }

    #[test]
    fn one_plain_message_per_field() {
        let m = Mapper::new(&config("site/{gateway}/{input}/{field}"));
        let mut seq = 1;
        let mut out = Vec::new();
        let mut r = reading();
        r.stamp.synced = false;
        m.map(&r, &mut seq, &mut out);
        let got: Vec<(&str, &[u8], i64)> = out
            .iter()
            .map(|m| (m.topic.as_str(), m.payload.as_slice(), m.seq))
            .collect();
        assert_eq!(
            got,
            vec![
                ("site/gw1/wx/seq", &b"17"[..], 1),
                ("site/gw1/wx/temp", &b"21.5"[..], 2)
            ]
        );
    }

    #[test]
    fn unsynced_clock_is_marked_and_field_names_are_sanitised() {
        let m = Mapper::new(&config("site/{input}/{field}"));
        let mut r = reading();
        r.fields = vec![(Arc::from("a/#"), Value::Text("x\"y".into()))];
        let mut out = Vec::new();
        m.map(&r, &mut 1, &mut out);
        assert_eq!(out[0].topic, "site/wx/a__");
        let m = Mapper::new(&config("site/{input}"));
        r.stamp.synced = false;
        let mut out = Vec::new();
        m.map(&r, &mut 1, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(v["a/#"], "x\"y");
        assert_eq!(v["_clock"], "unsynced");
    }

    /// What is refused at mapping time: a topic MQTT cannot carry; a packet over
    /// `max_message_size`, counted with the properties MQTT 5 adds; nothing sized under
    /// `[mqtt.batch]`, whose encoding decides the size.
    #[test]
    fn messages_mqtt_cannot_carry_are_found_before_commit() {
        let with = |mqtt: &str| {
            let text = format!(
                "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n\
                 max_message_size = \"128B\"\n{mqtt}\n\
                 [[serial]]\nname = \"wx\"\ndevice = \"/dev/ttyUSB0\"\nformat = \"raw\"\n\
                 topic = \"t/{{field}}\"\nqos = 1\n"
            );
            Mapper::new(&Config::parse(Path::new("t.toml"), &text).unwrap())
        };
        let message = |topic: &str, payload: usize| NewMessage {
            seq: 7,
            topic: topic.into(),
            payload: vec![b'1'; payload],
            qos: Qos::AtLeastOnce,
            retain: false,
            created_ms: 0,
            unsynced_mono_ms: None,
        };
        // 3.1.1: 1 + 1 + 2 + 3 ("t/x") + 2 + payload.
        let v3 = with("");
        assert_eq!(v3.unsendable(&message("t/x", 119)), None);
        let why = v3.unsendable(&message("t/x", 120)).unwrap();
        assert!(why.contains("129 bytes"), "{why}");
        // MQTT 5: properties (the user property seq=7: 9, an alias: 3) and their length (1).
        let v5 = with("protocol = \"5\"");
        assert_eq!(v5.unsendable(&message("t/x", 106)), None);
        assert!(v5.unsendable(&message("t/x", 107)).is_some());
        let long = "t/".to_string() + &"x".repeat(MAX_TOPIC);
        assert!(v3.unsendable(&message(&long, 0)).unwrap().contains("topic"));
        let batched = with("[mqtt.batch]\nmax_readings = 10");
        assert_eq!(batched.unsendable(&message("t/x", 10_000)), None);
        assert!(batched.unsendable(&message(&long, 0)).is_some());
    }
}
