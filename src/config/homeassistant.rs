//! `[homeassistant]`: MQTT discovery (the strict serde layer and its validation).
//!
//! **Invariant:** as everywhere in the config, an error names the file, the line and the key.

use super::{ConfigError, Cx};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHomeAssistant {
    /// Publish discovery configs (default false).
    pub discovery: Option<bool>,
    /// The discovery prefix (default "homeassistant").
    pub prefix: Option<Spanned<String>>,
    /// Home Assistant's birth and will topic (default "homeassistant/status"): every config
    /// is sent again when it says "online".
    pub status_topic: Option<Spanned<String>>,
    /// BLE entities: unavailable after this long without a state ("0s": never).
    pub expire_after: Option<Spanned<String>>,
}

/// Discovery as configured (present only with `discovery = true`).
#[derive(Debug, Clone, PartialEq)]
pub struct HomeAssistantConfig {
    pub prefix: String,
    pub status_topic: String,
    /// BLE entities only: `None` never.
    pub expire_after: Option<Duration>,
}

/// A topic the gateway publishes to or subscribes to: levels without wildcards.
fn plain_topic(cx: &Cx, v: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
    let t = v.get_ref();
    let bad = t.is_empty()
        || t.len() > super::limits::MQTT_STRING
        || t.contains(['+', '#', '\0'])
        || t.split('/').any(str::is_empty);
    if bad {
        return Err(cx.at(
            v,
            key,
            "a topic of non-empty levels without + or # (at most 65535 bytes)",
        ));
    }
    Ok(t.clone())
}

impl Cx<'_> {
    pub(super) fn homeassistant(
        &self,
        raw: Option<RawHomeAssistant>,
    ) -> Result<Option<HomeAssistantConfig>, ConfigError> {
        let raw = raw.unwrap_or_default();
        let prefix = match &raw.prefix {
            None => "homeassistant".to_string(),
            Some(p) => plain_topic(self, p, "homeassistant.prefix")?,
        };
        let status_topic = match &raw.status_topic {
            None => "homeassistant/status".to_string(),
            Some(t) => plain_topic(self, t, "homeassistant.status_topic")?,
        };
        let expire_after = self.duration(
            &raw.expire_after,
            "homeassistant.expire_after",
            Duration::from_secs(900),
            Duration::ZERO..=Duration::from_secs(7 * 86_400),
        )?;
        if raw.discovery != Some(true) {
            return Ok(None);
        }
        Ok(Some(HomeAssistantConfig {
            prefix,
            status_topic,
            expire_after: (!expire_after.is_zero()).then_some(expire_after),
        }))
    }
}
