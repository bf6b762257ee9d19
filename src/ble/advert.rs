//! From one advertisement (or GATT value) of one device to readings: which devices are
//! wanted, their bindkeys and labels, decoding, and the duplicate filter. Pure apart from
//! counting bad frames: the BLE runtime feeds it, tests call it directly.
//!
//! An advertisement makes at most two readings: one of its values (states and binary
//! states, through the repeat and `min_interval` filter) and one of its events (a button
//! press: never merged into the values, held back only when the same packet repeats).
//!
//! **Invariant:** every reading carries `rssi` (when the device's signal strength is known)
//! and `decoder`; its `device` is the alias, else the address as `a4c1388e1122`. A malformed
//! or undecryptable advertisement is counted in `bad_frames` and logged at debug with the
//! input's name; one that no decoder claims (a phone, a headset) is ignored silently.

use crate::ble::decode::{self, field_kind, Advert, DecodeError, FieldKind, Keys};
use crate::ble::filter::{is_counter, Filter, Verdict};
use crate::ble::values::{address_label, uuid16};
use crate::input::InputId;
use crate::metrics::Metrics;
use crate::reading::{Reading, Stamp, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// One element of an advertisement.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// Service data under a 128-bit UUID (16-bit ones are on the Bluetooth base UUID).
    Service {
        uuid: u128,
        data: &'a [u8],
    },
    Manufacturer {
        company: u16,
        data: &'a [u8],
    },
}

/// Which devices a [`Processor`] reads, and how often a value may repeat (the BLE input
/// makes it from `[[ble]]`).
#[derive(Debug, Clone)]
pub struct Wanted {
    pub devices: Vec<Listed>,
    /// Whether devices that are not listed are read as well.
    pub allow_unknown: bool,
    /// Within this, a reading is made only for a new packet id or changed values.
    pub min_interval: Duration,
}

/// A listed device: its label is the alias, else the address (`a4c1388e1122`).
#[derive(Debug, Clone)]
pub struct Listed {
    pub address: [u8; 6],
    pub alias: Option<Arc<str>>,
    pub bindkey: Option<[u8; 16]>,
}

struct Known {
    label: Arc<str>,
    bindkey: Option<[u8; 16]>,
}

pub struct Processor {
    id: InputId,
    known: HashMap<[u8; 6], Known>,
    allow_unknown: bool,
    filter: Filter,
    metrics: Arc<Metrics>,
    names: HashMap<String, Arc<str>>,
}

impl Processor {
    pub fn new(id: InputId, wanted: Wanted, metrics: Arc<Metrics>) -> Processor {
        let known = wanted
            .devices
            .into_iter()
            .map(|d| {
                let label = d
                    .alias
                    .unwrap_or_else(|| Arc::from(address_label(&d.address)));
                (
                    d.address,
                    Known {
                        label,
                        bindkey: d.bindkey,
                    },
                )
            })
            .collect();
        Processor {
            id,
            known,
            allow_unknown: wanted.allow_unknown,
            filter: Filter::new(wanted.min_interval),
            metrics,
            names: HashMap::new(),
        }
    }

    pub fn input(&self) -> &InputId {
        &self.id
    }

    /// Whether advertisements of `address` are wanted at all.
    pub fn wants(&self, address: &[u8; 6]) -> bool {
        self.allow_unknown || self.known.contains_key(address)
    }

    /// Decodes one advertisement element of `address` into the readings it makes: none,
    /// its values, its events, or both (values first).
    pub fn advert(
        &mut self,
        address: [u8; 6],
        payload: Payload,
        rssi: Option<i16>,
        now: Instant,
    ) -> Vec<Reading> {
        let mut out = Vec::new();
        if !self.wants(&address) {
            return out;
        }
        let advert = match payload {
            Payload::Service { uuid, data } => match uuid16(uuid) {
                Some(uuid) => Advert::ServiceData { uuid, data },
                None => return out,
            },
            Payload::Manufacturer { company, data } => Advert::ManufacturerData { company, data },
        };
        let bindkey = self.known.get(&address).and_then(|k| k.bindkey);
        let keys = Keys {
            bindkey: bindkey.as_ref(),
            mac: address,
        };
        let d = match decode::decode(&advert, &keys) {
            Ok(d) => d,
            Err(DecodeError::NotMine | DecodeError::Unsupported(_)) => return out,
            Err(e) => {
                self.bad_frame(&address, &e.to_string());
                return out;
            }
        };
        let (events, values): (Vec<_>, Vec<_>) = d.fields.into_iter().partition(|(n, v)| {
            matches!(
                field_kind(n, v),
                FieldKind::Event | FieldKind::EventProperty
            )
        });
        // A frame of events alone carries its packet id as a value: no reading of that; nor
        // of nothing (a "no event" placeholder decodes to no field).
        let only_counters = values.iter().all(|(n, _)| is_counter(n));
        if !values.is_empty() && (!only_counters || events.is_empty()) {
            let source = d.decoder;
            out.extend(self.reading(address, source, source, d.packet_id, values, rssi, now));
        }
        if !events.is_empty()
            && self
                .filter
                .admit_event(address, d.decoder, d.packet_id, &events, now)
                == Verdict::Publish
        {
            out.push(self.make(address, d.decoder, events, rssi, now));
        }
        out
    }

