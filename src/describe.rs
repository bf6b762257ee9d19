//! The text `sensorgate check` prints: the config as the gateway resolved it.

use crate::config::{Config, Connection, InputKind, Protocol, WhenFull};
use crate::input::format::LineFormat;
use crate::topic;
use std::fmt::Write;

pub fn describe(c: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "config {} is valid", c.file.display());
    let _ = writeln!(
        s,
        "gateway {}: queue {}",
        c.gateway.id,
        c.queue_path().display()
    );
    let m = &c.mqtt;
    let _ = writeln!(
        s,
        "mqtt {}:{} as {} (keep-alive {:?}, in flight {}, availability {})",
        m.host, m.port, m.client_id, m.keep_alive, m.inflight, m.availability_topic
    );
    let _ = writeln!(
        s,
        "uplink: profile {}, MQTT {}, {}, {}, connect timeout {:?}, backoff {:?}..{:?}, ack timeout {:?}, {}{}",
        m.profile.name(),
        match m.protocol {
            Protocol::V311 => "3.1.1",
            Protocol::V5 => "5",
        },
        match &m.batch {
            None => "one message per queued row".to_string(),
            Some(b) => format!(
                "batches of up to {} readings within {:?} ({})",
                b.max_readings,
                b.max_delay,
                b.suffix()
            ),
        },
        match m.connection {
            Connection::Persistent => "persistent connection".to_string(),
            Connection::OnDemand { flush_every } => format!("on demand every {flush_every:?}"),
        },
        m.connect_timeout,
        m.backoff_min,
        m.backoff_max,
        m.ack_timeout,
        m.replay_rate
            .map_or("no replay limit".to_string(), |r| format!("replay at most {r} messages/s")),
        if m.live_first { ", live readings first" } else { "" },
    );
    let q = &c.queue;
    let _ = writeln!(
        s,
        "queue max {} bytes, max age {}, when full {}, commit every {} messages or {:?}",
        q.max_size,
        q.max_age.map_or("none".to_string(), |a| format!("{a:?}")),
        match q.when_full {
            WhenFull::DropOldest => "drop_oldest",
            WhenFull::DropNewest => "drop_newest",
        },
        q.commit_every,
        q.commit_linger
    );
    let _ = writeln!(s, "inputs:");
    for i in &c.inputs {
        let what = match &i.kind {
            InputKind::Serial(sc) => {
                let fmt = match &sc.format {
                    LineFormat::Csv { columns, .. } => {
                        format!(
                            "csv [{}]",
                            columns
                                .iter()
                                .map(|c| c.as_ref())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                    LineFormat::Regex(re) => format!("regex {}", re.as_str()),
                    LineFormat::Nmea {
                        sentences,
                        min_interval,
                    } => format!(
                        "nmea [{}]{}",
                        sentences.names().join(", "),
                        min_interval
                            .map(|d| format!(", min_interval {}", humantime::format_duration(d)))
                            .unwrap_or_default()
                    ),
                    f => f.name().to_string(),
                };
                format!(
                    "serial {} at {} baud, {fmt}, line ending {}",
                    sc.device.display(),
                    sc.baud,
                    sc.line_ending.name()
                )
            }
            InputKind::Ble(b) => format!(
                "ble on {}, {} listed devices{}, {} GATT, min interval {:?}",
                b.adapter.as_deref().unwrap_or("the first adapter"),
                b.devices.len(),
                if b.allow_unknown {
                    " and any other"
                } else {
                    ""
                },
                b.gatt.len(),
                b.min_interval
            ),
            InputKind::Synthetic(sc) => format!(
                "synthetic {}/s, fields [{}]",
                sc.rate,
                sc.fields
                    .iter()
                    .map(|c| c.as_ref())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let _ = writeln!(s, "  {}: {what}", i.name);
        // An NMEA input's example names the first sentence type it publishes.
        let sentence = match &i.kind {
            InputKind::Serial(sc) => match &sc.format {
                LineFormat::Nmea { sentences, .. } => sentences.names().first().copied(),
                _ => None,
            },
            _ => None,
        };
        let labels = topic::Labels {
            device: None,
            sentence,
        };
        let example = i
            .route
            .topic
            .render_labels(&c.gateway.id, &i.name, labels, Some("FIELD"));
        let _ = writeln!(
            s,
            "    -> {} e.g. {example}",
            topic::describe(&i.route.topic, i.route.qos.as_u8(), i.route.retain)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_nmea_input_is_described_with_its_sentences_and_an_example_topic() {
        let text = "[gateway]\nid = \"gw1\"\nstate_dir = \"/tmp/x\"\n[mqtt]\nurl = \"mqtt://h\"\n\
                    [[serial]]\nname = \"gps\"\ndevice = \"/dev/ttyACM0\"\nformat = \"nmea\"\n\
                    topic = \"site/{gateway}/{input}/{sentence}\"\nsentences = [\"RMC\", \"GGA\"]\n\
                    min_interval = \"10s\"\n";
        let c = Config::parse(std::path::Path::new("t.toml"), text).unwrap();
        let d = describe(&c);
        assert!(d.contains("nmea [GGA, RMC], min_interval 10s"), "{d}");
        assert!(d.contains("e.g. site/gw1/gps/GGA"), "{d}");
    }
}
