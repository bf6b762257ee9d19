//! When the poller tries again: the reconnect backoff, doubled with jitter up to
//! `backoff_max`, and the rule that brings it back to `backoff_min`.
//!
//! **Architecture Invariant:** the backoff returns to `backoff_min` only when a connection
//! proved stable: up for a keep-alive interval and at least one row's PUBACK (a [`Trial`]
//! passed), or an on_demand window that delivered and ended as planned. A CONNACK alone
//! resets nothing, or a broker that accepts and then drops the gateway would see a
//! reconnect storm. Drops of connections that never proved stable are `flaps`, logged once
//! per episode.

use crate::config::MqttConfig;
use std::time::{Duration, Instant};

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
    min: Duration,
    max: Duration,
    /// The next wait, before jitter.
    pub backoff: Duration,
    /// Drops of connections that had not proved stable, in this episode.
    pub flaps: u32,
    /// The last failure's text without its digits: the same failure again is logged once.
    pub last_error: Option<String>,
}

impl Retry {
    pub fn new(cfg: &MqttConfig) -> Retry {
        Retry {
            min: cfg.backoff_min,
            max: cfg.backoff_max,
            backoff: cfg.backoff_min,
            flaps: 0,
            last_error: None,
        }
    }

    /// How long to wait now: the backoff less up to half of it (jitter, so gateways that
    /// lost the same broker do not come back at once). Doubles the backoff for next time.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
        self.backoff = (self.backoff * 2).min(self.max);
        wait
    }

    /// A connection proved stable: the episode is over.
    pub fn reset(&mut self) {
        self.backoff = self.min;
        self.flaps = 0;
    }
}
