//! Link profiles and the uplink's shape on the wire: protocol, batching, compression,
//! connection mode and replay pacing (`[mqtt]` and `[mqtt.batch]`).
//!
//! A profile only supplies defaults: every key set in the file wins over it.

use super::locate::Cx;
use super::ConfigError;
use super::{limits, raw};
use std::time::Duration;

/// `mqtt.profile`: defaults that fit a kind of link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Lan,
    Cellular,
    Satellite,
}

/// The defaults a profile gives.
#[derive(Debug, Clone)]
pub struct ProfileDefaults {
    pub keep_alive: Duration,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub inflight: u16,
    pub ack_timeout: Duration,
    pub batch: Option<BatchConfig>,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Lan => "lan",
            Profile::Cellular => "cellular",
            Profile::Satellite => "satellite",
        }
    }

    pub fn defaults(self) -> ProfileDefaults {
        let s = Duration::from_secs;
        match self {
            // A local network: talk often, give up early, retry soon, no batching.
            Profile::Lan => ProfileDefaults {
                keep_alive: s(60),
                connect_timeout: s(10),
                backoff_min: Duration::from_millis(500),
                backoff_max: s(60),
                inflight: 64,
                ack_timeout: s(60),
                batch: None,
            },
            // Paid per megabyte, round trips of 100 ms to 2 s, carrier NATs that forget idle
            // flows after a few minutes.
            Profile::Cellular => ProfileDefaults {
                keep_alive: s(240),
                connect_timeout: s(30),
                backoff_min: s(2),
                backoff_max: s(300),
                inflight: 32,
                ack_timeout: s(90),
                batch: Some(BatchConfig {
                    max_readings: 50,
                    max_delay: s(30),
                    encoding: Encoding::Json,
                    compression: Compression::Zstd,
                }),
            },
            // Paid per byte, round trips of seconds, a few thousand bits per second.
            Profile::Satellite => ProfileDefaults {
                keep_alive: s(1200),
                connect_timeout: s(120),
                backoff_min: s(15),
                backoff_max: s(1800),
                inflight: 8,
                ack_timeout: s(300),
                batch: Some(BatchConfig {
                    max_readings: 200,
                    max_delay: s(300),
                    encoding: Encoding::Cbor,
                    compression: Compression::Zstd,
                }),
            },
        }
    }
}

/// `mqtt.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V311,
    V5,
}

/// `mqtt.batch.encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Cbor,
}

/// `mqtt.batch.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
    Deflate,
}

/// `[mqtt.batch]`: readings that map to the same topic leave as one message.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    pub max_readings: usize,
    pub max_delay: Duration,
    pub encoding: Encoding,
    pub compression: Compression,
}

impl BatchConfig {
    /// What a batch is called: the topic suffix under MQTT 3.1.1 and the content type
    /// under MQTT 5, e.g. `batch.json` or `batch.cbor.zst`.
    pub fn suffix(&self) -> &'static str {
        match (self.encoding, self.compression) {
            (Encoding::Json, Compression::None) => "batch.json",
            (Encoding::Json, Compression::Zstd) => "batch.json.zst",
            (Encoding::Json, Compression::Deflate) => "batch.json.deflate",
            (Encoding::Cbor, Compression::None) => "batch.cbor",
            (Encoding::Cbor, Compression::Zstd) => "batch.cbor.zst",
            (Encoding::Cbor, Compression::Deflate) => "batch.cbor.deflate",
        }
    }
}

/// `mqtt.connection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Stay connected; reconnect with backoff.
    Persistent,
    /// Connect every `flush_every` (or earlier when the backlog fills a batch window), send
    /// the backlog, disconnect.
    OnDemand { flush_every: Duration },
}

