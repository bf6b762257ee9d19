//! The NMEA side of a serial input with `format = "nmea"`: each line is decoded by the pure
//! [`crate::input::format::nmea`], then filtered by `sentences` and limited by
//! `min_interval` ([`Limiter`]), with state per talker, sentence type and part.
//!
//! Counting: a bad frame (not NMEA, checksum missing or wrong, a field that cannot be read)
//! in `bad_frames`, logged at debug with the input's name; a proprietary sentence in
//! `proprietary_frames`; AIS, queries and types not decoded in `unsupported_frames` (both at
//! trace); a sentence held back by `min_interval` in `limited_frames`. A sentence type left
//! out of `sentences` is not counted: the operator asked for that.

use crate::input::format::nmea::{self, Kind, KindSet, NmeaError};
use crate::input::serial::{bad_frame, frame_text};
use crate::input::InputId;
use crate::metrics::Metrics;
use crate::reading::{self, Reading, Stamp};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, trace};

/// The state of one NMEA input.
pub struct NmeaInput {
    sentences: KindSet,
    limiter: Option<Limiter>,
    /// The `{sentence}` label of each type, shared by its readings.
    names: Vec<Arc<str>>,
}

impl NmeaInput {
    pub fn new(sentences: KindSet, min_interval: Option<Duration>) -> NmeaInput {
        NmeaInput {
            sentences,
            limiter: min_interval.map(Limiter::new),
            names: Kind::ALL.iter().map(|k| Arc::from(k.name())).collect(),
        }
    }

    /// One line (without its line ending) into at most one reading; counts what it skips.
    pub fn reading(
        &mut self,
        id: &InputId,
        frame: &[u8],
        metrics: &Metrics,
        now: Instant,
    ) -> Option<Reading> {
        let text = frame_text(id, frame, metrics)?;
        // An RMC is decoded even when not published: its fix is a clock.
        let decoded = nmea::frame(text).and_then(|f| {
            match self.sentences.contains(f.kind) || f.kind == Kind::Rmc {
                true => f.decode().map(Some),
                false => Ok(None),
            }
        });
        let sentence = match decoded {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(NmeaError::Bad(e)) => {
                bad_frame(id, metrics, &e.0);
                return None;
            }
            Err(NmeaError::Proprietary) => {
                Metrics::add(&metrics.proprietary_frames, 1);
                trace!(input = %id.name, "Skipped a proprietary sentence.");
                return None;
            }
            Err(NmeaError::Unsupported(address)) => {
                Metrics::add(&metrics.unsupported_frames, 1);
                trace!(input = %id.name, address, "Skipped a sentence of a type not decoded.");
                return None;
            }
        };
        if let Some(utc_ms) = nmea::fix_time(&sentence) {
            // Before the reading is stamped: a fix stamps its own reading too.
            if reading::gps_fix(utc_ms, now.into_std()) == Some(true) {
                let synced = reading::system_clock_synced();
                info!(input = %id.name, system_clock_synced = synced, "GPS fix: while the system clock is not synchronised, readings are stamped with GPS time.");
            }
        }
        if !self.sentences.contains(sentence.kind) {
            return None;
        }
        if let Some(limiter) = &mut self.limiter {
            if !limiter.admit(Key::of(&sentence), sentence.fix, now) {
                Metrics::add(&metrics.limited_frames, 1);
                return None;
            }
        }
        let name = Kind::ALL.iter().position(|k| *k == sentence.kind);
        Some(Reading {
            input: id.index,
            stamp: Stamp::now(),
            at: now.into_std(),
            device: None,
            sentence: name.and_then(|i| self.names.get(i).cloned()),
            fields: sentence.fields,
        })
    }
}

/// What `min_interval` limits separately: a talker's sentence type, and within it the
/// part (GSV message number, GSA system id) so that every part of a cycle is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    talker: [u8; 2],
    kind: Kind,
    part: Option<i64>,
}

impl Key {
    pub fn of(s: &nmea::Sentence) -> Key {
        let t = s.talker.as_bytes();
        Key {
            talker: [
                t.first().copied().unwrap_or(0),
                t.get(1).copied().unwrap_or(0),
            ],
            kind: s.kind,
            part: s.part,
        }
    }
}

