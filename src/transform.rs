//! Per-field transforms and report by exception: what an input's `fields` and
//! `max_interval` ([`FieldRules`]) do to its readings, applied by the pipeline to each
//! reading before it is mapped.
//!
//! In order, per field: `drop` removes it; `value * scale + offset` ([`scaled`]: numbers
//! only, text and booleans pass unchanged; an integer stays an integer when scale and
//! offset are whole and the result fits, else it becomes a float); then the [`Gate`]
//! decides whether the reading is published; then `rename`.
//!
//! Report by exception ([`Gate`]): an input without a deadband and without `max_interval`
//! publishes every reading and keeps nothing. Otherwise the gate keeps, per [`Key`] (input
//! slot and device), the values it last published, after scale and offset. A reading is
//! published when a field moved by more than its deadband from the last published value (a
//! field without a deadband: any change; text and booleans: any change; a field that
//! appears or disappears: always), or when `max_interval` has passed since the last
//! published reading of its key; else it is held back (the pipeline counts it).
//!
//! **Invariant:** pure: no I/O, no clock. Time is the reading's own monotonic stamp
//! (`Reading::at`), so tests pass any times they like. Nothing here can fail or panic on
//! any value. The gate's memory is bounded ([`Gate::CAPACITY`] keys).
//!
//! A rename whose new name is already a field of the reading (json and kv frames bring
//! names the config cannot know) is not applied to that reading: the field keeps its own
//! name, so a rename never loses nor duplicates another field.

use crate::config::{FieldRule, FieldRules};
use crate::reading::{Reading, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// What the gate keeps state for: one input slot (a reload that changes an input gives it
/// a new slot, so its state starts afresh), one device within it, and (NMEA) one sentence
/// type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub slot: usize,
    pub device: Option<Arc<str>>,
    /// NMEA: each sentence type reports on its own (a GGA does not hold an RMC back).
    pub sentence: Option<Arc<str>>,
}

impl Key {
    pub fn of(reading: &Reading) -> Key {
        Key {
            slot: reading.input,
            device: reading.device.clone(),
            sentence: reading.sentence.clone(),
        }
    }
}

/// Applies `rules` to `reading`: drops, scales, asks `gate`, renames. Returns whether the
/// reading is to be published (`false`: held back by its deadbands).
pub fn apply(gate: &mut Gate, rules: &FieldRules, reading: &mut Reading) -> bool {
    if rules.is_empty() {
        return true;
    }
    convert(rules, &mut reading.fields);
    if rules.gated() && !gate.admit(rules, Key::of(reading), reading.at, &reading.fields) {
        return false;
    }
    rename(rules, &mut reading.fields);
    true
}

/// Drops the fields `rules` drop and scales the others, in place; order is kept.
pub fn convert(rules: &FieldRules, fields: &mut Vec<(Arc<str>, Value)>) {
    fields.retain(|(name, _)| !rules.get(name).is_some_and(|r| r.drop));
    for (name, value) in fields.iter_mut() {
        if let Some(r) = rules.get(name) {
            if r.scale != 1.0 || r.offset != 0.0 {
                *value = scaled(value, r.scale, r.offset);
            }
        }
    }
}

/// `value * scale + offset`. Text and booleans are returned unchanged. An integer stays an
/// integer when `scale` and `offset` are whole numbers and the exact result fits 64 bits;
/// otherwise the result is a float. A scale that is the float nearest to 1/n for a whole n
/// (0.1, 0.01, 0.001) divides by n instead, so 3 * 0.1 gives 0.3, not 0.30000000000000004.
pub fn scaled(value: &Value, scale: f64, offset: f64) -> Value {
    let float = |x: f64| {
        let inverse = (1.0 / scale).round();
        let product = match inverse.abs() > 1.0 && 1.0 / inverse == scale {
            true => x / inverse,
            false => x * scale,
        };
        Value::Float(product + offset)
    };
    match value {
        Value::Int(i) => {
            if scale.fract() == 0.0 && offset.fract() == 0.0 {
                let exact = (*i as i128)
                    .checked_mul(scale as i128)
                    .and_then(|p| p.checked_add(offset as i128));
                // `as i128` saturates: a scale or offset beyond i128 gives no exact result.
                let exact = exact.filter(|_| scale.abs() < 1e38 && offset.abs() < 1e38);
                if let Some(v) = exact.and_then(|v| i64::try_from(v).ok()) {
                    return Value::Int(v);
                }
            }
            float(*i as f64)
        }
        Value::Float(f) => float(*f),
        other => other.clone(),
    }
}

