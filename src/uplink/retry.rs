//! When the poller tries again: the reconnect backoff, doubled with jitter up to
//! `backoff_max`, and the rule that brings it back to `backoff_min`.
//!
//! **Architecture Invariant:** the backoff returns to `backoff_min` only when a connection
//! proved stable: up for a keep-alive interval and at least one row's PUBACK (a [`Trial`]
//! passed), or an on_demand window that delivered and ended as planned. A CONNACK alone
//! resets nothing, or a broker that accepts and then drops the gateway would see a
//! reconnect storm. Drops of connections that never proved stable are `flaps`, logged once
//! per episode.

use super::face::LinkError;
use crate::backoff::Backoff;
use crate::config::MqttConfig;
use std::time::{Duration, Instant};
use tracing::{debug, error, warn};

/// A connection not yet proved stable: when it came up, and whether a row's PUBACK arrived
/// (the birth message alone proves little).
#[derive(Debug, Clone, Copy)]
pub struct Trial {
    pub since: Instant,
    pub delivered: bool,
}

impl Trial {
    pub fn new(since: Instant) -> Trial {
        Trial {
            since,
            delivered: false,
        }
    }

    /// Whether the connection has proved stable by `now`.
    pub fn passed(&self, now: Instant, keep_alive: Duration) -> bool {
        self.delivered && now.duration_since(self.since) >= keep_alive
    }
}

/// The backoff and the episode of failures it belongs to.
#[derive(Debug)]
pub struct Retry {
    backoff: Backoff,
    /// Drops of connections that had not proved stable, in this episode.
    pub flaps: u32,
    /// The last failure's text without its digits: the same failure again is logged once.
    pub last_error: Option<String>,
}

impl Retry {
    pub fn new(cfg: &MqttConfig) -> Retry {
        Retry {
            backoff: Backoff::new(cfg.backoff_min, cfg.backoff_max),
            flaps: 0,
            last_error: None,
        }
    }

    /// How long to wait now ([`Backoff::next_wait`]: jitter, so gateways that lost the same
    /// broker do not come back at once); the backoff doubles for next time.
    pub fn next_wait(&mut self) -> Duration {
        self.backoff.next_wait()
    }

    /// A connection proved stable: the episode is over.
    pub fn reset(&mut self) {
        self.backoff.reset();
        self.flaps = 0;
    }

    /// A connection failed or could not be made (`online`: it had come up; `unproven`: it
    /// had not proved stable, a flap). Logs a lost connection, the start of a flapping
    /// episode, or a broker out of reach; the same failure again only at debug.
    pub fn failed(&mut self, online: bool, unproven: bool, e: &LinkError) {
        let text = &e.text;
        let same: String = text.chars().filter(|c| !c.is_ascii_digit()).collect();
        if unproven {
            self.flaps += 1;
        }
        if online && unproven && self.flaps >= 2 {
            if self.flaps == 2 {
                warn!(error = %text, retry_in = ?self.backoff.step(), "The broker accepts the connection and then drops it; backing off longer each time until a connection holds.");
            } else {
                debug!(error = %text, flaps = self.flaps, "Connection dropped again before it proved stable.");
            }
        } else if online {
            warn!(error = %text, "Connection to the broker lost; queueing on disk.");
        } else if self.last_error.as_deref() == Some(same.as_str()) {
            debug!(error = %text, retry_in = ?self.backoff.step(), "Cannot reach the broker.");
        } else if e.needs_operator {
            // A certificate that does not verify, or credentials the broker refuses, will
            // not fix themselves: an operator must act.
            error!(error = %text, "Broker refused the connection (TLS or credentials); retrying with backoff.");
        } else {
            warn!(error = %text, "Cannot reach the broker; queueing on disk and retrying.");
        }
        self.last_error = Some(same);
    }
}
