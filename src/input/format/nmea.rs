//! NMEA 0183: one sentence (`$GPGGA,...*hh`) into named values, pure.
//!
//! [`frame`] checks the framing and the checksum and names the talker and the sentence type;
//! [`Frame::decode`] turns the fields of a known type into a [`Sentence`] (see [`decode`] for
//! the per-type fields, `README.md` for the table). Empty NMEA fields are omitted, never zero.
//!
//! **Invariant:** total and pure: any text gives a [`Sentence`] or an [`NmeaError`], never a
//! panic, and allocates in proportion to the line. A frame whose checksum is missing or
//! wrong is [`NmeaError::Bad`]; a proprietary sentence (`$P...`) is
//! [`NmeaError::Proprietary`]; AIS (`!..VDM`), queries and types not listed in [`Kind`] are
//! [`NmeaError::Unsupported`]: those two are skipped and counted apart from bad frames.

mod decode;

use super::{Fields, FrameError};
use crate::reading::Value;
use std::sync::Arc;

/// The sentence types decoded into readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Gga,
    Rmc,
    Vtg,
    Gll,
    Gsa,
    Gsv,
    Zda,
    Hdt,
    Mwv,
    Dpt,
    Dbt,
    Mtw,
    Xdr,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::Gga,
        Kind::Rmc,
        Kind::Vtg,
        Kind::Gll,
        Kind::Gsa,
        Kind::Gsv,
        Kind::Zda,
        Kind::Hdt,
        Kind::Mwv,
        Kind::Dpt,
        Kind::Dbt,
        Kind::Mtw,
        Kind::Xdr,
    ];

    /// The sentence formatter, as in `$GPGGA` and in `sentences = [...]`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Gga => "GGA",
            Kind::Rmc => "RMC",
            Kind::Vtg => "VTG",
            Kind::Gll => "GLL",
            Kind::Gsa => "GSA",
            Kind::Gsv => "GSV",
            Kind::Zda => "ZDA",
            Kind::Hdt => "HDT",
            Kind::Mwv => "MWV",
            Kind::Dpt => "DPT",
            Kind::Dbt => "DBT",
            Kind::Mtw => "MTW",
            Kind::Xdr => "XDR",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// A bit of a [`KindSet`].
    fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// The longest `{sentence}` a topic can receive (every [`Kind::name`] is 3 bytes).
pub const LONGEST_NAME: usize = 3;

/// A set of sentence types (`sentences = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSet(u32);

impl KindSet {
    pub const ALL: KindSet = KindSet(u32::MAX);

    pub fn of(kinds: impl IntoIterator<Item = Kind>) -> KindSet {
        KindSet(kinds.into_iter().fold(0, |s, k| s | k.bit()))
    }

    pub fn contains(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// The names in the set, in [`Kind::ALL`]'s order.
    pub fn names(self) -> Vec<&'static str> {
        Kind::ALL
            .into_iter()
            .filter(|k| self.contains(*k))
            .map(Kind::name)
            .collect()
    }
}

/// Why a line gave no sentence.
#[derive(Debug, Clone, PartialEq)]
pub enum NmeaError {
    /// Not NMEA, or its checksum is missing or wrong, or a field cannot be read.
    Bad(FrameError),
    /// A proprietary sentence (`$P` and a maker's code): skipped.
    Proprietary,
    /// A well-formed sentence of a type not decoded (AIS `!AIVDM`, `$GPGSV`'s cousins such as
    /// `GNS`, a query): skipped. Holds the address, e.g. `AIVDM`.
    Unsupported(String),
}

impl From<FrameError> for NmeaError {
    fn from(e: FrameError) -> Self {
        NmeaError::Bad(e)
    }
}

fn bad(why: impl Into<String>) -> NmeaError {
    NmeaError::Bad(FrameError(why.into()))
}

/// A sentence whose framing and checksum are right, not yet decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<'a> {
    /// Two characters, e.g. `GP`, `GN`, `II`.
    pub talker: &'a str,
    pub kind: Kind,
    /// The comma-separated fields after the address, without the checksum.
    pub fields: Vec<&'a str>,
}

/// One decoded sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sentence {
    pub talker: String,
    pub kind: Kind,
    /// `talker` and `sentence` first, then the type's fields.
    pub fields: Fields,
    /// What makes a change of fix state (RMC and GLL status, GGA fix quality, GSA fix type);
    /// None for other types or when the field is empty.
    pub fix: Option<i64>,
    /// GSV: the message number within its cycle; GSA: the system id (NMEA 4.10). Tells apart
    /// the sentences of one type that one epoch carries.
    pub part: Option<i64>,
    /// RMC: whether the status field says `A` (data valid).
    pub valid: Option<bool>,
    /// RMC and ZDA with both date and time: that instant, milliseconds since the Unix epoch.
    pub utc_ms: Option<i64>,
}

/// The time of a valid fix: RMC with status `A`, a date and a time, as Unix milliseconds.
/// What a clock may be set from (a GGA or ZDA alone says nothing of a fix's validity).
pub fn fix_time(s: &Sentence) -> Option<i64> {
    (s.kind == Kind::Rmc && s.valid == Some(true))
        .then_some(s.utc_ms)
        .flatten()
}

