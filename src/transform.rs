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
/// a new slot, so its state starts afresh) and one device within it.
///
/// A further attribute a reading may carry (e.g. an NMEA sentence type) joins the key here
/// and in [`Key::of`]; nothing else changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub slot: usize,
    pub device: Option<Arc<str>>,
}

impl Key {
    pub fn of(reading: &Reading) -> Key {
        Key {
            slot: reading.input,
            device: reading.device.clone(),
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
