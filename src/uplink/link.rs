//! One face over rumqttc's MQTT 3.1.1 and MQTT 5 clients, so the uplink's correlation,
//! windowing and queue handling do not care which protocol is spoken.

use crate::config::{MqttConfig, Protocol, Qos};
use rumqttc::v5::mqttbytes::v5 as m5;
use rumqttc::{v5, Outgoing};
use std::time::Duration;

fn qos4(q: Qos) -> rumqttc::QoS {
    match q {
        Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
        Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
    }
}

fn qos5(q: Qos) -> v5::mqttbytes::QoS {
    match q {
        Qos::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        Qos::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
    }
}

/// A message to hand to rumqttc. The MQTT 5 properties are ignored under 3.1.1.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    pub topic: String,
    pub qos: Qos,
    pub retain: bool,
    pub payload: Vec<u8>,
    /// MQTT 5: seconds the broker may keep the message for subscribers.
    pub expiry_s: Option<u32>,
    /// MQTT 5: the user property `seq` (a row id, or `first-last` for a batch).
    pub seq: Option<String>,
    /// MQTT 5: the content type (a batch's name).
    pub content_type: Option<&'static str>,
    /// MQTT 5: a topic alias; with `alias_only` the topic is left out (already known).
    pub alias: Option<u16>,
    pub alias_only: bool,
}

/// rumqttc's request channel is full (or its event loop is gone): try again later.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

#[derive(Clone)]
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

impl Client {
    /// Queues a publish; fails only when rumqttc's request channel is full (or closed).
    pub fn try_publish(&self, m: Outbound) -> Result<(), Busy> {
        match self {
            Client::V4(c) => c
                .try_publish(m.topic, qos4(m.qos), m.retain, m.payload)
                .map_err(|_| Busy),
            Client::V5(c) => {
                let props = m5::PublishProperties {
                    message_expiry_interval: m.expiry_s,
                    topic_alias: m.alias,
                    user_properties: m.seq.map(|s| vec![("seq".into(), s)]).unwrap_or_default(),
                    content_type: m.content_type.map(str::to_string),
                    ..Default::default()
                };
                let topic = if m.alias_only { String::new() } else { m.topic };
                c.try_publish_with_properties(topic, qos5(m.qos), m.retain, m.payload, props)
                    .map_err(|_| Busy)
            }
        }
    }

    pub fn try_disconnect(&self) -> Result<(), Busy> {
        match self {
            Client::V4(c) => c.try_disconnect().map_err(|_| Busy),
            Client::V5(c) => c.try_disconnect().map_err(|_| Busy),
        }
    }
}

/// What the event loop reported, reduced to what the uplink acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The broker accepted the connection. MQTT 5 brokers may lower the in-flight limit
    /// (`receive_max`) and allow topic aliases.
    ConnAck {
        receive_max: Option<u16>,
        alias_max: u16,
    },
    /// rumqttc wrote a publish with this packet id (0 for QoS 0).
    Published(u16),
    /// A PUBACK. `refused` holds the reason when an MQTT 5 broker did not accept the message.
    PubAck {
        pkid: u16,
        refused: Option<String>,
    },
    /// rumqttc found the packet id still in flight.
    Collision(u16),
    /// rumqttc wrote DISCONNECT.
    Disconnected,
    Other,
}

/// A failed connection, with what the operator needs to know.
#[derive(Debug)]
pub struct LinkError {
    pub text: String,
    /// A certificate that does not verify, or credentials the broker refuses.
    pub needs_operator: bool,
}

// One event loop per uplink, never moved around: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum EventLoop {
    V4(rumqttc::EventLoop),
    V5(Loop5),
}

/// rumqttc's MQTT 5 event loop (reached through `Deref`), and whether its connection got a
/// CONNACK: a connection that fails before one may have met a broker without MQTT 5.
pub struct Loop5 {
    inner: v5::EventLoop,
    acked: bool,
}

