//! rumqttc's MQTT 3.1.1 and MQTT 5 clients behind the uplink's face ([`Publisher`],
//! [`Events`]), so the uplink's correlation, windowing and queue handling do not care which
//! protocol is spoken.
//!
//! **Invariant:** the event loop's own `inflight` is above the uplink's window (see
//! `flight.rs`), and [`Events::forget`] also clears rumqttc's `state.events`.

use super::face::{Busy, Events, LinkError, LinkEvent, Outbound, Publisher, Refusal};
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

pub use crate::config::limits::MAX_PACKET;

/// The longest topic MQTT can carry (a two-byte length).
pub const MAX_TOPIC: usize = 65_535;

#[derive(Clone)]
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

impl Publisher for Client {
    fn try_publish(&self, m: Outbound) -> Result<(), Busy> {
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

    fn try_disconnect(&self) -> Result<(), Busy> {
        match self {
            Client::V4(c) => c.try_disconnect().map_err(|_| Busy),
            Client::V5(c) => c.try_disconnect().map_err(|_| Busy),
        }
    }

    fn try_subscribe(&self, topic: &str) -> Result<(), Busy> {
        match self {
            Client::V4(c) => c
                .try_subscribe(topic, rumqttc::QoS::AtMostOnce)
                .map_err(|_| Busy),
            Client::V5(c) => c
                .try_subscribe(topic, v5::mqttbytes::QoS::AtMostOnce)
                .map_err(|_| Busy),
        }
    }
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
    connacked: bool,
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
                connacked: false,
            };
            (Client::V5(client), EventLoop::V5(eventloop))
        }
    }
}

fn timeout_s(d: Duration) -> u64 {
    d.as_secs().max(1)
}

impl Events for EventLoop {
    async fn poll(&mut self) -> Result<LinkEvent, LinkError> {
        match self {
            EventLoop::V4(e) => match e.poll().await {
                Ok(ev) => Ok(event4(ev)),
                Err(err) => Err(LinkError {
                    text: err.to_string(),
                    needs_operator: matches!(err, rumqttc::ConnectionError::ConnectionRefused(_))
                        || is_tls_failure(&err),
                    closed_by_peer: matches!(
                        err,
                        rumqttc::ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted)
                    ) || is_closed_by_peer(&err),
                    unread_refusal: None,
                }),
            },
            EventLoop::V5(e) => match e.inner.poll().await {
                Ok(ev) => {
                    let ev = event5(ev);
                    e.connacked |= matches!(ev, LinkEvent::ConnAck { .. });
                    Ok(ev)
                }
                Err(err) => {
                    let before_connack = !std::mem::take(&mut e.connacked);
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
                        closed_by_peer: matches!(
                            err,
                            v5::ConnectionError::MqttState(v5::StateError::ConnectionAborted)
                        ) || is_closed_by_peer(&err),
                        unread_refusal: match err {
                            v5::ConnectionError::MqttState(v5::StateError::Deserialization(
                                v5::mqttbytes::Error::InvalidConnectReturnCode(code),
                            )) if !before_connack && code >= 0x80 => Some(code),
                            _ => None,
                        },
                    })
                }
            },
        }
    }

    fn forget(&mut self) {
        match self {
            // `clean` leaves `state.events` as it was: an `Outgoing::Publish` recorded for a
            // write that then failed would be handed out after the next CONNACK and matched
            // to the wrong request.
            EventLoop::V4(e) => {
                e.clean();
                e.pending.clear();
                e.state.events.clear();
            }
            EventLoop::V5(e) => {
                e.clean();
                e.pending.clear();
                e.state.events.clear();
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
            max_packet: None,
        },
        Event::Incoming(Packet::PubAck(a)) => LinkEvent::PubAck {
            pkid: a.pkid,
            refused: None,
        },
        Event::Outgoing(o) => outgoing(o),
        Event::Incoming(Packet::Publish(p)) => LinkEvent::Message {
            topic: p.topic,
            payload: p.payload.to_vec(),
        },
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
            max_packet: c.properties.as_ref().and_then(|p| p.max_packet_size),
        },
        v5::Event::Incoming(Packet::PubAck(a)) => LinkEvent::PubAck {
            pkid: a.pkid,
            refused: match a.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                other => Some(Refusal {
                    code: puback_code(other),
                    text: format!(
                        "{other:?}{}",
                        a.properties
                            .and_then(|p| p.reason_string)
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                }),
            },
        },
        v5::Event::Outgoing(o) => outgoing(o),
        v5::Event::Incoming(Packet::Publish(p)) => LinkEvent::Message {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload.to_vec(),
        },
        v5::Event::Incoming(_) => LinkEvent::Other,
    }
}

