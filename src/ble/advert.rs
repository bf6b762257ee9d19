//! From one advertisement (or GATT value) of one device to at most one [`Reading`]: which
//! devices are wanted, their bindkeys and labels, decoding, and the duplicate filter.
//! Pure apart from counting bad frames: the BLE runtime feeds it, tests call it directly.
//!
//! **Invariant:** every reading carries `rssi` (when the device's signal strength is known)
//! and `decoder`; its `device` is the alias, else the address as `a4c1388e1122`. A malformed
//! or undecryptable advertisement is counted in `bad_frames` and logged at debug with the
//! input's name; one that no decoder claims (a phone, a headset) is ignored silently.

use crate::ble::decode::{self, Advert, DecodeError, Keys};
use crate::ble::filter::{Filter, Verdict};
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

    /// Decodes one advertisement element of `address`; `Some` when it makes a new reading.
    pub fn advert(
        &mut self,
        address: [u8; 6],
        payload: Payload,
        rssi: Option<i16>,
        now: Instant,
    ) -> Option<Reading> {
        if !self.wants(&address) {
            return None;
        }
        let advert = match payload {
            Payload::Service { uuid, data } => Advert::ServiceData {
                uuid: uuid16(uuid)?,
                data,
            },
            Payload::Manufacturer { company, data } => Advert::ManufacturerData { company, data },
        };
        let bindkey = self.known.get(&address).and_then(|k| k.bindkey);
        let keys = Keys {
            bindkey: bindkey.as_ref(),
            mac: address,
        };
        match decode::decode(&advert, &keys) {
            Ok(d) => self.reading(
                address,
                d.decoder,
                d.decoder,
                d.packet_id,
                d.fields,
                rssi,
                now,
            ),
            Err(DecodeError::NotMine | DecodeError::Unsupported(_)) => None,
            Err(e) => {
                self.bad_frame(&address, &e.to_string());
                None
            }
        }
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
        Some(Reading {
            input: self.id.index,
            stamp: Stamp::now(),
            at: now,
            device: Some(self.label(&address)),
            sentence: None,
            fields: out,
        })
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
        let r = p.advert(ATC, svc, Some(-60), now).unwrap();
        assert_eq!(r.input, 2);
        assert_eq!(r.device.as_deref(), Some("greenhouse"));
        assert_eq!(field(&r, "temperature"), &Value::Float(25.06));
        assert_eq!(field(&r, "rssi"), &Value::Int(-60));
        assert_eq!(field(&r, "decoder"), &Value::Text("bthome_v2".into()));
        // The same packet again: no reading.
        assert!(p.advert(ATC, svc, Some(-61), now).is_none());
        // Not listed and allow_unknown = false: ignored.
        assert!(p.advert(OTHER, svc, None, now).is_none());
        // Truncated: counted.
        let bad = bthome("4002ca");
        assert!(p
            .advert(ATC, Payload::Service { uuid, data: &bad }, None, now)
            .is_none());
        assert_eq!(Metrics::get(&metrics.bad_frames), 1);
        // A phone's unknown service data: ignored, not counted.
        let phone = Payload::Service {
            uuid: uuid_from_u16(0xfe9f),
            data: &[1, 2, 3],
        };
        assert!(p.advert(ATC, phone, None, now).is_none());
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
        let r = p.advert(OTHER, m, None, Instant::now()).unwrap();
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
}