impl std::ops::Deref for Loop5 {
    type Target = v5::EventLoop;
    fn deref(&self) -> &v5::EventLoop {
        &self.inner
    }
}

impl std::ops::DerefMut for Loop5 {
    fn deref_mut(&mut self) -> &mut v5::EventLoop {
        &mut self.inner
    }
}

/// Builds the client and event loop for `cfg`.
pub fn connect(cfg: &MqttConfig) -> (Client, EventLoop) {
    let cap = usize::from(cfg.inflight) + 16;
    match cfg.protocol {
        Protocol::V311 => {
            let mut o =
                rumqttc::MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
            o.set_keep_alive(cfg.keep_alive);
            o.set_clean_session(true);
            // Above our window, so packet ids never collide (see flight.rs).
            o.set_inflight(cfg.inflight + 2);
            o.set_max_packet_size(1 << 20, 1 << 20);
            o.set_last_will(rumqttc::LastWill::new(
                &cfg.availability_topic,
                cfg.will_payload.clone(),
                rumqttc::QoS::AtLeastOnce,
                true,
            ));
            if let Some(tls) = &cfg.tls {
                o.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(tls.clone()),
                ));
            }
            if let Some(user) = &cfg.username {
                o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
            }
            let (client, mut eventloop) = rumqttc::AsyncClient::new(o, cap);
            let mut net = rumqttc::NetworkOptions::new();
            net.set_connection_timeout(timeout_s(cfg.connect_timeout));
            eventloop.set_network_options(net);
            (Client::V4(client), EventLoop::V4(eventloop))
        }
        Protocol::V5 => {
            let mut o = v5::MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
            o.set_keep_alive(cfg.keep_alive);
            o.set_clean_start(true);
            o.set_outgoing_inflight_upper_limit(cfg.inflight + 2);
            o.set_max_packet_size(Some(1 << 20));
            o.set_connection_timeout(timeout_s(cfg.connect_timeout));
            o.set_last_will(m5::LastWill::new(
                &cfg.availability_topic,
                cfg.will_payload.clone(),
                v5::mqttbytes::QoS::AtLeastOnce,
                true,
                None,
            ));
            if let Some(tls) = &cfg.tls {
                o.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(tls.clone()),
                ));
            }
            if let Some(user) = &cfg.username {
                o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
            }
            let (client, eventloop) = v5::AsyncClient::new(o, cap);
            let eventloop = Loop5 {
                inner: eventloop,
                acked: false,
            };
            (Client::V5(client), EventLoop::V5(eventloop))
        }
    }
}

fn timeout_s(d: Duration) -> u64 {
    d.as_secs().max(1)
}

impl EventLoop {
    /// Drives the connection one step (connecting first if needed).
    pub async fn poll(&mut self) -> Result<LinkEvent, LinkError> {
        match self {
            EventLoop::V4(e) => match e.poll().await {
                Ok(ev) => Ok(event4(ev)),
                Err(err) => Err(LinkError {
                    text: err.to_string(),
                    needs_operator: matches!(err, rumqttc::ConnectionError::ConnectionRefused(_))
                        || is_tls_failure(&err),
                }),
            },
            EventLoop::V5(e) => match e.inner.poll().await {
                Ok(ev) => {
                    let ev = event5(ev);
                    e.acked |= matches!(ev, LinkEvent::ConnAck { .. });
                    Ok(ev)
                }
                Err(err) => {
                    let before_connack = !std::mem::take(&mut e.acked);
                    Err(LinkError {
                        text: match v5_unspoken(&err).filter(|_| before_connack) {
                            Some(why) => format!("{err}: {why}; if the broker does not speak MQTT 5, set protocol = \"3.1.1\""),
                            None => err.to_string(),
                        },
                        needs_operator: matches!(
                            err,
                            v5::ConnectionError::ConnectionRefused(_)
                                | v5::ConnectionError::MqttState(v5::StateError::ConnFail { .. })
                        ) || is_tls_failure(&err),
                    })
                }
            },
        }
    }

