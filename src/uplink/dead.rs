//! Dead letters leaving the outbox: the pump's third trip to the SQLite threads moves
//! condemned rows to the queue's dead-letter table ([`Burials`]), and [`DeadLog`] keeps the
//! journal readable while it does.
//!
//! **Invariant:** a condemned row is never sent again: it waits in the session's `dead`
//! list, then in [`Burials::ids`] while its trip runs; reads skip both. A burial that fails
//! hands its rows back to the session, to be tried again.
//! **Invariant:** every dead letter is logged at ERROR, one by one up to
//! [`DeadLog::PER_MINUTE`] a minute, then summed up once a minute.

use super::session::Condemned;
use crate::metrics::Metrics;
use crate::queue::threads::{Panicked, Trip};
use crate::queue::{lock, SharedQueue};
use crate::queue::{Burial, QueueError};
use std::time::{Duration, Instant};
use tracing::{debug, error};

/// Dead letters are logged one by one up to [`DeadLog::PER_MINUTE`] a minute, then counted
/// and summed up: a denied topic at 10 readings a second must not flood the journal.
#[derive(Debug, Default)]
pub struct DeadLog {
    since: Option<Instant>,
    logged: u32,
    quiet: u64,
    /// Failed burials in a row.
    failures: u32,
}

impl DeadLog {
    pub const PER_MINUTE: u32 = 10;

    /// Whether to log this one; says how many went unlogged in the last minute.
    fn log_one(&mut self, now: Instant) -> bool {
        if self
            .since
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            if self.quiet > 0 {
                error!(count = self.quiet, "More messages moved to the dead letters in the last minute (sensorgate queue dead list).");
            }
            *self = DeadLog {
                since: Some(now),
                failures: self.failures,
                ..DeadLog::default()
            };
        }
        self.logged += 1;
        if self.logged > Self::PER_MINUTE {
            self.quiet += 1;
        }
        self.logged <= Self::PER_MINUTE
    }
}

/// What was buried, or the error and the rows still to bury.
type Buried = Result<Vec<(Condemned, Burial)>, (QueueError, Vec<Condemned>)>;

/// A burial that failed: the queue's error (none when the trip panicked) and the rows to
/// hand back to the session.
pub struct Failed {
    pub error: Option<QueueError>,
    pub rest: Vec<Condemned>,
}

/// The burial under way, if any, and the log of those done.
#[derive(Default)]
pub struct Burials {
    trip: Option<(Trip<Buried>, u64)>,
    /// The rows that trip is burying.
    ids: Vec<i64>,
    log: DeadLog,
}

impl Burials {
    pub fn busy(&self) -> bool {
        self.trip.is_some()
    }

    /// When the burial under way started (ms), if one is.
    pub fn since(&self) -> Option<u64> {
        self.trip.as_ref().map(|t| t.1)
    }

    /// The rows being buried.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// Starts burying `dead` (nothing if empty).
    pub fn start(&mut self, queue: &SharedQueue, dead: Vec<Condemned>) {
        if dead.is_empty() {
            return;
        }
        self.ids = dead.iter().flat_map(|c| c.ids.iter().copied()).collect();
        let q = queue.clone();
        let task = crate::queue::threads::spawn(move || {
            let mut q = lock(&q);
            let now_ms = crate::reading::now_ms() as i64;
            let mut done = Vec::new();
            let mut left = dead.into_iter();
            while let Some(c) = left.next() {
                match q.bury(&c.ids, &c.reason, now_ms) {
                    Ok(b) => done.push((c, b)),
                    Err(e) => {
                        let mut rest = vec![c];
                        rest.extend(left);
                        return Err((e, rest));
                    }
                }
            }
            Ok(done)
        });
        self.trip = Some((task, crate::reading::now_ms()));
    }

    /// The burial under way, once back (pending for ever while none is). Cancel-safe.
    pub async fn done(&mut self) -> Result<Buried, Panicked> {
        let r = match &mut self.trip {
            Some((t, _)) => t.await,
            None => std::future::pending().await,
        };
        self.trip = None;
        self.ids.clear();
        r
    }

    /// Logs and counts a burial that came back; a failure says what to hand back.
    pub fn report(
        &mut self,
        done: Result<Buried, Panicked>,
        metrics: &Metrics,
    ) -> Result<(), Failed> {
        match done {
            Ok(Ok(done)) => {
                for (c, b) in done {
                    for row in &b.buried {
                        if self.log.log_one(super::now()) {
                            error!(seq = row.id, topic = %row.topic, bytes = row.bytes, reason = %c.reason, "Message cannot be delivered; moved to the dead letters (sensorgate queue dead).");
                        }
                    }
                    Metrics::add(&metrics.dead, b.buried.len() as u64);
                    if b.discarded > 0 {
                        error!(
                            discarded = b.discarded,
                            "Dead letters over their room; the oldest were discarded."
                        );
                    }
                }
                self.log.failures = 0;
                Metrics::add(&metrics.progress, 1);
                Ok(())
            }
            Ok(Err((e, rest))) => {
                if self.log.failures == 0 {
                    error!(error = %e, "Could not move messages to the dead letters; they are not sent, retrying every second.");
                } else {
                    debug!(error = %e, "Could not move messages to the dead letters.");
                }
                self.log.failures += 1;
                Err(Failed {
                    error: Some(e),
                    rest,
                })
            }
            Err(e) => {
                error!(error = %e, "Dead-letter task failed; retrying in 1s.");
                Err(Failed {
                    error: None,
                    rest: Vec::new(),
                })
            }
        }
    }
}
