//! A `Reading`: what an input saw at one moment, before any topic was chosen; and the
//! clocks every part stamps with (`Stamp::now`, `now_ms`, `mono_ms`, and a GPS fix's time
//! while the system clock is not synchronised: `gps_fix`).
//!
//! Readings are plain data. Numbers stay numbers from the frame to the payload.

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One value of a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
}

impl Value {
    /// Writes the value as JSON (a float that is not finite becomes `null`).
    pub fn write_json(&self, out: &mut String) {
        use std::fmt::Write;
        match self {
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) if f.is_finite() => {
                let _ = write!(out, "{f}");
            }
            Value::Float(_) => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Text(s) => write_json_string(out, s),
        }
    }

    /// Infers a value from text: integer, then float, then boolean, else text.
    pub fn infer(text: &str) -> Value {
        let t = text.trim();
        if let Ok(i) = t.parse::<i64>() {
            return Value::Int(i);
        }
        if let Ok(f) = t.parse::<f64>() {
            if f.is_finite() && t.bytes().any(|b| b.is_ascii_digit()) {
                return Value::Float(f);
            }
        }
        match t {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::Text(t.to_string()),
        }
    }
}

impl fmt::Display for Value {
    /// The plain form used for per-field payloads: `21.5`, `true`, `text`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// When a reading was taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamp {
    /// Wall-clock milliseconds since the Unix epoch, as the clock read then.
    pub wall_ms: i64,
    /// Whether the wall clock was believed synchronised (NTP) at that moment.
    pub synced: bool,
}

impl Stamp {
    /// The wall clock now; before it is synchronised, the time of the last GPS fix carried
    /// forward on the monotonic clock ([`gps_fix`]), if there was one.
    pub fn now() -> Stamp {
        let wall_ms = system_ms();
        if clock_synced(wall_ms) {
            return Stamp {
                wall_ms,
                synced: true,
            };
        }
        match gps_time(Instant::now()) {
            Some(wall_ms) => Stamp {
                wall_ms,
                synced: true,
            },
            None => Stamp {
                wall_ms,
                synced: false,
            },
        }
    }
}

/// Whether the system clock (not a GPS fix) is synchronised now.
pub fn system_clock_synced() -> bool {
    clock_synced(system_ms())
}

/// The system's wall clock in milliseconds since the Unix epoch (0 before it).
fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// GPS time minus [`mono_ms`] at the last valid fix; `i64::MIN` before any.
static GPS_OFFSET: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);

/// A Pi has no real-time clock, and a cabinet may have no NTP server in reach: a GPS
/// receiver's valid fix (RMC status A, with date and time) tells the time. `utc_ms` is the
/// fix's time and `at` when its sentence was read; the offset to the monotonic clock is kept,
/// so that [`Stamp::now`] tells GPS time while the system clock is not synchronised, and the
/// queue corrects the stamps taken before (housekeeping sees a synchronised clock). The
/// system clock itself is left alone (the service may not set it). Accurate to the
/// sentence's delay after its epoch (well under a second at 4800 baud and up), plus the
/// monotonic clock's drift since the last fix (every fix renews it).
///
/// A fix time before this code was written is refused (receivers with a week-number
/// rollover bug report dates 1024 weeks back). Returns whether the fix was taken and was
/// the first.
pub fn gps_fix(utc_ms: i64, at: Instant) -> Option<bool> {
    use std::sync::atomic::Ordering::Relaxed;
    if utc_ms < PLAUSIBLE_MS {
        return None;
    }
    let before = GPS_OFFSET.swap(utc_ms - mono_ms(at), Relaxed);
    Some(before == i64::MIN)
}

/// The wall time at `at` by the last GPS fix, if there was one.
pub fn gps_time(at: Instant) -> Option<i64> {
    let offset = GPS_OFFSET.load(std::sync::atomic::Ordering::Relaxed);
    (offset != i64::MIN).then(|| mono_ms(at) + offset)
}

/// A Pi has no real-time clock: before NTP it may read 1970 or the last shutdown's time.
/// The clock counts as synchronised when systemd-timesyncd says so, or, where that file is not
/// kept, when it reads a date after this code was written.
///
/// The answer is kept for [`SYNC_CHECK_MS`] of wall time (two file-system look-ups per reading
/// were a measurable share of the gateway's CPU); a clock that steps (as at synchronisation)
/// leaves that span and is checked again at once.
pub fn clock_synced(wall_ms: i64) -> bool {
    use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
    // The wall time of the last check, times two, plus one if the clock was synchronised.
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    let last = LAST.load(Relaxed);
    if last != i64::MIN && (0..SYNC_CHECK_MS).contains(&(wall_ms - (last >> 1))) {
        return last & 1 == 1;
    }
    let synced = check_clock_synced(wall_ms);
    if wall_ms >= 0 {
        LAST.store(wall_ms * 2 + i64::from(synced), Relaxed);
    }
    synced
}

