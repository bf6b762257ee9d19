//! The text `sensorgate check` prints: the config as the gateway resolved it.

use crate::config::{Config, Connection, FieldRules, InputKind, Protocol, WhenFull};
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
    match (&c.homeassistant, &m.batch) {
        (None, _) => {}
        (Some(_), Some(_)) => {
            let _ = writeln!(
                s,
                "Home Assistant discovery: off: [mqtt.batch] sends batches, which Home Assistant cannot read"
            );
        }
        (Some(h), None) => {
            let _ = writeln!(
                s,
                "Home Assistant discovery: configs under {}/, sent again when {} says online{}",
                h.prefix,
                h.status_topic,
                h.expire_after.map_or(String::new(), |e| format!(
                    ", BLE entities expire after {}",
                    humantime::format_duration(e)
                ))
            );
        }
    }
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
            InputKind::Modbus(m) => {
                let bus = match &m.bus {
                    crate::config::modbus::Bus::Rtu {
                        device,
                        baud,
                        parity,
                        stop_bits,
                        data_bits,
                    } => format!(
                        "modbus RTU on {} at {baud} baud {data_bits}{}{stop_bits}",
                        device.display(),
                        match parity {
                            crate::config::modbus::Parity::None => "N",
                            crate::config::modbus::Parity::Even => "E",
                            crate::config::modbus::Parity::Odd => "O",
                        }
                    ),
                    crate::config::modbus::Bus::Tcp { host, port } => {
                        format!("modbus TCP to {host}:{port}")
                    }
                };
                let slaves: Vec<String> = m
                    .slaves
                    .iter()
                    .map(|s| {
                        format!(
                            "{} (unit {}, {} fields in {} reads)",
                            s.device,
                            s.unit,
                            s.fields.len(),
                            s.reads.len()
                        )
                    })
                    .collect();
                format!(
                    "{bus}, every {:?}, timeout {:?}, slaves {}",
                    m.every,
                    m.timeout,
                    slaves.join(", ")
                )
            }
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
        // The example names the first slave of a Modbus bus, the first sentence type an NMEA
        // input publishes.
        let device = match &i.kind {
            InputKind::Modbus(m) => m.slaves.first().map(|s| s.device.as_ref()),
            _ => None,
        };
        let sentence = match &i.kind {
            InputKind::Serial(sc) => match &sc.format {
                LineFormat::Nmea { sentences, .. } => sentences.names().first().copied(),
                _ => None,
            },
            _ => None,
        };
        let labels = topic::Labels { device, sentence };
        let example = i
            .route
            .topic
            .render_labels(&c.gateway.id, &i.name, labels, Some("FIELD"));
        let _ = writeln!(
            s,
            "    -> {} e.g. {example}",
            topic::describe(&i.route.topic, i.route.qos.as_u8(), i.route.retain)
        );
        fields(&mut s, &i.route.fields);
    }
    s
}

/// The per-field transforms of an input, one line each, and how it reports.
fn fields(s: &mut String, rules: &FieldRules) {
    for (name, r) in rules.iter() {
        if r.drop {
            let _ = writeln!(s, "    field {name}: dropped");
            continue;
        }
        let mut what = Vec::new();
        if r.scale != 1.0 {
            what.push(format!("scale {}", r.scale));
        }
        if r.offset != 0.0 {
            what.push(format!("offset {}", r.offset));
        }
        if let Some(to) = &r.rename {
            what.push(format!("published as {to}"));
        }
        if let Some(unit) = &r.unit {
            what.push(format!("unit {unit}"));
        }
        if let Some(d) = r.deadband {
            what.push(format!("deadband {d}"));
        }
        if what.is_empty() {
            what.push("as read".to_string());
        }
        let _ = writeln!(s, "    field {name}: {}", what.join(", "));
    }
    if rules.gated() {
        let _ = writeln!(
            s,
            "    report by exception: a field past its deadband (any change without one){}",
            rules.max_interval.map_or(String::new(), |m| format!(
                ", or {} since the last published reading",
                humantime::format_duration(m)
            ))
        );
    }
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
