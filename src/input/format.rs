//! Line formats of serial inputs: one frame per line, parsed into named values. NMEA 0183
//! sentences are decoded by [`nmea`].
//!
//! **Invariant:** parsing is pure and total: any input returns either fields or a
//! [`FrameError`]; it never panics and allocates at most in proportion to the line.

pub mod nmea;

use crate::reading::Value;
use regex::Regex;
use std::sync::Arc;
use std::time::Duration;

/// The most fields one frame may carry; a frame with more is rejected.
pub const MAX_FIELDS: usize = 256;

/// How the lines of an input are parsed.
#[derive(Debug, Clone)]
pub enum LineFormat {
    /// One JSON object per line; nested objects flatten to `outer.inner`.
    Json,
    /// `temp=21.5 hum=40` (pairs separated by white space, `,` or `;`).
    Kv,
    /// Values separated by `delimiter`, named by `columns` in order.
    Csv {
        columns: Vec<Arc<str>>,
        delimiter: char,
    },
    /// A regular expression whose named captures are the fields.
    Regex(Regex),
    /// The whole line as one text field named `value`.
    Raw,
    /// NMEA 0183 sentences ([`nmea`]): those of the types in `sentences`, at most one per
    /// type (and part) per `min_interval` unless the fix state changed.
    Nmea {
        sentences: nmea::KindSet,
        min_interval: Option<Duration>,
    },
}

/// What ends a line of a serial input (`line_ending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineEnding {
    /// CR, LF or CRLF each end a line; a CRLF counts once (the default: many older
    /// instruments end their lines with CR alone).
    #[default]
    Auto,
    /// LF only; a CR just before it is dropped.
    Lf,
    /// CR only; an LF just after it is dropped.
    Cr,
    /// CR followed by LF only; a CR or LF alone is part of the line.
    CrLf,
}

impl LineEnding {
    pub fn name(self) -> &'static str {
        match self {
            LineEnding::Auto => "auto",
            LineEnding::Lf => "lf",
            LineEnding::Cr => "cr",
            LineEnding::CrLf => "crlf",
        }
    }
}

/// Why a frame was skipped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct FrameError(pub String);

pub type Fields = Vec<(Arc<str>, Value)>;

impl LineFormat {
    pub fn name(&self) -> &'static str {
        match self {
            LineFormat::Json => "json",
            LineFormat::Kv => "kv",
            LineFormat::Csv { .. } => "csv",
            LineFormat::Regex(_) => "regex",
            LineFormat::Raw => "raw",
            LineFormat::Nmea { .. } => "nmea",
        }
    }

    /// Parses one line (without its line ending).
    pub fn parse(&self, line: &str) -> Result<Fields, FrameError> {
        let fields = match self {
            LineFormat::Json => parse_json(line)?,
            LineFormat::Kv => parse_kv(line)?,
            LineFormat::Csv { columns, delimiter } => parse_csv(line, columns, *delimiter)?,
            LineFormat::Regex(re) => parse_regex(line, re)?,
            LineFormat::Raw => vec![(Arc::from("value"), Value::Text(line.to_string()))],
            LineFormat::Nmea { .. } => match nmea::decode(line) {
                Ok(s) => s.fields,
                Err(nmea::NmeaError::Bad(e)) => return Err(e),
                Err(nmea::NmeaError::Proprietary) => {
                    return Err(FrameError("a proprietary sentence".into()))
                }
                Err(nmea::NmeaError::Unsupported(a)) => {
                    return Err(FrameError(format!("`{a}` sentences are not decoded")))
                }
            },
        };
        if fields.is_empty() {
            return Err(FrameError("the frame holds no values".into()));
        }
        if fields.len() > MAX_FIELDS {
            return Err(FrameError(format!("more than {MAX_FIELDS} fields")));
        }
        Ok(fields)
    }
}

fn parse_json(line: &str) -> Result<Fields, FrameError> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| FrameError(format!("not JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(FrameError("JSON frame is not an object".into()));
    };
    let mut out = Vec::new();
    flatten("", &serde_json::Value::Object(map), &mut out, 0)?;
    Ok(out)
}

fn flatten(
    prefix: &str,
    value: &serde_json::Value,
    out: &mut Fields,
    depth: usize,
) -> Result<(), FrameError> {
    use serde_json::Value as J;
    if out.len() > MAX_FIELDS {
        return Err(FrameError(format!("more than {MAX_FIELDS} fields")));
    }
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        J::Object(map) if depth < 8 => {
            for (k, v) in map {
                flatten(&join(k), v, out, depth + 1)?;
            }
        }
        J::Array(items) if depth < 8 => {
            for (i, v) in items.iter().enumerate() {
                flatten(&join(&i.to_string()), v, out, depth + 1)?;
            }
        }
        J::Object(_) | J::Array(_) => return Err(FrameError("JSON nested too deeply".into())),
        J::Null => {}
        J::Bool(b) => out.push((Arc::from(prefix), Value::Bool(*b))),
        J::Number(n) => {
            let v = if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            };
            out.push((Arc::from(prefix), v));
        }
        J::String(s) => out.push((Arc::from(prefix), Value::Text(s.clone()))),
    }
    Ok(())
}

fn parse_kv(line: &str) -> Result<Fields, FrameError> {
    let mut out = Vec::new();
    for token in line
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|t| !t.is_empty())
    {
        let (k, v) = token
            .split_once('=')
            .ok_or_else(|| FrameError(format!("`{}` is not key=value", clip(token))))?;
        if k.is_empty() {
            return Err(FrameError(format!("`{}` has no key", clip(token))));
        }
        out.push((Arc::from(k), Value::infer(v)));
        if out.len() > MAX_FIELDS {
            break;
        }
    }
    Ok(out)
}