/// Renames fields by `rules`, in place; a rename onto a name the reading already has is
/// skipped (see the module's notes).
pub fn rename(rules: &FieldRules, fields: &mut [(Arc<str>, Value)]) {
    if !rules.renames() {
        return;
    }
    let mut names: Vec<Arc<str>> = fields
        .iter()
        .map(|(n, _)| match rules.get(n).and_then(|r| r.rename.clone()) {
            Some(to) => to,
            None => n.clone(),
        })
        .collect();
    // A renamed field whose new name another field has too goes back to its own name,
    // until no renamed field collides (each round reverts at least one: it ends).
    loop {
        let collides: Vec<usize> = (0..names.len())
            .filter(|&i| names[i] != fields[i].0)
            .filter(|&i| (0..names.len()).any(|j| j != i && names[j] == names[i]))
            .collect();
        if collides.is_empty() {
            break;
        }
        for i in collides {
            names[i] = fields[i].0.clone();
        }
    }
    for ((name, _), new) in fields.iter_mut().zip(names) {
        *name = new;
    }
}

/// The last published values of each key (see the module's notes).
#[derive(Debug, Default)]
pub struct Gate {
    last: HashMap<Key, Published>,
}

#[derive(Debug)]
struct Published {
    at: Instant,
    fields: Vec<(Arc<str>, Value)>,
}

impl Gate {
    /// Keys kept at most; at capacity a new key evicts the one published longest ago
    /// (whose next reading is then published, as a first one is).
    pub const CAPACITY: usize = 4096;

