//! Duplicate and rate filter for BLE readings. BLE devices repeat each advertisement many
//! times; this decides which observations become readings. Pure: the caller passes the time.
//!
//! Per device and source (a decoder, or one GATT characteristic):
//! - the same packet id (BTHome packet id, ATC/pvvx counter, MiBeacon frame counter, Ruuvi
//!   measurement sequence) as the last accepted one is a repeat: dropped;
//! - values equal to the last accepted ones (counters and RSSI aside) are published again
//!   only once `min_interval` has passed since the last publication (a heartbeat; with
//!   `min_interval` = 0 never);
//! - changed values are published at once.
//!
//! Events (a button press, a dimmer turn: [`crate::ble::decode::FieldKind::Event`]) are
//! admitted apart from the values, by [`Filter::admit_event`]: neither `min_interval` nor
//! equality with the last event holds one back; only a repeat of the same packet does (the
//! same packet id, or, for a device that sends none, the same event within
//! [`EVENT_REPEAT`] of the last time it was heard).
//!
//! **Invariant:** memory is bounded: at most [`MAX_DEVICES`] devices are remembered; beyond
//! that the least recently published ones are forgotten (their next advertisement counts
//! as new).

use crate::ble::decode::Value;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// Devices remembered at most (a busy street can show thousands of unknown devices).
pub const MAX_DEVICES: usize = 4096;

/// Without a packet id, the same event heard again within this is the same packet repeated
/// (devices repeat an advertisement for a second or so).
pub const EVENT_REPEAT: Duration = Duration::from_secs(2);

/// Fields that change with every frame without a measurement changing.
const COUNTERS: &[&str] = &[
    "packet_id",
    "measurement_sequence",
    "adv_count",
    "uptime",
    "frame_counter",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New or changed: make a reading.
    Publish,
    /// The same packet as before.
    Repeat,
    /// Same values, within `min_interval`.
    Unchanged,
}

#[derive(Debug)]
struct Last {
    source: Box<str>,
    /// Events of `source`, filtered by [`Filter::admit_event`].
    event: bool,
    packet_id: Option<u32>,
    values: u64,
    published: Instant,
}

#[derive(Debug)]
pub struct Filter {
    min_interval: Duration,
    devices: HashMap<[u8; 6], Vec<Last>>,
}

impl Filter {
    pub fn new(min_interval: Duration) -> Filter {
        Filter {
            min_interval,
            devices: HashMap::new(),
        }
    }

    /// Decides about one observation of `device` from `source`, and remembers it when it
    /// is published.
    pub fn admit(
        &mut self,
        device: [u8; 6],
        source: &str,
        packet_id: Option<u32>,
        fields: &[(String, Value)],
        now: Instant,
    ) -> Verdict {
        let values = fingerprint(fields);
        let min_interval = self.min_interval;
        let Some(last) = self.last(device, source, false, packet_id, values, now) else {
            return Verdict::Publish;
        };
        if packet_id.is_some() && packet_id == last.packet_id {
            return Verdict::Repeat;
        }
        let due = !min_interval.is_zero()
            && now.saturating_duration_since(last.published) >= min_interval;
        if values == last.values && !due {
            last.packet_id = packet_id.or(last.packet_id);
            return Verdict::Unchanged;
        }
        last.packet_id = packet_id;
        last.values = values;
        last.published = now;
        Verdict::Publish
    }

    /// Decides about the events of one observation of `device` from `source`: published
    /// unless it repeats the last packet (see the module's documentation).
    pub fn admit_event(
        &mut self,
        device: [u8; 6],
        source: &str,
        packet_id: Option<u32>,
        fields: &[(String, Value)],
        now: Instant,
    ) -> Verdict {
        let values = fingerprint(fields);
        let Some(last) = self.last(device, source, true, packet_id, values, now) else {
            return Verdict::Publish;
        };
        let repeat = match packet_id {
            Some(_) => packet_id == last.packet_id,
            None => {
                last.packet_id.is_none()
                    && values == last.values
                    && now.saturating_duration_since(last.published) < EVENT_REPEAT
            }
        };
        // Heard now: a repeat extends the window, so a long burst stays one event.
        last.published = now;
        if repeat {
            return Verdict::Repeat;
        }
        last.packet_id = packet_id;
        last.values = values;
        Verdict::Publish
    }

