//! Validation of the `[mqtt]` table: the broker URL, timings, credentials, the availability
//! topic, and TLS (read and checked here, so a bad file is an error at its line).

use super::locate::Cx;
use super::{limits, raw, ConfigError, MqttConfig};
use crate::topic::Template;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

impl Cx<'_> {
    pub(super) fn mqtt(&self, m: raw::RawMqtt, gateway: &str) -> Result<MqttConfig, ConfigError> {
        let url = m.url.get_ref();
        let (host, port, tls) =
            parse_mqtt_url(url).map_err(|msg| self.at(&m.url, "mqtt.url", &msg))?;
        let tls = self.tls(&m, tls)?;
        let profile = self.profile(&m)?;
        let d = profile.defaults();
        let keep_alive = self.duration(
            &m.keep_alive,
            "mqtt.keep_alive",
            d.keep_alive,
            limits::KEEP_ALIVE,
        )?;
        if let Some(u) = &m.username {
            self.bytes_at_most(u, "mqtt.username", limits::MQTT_STRING)?;
        }
        let password = match &m.password_file {
            None => None,
            Some(p) => Some(
                std::fs::read_to_string(p.get_ref())
                    .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                    .map_err(|e| format!("cannot read `{}`: {e}", p.get_ref()))
                    .and_then(|s| match s.len() {
                        0..=limits::MQTT_STRING => Ok(s),
                        n => Err(format!(
                            "the password is {n} bytes; MQTT carries at most 65535"
                        )),
                    })
                    .map_err(|e| self.at(p, "mqtt.password_file", &e))?,
            ),
        };
        let backoff_min = self.duration(
            &m.backoff_min,
            "mqtt.backoff_min",
            d.backoff_min,
            limits::BACKOFF_MIN,
        )?;
        let backoff_max = self.duration(
            &m.backoff_max,
            "mqtt.backoff_max",
            d.backoff_max.max(backoff_min),
            limits::BACKOFF_MAX,
        )?;
        if backoff_min > backoff_max {
            let v = m
                .backoff_max
                .as_ref()
                .expect("the default is at least backoff_min");
            return Err(self.at(v, "mqtt.backoff_max", "must be at least mqtt.backoff_min"));
        }
        let inflight = match &m.inflight {
            None => d.inflight,
            Some(v) if (1..=1000).contains(v.get_ref()) => *v.get_ref() as u16,
            Some(v) => return Err(self.at(v, "mqtt.inflight", "must be between 1 and 1000")),
        };
        let client_id = match &m.client_id {
            None => format!("sensorgate-{gateway}"),
            Some(c) if !c.get_ref().is_empty() && c.get_ref().len() <= limits::CLIENT_ID_BYTES => {
                c.get_ref().clone()
            }
            Some(c) => return Err(self.at(c, "mqtt.client_id", "must be 1 to 256 bytes")),
        };
        let availability_topic = match &m.availability_topic {
            None => format!("sensorgate/{gateway}/status"),
            Some(t) => {
                let tpl = Template::parse(t.get_ref())
                    .map_err(|e| self.at(t, "mqtt.availability_topic", &e))?;
                if tpl.per_field() {
                    return Err(self.at(
                        t,
                        "mqtt.availability_topic",
                        "{field} has no meaning here",
                    ));
                }
                let topic = tpl.render(gateway, "", None);
                if topic.len() > limits::MQTT_STRING {
                    return Err(self.at(
                        t,
                        "mqtt.availability_topic",
                        "an MQTT topic holds at most 65535 bytes",
                    ));
                }
                topic
            }
        };
        let payload = |v: &Option<toml::Spanned<String>>, key: &str, default: &str| match v {
            None => Ok(default.to_string()),
            Some(p) if p.get_ref().len() <= 1024 => Ok(p.get_ref().clone()),
            Some(p) => Err(self.at(p, key, "must be at most 1024 bytes")),
        };
        let birth_payload = payload(&m.birth_payload, "mqtt.birth_payload", "online")?;
        let will_payload = payload(&m.will_payload, "mqtt.will_payload", "offline")?;
        let sleep_payload = payload(
            &m.sleep_payload,
            "mqtt.sleep_payload",
            "asleep until {next}",
        )?;
        let protocol = self.protocol(&m)?;
        if protocol == super::Protocol::V5 && keep_alive < Duration::from_secs(5) {
            let at = m.keep_alive.as_ref().map_or(m.url.span(), |v| v.span());
            return Err(self.error(
                at,
                "mqtt.keep_alive",
                "must be at least 5s with protocol = \"5\"",
            ));
        }
        let connection = self.connection(&m)?;
        let batch = self.batch(m.batch.as_ref(), d.batch.clone())?;
        let replay_rate = self.replay_rate(&m)?;
        let max_message_size = match &m.max_message_size {
            None => super::limits::MAX_PACKET,
            Some(v) => {
                let n = super::units::parse_size(v.get_ref())
                    .map_err(|e| self.at(v, "mqtt.max_message_size", &e))?;
                if !(128..=super::limits::MAX_PACKET as u64).contains(&n) {
                    return Err(self.at(
                        v,
                        "mqtt.max_message_size",
                        "must be between 128B and 1MiB",
                    ));
                }
                n as usize
            }
        };
        Ok(MqttConfig {
            host,
            port,
            client_id,
            keep_alive,
            username: m.username.map(toml::Spanned::into_inner),
            password,
            connect_timeout: self.duration(
                &m.connect_timeout,
                "mqtt.connect_timeout",
                d.connect_timeout,
                limits::CONNECT_TIMEOUT,
            )?,
            backoff_min,
            backoff_max,
            inflight,
            ack_timeout: self.duration(
                &m.ack_timeout,
                "mqtt.ack_timeout",
                d.ack_timeout,
                limits::ACK_TIMEOUT,
            )?,
            availability_topic,
            birth_payload,
            will_payload,
            sleep_payload,
            protocol,
            profile,
            batch,
            connection,
            replay_rate,
            live_first: m.live_first.unwrap_or(false),
            max_age: None,
            status_topic: None,
            tls,
            max_message_size,
        })
    }

    /// Reads and checks the TLS files (only with `mqtts://`).
    pub(super) fn tls(
        &self,
        m: &raw::RawMqtt,
        enabled: bool,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
        use super::tls::{client_config, Which};
        let files = [
            ("mqtt.ca_file", &m.ca_file),
            ("mqtt.cert_file", &m.cert_file),
            ("mqtt.key_file", &m.key_file),
        ];
        if !enabled {
            if let Some((key, Some(v))) = files.iter().find(|(_, v)| v.is_some()) {
                return Err(self.at(v, key, "TLS files need an mqtts:// url"));
            }
            return Ok(None);
        }
        let client = match (&m.cert_file, &m.key_file) {
            (Some(c), Some(k)) => Some((
                Path::new(c.get_ref().as_str()),
                Path::new(k.get_ref().as_str()),
            )),
            (Some(c), None) => {
                return Err(self.at(c, "mqtt.cert_file", "mutual TLS needs key_file as well"))
            }
            (None, Some(k)) => {
                return Err(self.at(k, "mqtt.key_file", "mutual TLS needs cert_file as well"))
            }
            (None, None) => None,
        };
        let ca = m.ca_file.as_ref().map(|c| Path::new(c.get_ref().as_str()));
        client_config(ca, client).map(Some).map_err(|e| {
            let (key, at) = match e.which {
                Which::Ca => (
                    "mqtt.ca_file",
                    m.ca_file.as_ref().map_or(m.url.span(), |v| v.span()),
                ),
                Which::Cert => (
                    "mqtt.cert_file",
                    m.cert_file.as_ref().map_or(m.url.span(), |v| v.span()),
                ),
                Which::Key => (
                    "mqtt.key_file",
                    m.key_file.as_ref().map_or(m.url.span(), |v| v.span()),
                ),
            };
            self.error(at, key, &e.message)
        })
    }
}