    /// Forgets the connection and every request rumqttc holds: SQLite is the only retry
    /// buffer, so rumqttc must never replay anything on its own.
    pub fn forget(&mut self) {
        match self {
            EventLoop::V4(e) => {
                e.clean();
                e.pending.clear();
            }
            EventLoop::V5(e) => {
                e.clean();
                e.pending.clear();
            }
        }
    }
}

fn event4(ev: rumqttc::Event) -> LinkEvent {
    use rumqttc::{Event, Packet};
    match ev {
        Event::Incoming(Packet::ConnAck(_)) => LinkEvent::ConnAck {
            receive_max: None,
            alias_max: 0,
        },
        Event::Incoming(Packet::PubAck(a)) => LinkEvent::PubAck {
            pkid: a.pkid,
            refused: None,
        },
        Event::Outgoing(o) => outgoing(o),
        Event::Incoming(_) => LinkEvent::Other,
    }
}

fn event5(ev: v5::Event) -> LinkEvent {
    use m5::{Packet, PubAckReason};
    match ev {
        v5::Event::Incoming(Packet::ConnAck(c)) => LinkEvent::ConnAck {
            receive_max: c.properties.as_ref().and_then(|p| p.receive_max),
            alias_max: c
                .properties
                .as_ref()
                .and_then(|p| p.topic_alias_max)
                .unwrap_or(0),
        },
        v5::Event::Incoming(Packet::PubAck(a)) => LinkEvent::PubAck {
            pkid: a.pkid,
            refused: match a.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                other => Some(format!(
                    "{other:?}{}",
                    a.properties
                        .and_then(|p| p.reason_string)
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                )),
            },
        },
        v5::Event::Outgoing(o) => outgoing(o),
        v5::Event::Incoming(_) => LinkEvent::Other,
    }
}

fn outgoing(o: Outgoing) -> LinkEvent {
    match o {
        Outgoing::Publish(pkid) => LinkEvent::Published(pkid),
        Outgoing::AwaitAck(pkid) => LinkEvent::Collision(pkid),
        Outgoing::Disconnect => LinkEvent::Disconnected,
        _ => LinkEvent::Other,
    }
}

/// Why an MQTT 5 connection that failed before its CONNACK may have failed for the
/// protocol version, if it failed the way a broker that speaks only 3.1.1 makes it fail:
/// a CONNACK that does not parse as MQTT 5 (aedes answers with the 3.1.1 code 1,
/// "unacceptable protocol version", and closes), a refusal of the version, a connection
/// closed after the CONNECT, or no CONNACK at all (amqtt never answers). A TCP connection
/// that cannot be made at all says nothing about the protocol.
fn v5_unspoken(e: &v5::ConnectionError) -> Option<&'static str> {
    use v5::{ConnectionError as E, StateError as S};
    match e {
        E::ConnectionRefused(m5::ConnectReturnCode::UnsupportedProtocolVersion) => {
            Some("the broker refused MQTT 5")
        }
        E::NotConnAck(_) | E::MqttState(S::Deserialization(_)) => {
            Some("the broker's answer is not MQTT 5")
        }
        E::MqttState(S::ConnectionAborted) => {
            Some("the broker closed the connection before its CONNACK")
        }
        E::Timeout(_) => Some("no CONNACK within connect_timeout"),
        _ => None,
    }
}

/// Whether a connection failed in TLS: rumqttc reports a handshake failure either as its
/// `Tls` error or, when the peer's alert arrives with the first MQTT read, as an I/O error
/// wrapping rustls's error.
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<rustls::Error>().is_some()
            || err.downcast_ref::<rumqttc::TlsError>().is_some()
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
        }
        source = err.source();
    }
    false
}
