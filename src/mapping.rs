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

use crate::config::{Config, Qos, Route};
use crate::reading::{mono_ms, write_json_string, Reading};
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
    inputs: Vec<(Arc<str>, Route)>,
}

impl Mapper {
    pub fn new(config: &Config) -> Mapper {
        Mapper {
            gateway: config.gateway.id.clone(),
            inputs: config
                .inputs
                .iter()
                .map(|i| (i.name.clone(), i.route.clone()))
                .collect(),
        }
    }

    /// Appends the messages of `reading` to `out`, numbering them from `*seq` on.
    pub fn map(&self, reading: &Reading, seq: &mut i64, out: &mut Vec<NewMessage>) {
        let Some((input, route)) = self.inputs.get(reading.input) else {
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
        if route.topic.per_field() {
            for (name, value) in &reading.fields {
                let topic = route.topic.render_device(
                    &self.gateway,
                    input,
                    reading.device.as_deref(),
                    Some(name),
                );
                out.push(message(*seq, topic, value.to_string().into_bytes()));
                *seq += 1;
            }
        } else {
            let topic =
                route
                    .topic
                    .render_device(&self.gateway, input, reading.device.as_deref(), None);
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

    pub fn qos_of(&self, input: usize) -> Option<Qos> {
        self.inputs.get(input).map(|(_, r)| r.qos)
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
}
