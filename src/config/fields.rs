//! Per-field transforms, for every input: `fields.<name> = { rename, scale, offset, unit,
//! deadband, drop }` and `max_interval`. The raw layer ([`RawFields`], [`RawField`]) and its
//! validation into [`FieldRules`], one piece every input table uses: an input's raw struct
//! holds `fields: RawFields` and `max_interval: Option<Spanned<String>>`, and its
//! validation sets `route.fields = Arc::new(fields::rules(cx, ...)?)`.
//!
//! What the rules mean (applied by [`crate::transform`], in the pipeline, before mapping):
//! per field, `drop` removes it; else `value * scale + offset` (numbers only: text and
//! booleans pass unchanged; an integer stays an integer when scale and offset are whole and
//! the result fits 64 bits, else it becomes a float); then `rename`. `unit` changes no
//! payload: it is kept for Home Assistant discovery and shown by `sensorgate check`. With a
//! `deadband` on any field or a `max_interval`, the input reports by exception.
//!
//! **Invariant:** like the rest of the config, every error names the file, the line and the
//! key (`serial[0].fields.temp.scale`): a rename onto another field's name, an empty or
//! reserved name, a scale of 0 or not finite, a negative deadband never reach the pipeline.

use super::{limits, ConfigError, Cx};
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// `fields.<name> = { ... }` of one input, in name order.
#[derive(Debug, Default)]
pub struct RawFields(pub Vec<(Spanned<String>, Spanned<RawField>)>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    pub rename: Option<Spanned<String>>,
    pub scale: Option<Spanned<f64>>,
    pub offset: Option<Spanned<f64>>,
    pub unit: Option<Spanned<String>>,
    pub deadband: Option<Spanned<f64>>,
    pub drop: Option<Spanned<bool>>,
}

impl<'de> Deserialize<'de> for RawFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = RawFields;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a table of field names, e.g. fields.temp = { scale = 0.1 }")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawFields, A::Error> {
        let mut out = Vec::new();
        while let Some(name) = map.next_key::<Spanned<String>>()? {
            out.push((name, map.next_value::<Spanned<RawField>>()?));
        }
        Ok(RawFields(out))
    }
}

/// `[[synthetic]] fields`: the names of the generated fields (`["temp", "hum"]`), or a
/// table that names them with their transforms (`fields.temp = { scale = 2 }`, `{}` for
/// none).
#[derive(Debug)]
pub enum RawSyntheticFields {
    Names(Vec<String>),
    Rules(RawFields),
}

impl RawSyntheticFields {
    /// The generated fields, in order.
    pub fn names(&self) -> Vec<String> {
        match self {
            RawSyntheticFields::Names(n) => n.clone(),
            RawSyntheticFields::Rules(r) => r.0.iter().map(|(n, _)| n.get_ref().clone()).collect(),
        }
    }

    /// The transforms (none for a list of names).
    pub fn rules(&self) -> &RawFields {
        static NONE: RawFields = RawFields(Vec::new());
        match self {
            RawSyntheticFields::Names(_) => &NONE,
            RawSyntheticFields::Rules(r) => r,
        }
    }
}

impl<'de> Deserialize<'de> for RawSyntheticFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSyntheticFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of field names, or a table fields.<name> = { ... }")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(RawSyntheticFields::Names(names))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                FieldsVisitor.visit_map(map).map(RawSyntheticFields::Rules)
            }
        }
        d.deserialize_any(V)
    }
}

/// What happens to one field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRule {
    /// The name it is published under.
    pub rename: Option<Arc<str>>,
    /// `value * scale + offset`; 1 and 0 when not set.
    pub scale: f64,
    pub offset: f64,
    /// For Home Assistant discovery and `sensorgate check`; not in the payload.
    pub unit: Option<Arc<str>>,
    /// The change (after scale and offset) below which the field does not count as moved.
    pub deadband: Option<f64>,
    /// The field is removed before anything else.
    pub drop: bool,
}

