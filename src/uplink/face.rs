//! The face the uplink sees of its MQTT client: what it hands over ([`Outbound`] through a
//! [`Publisher`]) and what it hears back ([`LinkEvent`]s from [`Events`]).
//!
//! `link.rs` implements both traits over rumqttc's MQTT 3.1.1 and 5 clients; the uplink's
//! tests implement them with a scripted fake, so the poller and the pump run in-process
//! under `tokio::time::pause()`.
//!
//! **Invariant:** a `Publisher` handles requests strictly in the order it accepted them and
//! reports each as [`LinkEvent::Published`] when it writes it (the correlation in
//! `flight.rs` rests on this); `Events::forget` drops every request and event it holds, so
//! nothing is replayed from memory.

use crate::config::Qos;
use std::future::Future;

/// The client side: hands requests to the event loop without waiting.
pub trait Publisher: Send + Sync + 'static {
    /// Queues a publish; fails only when the request channel is full (or closed).
    fn try_publish(&self, m: Outbound) -> Result<(), Busy>;
    /// Queues a DISCONNECT.
    fn try_disconnect(&self) -> Result<(), Busy>;
    /// Queues a SUBSCRIBE at QoS 0 (Home Assistant's status topic).
    fn try_subscribe(&self, topic: &str) -> Result<(), Busy>;
}

/// The event-loop side: drives the connection and reports what happened.
pub trait Events: Send + 'static {
    /// Drives the connection one step (connecting first if needed).
    fn poll(&mut self) -> impl Future<Output = Result<LinkEvent, LinkError>> + Send;
    /// Forgets the connection and every request and event held: SQLite is the only retry
    /// buffer, so nothing may be replayed on its own.
    fn forget(&mut self);
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

impl Outbound {
    /// The size of the PUBLISH packet this becomes, header included, as the broker counts
    /// it against its maximum packet size.
    pub fn packet_size(&self, v5: bool) -> usize {
        let topic = if self.alias_only { 0 } else { self.topic.len() };
        let mut remaining = 2 + topic + self.payload.len();
        if self.qos != Qos::AtMostOnce {
            remaining += 2;
        }
        if v5 {
            let mut props = 0;
            if self.expiry_s.is_some() {
                props += 5;
            }
            if self.alias.is_some() {
                props += 3;
            }
            if let Some(t) = self.content_type {
                props += 3 + t.len();
            }
            if let Some(s) = &self.seq {
                props += 1 + 2 + "seq".len() + 2 + s.len();
            }
            remaining += varint_len(props) + props;
        }
        1 + varint_len(remaining) + remaining
    }
}

/// Bytes of MQTT's variable byte integer for `n`.
fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// rumqttc's request channel is full (or its event loop is gone): try again later.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

/// What the event loop reported, reduced to what the uplink acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The broker accepted the connection. MQTT 5 brokers may lower the in-flight limit
    /// (`receive_max`) and allow topic aliases.
    ConnAck {
        receive_max: Option<u16>,
        alias_max: u16,
        /// MQTT 5: the largest packet the broker accepts.
        max_packet: Option<u32>,
    },
    /// rumqttc wrote a publish with this packet id (0 for QoS 0).
    Published(u16),
    /// A PUBACK. `refused` holds the reason when an MQTT 5 broker did not accept the message.
    PubAck {
        pkid: u16,
        refused: Option<Refusal>,
    },
    /// rumqttc found the packet id still in flight.
    Collision(u16),
    /// rumqttc wrote DISCONNECT.
    Disconnected,
    /// A message on a topic the uplink subscribed to.
    Message {
        topic: String,
        payload: Vec<u8>,
    },
    Other,
}

/// Why an MQTT 5 broker did not accept a message (a PUBACK reason code of 0x80 or above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u8,
    pub text: String,
}

impl Refusal {
    /// Whether sending the same message again can never succeed: not authorised (0x87),
    /// topic name invalid (0x90), packet too large (0x95), payload format invalid (0x99).
    /// Others (quota exceeded 0x97, unspecified, implementation specific) may pass later.
    pub fn is_permanent(&self) -> bool {
        matches!(self.code, 0x87 | 0x90 | 0x95 | 0x99)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:02x} {}", self.code, self.text)
    }
}

/// A failed connection, with what the operator needs to know.
#[derive(Debug)]
pub struct LinkError {
    pub text: String,
    /// A certificate that does not verify, or credentials the broker refuses.
    pub needs_operator: bool,
    /// The broker closed the connection (end of stream, reset, broken pipe): not a timeout,
    /// a refused connect or a protocol error.
    pub closed_by_peer: bool,
    /// MQTT 5: a PUBACK whose reason code rumqttc 0.25 cannot read (0x95, packet too
    /// large, is not in its table) ended the connection: the broker refused the oldest
    /// message in flight (brokers acknowledge in order) with this code.
    pub unread_refusal: Option<u8>,
}