    /// One value of a GATT characteristic; `None` in `value` is a malformed one. `source`
    /// names the characteristic for the duplicate filter; the reading's decoder is "gatt".
    pub fn gatt(
        &mut self,
        address: [u8; 6],
        source: &str,
        field: &Arc<str>,
        value: Option<Value>,
        rssi: Option<i16>,
        now: Instant,
    ) -> Option<Reading> {
        let Some(value) = value else {
            self.bad_frame(&address, "GATT value shorter than its decode type");
            return None;
        };
        let fields = vec![(field.to_string(), value)];
        self.reading(address, source, "gatt", None, fields, rssi, now)
    }

    #[allow(clippy::too_many_arguments)]
    fn reading(
        &mut self,
        address: [u8; 6],
        source: &str,
        decoder: &str,
        packet_id: Option<u32>,
        fields: Vec<(String, decode::Value)>,
        rssi: Option<i16>,
        now: Instant,
    ) -> Option<Reading> {
        match self.filter.admit(address, source, packet_id, &fields, now) {
            Verdict::Publish => {}
            Verdict::Repeat | Verdict::Unchanged => return None,
        }
        Some(self.make(address, decoder, fields, rssi, now))
    }

    /// The reading of `fields`, with `rssi` and `decoder` added.
    fn make(
        &mut self,
        address: [u8; 6],
        decoder: &str,
        fields: Vec<(String, decode::Value)>,
        rssi: Option<i16>,
        now: Instant,
    ) -> Reading {
        let mut out: Vec<(Arc<str>, Value)> = Vec::with_capacity(fields.len() + 2);
        for (name, v) in fields {
            out.push((self.name(name), v));
        }
        if let Some(r) = rssi {
            out.push((self.name("rssi".into()), Value::Int(i64::from(r))));
        }
        out.push((
            self.name("decoder".into()),
            Value::Text(decoder.to_string()),
        ));
        Reading {
            input: self.id.index,
            stamp: Stamp::now(),
            at: now,
            device: Some(self.label(&address)),
            sentence: None,
            fields: out,
        }
    }

    fn label(&self, address: &[u8; 6]) -> Arc<str> {
        match self.known.get(address) {
            Some(k) => k.label.clone(),
            None => Arc::from(address_label(address)),
        }
    }

    /// Field names are shared between readings (a bounded set: the decoders' names).
    fn name(&mut self, name: String) -> Arc<str> {
        if let Some(n) = self.names.get(&name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name.as_str());
        if self.names.len() < 1024 {
            self.names.insert(name, n.clone());
        }
        n
    }

    fn bad_frame(&self, address: &[u8; 6], why: &str) {
        Metrics::add(&self.metrics.bad_frames, 1);
        debug!(input = %self.id.name, device = %address_label(address), reason = why, "Skipped a malformed advertisement.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ble::values::{parse_hex, uuid_from_u16};

    const ATC: [u8; 6] = [0xa4, 0xc1, 0x38, 0x8e, 0x11, 0x22];
    const OTHER: [u8; 6] = [0xc0, 0x98, 0xe5, 0x49, 0, 1];

    fn processor(allow_unknown: bool) -> (Processor, Arc<Metrics>) {
        let wanted = Wanted {
            devices: vec![Listed {
                address: ATC,
                alias: Some(Arc::from("greenhouse")),
                bindkey: None,
            }],
            allow_unknown,
            min_interval: Duration::from_secs(60),
        };
        let metrics = Arc::new(Metrics::default());
        let id = InputId {
            index: 2,
            name: Arc::from("yard"),
        };
        (Processor::new(id, wanted, metrics.clone()), metrics)
    }

    fn bthome(hex: &str) -> Vec<u8> {
        parse_hex(hex).unwrap()
    }

    fn one(mut r: Vec<Reading>) -> Reading {
        assert_eq!(r.len(), 1, "{r:?}");
        r.remove(0)
    }

    fn field<'a>(r: &'a Reading, name: &str) -> &'a Value {
        &r.fields.iter().find(|(n, _)| &**n == name).unwrap().1
    }