/// Splits `mqtt://host:port` or `mqtts://host:port` into host, port (1883, or 8883 with TLS)
/// and whether TLS is on.
pub(super) fn parse_mqtt_url(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("mqtt://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true)
    } else {
        return Err(format!("`{url}` is not an MQTT URL; write it like mqtt://broker.example:1883 or mqtts://broker.example:8883"));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains(['/', '@', '?']) {
        return Err(format!("`{url}`: only mqtt://host[:port] is understood"));
    }
    let (host, port) = if let Some(h) = rest.strip_prefix('[') {
        // [::1]:1883
        let (h, p) = h
            .split_once(']')
            .ok_or_else(|| format!("`{url}`: unclosed [ in the host"))?;
        (h.to_string(), p.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    let port = match port {
        None if tls => 8883,
        None => 1883,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{url}`: `{p}` is not a port"))?,
    };
    Ok((host, port, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok = |h: &str, p: u16, tls: bool| Ok((h.to_string(), p, tls));
        assert_eq!(
            parse_mqtt_url("mqtt://127.0.0.1:1883"),
            ok("127.0.0.1", 1883, false)
        );
        assert_eq!(parse_mqtt_url("mqtt://broker"), ok("broker", 1883, false));
        assert_eq!(
            parse_mqtt_url("mqtt://[::1]:18830"),
            ok("::1", 18830, false)
        );
        assert_eq!(parse_mqtt_url("mqtts://broker"), ok("broker", 8883, true));
        assert_eq!(parse_mqtt_url("mqtts://b:443/"), ok("b", 443, true));
        assert!(parse_mqtt_url("http://x").is_err());
        assert!(parse_mqtt_url("mqtt://:1883").is_err());
        assert!(parse_mqtt_url("mqtt://h:0").is_err());
        assert!(parse_mqtt_url("mqtt://h:99999").is_err());
    }
}
