//! Rows to messages: the message for one row or a batch of one topic ([`outbound`]), and
//! the check that it can go out on this connection at all ([`cut`], [`unsendable`]).
//!
//! **Invariant:** a message too large for the connection never reaches rumqttc: a batch is
//! cut in halves (the rest goes back to the front of its read-ahead), and a single row that
//! still does not fit, or whose topic exceeds MQTT's 65,535 bytes, is condemned.

use super::face::Outbound;
use super::flight::Item;
use super::link::MAX_TOPIC;
use super::read_ahead::Waiting;
use crate::config::{MqttConfig, Protocol, Qos};
use crate::queue::Confirmed;
use std::time::Duration;

/// Row ids as compact runs: `12-20,25,31-40`.
pub fn runs(ids: &[i64]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j == i {
            out.push_str(&ids[i].to_string());
        } else {
            out.push_str(&format!("{}-{}", ids[i], ids[j]));
        }
        i = j + 1;
    }
    out
}

/// The message for `rows` (one row, or a batch of one topic), and what it stands for.
/// The topic alias is set later ([`unsendable`] first: an alias must not be taken for a
/// message that is not sent).
pub fn outbound(cfg: &MqttConfig, rows: &[Waiting], now_ms: i64) -> (Outbound, Item) {
    let first = &rows[0].row;
    let confirmed: Confirmed = rows.iter().map(|w| (w.row.id, w.row.bytes())).collect();
    let qos = if rows.iter().any(|w| w.row.qos == Qos::AtLeastOnce) {
        Qos::AtLeastOnce
    } else {
        Qos::AtMostOnce
    };
    let v5 = cfg.protocol == Protocol::V5;
    let mut out = Outbound {
        qos,
        retain: rows.iter().any(|w| w.row.retain),
        ..Default::default()
    };
    match &cfg.batch {
        None => {
            out.topic = first.topic.to_string();
            out.payload = rows[0].row.payload.to_vec();
        }
        Some(b) => {
            out.payload = super::batch::encode(b, rows.iter().map(|w| w.row.payload.as_ref()));
            if v5 {
                out.topic = first.topic.to_string();
                out.content_type = Some(b.suffix());
            } else {
                out.topic = format!("{}/{}", first.topic, b.suffix());
            }
        }
    }
    if v5 {
        out.seq = Some(runs(confirmed.ids()));
        // A reading stamped before the clock synchronised has no age to count down.
        let known = rows.iter().all(|w| !w.row.age_unknown);
        if let Some(max_age) = cfg.max_age.filter(|_| known) {
            // The broker may drop the message once its oldest reading is older than
            // max_age, as the queue itself would.
            let age = Duration::from_millis(now_ms.saturating_sub(first.created_ms).max(0) as u64);
            out.expiry_s = Some(
                max_age
                    .saturating_sub(age)
                    .as_secs()
                    .clamp(1, u32::MAX as u64) as u32,
            );
        }
    }
    (
        out,
        Item::Rows {
            rows: confirmed,
            qos,
        },
    )
}

/// Why `out` can never be sent as it is on this connection, if it cannot. The size is
/// checked as if the topic alias were set but the topic sent along (the most it can be).
pub fn unsendable(out: &Outbound, v5: bool, max_packet: usize) -> Option<String> {
    if out.topic.len() > MAX_TOPIC {
        return Some(format!(
            "its topic has {} bytes; MQTT carries at most {MAX_TOPIC}",
            out.topic.len()
        ));
    }
    let size = out.packet_size(v5) + if v5 { 3 } else { 0 };
    (size > max_packet).then(|| {
        format!("its packet has {size} bytes; the broker or [mqtt] max_message_size allows {max_packet}")
    })
}

/// What leaves for the rows taken: a message, or a row that can never be sent.
pub enum Cut {
    Send(Outbound, Item),
    Condemn(i64, String),
}

/// The message for `rows`, cut to fit `max_packet`: a batch too large loses its second half
/// to `put_back` until it fits (or is one row, which is then condemned).
pub fn cut(
    cfg: &MqttConfig,
    rows: &mut Vec<Waiting>,
    max_packet: usize,
    now_ms: i64,
    mut put_back: impl FnMut(Vec<Waiting>),
) -> Cut {
    let v5 = cfg.protocol == Protocol::V5;
    loop {
        let (out, item) = outbound(cfg, rows, now_ms);
        let Some(why) = unsendable(&out, v5, max_packet) else {
            return Cut::Send(out, item);
        };
        if rows.len() > 1 {
            put_back(rows.split_off(rows.len() / 2));
            continue;
        }
        return Cut::Condemn(rows[0].row.id, why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_compact_and_exact() {
        assert_eq!(runs(&[5]), "5");
        assert_eq!(runs(&[1, 2, 3, 7, 9, 10]), "1-3,7,9-10");
        assert_eq!(runs(&[]), "");
    }
}