    #[test]
    fn a_bthome_advert_becomes_one_reading_with_rssi_and_decoder() {
        let (mut p, metrics) = processor(false);
        let uuid = uuid_from_u16(0xfcd2);
        let now = Instant::now();
        // packet id 9, temperature 25.06, humidity 50.55
        let data = bthome("40000902ca0903bf13");
        let svc = Payload::Service { uuid, data: &data };
        let r = one(p.advert(ATC, svc, Some(-60), now));
        assert_eq!(r.input, 2);
        assert_eq!(r.device.as_deref(), Some("greenhouse"));
        assert_eq!(field(&r, "temperature"), &Value::Float(25.06));
        assert_eq!(field(&r, "rssi"), &Value::Int(-60));
        assert_eq!(field(&r, "decoder"), &Value::Text("bthome_v2".into()));
        // The same packet again: no reading.
        assert!(p.advert(ATC, svc, Some(-61), now).is_empty());
        // Not listed and allow_unknown = false: ignored.
        assert!(p.advert(OTHER, svc, None, now).is_empty());
        // Truncated: counted.
        let bad = bthome("4002ca");
        assert!(p
            .advert(ATC, Payload::Service { uuid, data: &bad }, None, now)
            .is_empty());
        assert_eq!(Metrics::get(&metrics.bad_frames), 1);
        // A phone's unknown service data: ignored, not counted.
        let phone = Payload::Service {
            uuid: uuid_from_u16(0xfe9f),
            data: &[1, 2, 3],
        };
        assert!(p.advert(ATC, phone, None, now).is_empty());
        assert_eq!(Metrics::get(&metrics.bad_frames), 1);
    }

    #[test]
    fn unknown_devices_are_labelled_by_address() {
        let (mut p, _) = processor(true);
        // Ruuvi RAWv2 from the Ruuvi documentation's valid-data vector.
        let data = bthome("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F");
        let m = Payload::Manufacturer {
            company: 0x0499,
            data: &data,
        };
        let r = one(p.advert(OTHER, m, None, Instant::now()));
        assert_eq!(r.device.as_deref(), Some("c098e5490001"));
        assert_eq!(field(&r, "decoder"), &Value::Text("ruuvi_v5".into()));
        assert_eq!(field(&r, "temperature"), &Value::Float(24.3));
        assert!(r.fields.iter().all(|(n, _)| &**n != "rssi"));
    }

    #[test]
    fn gatt_values_are_filtered_and_short_ones_counted() {
        let (mut p, metrics) = processor(false);
        let f: Arc<str> = Arc::from("temperature");
        let now = Instant::now();
        let r = p
            .gatt(OTHER, "2a6e", &f, Some(Value::Float(21.5)), Some(-70), now)
            .unwrap();
        assert_eq!(field(&r, "temperature"), &Value::Float(21.5));
        assert_eq!(field(&r, "decoder"), &Value::Text("gatt".into()));
        assert!(p
            .gatt(OTHER, "2a6e", &f, Some(Value::Float(21.5)), None, now)
            .is_none());
        assert!(p
            .gatt(OTHER, "2a6e", &f, Some(Value::Float(21.6)), None, now)
            .is_some());
        assert!(p.gatt(OTHER, "2a6e", &f, None, None, now).is_none());
        assert_eq!(Metrics::get(&metrics.bad_frames), 1);
    }

    #[test]
    fn events_are_readings_of_their_own_and_pass_min_interval() {
        let (mut p, _) = processor(false);
        let uuid = uuid_from_u16(0xfcd2);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let go = |p: &mut Processor, hex: &str, ms: u64| {
            let data = bthome(hex);
            p.advert(ATC, Payload::Service { uuid, data: &data }, None, at(ms))
        };
        // Packet 1: 25.06 °C and a press: a reading of the value, one of the event.
        let r = go(&mut p, "4400013a0102ca09", 0);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(field(&r[0], "temperature"), &Value::Float(25.06));
        assert!(r[0].fields.iter().all(|(n, _)| &**n != "button"));
        assert_eq!(field(&r[1], "button"), &Value::Text("press".into()));
        assert_eq!(field(&r[1], "decoder"), &Value::Text("bthome_v2".into()));
        assert!(r[1].fields.iter().all(|(n, _)| &**n != "temperature"));
        // The same packet again: nothing.
        assert!(go(&mut p, "4400013a0102ca09", 10).is_empty());
        // Packet 2, 100 ms later, the same value (within min_interval) and the same press:
        // the press is a new event, the value is held back.
        let r = one(go(&mut p, "4400023a0102ca09", 100));
        assert_eq!(field(&r, "button"), &Value::Text("press".into()));
        // Packet 3: a press alone makes no reading of its packet id.
        let r = one(go(&mut p, "4400033a02", 200));
        assert_eq!(field(&r, "button"), &Value::Text("double_press".into()));
        assert!(r.fields.iter().all(|(n, _)| &**n != "packet_id"));
        // "No event" (button 0x00) alone decodes to no field: no reading at all.
        assert!(go(&mut p, "403a00", 250).is_empty());
        // A dimmer turn carries its steps in the event's reading.
        let r = one(go(&mut p, "4400043c0203", 300));
        assert_eq!(field(&r, "dimmer"), &Value::Text("rotate_right".into()));
        assert_eq!(field(&r, "dimmer_steps"), &Value::Int(3));
    }
}
