//! A binary-safe MQTT 5 subscriber (rumqttc's v5 client on its own thread): keeps every
//! message with its properties and arrival time, and reads batches back into readings with
//! its own decoders (zstd, raw DEFLATE, CBOR, JSON), not the gateway's.

use super::runtime::Background;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub content_type: Option<String>,
    pub user: Vec<(String, String)>,
    pub expiry: Option<u32>,
    pub retain: bool,
    pub at: Instant,
}

pub struct Sub5 {
    msgs: Arc<Mutex<Vec<Msg>>>,
    _thread: Background,
}

impl Sub5 {
    /// Subscribes to `filter` at QoS 1 with a session that outlives reconnects; returns
    /// once the broker confirmed the subscription.
    pub fn start(port: u16, filter: &str, id: &str) -> Sub5 {
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let (subscribed, is_subscribed) = std::sync::mpsc::channel();
        let sink = msgs.clone();
        let (filter, id) = (filter.to_string(), id.to_string());
        let thread = Background::spawn("mqtt5-sub", move || async move {
            let mut o = MqttOptions::new(id, "127.0.0.1", port);
            o.set_clean_start(false);
            o.set_session_expiry_interval(Some(600));
            o.set_max_packet_size(Some(4 << 20));
            o.set_keep_alive(Duration::from_secs(5));
            let (client, mut ev) = AsyncClient::new(o, 100);
            client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let props = p.properties.clone().unwrap_or_default();
                        sink.lock().unwrap().push(Msg {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            content_type: props.content_type,
                            user: props.user_properties,
                            expiry: props.message_expiry_interval,
                            retain: p.retain,
                            at: Instant::now(),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        is_subscribed
            .recv_timeout(Duration::from_secs(10))
            .expect("the subscriber's SUBACK within 10 s");
        Sub5 {
            msgs,
            _thread: thread,
        }
    }

    pub fn messages(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Every reading in the messages on topics under `prefix`, batches unpacked, with the
    /// arrival time of its message.
    pub fn readings(&self, prefix: &str) -> Vec<(serde_json::Value, Instant)> {
        let mut out = Vec::new();
        for m in self
            .messages()
            .iter()
            .filter(|m| m.topic.starts_with(prefix))
        {
            for r in unpack(m) {
                out.push((r, m.at));
            }
        }
        out
    }
}

/// The batch name of a message: its content type (MQTT 5) or its topic's last level.
pub fn batch_name(m: &Msg) -> Option<String> {
    let name = m
        .content_type
        .clone()
        .unwrap_or_else(|| m.topic.rsplit('/').next().unwrap_or("").to_string());
    name.starts_with("batch.").then_some(name)
}

/// The readings a message holds: one, or a batch's elements.
pub fn unpack(m: &Msg) -> Vec<serde_json::Value> {
    let Some(name) = batch_name(m) else {
        return vec![serde_json::from_slice(&m.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&m.payload).into())
        })];
    };
    let parts: Vec<&str> = name.split('.').collect();
    let raw = match parts.get(2) {
        None => m.payload.clone(),
        Some(&"zst") => zstd::stream::decode_all(m.payload.as_slice()).expect("zstd"),
        Some(&"deflate") => {
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(m.payload.as_slice())
                .read_to_end(&mut out)
                .expect("raw deflate");
            out
        }
        Some(other) => panic!("unknown compression {other} in {name}"),
    };
    let items: Vec<serde_json::Value> = match parts.get(1) {
        Some(&"json") => serde_json::from_slice(&raw).expect("a JSON array"),
        Some(&"cbor") => ciborium::from_reader(raw.as_slice()).expect("a CBOR array"),
        other => panic!("unknown encoding {other:?} in {name}"),
    };
    items
}