    /// What was last published of `device` from `source` (its values or its events); `None`
    /// when nothing was: then this observation is recorded as published (making room for it
    /// when the memory is full).
    fn last(
        &mut self,
        device: [u8; 6],
        source: &str,
        event: bool,
        packet_id: Option<u32>,
        values: u64,
        now: Instant,
    ) -> Option<&mut Last> {
        if !self.devices.contains_key(&device) && self.devices.len() >= MAX_DEVICES {
            self.forget_oldest();
        }
        let lasts = self.devices.entry(device).or_default();
        match lasts
            .iter()
            .position(|l| &*l.source == source && l.event == event)
        {
            Some(at) => Some(&mut lasts[at]),
            None => {
                lasts.push(Last {
                    source: source.into(),
                    event,
                    packet_id,
                    values,
                    published: now,
                });
                None
            }
        }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Forgets the quarter of the devices published least recently.
    fn forget_oldest(&mut self) {
        let mut times: Vec<Instant> = self
            .devices
            .values()
            .filter_map(|l| l.iter().map(|l| l.published).max())
            .collect();
        times.sort_unstable();
        let cut = times[times.len() / 4];
        self.devices
            .retain(|_, l| l.iter().any(|l| l.published > cut));
    }
}

/// Whether `name` is a counter that changes with every frame (not a measurement).
pub fn is_counter(name: &str) -> bool {
    COUNTERS.contains(&name)
}

/// A hash of the fields' names and values, counters left out.
fn fingerprint(fields: &[(String, Value)]) -> u64 {
    let mut h = DefaultHasher::new();
    for (name, value) in fields {
        if COUNTERS.contains(&name.as_str()) {
            continue;
        }
        name.hash(&mut h);
        match value {
            Value::Int(i) => (0u8, *i).hash(&mut h),
            Value::Float(f) => (1u8, f.to_bits()).hash(&mut h),
            Value::Bool(b) => (2u8, *b).hash(&mut h),
            Value::Text(t) => (3u8, t).hash(&mut h),
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [1, 2, 3, 4, 5, 6];

    fn t(v: f64, seq: i64) -> Vec<(String, Value)> {
        vec![
            ("temperature".into(), Value::Float(v)),
            ("measurement_sequence".into(), Value::Int(seq)),
        ]
    }

    #[test]
    fn repeats_and_unchanged_values_are_held_back_until_min_interval() {
        let mut f = Filter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        assert_eq!(
            f.admit(A, "bthome_v2", Some(7), &t(20.0, 1), s(0)),
            Verdict::Publish
        );
        // The same packet, again and again, even after min_interval.
        assert_eq!(
            f.admit(A, "bthome_v2", Some(7), &t(20.0, 1), s(1)),
            Verdict::Repeat
        );
        assert_eq!(
            f.admit(A, "bthome_v2", Some(7), &t(20.0, 1), s(99)),
            Verdict::Repeat
        );
        // A new packet with the same values (a counter aside): held back...
        assert_eq!(
            f.admit(A, "bthome_v2", Some(8), &t(20.0, 2), s(10)),
            Verdict::Unchanged
        );
        // ...until min_interval has passed since the last publication.
        assert_eq!(
            f.admit(A, "bthome_v2", Some(9), &t(20.0, 3), s(60)),
            Verdict::Publish
        );
        // A changed value goes at once.
        assert_eq!(
            f.admit(A, "bthome_v2", Some(10), &t(20.1, 4), s(61)),
            Verdict::Publish
        );
        // Another source of the same device is separate.
        assert_eq!(
            f.admit(A, "gatt", None, &t(20.1, 4), s(61)),
            Verdict::Publish
        );
        // No packet id: identical data is unchanged.
        assert_eq!(
            f.admit(A, "gatt", None, &t(20.1, 4), s(62)),
            Verdict::Unchanged
        );
    }

    #[test]
    fn zero_min_interval_publishes_changes_only() {
        let mut f = Filter::new(Duration::ZERO);
        let t0 = Instant::now();
        assert_eq!(f.admit(A, "x", None, &t(1.0, 0), t0), Verdict::Publish);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(f.admit(A, "x", None, &t(1.0, 0), later), Verdict::Unchanged);
        assert_eq!(f.admit(A, "x", None, &t(2.0, 0), later), Verdict::Publish);
    }

    fn press(e: &str) -> Vec<(String, Value)> {
        vec![("button".into(), Value::Text(e.into()))]
    }

    #[test]
    fn events_pass_unless_the_same_packet_repeats() {
        let mut f = Filter::new(Duration::from_secs(600));
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let p = press("press");
        assert_eq!(
            f.admit_event(A, "mibeacon", Some(1), &p, ms(0)),
            Verdict::Publish
        );
        // The same packet: a repeat, however late.
        assert_eq!(
            f.admit_event(A, "mibeacon", Some(1), &p, ms(50)),
            Verdict::Repeat
        );
        assert_eq!(
            f.admit_event(A, "mibeacon", Some(1), &p, ms(900_000)),
            Verdict::Repeat
        );
        // The same press again in a new packet, well within min_interval: an event.
        assert_eq!(
            f.admit_event(A, "mibeacon", Some(2), &p, ms(900_100)),
            Verdict::Publish
        );
        // Events do not touch the values' memory: a state of the same source is new.
        assert_eq!(
            f.admit(A, "mibeacon", Some(2), &t(20.0, 0), ms(900_100)),
            Verdict::Publish
        );
        // Without packet ids: the same event within EVENT_REPEAT of the last time it was
        // heard is the packet repeated; later, or another event, is new.
        let mut f = Filter::new(Duration::from_secs(600));
        assert_eq!(
            f.admit_event(A, "bthome_v2", None, &p, ms(0)),
            Verdict::Publish
        );
        assert_eq!(
            f.admit_event(A, "bthome_v2", None, &p, ms(1500)),
            Verdict::Repeat
        );
        assert_eq!(
            f.admit_event(A, "bthome_v2", None, &p, ms(3000)),
            Verdict::Repeat
        );
        assert_eq!(
            f.admit_event(A, "bthome_v2", None, &p, ms(5001)),
            Verdict::Publish
        );
        let d = press("double_press");
        assert_eq!(
            f.admit_event(A, "bthome_v2", None, &d, ms(5002)),
            Verdict::Publish
        );
        assert_eq!(
            f.admit_event(A, "bthome_v2", None, &p, ms(5003)),
            Verdict::Publish
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut f = Filter::new(Duration::ZERO);
        let t0 = Instant::now();
        for i in 0..(MAX_DEVICES as u32 * 3) {
            let b = i.to_be_bytes();
            let at = t0 + Duration::from_millis(u64::from(i));
            assert_eq!(
                f.admit([0, 0, b[0], b[1], b[2], b[3]], "x", None, &t(1.0, 0), at),
                Verdict::Publish
            );
            assert!(f.len() <= MAX_DEVICES);
        }
    }
}