/// Checks the framing and checksum of `line` (without its line ending) and names it.
pub fn frame(line: &str) -> Result<Frame<'_>, NmeaError> {
    let line = line.trim_matches([' ', '\t']);
    let Some(start) = line.chars().next().filter(|c| *c == '$' || *c == '!') else {
        return Err(bad("not an NMEA sentence (no leading `$` or `!`)"));
    };
    let body = &line[1..];
    let (body, sum) = match body.rsplit_once('*') {
        Some(parts) => parts,
        None => return Err(bad("no checksum")),
    };
    let want = match (sum.len(), u8::from_str_radix(sum, 16)) {
        (2, Ok(v)) => v,
        _ => {
            return Err(bad(format!(
                "checksum `{}` is not two hex digits",
                clip(sum)
            )))
        }
    };
    let got = body.bytes().fold(0u8, |a, b| a ^ b);
    if got != want {
        return Err(bad(format!("checksum {want:02X}, computed {got:02X}")));
    }
    let mut parts = body.split(',');
    let address = parts.next().unwrap_or("");
    if !address.bytes().all(|b| b.is_ascii_alphanumeric()) || address.len() < 2 {
        return Err(bad(format!("address `{}` is not NMEA", clip(address))));
    }
    if start == '$' && address.starts_with('P') {
        return Err(NmeaError::Proprietary);
    }
    let unsupported = || NmeaError::Unsupported(address.to_string());
    if start == '!' || address.len() != 5 {
        return Err(unsupported()); // AIS and other encapsulated sentences; queries (`CCGPQ`)
    }
    let (talker, formatter) = address.split_at(2);
    let kind = Kind::from_name(formatter).ok_or_else(unsupported)?;
    Ok(Frame {
        talker,
        kind,
        fields: parts.collect(),
    })
}

/// [`frame`], then [`Frame::decode`].
pub fn decode(line: &str) -> Result<Sentence, NmeaError> {
    frame(line)?.decode()
}

impl Frame<'_> {
    /// Decodes the fields of the sentence; a field that is present but unreadable makes the
    /// whole frame bad.
    pub fn decode(&self) -> Result<Sentence, NmeaError> {
        let mut out = Out {
            fields: Vec::with_capacity(16),
        };
        out.text("talker", self.talker);
        out.text("sentence", self.kind.name());
        let mut s = Sentence {
            talker: self.talker.to_string(),
            kind: self.kind,
            fields: Vec::new(),
            fix: None,
            part: None,
            valid: None,
            utc_ms: None,
        };
        decode::fields(self.kind, &self.fields, &mut out, &mut s)?;
        s.fields = out.fields;
        Ok(s)
    }
}

/// The fields of a sentence being decoded.
struct Out {
    fields: Fields,
}

impl Out {
    fn push(&mut self, name: &str, v: Value) {
        self.fields.push((Arc::from(name), v));
    }

    /// Omitted when empty.
    fn text(&mut self, name: &str, v: &str) {
        if !v.is_empty() {
            self.push(name, Value::Text(v.to_string()));
        }
    }

    fn float(&mut self, name: &str, v: &str) -> Result<Option<f64>, NmeaError> {
        let x = number(name, v)?;
        if let Some(x) = x {
            self.push(name, Value::Float(x));
        }
        Ok(x)
    }

    fn int(&mut self, name: &str, v: &str) -> Result<Option<i64>, NmeaError> {
        let x = integer(name, v)?;
        if let Some(x) = x {
            self.push(name, Value::Int(x));
        }
        Ok(x)
    }
}

/// A decimal number; None when empty.
fn number(name: &str, v: &str) -> Result<Option<f64>, NmeaError> {
    if v.is_empty() {
        return Ok(None);
    }
    let ok = v.bytes().any(|b| b.is_ascii_digit())
        && v.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+'));
    match v.parse::<f64>() {
        Ok(x) if ok && x.is_finite() => Ok(Some(x)),
        _ => Err(bad(format!("{name}: `{}` is not a number", clip(v)))),
    }
}

/// An integer; None when empty.
fn integer(name: &str, v: &str) -> Result<Option<i64>, NmeaError> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<i64>()
        .map(Some)
        .map_err(|_| bad(format!("{name}: `{}` is not an integer", clip(v))))
}

/// At most 20 characters of `s`, escaped, for errors about untrusted input.
fn clip(s: &str) -> String {
    let mut t: String = s.chars().take(20).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t.escape_debug().to_string()
}

#[cfg(test)]
mod robustness_tests {
    //! Any text through the decoder: an answer, never a panic; and well-framed sentences of
    //! every type with random fields (a right checksum), which reach the field decoders.
    use super::*;
    use proptest::prelude::*;

    /// `$`, the address, the fields, and the checksum they need.
    fn framed(address: &str, fields: &[String]) -> String {
        let body = format!("{address},{}", fields.join(","));
        let sum = body.bytes().fold(0u8, |a, b| a ^ b);
        format!("${body}*{sum:02X}")
    }

    fn field() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[0-9]{1,12}(\\.[0-9]{0,10})?",
            "-?[0-9]{0,4}\\.?[0-9]{0,4}",
            "[NSEWATVMKCDRFfNP]",
            any::<String>(),
            "[0-9]{6}(\\.[0-9]{1,4})?",
        ]
    }

    fn check(line: &str) {
        match decode(line) {
            Ok(s) => {
                assert!(s.fields.len() >= 2 && s.fields.len() < 4 * line.len() + 8);
                for (_, v) in &s.fields {
                    if let Value::Float(x) = v {
                        assert!(x.is_finite(), "{line}");
                    }
                }
            }
            Err(NmeaError::Bad(e)) => assert!(!e.0.is_empty()),
            Err(_) => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        #[test]
        fn any_text_never_panics(line in any::<String>()) {
            check(&line);
            check(&format!("${line}"));
        }

        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            check(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn well_framed_sentences_never_panic(
            talker in "[A-Z]{2}",
            kind in proptest::sample::select(Kind::ALL.to_vec()),
            fields in proptest::collection::vec(field(), 0..24),
        ) {
            check(&framed(&format!("{talker}{}", kind.name()), &fields));
        }
    }
}
