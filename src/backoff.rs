//! Exponential backoff with jitter: the wait between attempts that fail, shared by every
//! loop that retries (the broker connection, a serial port, a BLE scan session or runtime, a
//! GATT connection).
//!
//! **Invariant:** each wait is drawn between half and all of the current step, which starts
//! at `min` and doubles after every wait up to `max`: no wait is longer than `max`, and
//! gateways that lost the same broker or bus at the same moment do not retry in step.
//! [`Backoff::reset`] returns the step to `min`; when to call it (an open port, a scan that
//! ran, a connection that proved stable) is the caller's decision.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The doubling wait between failed attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

/// `cancel` fired during a [`Backoff::pause`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl Backoff {
    /// A backoff whose step starts at `min` and doubles up to `max` (at least `min`).
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            step: min,
        }
    }

    /// The current step: the next wait is drawn between half of it and all of it.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// The next wait (between half the step and the step), and the step doubles.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.step.mul_f64(0.5 + fastrand::f64() * 0.5);
        self.step = self.step.saturating_mul(2).min(self.max);
        wait
    }

    /// Back to the first step.
    pub fn reset(&mut self) {
        self.step = self.min;
    }

    /// Sleeps out [`Backoff::next_wait`], or less if `cancel` fires first.
    pub async fn pause(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        let wait = self.next_wait();
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(()),
            _ = cancel.cancelled() => Err(Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn waits_double_with_jitter_up_to_max_and_reset_to_min() {
        let cancel = CancellationToken::new();
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let mut steps = Vec::new();
        for _ in 0..6 {
            let step = b.step();
            let t0 = Instant::now();
            b.pause(&cancel).await.unwrap();
            let waited = t0.elapsed();
            assert!(
                waited >= step / 2 && waited <= step,
                "waited {waited:?} on a step of {step:?}"
            );
            steps.push(step.as_millis());
        }
        assert_eq!(steps, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.step(), 100 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_spreads_the_waits() {
        let mut b = Backoff::new(1000 * MS, 1000 * MS);
        let waits: std::collections::HashSet<Duration> = (0..20).map(|_| b.next_wait()).collect();
        assert!(waits.len() > 1, "20 waits, all {waits:?}");
        assert!(waits.iter().all(|w| *w >= 500 * MS && *w <= 1000 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_ends_a_pause_at_once() {
        let cancel = CancellationToken::new();
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let t0 = Instant::now();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            c.cancel();
        });
        assert_eq!(b.pause(&cancel).await, Err(Cancelled));
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }

    #[test]
    fn max_below_min_is_min() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        b.next_wait();
        assert_eq!(b.step(), Duration::from_secs(2));
    }
}