/// The wire value of a PUBACK reason (MQTT 5, 3.4.2.1).
fn puback_code(r: m5::PubAckReason) -> u8 {
    use m5::PubAckReason::*;
    match r {
        Success => 0x00,
        NoMatchingSubscribers => 0x10,
        UnspecifiedError => 0x80,
        ImplementationSpecificError => 0x83,
        NotAuthorized => 0x87,
        TopicNameInvalid => 0x90,
        PacketIdentifierInUse => 0x91,
        QuotaExceeded => 0x97,
        PayloadFormatInvalid => 0x99,
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

/// Whether an I/O error in the chain says the peer closed or reset the connection.
fn is_closed_by_peer(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ConnectionReset | BrokenPipe | UnexpectedEof | ConnectionAborted
            ) {
                return true;
            }
        }
        source = err.source();
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    /// rumqttc records `Outgoing::Publish` before it writes the packet; when the write fails
    /// the event stays in `state.events` and, unless forgotten, is handed out after the next
    /// CONNACK, where it would be matched to the wrong request.
    #[test]
    fn forget_drops_events_recorded_for_a_write_that_failed() {
        let (_c, mut e) =
            rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 10);
        e.state
            .events
            .push_back(rumqttc::Event::Outgoing(Outgoing::Publish(37)));
        let mut e = EventLoop::V4(e);
        e.forget();
        let EventLoop::V4(e) = e else { unreachable!() };
        assert!(e.state.events.is_empty());

        let (_c, mut e) = v5::AsyncClient::new(v5::MqttOptions::new("t", "127.0.0.1", 1), 10);
        e.state
            .events
            .push_back(v5::Event::Outgoing(Outgoing::Publish(37)));
        let mut e = EventLoop::V5(Loop5 {
            inner: e,
            connacked: false,
        });
        e.forget();
        let EventLoop::V5(e) = e else { unreachable!() };
        assert!(e.state.events.is_empty());
    }

    /// Our packet size agrees with rumqttc's for both protocols, with and without the
    /// properties the uplink sets, across the varint boundaries.
    #[test]
    fn packet_size_matches_rumqttc() {
        for len in [
            0usize, 1, 100, 127, 128, 200, 16_000, 16_383, 16_384, 70_000,
        ] {
            for qos in [Qos::AtMostOnce, Qos::AtLeastOnce] {
                let payload = vec![b'x'; len];
                let mut out = Outbound {
                    topic: "site/gw/wx".into(),
                    qos,
                    payload: payload.clone(),
                    ..Default::default()
                };
                let mut p4 = rumqttc::Publish::new(out.topic.clone(), qos4(qos), payload.clone());
                p4.pkid = 1;
                assert_eq!(out.packet_size(false), p4.size(), "v4 {len} {qos:?}");
                let mut p5 = m5::Publish::new(out.topic.clone(), qos5(qos), payload.clone(), None);
                p5.pkid = 1;
                assert_eq!(out.packet_size(true), p5.size(), "v5 {len} {qos:?}");

                out.expiry_s = Some(60);
                out.seq = Some("12-20,25".into());
                out.content_type = Some("batch.json");
                out.alias = Some(3);
                let props = m5::PublishProperties {
                    message_expiry_interval: out.expiry_s,
                    topic_alias: out.alias,
                    user_properties: vec![("seq".into(), out.seq.clone().unwrap())],
                    content_type: out.content_type.map(str::to_string),
                    ..Default::default()
                };
                let mut p5 = m5::Publish::new(out.topic.clone(), qos5(qos), payload, Some(props));
                p5.pkid = 1;
                assert_eq!(out.packet_size(true), p5.size(), "v5 props {len} {qos:?}");
            }
        }
    }

    #[test]
    fn a_closed_socket_is_told_from_a_timeout() {
        use std::io::{Error, ErrorKind};
        let io = |k| rumqttc::ConnectionError::Io(Error::from(k));
        assert!(is_closed_by_peer(&io(ErrorKind::ConnectionReset)));
        assert!(is_closed_by_peer(&io(ErrorKind::BrokenPipe)));
        assert!(!is_closed_by_peer(&io(ErrorKind::ConnectionRefused)));
        assert!(!is_closed_by_peer(&io(ErrorKind::TimedOut)));
        assert!(!is_closed_by_peer(
            &rumqttc::ConnectionError::NetworkTimeout
        ));
        assert!(!is_closed_by_peer(&rumqttc::ConnectionError::MqttState(
            rumqttc::StateError::AwaitPingResp
        )));
        let nested = rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::Io(Error::from(ErrorKind::ConnectionReset)),
        ));
        assert!(is_closed_by_peer(&nested), "{nested}");
    }

    #[test]
    fn refusals_that_cannot_pass_are_told_apart() {
        let r = |code| Refusal {
            code,
            text: String::new(),
        };
        for code in [0x87, 0x90, 0x95, 0x99] {
            assert!(r(code).is_permanent(), "{code:#x}");
        }
        for code in [0x80, 0x83, 0x91, 0x97] {
            assert!(!r(code).is_permanent(), "{code:#x}");
        }
    }
}