/// At most one sentence per [`Key`] per interval, except that a fix state different from the
/// one last published goes at once. Pure: the caller says what time it is.
///
/// **Invariant:** memory is bounded: at most [`Limiter::MAX_KEYS`] keys are remembered; when a
/// new key would pass that, the memory is forgotten (a few sentences more get through).
#[derive(Debug)]
pub struct Limiter {
    interval: Duration,
    last: HashMap<Key, (Instant, Option<i64>)>,
}

impl Limiter {
    pub const MAX_KEYS: usize = 512;

    pub fn new(interval: Duration) -> Limiter {
        Limiter {
            interval,
            last: HashMap::new(),
        }
    }

    /// Whether to publish a sentence of `key` with fix state `fix` at `now`; remembers it
    /// when so.
    pub fn admit(&mut self, key: Key, fix: Option<i64>, now: Instant) -> bool {
        if let Some((at, last_fix)) = self.last.get(&key) {
            if *last_fix == fix && now.saturating_duration_since(*at) < self.interval {
                return false;
            }
        } else if self.last.len() >= Limiter::MAX_KEYS {
            self.last.clear();
        }
        self.last.insert(key, (now, fix));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> InputId {
        InputId {
            index: 2,
            name: Arc::from("gps"),
        }
    }

    fn key(kind: Kind, part: Option<i64>) -> Key {
        Key {
            talker: *b"GP",
            kind,
            part,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_per_interval_unless_the_fix_changes() {
        let mut l = Limiter::new(Duration::from_secs(10));
        let gga = key(Kind::Gga, None);
        assert!(l.admit(gga, Some(1), Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            !l.admit(gga, Some(1), Instant::now()),
            "within the interval"
        );
        assert!(
            l.admit(key(Kind::Rmc, None), Some(65), Instant::now()),
            "another type"
        );
        assert!(l.admit(key(Kind::Gsv, Some(2)), None, Instant::now()));
        assert!(
            l.admit(key(Kind::Gsv, Some(3)), None, Instant::now()),
            "another part"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            l.admit(gga, Some(0), Instant::now()),
            "the fix was lost: at once"
        );
        assert!(l.admit(gga, Some(1), Instant::now()), "and found again");
        assert!(!l.admit(gga, Some(1), Instant::now()));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(!l.admit(gga, Some(1), Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(l.admit(gga, Some(1), Instant::now()), "the interval passed");
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut l = Limiter::new(Duration::from_secs(10));
        let now = Instant::now();
        for part in 0..(Limiter::MAX_KEYS as i64 * 3) {
            assert!(l.admit(key(Kind::Gsv, Some(part)), None, now));
            assert!(l.last.len() <= Limiter::MAX_KEYS);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn filtered_skipped_limited_and_bad_are_counted_apart() {
        let metrics = Metrics::default();
        let mut n = NmeaInput::new(
            KindSet::of([Kind::Gga, Kind::Rmc]),
            Some(Duration::from_secs(10)),
        );
        let mut read = |line: &str| n.reading(&id(), line.as_bytes(), &metrics, Instant::now());
        let gga = "$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44";
        let r = read(gga).expect("a reading");
        assert_eq!(r.input, 2);
        assert_eq!(r.sentence.as_deref(), Some("GGA"));
        assert!(read(gga).is_none(), "held back");
        assert!(
            read("$GNVTG,,T,,M,0.117,N,0.216,K,A*3F").is_none(),
            "filtered"
        );
        assert!(
            read("$GNVTG,,T,,M,0.117,N,0.216,K,A*3E").is_none(),
            "bad checksum"
        );
        assert!(read("$PGRMZ,246,f,3*1B").is_none());
        assert!(read("!AIVDM,1,1,,B,13aGhtw0R<OJf=6LgQ?Ad1FF05`L,0*24").is_none());
        assert!(read("$GPRMC,1,A*00").is_none(), "bad checksum");
        assert_eq!(Metrics::get(&metrics.limited_frames), 1);
        assert_eq!(Metrics::get(&metrics.bad_frames), 2);
        assert_eq!(Metrics::get(&metrics.proprietary_frames), 1);
        assert_eq!(Metrics::get(&metrics.unsupported_frames), 1);
    }
}
