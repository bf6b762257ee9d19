//! The pump's step 3: rows to messages handed to the client while the window has room,
//! the pacer allows and confirmations keep up; and the end of an on_demand window.
//!
//! **Invariant:** a request is registered in the session (`on_sent`) under the lock that
//! hands it to the client, right after the client took it; a message the client did not
//! take goes back to the front of its lane, and the topic alias it took is given back.

use super::{Look, Pump};
use crate::config::{Protocol, Qos};
use crate::uplink::outbound::{cut, Cut};
use crate::uplink::rfc3339;
use crate::uplink::session::Session;
use std::time::Instant;
use tracing::debug;

/// Where the pump stands in an on_demand window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closing {
    Open,
    SleepSent,
    Disconnecting,
}

impl Pump {
    /// Step 3: hands messages to the client while it [could send](Pump::could_send) and
    /// the pacer allows. Returns when the pacer allows the next one, if it held one back.
    pub(super) fn send(&mut self, f: &mut Session, look: &Look) -> Option<Instant> {
        let (now, now_ms) = (look.now, crate::reading::now_ms() as i64);
        let v5 = self.cfg.protocol == Protocol::V5;
        while self.could_send(f, look) {
            // Backlog waiting beyond what is read ahead, an on_demand window, or a full
            // read-ahead: send partial batches rather than wait for them to fill.
            let force = self.on_demand || self.lanes.len() >= look.read_ahead;
            // A suspect goes one row at a time, before anything else (see strikes.rs).
            let per = if f.alone() { 1 } else { self.per_message };
            let mut rows = self.lanes.next(per, now, force, f.alone())?;
            if let Some(p) = self.pacer.as_mut() {
                if let Err(at) = p.take(now) {
                    self.lanes.unshift(&self.cursors, rows);
                    return Some(at);
                }
            }
            let (lanes, cursors) = (&mut self.lanes, &self.cursors);
            let put_back = |rest| lanes.unshift(cursors, rest);
            let (mut out, item) = match cut(&self.cfg, &mut rows, f.max_packet, now_ms, put_back) {
                Cut::Send(out, item) => (out, item),
                Cut::Condemn(id, why) => {
                    f.condemn(vec![id], why);
                    continue;
                }
            };
            if v5 {
                if let Some((alias, known)) = f.alias(&out.topic) {
                    out.alias = Some(alias);
                    out.alias_only = known;
                }
            }
            let new_alias = (out.alias.is_some() && !out.alias_only).then(|| out.topic.clone());
            if self.handle.client.try_publish(out).is_err() {
                debug!("rumqttc's request channel is full; will retry.");
                if let Some(topic) = new_alias {
                    f.unalias(&topic);
                }
                self.lanes.unshift(&self.cursors, rows);
                return None;
            }
            f.on_sent(item);
        }
        None
    }

    /// on_demand, everything sent and confirmed: says the link sleeps until the next
    /// window, then disconnects.
    pub(super) fn close_window(&mut self, f: &mut Session) {
        match self.closing {
            Closing::Open => {
                let next = f.next_window.map(rfc3339).unwrap_or_default();
                let payload = self.cfg.sleep_payload.replace("{next}", &next).into_bytes();
                let topic = &self.cfg.availability_topic;
                if self
                    .handle
                    .control_locked(f, topic, Qos::AtLeastOnce, true, payload)
                {
                    self.closing = Closing::SleepSent;
                }
            }
            Closing::SleepSent => {
                if self.handle.client.try_disconnect().is_ok() {
                    self.closing = Closing::Disconnecting;
                }
            }
            Closing::Disconnecting => {}
        }
    }
}
