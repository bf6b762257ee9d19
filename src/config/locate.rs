//! Locating config errors: the file being validated (`Cx`), and how a byte span or a toml
//! error becomes `file:line:column: key: message`.

use super::{units, ConfigError};
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::time::Duration;
use toml::Spanned;
/// The file being validated, for locating errors.
pub(crate) struct Cx<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Cx<'_> {
    pub(super) fn error(&self, span: Range<usize>, key: &str, message: &str) -> ConfigError {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError {
            file: self.path.display().to_string(),
            line,
            column,
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    pub(super) fn at<T>(&self, spanned: &Spanned<T>, key: &str, message: &str) -> ConfigError {
        self.error(spanned.span(), key, message)
    }

    /// Turns a toml/serde error into a located one, recovering the key from the source.
    pub(super) fn serde_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let key = self.key_at(span.start);
        let message = e.message().trim().replace('\n', " ");
        self.error(span, &key, &message)
    }

    /// The dotted key at byte `offset`: the enclosing `[table]` plus the key on that line.
    pub(super) fn key_at(&self, offset: usize) -> String {
        let offset = offset.min(self.text.len());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        let line = self.text[line_start..line_end].trim();
        let mut table = String::new();
        for l in self.text[..line_start].lines().rev() {
            let l = l.trim();
            if l.starts_with('[') {
                table = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
                break;
            }
        }
        if line.starts_with('[') {
            return line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
        }
        let mut key = line
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        // An inline table on a line of a multi-line array (`registers = [` above): the
        // array's key.
        if key.starts_with('{') {
            key = self.text[..line_start]
                .lines()
                .rev()
                .take_while(|l| !l.trim().starts_with('['))
                .find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    v.trim()
                        .starts_with('[')
                        .then(|| k.trim().trim_matches('"'))
                })
                .unwrap_or("");
        }
        match (table.is_empty(), key.is_empty()) {
            (true, true) => "(top level)".into(),
            (true, false) => key.to_string(),
            (false, true) => table,
            (false, false) => format!("{table}.{key}"),
        }
    }

    /// A duration within `range` (both ends included), or `default` when the key is absent.
    /// Every duration in the config has a range: no value can overflow the clock arithmetic
    /// (`Instant + d`) or make a loop spin.
    pub(super) fn duration(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
        range: RangeInclusive<Duration>,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => {
                let d = units::parse_duration(s.get_ref()).map_err(|m| self.at(s, key, &m))?;
                if !range.contains(&d) {
                    return Err(self.at(s, key, &units::out_of_range(s.get_ref(), &range)));
                }
                Ok(d)
            }
        }
    }

    /// A string of at most `max` bytes (MQTT strings, names that end up in topics).
    pub(super) fn bytes_at_most(
        &self,
        v: &Spanned<String>,
        key: &str,
        max: usize,
    ) -> Result<(), ConfigError> {
        let len = v.get_ref().len();
        if len > max {
            return Err(self.at(v, key, &format!("is {len} bytes long; at most {max}")));
        }
        Ok(())
    }
}
