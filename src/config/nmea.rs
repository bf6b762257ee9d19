//! `format = "nmea"` on `[[serial]]`: the `sentences` filter, `min_interval`, and where the
//! `{sentence}` placeholder may stand (NMEA inputs only).

use super::{limits, raw, ConfigError, Cx};
use crate::input::format::nmea::{Kind, KindSet};
use crate::input::format::LineFormat;
use crate::topic::Template;
use toml::Spanned;

impl Cx<'_> {
    /// The NMEA format of `[[serial]]` number `i`.
    pub(super) fn nmea(&self, s: &raw::RawSerial, i: usize) -> Result<LineFormat, ConfigError> {
        let key = |k: &str| format!("serial[{i}].{k}");
        let sentences = match &s.sentences {
            None => KindSet::ALL,
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(self.at(
                        list,
                        &key("sentences"),
                        "name at least one sentence type, or leave `sentences` out for all",
                    ));
                }
                let mut kinds = Vec::new();
                for name in list.get_ref() {
                    let kind = Kind::from_name(name).ok_or_else(|| {
                        let known = KindSet::ALL.names().join(", ");
                        self.at(
                            list,
                            &key("sentences"),
                            &format!("`{name}` is not a sentence type the gateway decodes; known: {known} (without the talker: \"GGA\", not \"GPGGA\")"),
                        )
                    })?;
                    kinds.push(kind);
                }
                KindSet::of(kinds)
            }
        };
        let min_interval = match &s.min_interval {
            None => None,
            Some(_) => Some(self.duration(
                &s.min_interval,
                &key("min_interval"),
                std::time::Duration::ZERO,
                limits::NMEA_MIN_INTERVAL,
            )?),
        };
        Ok(LineFormat::Nmea {
            sentences,
            min_interval: min_interval.filter(|d| !d.is_zero()),
        })
    }

    /// `{sentence}` belongs to NMEA inputs only.
    pub(super) fn no_sentence(
        &self,
        topic: &Spanned<String>,
        key: &str,
    ) -> Result<(), ConfigError> {
        if Template::parse(topic.get_ref()).is_ok_and(|t| t.uses_sentence()) {
            return Err(self.at(
                topic,
                key,
                "{sentence} belongs to [[serial]] inputs with format = \"nmea\" only",
            ));
        }
        Ok(())
    }
}