fn parse_csv(line: &str, columns: &[Arc<str>], delimiter: char) -> Result<Fields, FrameError> {
    let cells: Vec<&str> = line.split(delimiter).collect();
    if cells.len() != columns.len() {
        return Err(FrameError(format!(
            "{} values where the config names {} columns",
            cells.len(),
            columns.len()
        )));
    }
    Ok(columns
        .iter()
        .zip(cells)
        .filter(|(_, cell)| !cell.trim().is_empty())
        .map(|(name, cell)| (name.clone(), Value::infer(cell)))
        .collect())
}

fn parse_regex(line: &str, re: &Regex) -> Result<Fields, FrameError> {
    let caps = re
        .captures(line)
        .ok_or_else(|| FrameError("the pattern does not match".into()))?;
    Ok(re
        .capture_names()
        .flatten()
        .filter_map(|name| {
            caps.name(name)
                .map(|m| (Arc::from(name), Value::infer(m.as_str())))
        })
        .collect())
}

/// At most 40 characters of `s`, for error messages about untrusted input.
fn clip(s: &str) -> String {
    let mut t: String = s.chars().take(40).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, Value)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (Arc::from(*k), v.clone()))
            .collect()
    }

    #[test]
    fn json_keeps_numbers_numbers() {
        let got = LineFormat::Json.parse(r#"{"seq": 17, "temp": 21.5, "ok": true, "id": "a"}"#);
        assert_eq!(
            got.unwrap(),
            f(&[
                ("seq", Value::Int(17)),
                ("temp", Value::Float(21.5)),
                ("ok", Value::Bool(true)),
                ("id", Value::Text("a".into())),
            ])
        );
    }

    #[test]
    fn json_flattens_and_skips_null() {
        let got = LineFormat::Json.parse(r#"{"a": {"b": 1, "c": [2, 3]}, "n": null}"#);
        assert_eq!(
            got.unwrap(),
            f(&[
                ("a.b", Value::Int(1)),
                ("a.c.0", Value::Int(2)),
                ("a.c.1", Value::Int(3))
            ])
        );
    }

    #[test]
    fn json_rejects_non_objects_and_garbage() {
        for bad in [
            "[1,2]",
            "17",
            "{\"a\":",
            "",
            "{}",
            "\u{0}\u{1}",
            "{\"a\":null}",
        ] {
            assert!(LineFormat::Json.parse(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(20) + &"]".repeat(20);
        assert!(LineFormat::Json
            .parse(&format!("{{\"a\":{deep}}}"))
            .is_err());
        let many: Vec<String> = (0..300).map(|i| format!("\"k{i}\":{i}")).collect();
        assert!(LineFormat::Json
            .parse(&format!("{{{}}}", many.join(",")))
            .is_err());
    }

    #[test]
    fn kv_pairs() {
        let got = LineFormat::Kv.parse("temp=21.5 hum=40,state=on;n=-3");
        assert_eq!(
            got.unwrap(),
            f(&[
                ("temp", Value::Float(21.5)),
                ("hum", Value::Int(40)),
                ("state", Value::Text("on".into())),
                ("n", Value::Int(-3)),
            ])
        );
        assert!(LineFormat::Kv.parse("temp 21.5").is_err());
        assert!(LineFormat::Kv.parse("=5").is_err());
        assert!(LineFormat::Kv.parse("   ").is_err());
    }

    #[test]
    fn csv_columns() {
        let csv = LineFormat::Csv {
            columns: vec![Arc::from("temp"), Arc::from("hum"), Arc::from("note")],
            delimiter: ',',
        };
        assert_eq!(
            csv.parse("21.5,40,").unwrap(),
            f(&[("temp", Value::Float(21.5)), ("hum", Value::Int(40))])
        );
        assert!(csv.parse("21.5,40").is_err());
        assert!(csv.parse("1,2,3,4").is_err());
        let tsv = LineFormat::Csv {
            columns: vec![Arc::from("a"), Arc::from("b")],
            delimiter: '\t',
        };
        assert_eq!(
            tsv.parse("1\tx").unwrap(),
            f(&[("a", Value::Int(1)), ("b", Value::Text("x".into()))])
        );
    }

    #[test]
    fn regex_named_captures() {
        let re =
            Regex::new(r"^T=(?P<temp>-?\d+\.\d+)C H=(?P<hum>\d+)%(?: (?P<opt>\w+))?$").unwrap();
        let fmt = LineFormat::Regex(re);
        assert_eq!(
            fmt.parse("T=-3.25C H=81%").unwrap(),
            f(&[("temp", Value::Float(-3.25)), ("hum", Value::Int(81))])
        );
        assert!(fmt.parse("garbage").is_err());
    }

    #[test]
    fn raw_is_the_whole_line() {
        assert_eq!(
            LineFormat::Raw.parse("$GPGGA,1,2").unwrap(),
            f(&[("value", Value::Text("$GPGGA,1,2".into()))])
        );
    }

    #[test]
    fn infer() {
        assert_eq!(Value::infer("17"), Value::Int(17));
        assert_eq!(Value::infer(" 2.5 "), Value::Float(2.5));
        assert_eq!(Value::infer("1e3"), Value::Float(1000.0));
        assert_eq!(Value::infer("inf"), Value::Text("inf".into()));
        assert_eq!(Value::infer("NaN"), Value::Text("NaN".into()));
        assert_eq!(Value::infer("true"), Value::Bool(true));
        assert_eq!(Value::infer("x"), Value::Text("x".into()));
    }
}