/// The transforms of one input: a rule per field name (the name in the frame), in name
/// order, and `max_interval`. Empty for an input without `fields` and `max_interval`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldRules {
    rules: Vec<(Arc<str>, FieldRule)>,
    pub max_interval: Option<Duration>,
    /// Whether any field has a deadband or `max_interval` is set: the input reports by
    /// exception and its last published values are kept.
    gated: bool,
    /// Whether any rule renames.
    renames: bool,
}

impl FieldRules {
    /// Rules as given (validated by [`rules`], or made by a test).
    pub fn new(rules: Vec<(Arc<str>, FieldRule)>, max_interval: Option<Duration>) -> FieldRules {
        let mut rules = rules;
        rules.sort_by(|a, b| a.0.cmp(&b.0));
        let gated = max_interval.is_some() || rules.iter().any(|(_, r)| r.deadband.is_some());
        let renames = rules.iter().any(|(_, r)| r.rename.is_some());
        FieldRules {
            rules,
            max_interval,
            gated,
            renames,
        }
    }

    /// The rule for the field named `name` in the frame.
    pub fn get(&self, name: &str) -> Option<&FieldRule> {
        self.rules
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()
            .map(|i| &self.rules[i].1)
    }

    /// The `unit` of the field published as `name` (after its rename), for discovery.
    pub fn unit_of(&self, name: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|(n, r)| r.rename.as_deref().unwrap_or(n) == name)
            .and_then(|(_, r)| r.unit.as_deref())
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Arc<str>, FieldRule)> {
        self.rules.iter()
    }

    /// Nothing to do: no rule and no `max_interval`.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.max_interval.is_none()
    }

    /// Whether the input reports by exception (a deadband or `max_interval`).
    pub fn gated(&self) -> bool {
        self.gated
    }

    pub fn renames(&self) -> bool {
        self.renames
    }

    /// The longest name a rule publishes under (for the topic's length), in bytes.
    pub fn longest_rename(&self) -> usize {
        self.rules
            .iter()
            .filter_map(|(_, r)| r.rename.as_ref().map(|n| n.len()))
            .max()
            .unwrap_or(0)
    }
}