/// How long (wall-clock milliseconds) [`clock_synced`] trusts its last check.
pub const SYNC_CHECK_MS: i64 = 1000;

/// 2026-01-01T00:00:00Z: a clock, or a GPS fix, that reads a date before this code was
/// written is wrong.
const PLAUSIBLE_MS: i64 = 1_767_225_600_000;

fn check_clock_synced(wall_ms: i64) -> bool {
    // Whatever a flag file says (a process whose clock is faked, a flag left from before a
    // step back).
    if wall_ms < PLAUSIBLE_MS {
        return false;
    }
    if std::path::Path::new("/run/systemd/timesync").is_dir() {
        return std::path::Path::new("/run/systemd/timesync/synchronized").exists();
    }
    true
}

/// Milliseconds on a monotonic clock shared by the whole process (from its first call, plus
/// one, so that 0 can mean "never"): the stamps of the watchdog's beats and queue trips.
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Milliseconds since the system booted, for an instant taken in this process: the
/// kernel's `CLOCK_BOOTTIME` read once (at the gateway's start), then the monotonic clock;
/// neither jumps when NTP steps the wall clock. A wall-clock stamp taken while the clock was
/// not synchronised is corrected from this once it is, also by a later process of the same
/// boot ([`boot_id`]).
pub fn mono_ms(at: Instant) -> i64 {
    let origin = origin();
    origin.boot_ms + at.saturating_duration_since(origin.at).as_millis() as i64
}

/// This boot's identity, folded into 63 bits: [`mono_ms`] values compare only within one
/// boot. From `SENSORGATE_BOOT_ID` (the unit sets it to systemd's `%b`, since it hides
/// `/proc/sys` from the service), else the kernel's boot id. `None` where neither says
/// (then stamps are corrected only by the process that took them).
pub fn boot_id() -> Option<i64> {
    origin().boot
}

struct Origin {
    at: Instant,
    boot_ms: i64,
    boot: Option<i64>,
}

fn origin() -> &'static Origin {
    static ORIGIN: std::sync::OnceLock<Origin> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(|| {
        let at = Instant::now();
        let boot_ms = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .ok()
            .map(|t| std::time::Duration::from(t).as_millis() as i64);
        let boot = std::env::var("SENSORGATE_BOOT_ID")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok())
            .and_then(|t| {
                let hex: String = t
                    .chars()
                    .filter(|c| c.is_ascii_hexdigit())
                    .take(15)
                    .collect();
                (hex.len() == 15).then(|| i64::from_str_radix(&hex, 16).ok())?
            });
        Origin {
            at,
            boot_ms: boot_ms.unwrap_or(0),
            boot: boot.filter(|_| boot_ms.is_some()),
        }
    })
}

/// One reading of one input.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The input's index in the config (its position among all inputs).
    pub input: usize,
    pub stamp: Stamp,
    /// Monotonic time of the reading, for ordering and rate limits inside this process.
    pub at: Instant,
    /// The device within the input (BLE: alias or address), for `{device}` in topics.
    pub device: Option<Arc<str>>,
    /// The NMEA sentence type (`GGA`) of a reading of an NMEA input, for `{sentence}` in
    /// topics; kept here so that no transform of the fields can change it.
    pub sentence: Option<Arc<str>>,
    pub fields: Vec<(Arc<str>, Value)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_gps_fix_tells_the_time_from_then_on_and_a_rollover_date_is_refused() {
        mono_ms(Instant::now()); // the monotonic origin is taken before `at`, as in a gateway
        let at = Instant::now();
        // 1024 weeks before 2026-12-06: a receiver with the week-number rollover bug.
        assert_eq!(gps_fix(PLAUSIBLE_MS - 619_315_200_000, at), None);
        let fix = 1_796_558_400_000; // 2026-12-06T12:00:00Z
        assert!(gps_fix(fix, at).is_some());
        assert_eq!(gps_time(at), Some(fix));
        assert_eq!(gps_time(at + Duration::from_millis(2500)), Some(fix + 2500));
        assert_eq!(
            gps_fix(fix + 1000, at + Duration::from_secs(1)),
            Some(false)
        );
        assert_eq!(gps_time(at + Duration::from_secs(3)), Some(fix + 3000));
    }
}
