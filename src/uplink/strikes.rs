//! Strikes and suspects: how the uplink finds a message an MQTT 3.1.1 broker will not take.
//!
//! An MQTT 3.1.1 broker cannot say why it drops a client: a drop counts against the oldest
//! request written and not acknowledged (a *strike*) only when the broker closed the socket
//! within [`STRIKE_WINDOW`] of that write, no later request was acknowledged, and the next
//! connection came up at the first attempt (a broker that restarts refuses connections for
//! a while). Two strikes against the same request make its rows a [`Suspect`], sent one at a
//! time with nothing else in flight; a suspect row is condemned when the broker drops the
//! connection with it alone in flight: once if the suspect request was that row alone,
//! twice if it was a batch.
//!
//! **Invariant:** nothing here is forgotten when a connection is; suspects leave only when
//! confirmed, condemned or gone from the queue.

use super::flight::Flight;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Rows that were the oldest in flight when the broker dropped the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    /// The rows of that request not yet confirmed, condemned or gone from the queue.
    pub ids: Vec<i64>,
    /// Strikes against the request.
    pub strikes: u32,
    /// Sent one row at a time, with nothing else in flight.
    pub alone: bool,
    /// The request was one row: condemned at its first drop alone.
    pub single: bool,
    /// Drops with each row alone in flight.
    pub alone_drops: HashMap<i64, u32>,
}

/// Strikes against the same request before its rows are sent alone.
const STRIKES_BEFORE_ALONE: u32 = 2;

/// A drop counts against the oldest request only this soon after it was written (a broker
/// that refuses a packet closes the connection as soon as it has read it).
pub const STRIKE_WINDOW: Duration = Duration::from_secs(5);

/// The suspect, if any, and the strike a drop noted until the next connection decides it.
#[derive(Debug, Default)]
pub struct Strikes {
    suspect: Option<Suspect>,
    /// The rows a drop counted against, until the next connection shows whether the
    /// broker was up all along ([`Strikes::confirm`]).
    pending: Option<Vec<i64>>,
}

impl Strikes {
    pub fn suspect(&self) -> Option<&Suspect> {
        self.suspect.as_ref()
    }

    /// Whether requests go one row at a time with nothing else in flight (a suspect).
    pub fn alone(&self) -> bool {
        self.suspect.as_ref().is_some_and(|s| s.alone)
    }

    /// The broker closed the connection at `now`. Notes the rows of the oldest request of
    /// rows written and not acknowledged, if it was written within [`STRIKE_WINDOW`] and no
    /// later request was acknowledged; the next CONNACK decides ([`Strikes::confirm`]).
    pub fn note_drop(&mut self, flight: &Flight, now: Instant) {
        self.pending = flight
            .oldest_written()
            .filter(|(pos, _, at)| {
                !flight.answered_since(*pos) && now.saturating_duration_since(*at) <= STRIKE_WINDOW
            })
            .map(|(_, rows, _)| rows.ids().to_vec());
    }

    /// The connection failed before a CONNACK: the broker was not up, so the last drop was
    /// not its choice.
    pub fn forgive(&mut self) {
        self.pending = None;
    }

    /// A CONNACK at the first attempt after a drop: the strike noted counts. Returns the row
    /// to condemn and why, if one was alone in flight and has struck out.
    pub fn confirm(&mut self) -> Option<(i64, String)> {
        let rows = self.pending.take()?;
        let first = *rows.first()?;
        match &mut self.suspect {
            Some(s) if s.alone && rows.len() == 1 && s.ids.contains(&first) => {
                let drops = s.alone_drops.entry(first).or_insert(0);
                *drops += 1;
                let drops = *drops;
                if !s.single && drops < 2 {
                    return None;
                }
                let strikes = s.strikes + drops;
                Some((
                    first,
                    format!(
                        "the broker closed the connection {strikes} times while it was the oldest in flight, the last {drops} with it alone"
                    ),
                ))
            }
            Some(s) if s.ids.first() == Some(&first) && !s.alone => {
                s.strikes += 1;
                if s.strikes >= STRIKES_BEFORE_ALONE {
                    s.alone = true;
                }
                None
            }
            Some(s) if s.alone => None,
            _ => {
                self.suspect = Some(Suspect {
                    single: rows.len() == 1,
                    ids: rows,
                    strikes: 1,
                    alone: false,
                    alone_drops: HashMap::new(),
                });
                None
            }
        }
    }

    /// Rows that left the queue some other way (confirmed, expired, evicted, condemned) are
    /// no longer suspects.
    pub fn forget(&mut self, gone: &[i64]) {
        if let Some(s) = &mut self.suspect {
            s.ids.retain(|id| !gone.contains(id));
            if s.ids.is_empty() {
                self.suspect = None;
            }
        }
    }
}