/// Validates the `fields` and `max_interval` of the input at `key` (`serial[0]`). `known`:
/// the fields the input can ever have, where the config says (csv columns, regex captures,
/// synthetic fields); a rule for another name is then a typo. `None` where the frames
/// decide (json, kv, BLE).
pub(crate) fn rules(
    cx: &Cx,
    raw: &RawFields,
    max_interval: &Option<Spanned<String>>,
    key: &str,
    known: Option<&[&str]>,
) -> Result<FieldRules, ConfigError> {
    let mut rules: Vec<(Arc<str>, FieldRule)> = Vec::new();
    for (name, field) in &raw.0 {
        let n = name.get_ref();
        let k = |what: &str| format!("{key}.fields.{n}.{what}");
        let fkey = format!("{key}.fields.{n}");
        check_name(cx, name, &fkey, false)?;
        if let Some(known) = known {
            if !known.contains(&n.as_str()) {
                let msg = format!(
                    "`{n}` is not a field of this input (it has {})",
                    known.join(", ")
                );
                return Err(cx.at(name, &fkey, &msg));
            }
        }
        let f = field.get_ref();
        let drop = f.drop.as_ref().is_some_and(|d| *d.get_ref());
        if drop {
            let other = [
                f.rename.as_ref().map(|s| (s.span(), "rename")),
                f.scale.as_ref().map(|s| (s.span(), "scale")),
                f.offset.as_ref().map(|s| (s.span(), "offset")),
                f.unit.as_ref().map(|s| (s.span(), "unit")),
                f.deadband.as_ref().map(|s| (s.span(), "deadband")),
            ];
            if let Some((span, what)) = other.into_iter().flatten().next() {
                return Err(cx.error(
                    span,
                    &k(what),
                    "the field is dropped (drop = true): nothing else applies to it",
                ));
            }
        }
        let scale = match &f.scale {
            None => 1.0,
            Some(s) if s.get_ref().is_finite() && *s.get_ref() != 0.0 => *s.get_ref(),
            Some(s) => return Err(cx.at(s, &k("scale"), "must be a finite number other than 0")),
        };
        let offset = match &f.offset {
            None => 0.0,
            Some(o) if o.get_ref().is_finite() => *o.get_ref(),
            Some(o) => return Err(cx.at(o, &k("offset"), "must be a finite number")),
        };
        let deadband = match &f.deadband {
            None => None,
            Some(d) if d.get_ref().is_finite() && *d.get_ref() >= 0.0 => Some(*d.get_ref()),
            Some(d) => return Err(cx.at(d, &k("deadband"), "must be a finite number, 0 or more")),
        };
        let rename = match &f.rename {
            None => None,
            Some(r) => {
                check_name(cx, r, &k("rename"), true)?;
                Some(Arc::from(r.get_ref().as_str()))
            }
        };
        let unit = match &f.unit {
            None => None,
            Some(u) => {
                cx.bytes_at_most(u, &k("unit"), limits::NAME_BYTES)?;
                if u.get_ref().is_empty() || u.get_ref().chars().any(char::is_control) {
                    return Err(cx.at(
                        u,
                        &k("unit"),
                        "must be non-empty, without control characters",
                    ));
                }
                Some(Arc::from(u.get_ref().as_str()))
            }
        };
        rules.push((
            Arc::from(n.as_str()),
            FieldRule {
                rename,
                scale,
                offset,
                unit,
                deadband,
                drop,
            },
        ));
    }
    // The names published: each rule's (renamed or not, unless dropped), and the input's
    // known fields without a rule. A rename must not land on another of them.
    for (i, (name, field)) in raw.0.iter().enumerate() {
        let Some(to) = &field.get_ref().rename else {
            continue;
        };
        let target = to.get_ref().as_str();
        // Of two renames onto one name, the later in the file is the error.
        let earlier = |j: usize| raw.0[j].1.span().start < field.span().start;
        let taken = rules.iter().enumerate().find_map(|(j, (n, r))| {
            let out = r.rename.as_deref().unwrap_or(n);
            let first = r.rename.is_none() || earlier(j);
            (j != i && !r.drop && out == target && first).then(|| format!("field `{n}`"))
        });
        let taken = taken.or_else(|| {
            let listed = known.unwrap_or(&[]).contains(&target);
            (listed && rules.iter().all(|(n, _)| &**n != target))
                .then(|| "another field of this input".to_string())
        });
        if let Some(other) = taken {
            let key = format!("{key}.fields.{}.rename", name.get_ref());
            return Err(cx.at(
                to,
                &key,
                &format!("`{target}` is already the name of {other}"),
            ));
        }
    }
    let max_interval = match max_interval {
        None => None,
        Some(_) => Some(cx.duration(
            max_interval,
            &format!("{key}.max_interval"),
            Duration::ZERO,
            limits::MAX_INTERVAL,
        )?),
    };
    Ok(FieldRules::new(rules, max_interval))
}

/// A field's name as written in `fields.<name>` or `rename`: non-empty, without control
/// characters; a new name (`rename`) is not the gateway's own (`_ts`, `_gw`, `_seq`,
/// `_clock`: names starting with `_`).
fn check_name(cx: &Cx, name: &Spanned<String>, key: &str, new: bool) -> Result<(), ConfigError> {
    let n = name.get_ref();
    cx.bytes_at_most(name, key, limits::NAME_BYTES)?;
    if n.is_empty() || n.chars().any(char::is_control) {
        return Err(cx.at(
            name,
            key,
            "a field name must be non-empty, without control characters",
        ));
    }
    if new && n.starts_with('_') {
        return Err(cx.at(
            name,
            key,
            "names starting with `_` are the gateway's own (_ts, _gw, _seq, _clock)",
        ));
    }
    Ok(())
}