impl Cx<'_> {
    pub(super) fn profile(&self, m: &raw::RawMqtt) -> Result<Profile, ConfigError> {
        Ok(match m.profile.as_ref() {
            None => Profile::Lan,
            Some(p) => match p.get_ref().as_str() {
                "lan" => Profile::Lan,
                "cellular" => Profile::Cellular,
                "satellite" => Profile::Satellite,
                other => {
                    return Err(self.at(
                        p,
                        "mqtt.profile",
                        &format!("`{other}`: expected \"lan\", \"cellular\" or \"satellite\""),
                    ))
                }
            },
        })
    }

    pub(super) fn protocol(&self, m: &raw::RawMqtt) -> Result<Protocol, ConfigError> {
        Ok(match m.protocol.as_ref() {
            None => Protocol::V311,
            Some(p) => match p.get_ref().as_str() {
                "3.1.1" | "4" => Protocol::V311,
                "5" | "5.0" => Protocol::V5,
                other => {
                    return Err(self.at(
                        p,
                        "mqtt.protocol",
                        &format!("`{other}`: expected \"3.1.1\" or \"5\""),
                    ))
                }
            },
        })
    }

    pub(super) fn connection(&self, m: &raw::RawMqtt) -> Result<Connection, ConfigError> {
        let on_demand = match m.connection.as_ref() {
            None => false,
            Some(c) => match c.get_ref().as_str() {
                "persistent" => false,
                "on_demand" => true,
                other => {
                    return Err(self.at(
                        c,
                        "mqtt.connection",
                        &format!("`{other}`: expected \"persistent\" or \"on_demand\""),
                    ))
                }
            },
        };
        if !on_demand {
            if let Some(f) = &m.flush_every {
                return Err(self.at(
                    f,
                    "mqtt.flush_every",
                    "only means something with connection = \"on_demand\"",
                ));
            }
            return Ok(Connection::Persistent);
        }
        let flush_every = self.duration(
            &m.flush_every,
            "mqtt.flush_every",
            Duration::from_secs(15 * 60),
            limits::FLUSH_EVERY,
        )?;
        Ok(Connection::OnDemand { flush_every })
    }

    /// `[mqtt.batch]` over the profile's batching (if any). `max_readings = 0` turns it off.
    pub(super) fn batch(
        &self,
        b: Option<&raw::RawBatch>,
        profile: Option<BatchConfig>,
    ) -> Result<Option<BatchConfig>, ConfigError> {
        let Some(b) = b else { return Ok(profile) };
        let base = profile.unwrap_or(BatchConfig {
            max_readings: 50,
            max_delay: Duration::from_secs(30),
            encoding: Encoding::Json,
            compression: Compression::None,
        });
        let max_readings = match &b.max_readings {
            None => base.max_readings,
            Some(v) if (0..=10_000).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                return Err(self.at(
                    v,
                    "mqtt.batch.max_readings",
                    "must be between 0 (no batching) and 10000",
                ))
            }
        };
        if max_readings == 0 {
            return Ok(None);
        }
        let max_delay = self.duration(
            &b.max_delay,
            "mqtt.batch.max_delay",
            base.max_delay,
            limits::BATCH_DELAY,
        )?;
        let encoding = match &b.encoding {
            None => base.encoding,
            Some(e) => match e.get_ref().as_str() {
                "json" => Encoding::Json,
                "cbor" => Encoding::Cbor,
                other => {
                    return Err(self.at(
                        e,
                        "mqtt.batch.encoding",
                        &format!("`{other}`: expected \"json\" or \"cbor\""),
                    ))
                }
            },
        };
        let compression = match &b.compression {
            None => base.compression,
            Some(c) => match c.get_ref().as_str() {
                "none" => Compression::None,
                "zstd" => Compression::Zstd,
                "deflate" => Compression::Deflate,
                other => {
                    return Err(self.at(
                        c,
                        "mqtt.batch.compression",
                        &format!("`{other}`: expected \"none\", \"zstd\" or \"deflate\""),
                    ))
                }
            },
        };
        Ok(Some(BatchConfig {
            max_readings,
            max_delay,
            encoding,
            compression,
        }))
    }

    /// `mqtt.replay_rate`: messages per second at most, or None for no limit.
    pub(super) fn replay_rate(&self, m: &raw::RawMqtt) -> Result<Option<f64>, ConfigError> {
        match &m.replay_rate {
            None => Ok(None),
            Some(v) if *v.get_ref() == 0.0 => Ok(None),
            Some(v) if limits::REPLAY_RATE.contains(v.get_ref()) => Ok(Some(*v.get_ref())),
            Some(v) => Err(self.at(
                v,
                "mqtt.replay_rate",
                "messages per second: 0 (no limit) or at least 0.01, at most 1000000",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn mqtt(extra: &str) -> crate::config::MqttConfig {
        let text = format!(
            "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n{extra}"
        );
        Config::parse(Path::new("t.toml"), &text).unwrap().mqtt
    }

    #[test]
    fn a_profile_gives_defaults_and_every_key_wins_over_it() {
        let lan = mqtt("");
        assert_eq!(lan.profile, Profile::Lan);
        assert_eq!(lan.keep_alive, Duration::from_secs(60));
        assert_eq!(lan.batch, None);
        let sat = mqtt("profile = \"satellite\"\n");
        assert_eq!(sat.keep_alive, Duration::from_secs(1200));
        assert_eq!(sat.connect_timeout, Duration::from_secs(120));
        assert_eq!(sat.inflight, 8);
        assert_eq!(sat.batch, Profile::Satellite.defaults().batch);
        let tuned = mqtt(
            "profile = \"satellite\"\nkeep_alive = \"10m\"\ninflight = 4\n[mqtt.batch]\ncompression = \"deflate\"\n",
        );
        assert_eq!(tuned.keep_alive, Duration::from_secs(600));
        assert_eq!(tuned.inflight, 4);
        let b = tuned.batch.unwrap();
        assert_eq!(
            (b.max_readings, b.encoding, b.compression),
            (200, Encoding::Cbor, Compression::Deflate),
            "the other batch keys still come from the profile"
        );
        assert_eq!(
            mqtt("profile = \"cellular\"\n[mqtt.batch]\nmax_readings = 0\n").batch,
            None
        );
    }

    #[test]
    fn connection_modes_and_pacing() {
        assert_eq!(mqtt("").connection, Connection::Persistent);
        assert_eq!(
            mqtt("connection = \"on_demand\"\n").connection,
            Connection::OnDemand {
                flush_every: Duration::from_secs(900)
            }
        );
        assert_eq!(mqtt("replay_rate = 0\n").replay_rate, None);
        assert_eq!(mqtt("replay_rate = 50\n").replay_rate, Some(50.0));
        assert_eq!(mqtt("protocol = \"5\"\n").protocol, Protocol::V5);
    }
}
