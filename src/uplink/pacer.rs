//! Pacing of a replay (`replay_rate`): a token bucket of messages per second.
//!
//! **Invariant:** over any stretch of time `t`, at most `rate × t` messages plus one
//! second's worth (the burst) pass.

use std::time::{Duration, Instant};

/// Paces messages at `rate` per second, with a burst of one second's worth.
pub struct Pacer {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// A full bucket at `now`.
    pub fn new(rate: f64, now: Instant) -> Pacer {
        Pacer {
            rate,
            tokens: rate.max(1.0),
            last: now,
        }
    }

    /// Takes a token if one is there; otherwise says when the next one comes.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let burst = self.rate.max(1.0);
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_allows_a_second_of_burst_then_the_rate() {
        let t = Instant::now();
        let mut p = Pacer::new(10.0, t);
        for _ in 0..10 {
            assert!(p.take(t).is_ok());
        }
        let next = p.take(t).unwrap_err();
        assert_eq!(next, t + Duration::from_millis(100));
        assert!(p.take(t + Duration::from_millis(100)).is_ok());
        assert!(p.take(t + Duration::from_millis(100)).is_err());
    }
}