    /// Whether a reading of `key` at `at` with `fields` (dropped and scaled, not renamed)
    /// is published; if it is, it becomes the key's last published reading.
    pub fn admit(
        &mut self,
        rules: &FieldRules,
        key: Key,
        at: Instant,
        fields: &[(Arc<str>, Value)],
    ) -> bool {
        if let Some(last) = self.last.get_mut(&key) {
            let due = rules
                .max_interval
                .is_some_and(|m| at.saturating_duration_since(last.at) >= m);
            if !due && !moved(rules, &last.fields, fields) {
                return false;
            }
            last.at = at;
            last.fields.clear();
            last.fields.extend_from_slice(fields);
            return true;
        }
        if self.last.len() >= Self::CAPACITY {
            let oldest = self
                .last
                .iter()
                .min_by_key(|(_, p)| p.at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.last.remove(&k);
            }
        }
        let fields = fields.to_vec();
        self.last.insert(key, Published { at, fields });
        true
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// Whether `new` differs from `last` by more than the deadbands (see the module's notes).
fn moved(rules: &FieldRules, last: &[(Arc<str>, Value)], new: &[(Arc<str>, Value)]) -> bool {
    if last.len() != new.len() {
        return true;
    }
    new.iter().any(|(name, v)| {
        let Some((_, old)) = last.iter().find(|(n, _)| n == name) else {
            return true;
        };
        let deadband = rules.get(name).and_then(|r: &FieldRule| r.deadband);
        match (number(old), number(v)) {
            (Some(a), Some(b)) => {
                let diff = match (old, v) {
                    (Value::Int(a), Value::Int(b)) => {
                        (*a as i128 - *b as i128).unsigned_abs() as f64
                    }
                    _ => (a - b).abs(),
                };
                // Not finite (NaN, an infinity): counts as moved.
                let within = diff <= deadband.unwrap_or(0.0);
                !within || (deadband.is_none() && old != v)
            }
            _ => old != v,
        }
    })
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Stamp;
    use proptest::prelude::*;
    use std::time::Duration;

    fn rule() -> FieldRule {
        FieldRule {
            rename: None,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            deadband: None,
            drop: false,
        }
    }

    fn rules(list: Vec<(&str, FieldRule)>, max_interval: Option<Duration>) -> FieldRules {
        let list = list.into_iter().map(|(n, r)| (Arc::from(n), r)).collect();
        FieldRules::new(list, max_interval)
    }

    fn reading(at: Instant, fields: &[(&str, Value)]) -> Reading {
        Reading {
            input: 0,
            stamp: Stamp {
                wall_ms: 1_780_000_000_000,
                synced: true,
            },
            at,
            device: None,
            sentence: None,
            fields: fields
                .iter()
                .map(|(n, v)| (Arc::from(*n), v.clone()))
                .collect(),
        }
    }

    fn names(r: &Reading) -> Vec<&str> {
        r.fields.iter().map(|(n, _)| &**n).collect()
    }

    #[test]
    fn scale_and_offset_keep_integers_whole_when_they_can() {
        assert_eq!(scaled(&Value::Int(215), 0.1, 0.0), Value::Float(21.5));
        assert_eq!(scaled(&Value::Int(3), 0.1, 0.0), Value::Float(0.3));
        assert_eq!(scaled(&Value::Int(3), 0.01, 0.0), Value::Float(0.03));
        assert_eq!(scaled(&Value::Int(615), 0.1, -40.0), Value::Float(21.5));
        assert_eq!(scaled(&Value::Int(10), 2.0, -40.0), Value::Int(-20));
        assert_eq!(scaled(&Value::Int(10), 1.0, 0.5), Value::Float(10.5));
        assert_eq!(
            scaled(&Value::Int(i64::MAX), 2.0, 0.0),
            Value::Float(i64::MAX as f64 * 2.0)
        );
        assert_eq!(scaled(&Value::Float(1.5), -2.0, 1.0), Value::Float(-2.0));
        assert_eq!(
            scaled(&Value::Text("7".into()), 2.0, 1.0),
            Value::Text("7".into())
        );
        assert_eq!(scaled(&Value::Bool(true), 2.0, 1.0), Value::Bool(true));
        // No value makes it panic: the largest scales and offsets the config accepts.
        for v in [Value::Int(i64::MIN), Value::Int(-1), Value::Float(f64::MAX)] {
            for (s, o) in [(f64::MAX, f64::MAX), (-f64::MAX, f64::MIN), (1e-300, 1e300)] {
                let _ = scaled(&v, s, o);
            }
        }
    }

    #[test]
    fn a_field_is_dropped_then_scaled_then_renamed() {
        let mut t = rule();
        t.scale = 0.1;
        t.offset = -40.0;
        t.rename = Some(Arc::from("temp"));
        let mut junk = rule();
        junk.drop = true;
        let r = rules(vec![("t", t), ("junk", junk)], None);
        let mut gate = Gate::default();
        let mut rd = reading(
            Instant::now(),
            &[
                ("t", Value::Int(615)),
                ("junk", Value::Int(1)),
                ("h", Value::Int(40)),
            ],
        );
        assert!(apply(&mut gate, &r, &mut rd));
        assert_eq!(
            rd.fields,
            vec![
                (Arc::from("temp"), Value::Float(21.5)),
                (Arc::from("h"), Value::Int(40))
            ]
        );
        assert!(gate.is_empty(), "no deadband, no max_interval: no state");
    }

    #[test]
    fn a_rename_onto_a_name_the_frame_has_is_skipped() {
        let mut a = rule();
        a.rename = Some(Arc::from("b"));
        let r = rules(vec![("a", a)], None);
        let mut rd = reading(
            Instant::now(),
            &[("a", Value::Int(1)), ("b", Value::Int(2))],
        );
        rename(&r, &mut rd.fields);
        assert_eq!(names(&rd), ["a", "b"]);
        let mut rd = reading(
            Instant::now(),
            &[("a", Value::Int(1)), ("c", Value::Int(2))],
        );
        rename(&r, &mut rd.fields);
        assert_eq!(names(&rd), ["b", "c"]);
    }

    #[test]
    fn the_deadband_compares_with_the_last_published_value() {
        let mut t = rule();
        t.deadband = Some(0.5);
        t.scale = 0.1;
        let r = rules(vec![("t", t)], None);
        let mut gate = Gate::default();
        let t0 = Instant::now();
        let mut published = Vec::new();
        for (i, raw) in [200, 203, 205, 206, 210, 150].into_iter().enumerate() {
            let mut rd = reading(
                t0 + Duration::from_secs(i as u64),
                &[("t", Value::Int(raw))],
            );
            if apply(&mut gate, &r, &mut rd) {
                published.push(rd.fields[0].1.clone());
            }
        }
        // 20.3 and 20.5 are within 0.5 of 20.0 (a move of exactly the deadband is not past
        // it); 20.6 is not; 21.0 is within 0.5 of 20.6.
        assert_eq!(
            published,
            [Value::Float(20.0), Value::Float(20.6), Value::Float(15.0)]
        );
    }

    #[test]
    fn text_changes_and_fields_that_come_or_go_are_always_published() {
        let mut t = rule();
        t.deadband = Some(100.0);
        let r = rules(vec![("t", t)], None);
        let mut gate = Gate::default();
        let t0 = Instant::now();
        let steps: [(&[(&str, Value)], bool); 6] = [
            (
                &[("t", Value::Int(1)), ("s", Value::Text("ok".into()))],
                true,
            ),
            (
                &[("t", Value::Int(2)), ("s", Value::Text("ok".into()))],
                false,
            ),
            (
                &[("t", Value::Int(2)), ("s", Value::Text("alarm".into()))],
                true,
            ),
            (&[("t", Value::Int(2))], true),
            (&[("t", Value::Int(2)), ("b", Value::Bool(false))], true),
            (&[("t", Value::Int(2)), ("b", Value::Bool(true))], true),
        ];
        for (i, (fields, want)) in steps.into_iter().enumerate() {
            let mut rd = reading(t0, fields);
            assert_eq!(apply(&mut gate, &r, &mut rd), want, "step {i}");
        }
    }

    #[test]
    fn keys_are_input_slots_and_devices() {
        let mut t = rule();
        t.deadband = Some(1.0);
        let r = rules(vec![("t", t)], None);
        let mut gate = Gate::default();
        let at = Instant::now();
        let mut a = reading(at, &[("t", Value::Int(1))]);
        a.device = Some(Arc::from("kitchen"));
        let mut b = a.clone();
        b.device = Some(Arc::from("cellar"));
        let mut c = a.clone();
        c.input = 1;
        for rd in [&mut a, &mut b, &mut c] {
            assert!(apply(&mut gate, &r, rd), "the first reading of each key");
        }
        assert!(!apply(&mut gate, &r, &mut a.clone()));
        assert_eq!(gate.len(), 3);
    }

    #[test]
    fn the_gate_keeps_at_most_its_capacity() {
        let r = rules(vec![], Some(Duration::from_secs(60)));
        let mut gate = Gate::default();
        let t0 = Instant::now();
        for i in 0..Gate::CAPACITY + 10 {
            let mut rd = reading(
                t0 + Duration::from_millis(i as u64),
                &[("t", Value::Int(1))],
            );
            rd.device = Some(Arc::from(i.to_string().as_str()));
            assert!(apply(&mut gate, &r, &mut rd));
        }
        assert_eq!(gate.len(), Gate::CAPACITY);
        // The oldest went: its next reading is published as a first one.
        let mut rd = reading(t0 + Duration::from_secs(1), &[("t", Value::Int(1))]);
        rd.device = Some(Arc::from("0"));
        assert!(apply(&mut gate, &r, &mut rd));
        rd.device = Some(Arc::from((Gate::CAPACITY + 9).to_string().as_str()));
        assert!(!apply(&mut gate, &r, &mut rd), "a recent key is kept");
    }

    proptest! {
        /// Whole scales and offsets on integers are exact (checked in i128), else a float;
        /// a float is `value * scale + offset` within a rounding.
        #[test]
        fn scale_and_offset_are_exact(
            i in any::<i64>(),
            s in -1_000_000i64..1_000_000,
            o in any::<i32>(),
            f in -1e12f64..1e12,
            fs in prop_oneof![Just(0.1), Just(0.01), Just(0.001), -1e3f64..1e3],
        ) {
            let exact = i as i128 * s as i128 + o as i128;
            let got = scaled(&Value::Int(i), s as f64, o as f64);
            match i64::try_from(exact) {
                Ok(e) => prop_assert_eq!(got, Value::Int(e)),
                Err(_) => prop_assert_eq!(got, Value::Float(i as f64 * s as f64 + o as f64)),
            }
            prop_assert_eq!(scaled(&Value::Int(i), 1.0, 0.0), Value::Int(i));
            let Value::Float(x) = scaled(&Value::Float(f), fs, o as f64) else {
                panic!("a float stays a float");
            };
            let want = f * fs + o as f64;
            prop_assert!((x - want).abs() <= 1e-9 * want.abs().max(1.0), "{} vs {}", x, want);
        }

        /// With deadbands and no max_interval a reading is published exactly when a field
        /// moved past its deadband from its last published value: so consecutive published
        /// values of a field differ by more than its deadband unless the other field moved,
        /// and no reading that moved past it is held back.
        #[test]
        fn deadbands_publish_exactly_the_moves_past_them(
            values in proptest::collection::vec((-1000i64..1000, -50.0f64..50.0), 1..200),
            dx in 0.0f64..300.0,
            dy in 0.0f64..20.0,
        ) {
            let (mut x, mut y) = (rule(), rule());
            x.deadband = Some(dx);
            y.deadband = Some(dy);
            let r = rules(vec![("x", x), ("y", y)], None);
            let mut gate = Gate::default();
            let t0 = Instant::now();
            let mut last: Option<(i64, f64)> = None;
            for (k, (vx, vy)) in values.into_iter().enumerate() {
                let at = t0 + Duration::from_secs(k as u64);
                let mut rd = reading(at, &[("x", Value::Int(vx)), ("y", Value::Float(vy))]);
                let published = apply(&mut gate, &r, &mut rd);
                let moved_x = last.is_none_or(|(lx, _)| ((vx - lx).abs() as f64) > dx);
                let moved_y = last.is_none_or(|(_, ly)| (vy - ly).abs() > dy);
                prop_assert_eq!(published, moved_x || moved_y, "reading {}", k);
                if let (true, Some((lx, ly))) = (published, last) {
                    prop_assert!(
                        (vx - lx).abs() as f64 > dx || (vy - ly).abs() > dy,
                        "published without a move"
                    );
                }
                if published {
                    last = Some((vx, vy));
                }
            }
        }

        /// With max_interval m, the gap between published readings of a key never exceeds
        /// m plus one reading period, whatever the values; a constant input read every p
        /// with m a multiple of p publishes exactly every m.
        #[test]
        fn max_interval_bounds_the_silence(
            steps in proptest::collection::vec((1u64..=1000, 0i64..3), 1..300),
            m_ms in 1u64..5000,
            p in 1u64..1000,
            k in 1u64..20,
        ) {
            let mut x = rule();
            x.deadband = Some(10.0);
            let r = rules(vec![("x", x)], Some(Duration::from_millis(m_ms)));
            let mut gate = Gate::default();
            let t0 = Instant::now();
            let (mut now, mut last) = (0u64, None::<u64>);
            let period = steps.iter().map(|(d, _)| *d).max().unwrap_or(1);
            for (gap, v) in steps {
                now += gap;
                let mut rd = reading(t0 + Duration::from_millis(now), &[("x", Value::Int(v))]);
                if apply(&mut gate, &r, &mut rd) {
                    if let Some(l) = last {
                        prop_assert!(now - l <= m_ms + period, "{} ms of silence", now - l);
                    }
                    last = Some(now);
                }
            }
            // Constant: exactly every k readings.
            let r = rules(vec![], Some(Duration::from_millis(k * p)));
            let mut gate = Gate::default();
            let published: Vec<u64> = (0..100u64)
                .filter(|i| {
                    let at = t0 + Duration::from_millis(i * p);
                    apply(&mut gate, &r, &mut reading(at, &[("x", Value::Int(7))]))
                })
                .collect();
            let want: Vec<u64> = (0..100).step_by(k as usize).collect();
            prop_assert_eq!(published, want);
        }

        /// Renames and drops, even ones the config would refuse, never lose or duplicate
        /// another field: of a reading with distinct names, every field not dropped comes
        /// out once, under its new name or its own, and the names stay distinct.
        #[test]
        fn renames_and_drops_never_lose_or_duplicate_a_field(
            present in proptest::sample::subsequence(vec!["a", "b", "c", "d", "e"], 0..=5),
            plan in proptest::collection::vec((0usize..5, 0usize..7, any::<bool>()), 0..6),
        ) {
            const NAMES: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];
            let mut list: Vec<(&str, FieldRule)> = Vec::new();
            for (from, to, drop) in plan {
                if list.iter().any(|(n, _)| *n == NAMES[from]) {
                    continue;
                }
                let mut r = rule();
                r.drop = drop;
                r.rename = (!drop).then(|| Arc::from(NAMES[to]));
                list.push((NAMES[from], r));
            }
            let r = rules(list, None);
            let fields: Vec<(&str, Value)> = present
                .iter()
                .enumerate()
                .map(|(i, n)| (*n, Value::Int(i as i64)))
                .collect();
            let mut rd = reading(Instant::now(), &fields);
            prop_assert!(apply(&mut Gate::default(), &r, &mut rd));
            let kept: Vec<&(&str, Value)> = fields
                .iter()
                .filter(|(n, _)| !r.get(n).is_some_and(|r| r.drop))
                .collect();
            prop_assert_eq!(rd.fields.len(), kept.len());
            let mut out = names(&rd);
            for ((name, value), (was, v)) in rd.fields.iter().zip(kept) {
                prop_assert_eq!(value, v);
                let to = r.get(was).and_then(|r| r.rename.as_deref());
                prop_assert!(&**name == *was || Some(&**name) == to);
            }
            out.sort();
            out.dedup();
            prop_assert_eq!(out.len(), rd.fields.len(), "names stay distinct");
        }
    }
}
