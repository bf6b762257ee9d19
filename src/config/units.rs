//! Human units in the config: durations as `"30s"`, sizes as `"256MiB"`.

use std::ops::RangeInclusive;
use std::time::Duration;

/// Parses a humantime duration such as `"5s"`, `"1m 30s"` or `"30d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write it like \"30s\", \"5m\" or \"30d\"")
    })
}

/// The reason for a duration outside `range`, e.g. "`0s` is out of range: must be between
/// 1s and 1h".
pub fn out_of_range(text: &str, range: &RangeInclusive<Duration>) -> String {
    format!(
        "`{text}` is out of range: must be between {} and {}",
        show(*range.start()),
        show(*range.end())
    )
}

/// A duration as the config writes it: "500ms", "1h", "7d".
pub fn show(d: Duration) -> String {
    let ns = d.as_nanos();
    for (unit, per) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if ns >= per && ns.is_multiple_of(per) {
            return format!("{}{unit}", ns / per);
        }
    }
    if ns == 0 {
        "0s".into()
    } else {
        format!("{ns}ns")
    }
}

/// Parses a size such as `"256MiB"`, `"1GB"`, `"64 KiB"` or `"1000"` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let err = || format!("`{text}` is not a size; write it like \"256MiB\", \"1GB\" or \"65536\"");
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| err())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return Err(err()),
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("64 KiB"), Ok(65_536));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("1.5MiB"), Ok(1_572_864));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn shown_durations_read_back() {
        for d in ["0s", "10ms", "1s", "90s", "1h", "7d", "3650d"] {
            assert_eq!(show(parse_duration(d).unwrap()), d);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
