//! The fields of each sentence type (the table in README.md, "NMEA 0183"). Positions are
//! decimal degrees, north and east positive; names carry their unit.

use super::{bad, clip, integer, number, Kind, NmeaError, Out, Sentence};
use crate::reading::Value;

/// Decodes the fields `f` of a sentence of type `kind` into `out`, and its fix state, part,
/// validity and instant into `s`.
pub(super) fn fields(
    kind: Kind,
    f: &[&str],
    out: &mut Out,
    s: &mut Sentence,
) -> Result<(), NmeaError> {
    let at = |i: usize| f.get(i).copied().unwrap_or("");
    match kind {
        Kind::Gga => {
            let _ = time(out, at(0))?;
            position(out, at(1), at(2), at(3), at(4))?;
            s.fix = out.int("fix_quality", at(5))?;
            out.int("satellites", at(6))?;
            out.float("hdop", at(7))?;
            unit(out, "altitude_m", at(8), at(9), "M")?;
            unit(out, "geoid_separation_m", at(10), at(11), "M")?;
            out.float("dgps_age_s", at(12))?;
            out.text("dgps_station", at(13));
        }
        Kind::Rmc => {
            let t = time(out, at(0))?;
            status(out, s, at(1))?;
            s.valid = Some(at(1) == "A");
            position(out, at(2), at(3), at(4), at(5))?;
            out.float("speed_kn", at(6))?;
            out.float("course_deg", at(7))?;
            let d = rmc_date(at(8))?;
            date_time(out, s, d, t);
            signed(out, "mag_variation_deg", at(9), at(10), ('E', 'W'))?;
            out.text("mode", at(11));
            out.text("nav_status", at(12));
        }
        Kind::Vtg => {
            out.float("course_deg", at(0))?;
            out.float("course_magnetic_deg", at(2))?;
            out.float("speed_kn", at(4))?;
            out.float("speed_kmh", at(6))?;
            out.text("mode", at(8));
        }
        Kind::Gll => {
            position(out, at(0), at(1), at(2), at(3))?;
            let _ = time(out, at(4))?;
            status(out, s, at(5))?;
            out.text("mode", at(6));
        }
        Kind::Gsa => {
            out.text("selection", at(0));
            s.fix = out.int("fix_type", at(1))?;
            let ids: Vec<&str> = (2..14).map(at).filter(|v| !v.is_empty()).collect();
            if let Some(bad_id) = ids.iter().find(|v| !v.bytes().all(|b| b.is_ascii_digit())) {
                return Err(bad(format!(
                    "satellite id `{}` is not a number",
                    clip(bad_id)
                )));
            }
            out.push("satellites", Value::Int(ids.len() as i64));
            out.text("satellite_ids", &ids.join(","));
            out.float("pdop", at(14))?;
            out.float("hdop", at(15))?;
            out.float("vdop", at(16))?;
            // NMEA 4.10's system id; a decimal there (a SiRF-TriG's BDGSA) is not one.
            if at(17).bytes().all(|b| b.is_ascii_digit()) {
                s.part = out.int("system_id", at(17))?;
            }
        }
        Kind::Gsv => {
            out.int("messages", at(0))?;
            s.part = out.int("message", at(1))?;
            out.int("satellites_in_view", at(2))?;
            let rest = f.get(3..).unwrap_or(&[]);
            let (groups, signal) = match rest.len() % 4 {
                1 => (&rest[..rest.len() - 1], rest.last().copied()),
                _ => (rest, None),
            };
            for (i, g) in groups.chunks(4).enumerate() {
                let n = i + 1;
                let g = |j: usize| g.get(j).copied().unwrap_or("");
                out.int(&format!("sv{n}_prn"), g(0))?;
                whole(out, &format!("sv{n}_elevation_deg"), g(1))?;
                whole(out, &format!("sv{n}_azimuth_deg"), g(2))?;
                whole(out, &format!("sv{n}_snr_db"), g(3))?;
            }
            if let Some(signal) = signal {
                out.text("signal_id", signal);
            }
        }
        Kind::Zda => {
            let t = time(out, at(0))?;
            let d = match (at(1), at(2), at(3)) {
                ("", "", "") => None,
                (d, m, y) => ymd(
                    integer("year", y)?,
                    integer("month", m)?,
                    integer("day", d)?,
                )?,
            };
            date_time(out, s, d, t);
            out.int("local_zone_h", at(4))?;
            out.int("local_zone_min", at(5))?;
        }
        Kind::Hdt => {
            out.float("heading_deg", at(0))?;
        }
        Kind::Mwv => {
            out.float("wind_angle_deg", at(0))?;
            out.text("reference", at(1));
            let name = match at(3) {
                "N" => "wind_speed_kn",
                "M" => "wind_speed_ms",
                "K" => "wind_speed_kmh",
                "S" => "wind_speed_mph",
                "" if at(2).is_empty() => "wind_speed",
                other => return Err(bad(format!("wind speed unit `{}`", clip(other)))),
            };
            out.float(name, at(2))?;
            out.text("status", at(4));
        }
        Kind::Dpt => {
            out.float("depth_m", at(0))?;
            out.float("offset_m", at(1))?;
            out.float("max_range_m", at(2))?;
        }
        Kind::Dbt => {
            out.float("depth_ft", at(0))?;
            out.float("depth_m", at(2))?;
            out.float("depth_fathoms", at(4))?;
        }
        Kind::Mtw => unit(out, "water_temp_c", at(0), at(1), "C")?,
        Kind::Xdr => {
            for (i, g) in f.chunks(4).enumerate() {
                let g = |j: usize| g.get(j).copied().unwrap_or("");
                let Some(v) = number("xdr value", g(1))? else {
                    continue;
                };
                let name = match g(3) {
                    "" => format!("xdr{}", i + 1),
                    id => id.to_string(),
                };
                let name = unique(out, name);
                out.push(&name, Value::Float(v));
                out.text(&format!("{name}_unit"), g(2));
            }
        }
    }
    Ok(())
}

/// `name`, or `name_2`, `name_3`... when a field of that name is already there.
fn unique(out: &Out, name: String) -> String {
    let taken = |n: &str| out.fields.iter().any(|(k, _)| &**k == n);
    if !taken(&name) {
        return name;
    }
    (2..)
        .map(|i| format!("{name}_{i}"))
        .find(|n| !taken(n))
        .unwrap_or(name)
}

/// A value in a whole number where one is expected, else a decimal.
fn whole(out: &mut Out, name: &str, v: &str) -> Result<(), NmeaError> {
    match integer(name, v) {
        Ok(_) => out.int(name, v).map(drop),
        Err(_) => out.float(name, v).map(drop),
    }
}

/// A value whose unit field must be `want` (or empty).
fn unit(out: &mut Out, name: &str, v: &str, u: &str, want: &str) -> Result<(), NmeaError> {
    if !v.is_empty() && !u.is_empty() && u != want {
        return Err(bad(format!("{name}: unit `{}`, expected {want}", clip(u))));
    }
    out.float(name, v).map(drop)
}

/// A magnitude and a direction letter: positive for `dirs.0`, negative for `dirs.1`.
fn signed(
    out: &mut Out,
    name: &str,
    v: &str,
    dir: &str,
    dirs: (char, char),
) -> Result<(), NmeaError> {
    if let Some(x) = number(name, v)? {
        out.push(name, Value::Float(sign(name, dir, dirs)? * x));
    }
    Ok(())
}

/// 1 for the direction `dirs.0`, -1 for `dirs.1`.
fn sign(name: &str, dir: &str, dirs: (char, char)) -> Result<f64, NmeaError> {
    match dir.chars().next() {
        Some(c) if c == dirs.0 && dir.len() == 1 => Ok(1.0),
        Some(c) if c == dirs.1 && dir.len() == 1 => Ok(-1.0),
        _ => Err(bad(format!("{name}: direction `{}`", clip(dir)))),
    }
}

/// The status letter (`A` valid, `V` void) as `status`, and as the sentence's fix state.
fn status(out: &mut Out, s: &mut Sentence, v: &str) -> Result<(), NmeaError> {
    if v.len() > 1 {
        return Err(bad(format!("status `{}`", clip(v))));
    }
    s.fix = v.bytes().next().map(i64::from);
    out.text("status", v);
    Ok(())
}

/// `lat` and `lon` from `ddmm.mmmm` and `dddmm.mmmm` with their hemispheres.
fn position(out: &mut Out, lat: &str, ns: &str, lon: &str, ew: &str) -> Result<(), NmeaError> {
    for (name, v, dir, dirs, max) in [
        ("lat", lat, ns, ('N', 'S'), 90.0),
        ("lon", lon, ew, ('E', 'W'), 180.0),
    ] {
        if v.is_empty() {
            continue;
        }
        let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.len() < 3 || !digits(whole) || !digits(frac) {
            return Err(bad(format!("{name}: `{}` is not ddmm.mmmm", clip(v))));
        }
        let (d, m) = whole.split_at(whole.len() - 2);
        let degrees: f64 = d.parse().unwrap_or(f64::NAN);
        let minutes: f64 = format!("{m}.{frac}0").parse().unwrap_or(f64::NAN);
        let x = degrees + minutes / 60.0;
        if !(minutes < 60.0 && x <= max) {
            return Err(bad(format!("{name}: `{}` is out of range", clip(v))));
        }
        out.push(name, Value::Float(sign(name, dir, dirs)? * x));
    }
    Ok(())
}

/// A time of day, `hhmmss[.sss]`, as `time_utc` (`hh:mm:ss[.mmm]`); its milliseconds
/// since midnight.
fn time(out: &mut Out, v: &str) -> Result<Option<i64>, NmeaError> {
    if v.is_empty() {
        return Ok(None);
    }
    let (hms, frac) = v.split_once('.').unwrap_or((v, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if hms.len() != 6 || !digits(hms) || !digits(frac) || frac.len() > 9 {
        return Err(bad(format!("time `{}` is not hhmmss.ss", clip(v))));
    }
    let n = |t: &str| t.parse::<i64>().unwrap_or(0);
    let (h, m, s) = (n(&hms[..2]), n(&hms[2..4]), n(&hms[4..]));
    // Milliseconds: the first three digits of the fraction (more are cut off).
    let ms = n(&format!("{:0<3}", &frac[..frac.len().min(3)]));
    if h > 23 || m > 59 || s > 60 {
        return Err(bad(format!("time `{}` is out of range", clip(v))));
    }
    let mut text = format!("{h:02}:{m:02}:{s:02}");
    if ms != 0 {
        text.push_str(&format!(".{ms:03}"));
    }
    out.push("time_utc", Value::Text(text));
    Ok(Some(((h * 60 + m) * 60 + s) * 1000 + ms))
}

/// A calendar date.
#[derive(Debug, Clone, Copy)]
struct Date {
    y: i64,
    m: i64,
    d: i64,
}

/// RMC's `ddmmyy`: years 80 to 99 are 1980 to 1999, 00 to 79 are 2000 to 2079 (GPS began
/// in 1980).
fn rmc_date(v: &str) -> Result<Option<Date>, NmeaError> {
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() != 6 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("date `{}` is not ddmmyy", clip(v))));
    }
    let n = |r: std::ops::Range<usize>| v[r].parse::<i64>().unwrap_or(-1);
    let yy = n(4..6);
    let y = if yy >= 80 { 1900 + yy } else { 2000 + yy };
    ymd(Some(y), Some(n(2..4)), Some(n(0..2)))
}

fn ymd(y: Option<i64>, m: Option<i64>, d: Option<i64>) -> Result<Option<Date>, NmeaError> {
    let (Some(y), Some(m), Some(d)) = (y, m, d) else {
        return Err(bad("date: day, month and year are all needed"));
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let valid = (1..=9999).contains(&y)
        && (1..=12).contains(&m)
        && d >= 1
        && d <= days[(m - 1).clamp(0, 11) as usize];
    if !valid {
        return Err(bad(format!("date {y}-{m}-{d} does not exist")));
    }
    Ok(Some(Date { y, m, d }))
}

/// `date` when there is one, and with a time of day also `utc` (RFC 3339) and the instant.
fn date_time(out: &mut Out, s: &mut Sentence, date: Option<Date>, ms_of_day: Option<i64>) {
    let Some(Date { y, m, d }) = date else {
        return;
    };
    out.push("date", Value::Text(format!("{y:04}-{m:02}-{d:02}")));
    let Some(ms) = ms_of_day else {
        return;
    };
    let time = out
        .fields
        .iter()
        .find(|(k, _)| &**k == "time_utc")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    out.push("utc", Value::Text(format!("{y:04}-{m:02}-{d:02}T{time}Z")));
    s.utc_ms = Some(days_from_civil(y, m, d) * 86_400_000 + ms);
}

/// Days from 1970-01-01 to the proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::super::{decode, fix_time, frame, NmeaError};
    use super::*;

    fn get<'a>(s: &'a Sentence, name: &str) -> Option<&'a Value> {
        s.fields.iter().find(|(k, _)| &**k == name).map(|(_, v)| v)
    }

    #[test]
    fn gga_gives_a_position_and_omits_empty_fields() {
        let s =
            decode("$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44")
                .unwrap();
        assert_eq!(s.talker, "GN");
        assert_eq!(get(&s, "sentence"), Some(&Value::Text("GGA".into())));
        assert_eq!(get(&s, "time_utc"), Some(&Value::Text("17:19:26".into())));
        let lat = 44.0 + 4.14063 / 60.0;
        assert_eq!(get(&s, "lat"), Some(&Value::Float(lat)));
        assert_eq!(
            get(&s, "lon"),
            Some(&Value::Float(-(121.0 + 18.85478 / 60.0)))
        );
        assert_eq!(get(&s, "fix_quality"), Some(&Value::Int(1)));
        assert_eq!(get(&s, "satellites"), Some(&Value::Int(12)));
        assert_eq!(get(&s, "altitude_m"), Some(&Value::Float(1147.2)));
        assert_eq!(get(&s, "dgps_age_s"), None);
        assert_eq!(s.fix, Some(1));
        let empty = decode("$GPGGA,,,,,,0,,,,M,,M,,*66").unwrap();
        let names: Vec<&str> = empty.fields.iter().map(|(k, _)| &**k).collect();
        assert_eq!(names, ["talker", "sentence", "fix_quality"]);
    }

    #[test]
    fn rmc_gives_utc_and_a_fix_time_only_when_valid() {
        let s =
            decode("$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76").unwrap();
        assert_eq!(
            get(&s, "utc"),
            Some(&Value::Text("2015-03-18T17:19:26Z".into()))
        );
        assert_eq!(fix_time(&s), Some(1_426_699_166_000));
        assert_eq!(get(&s, "course_deg"), None);
        let void = decode("$GNRMC,074150.799,V,,,,,,,250215,,,N*52").unwrap();
        assert_eq!(
            get(&void, "utc"),
            Some(&Value::Text("2015-02-25T07:41:50.799Z".into()))
        );
        assert_eq!(void.valid, Some(false));
        assert_eq!(fix_time(&void), None);
        let zda = decode("$GPZDA,081411.000,26,05,2014,,*5D").unwrap();
        assert_eq!(zda.utc_ms, Some(1_401_092_051_000));
        assert_eq!(fix_time(&zda), None, "ZDA says nothing of a fix");
    }

    #[test]
    fn checksums_and_kinds_of_skip() {
        assert!(matches!(
            decode("$GPHDT,274.07,T*04"),
            Err(NmeaError::Bad(_))
        ));
        assert!(matches!(decode("$GPHDT,274.07,T"), Err(NmeaError::Bad(_))));
        assert!(matches!(
            decode("GPHDT,274.07,T*03"),
            Err(NmeaError::Bad(_))
        ));
        assert_eq!(decode("$PGRMZ,246,f,3*1B"), Err(NmeaError::Proprietary));
        assert_eq!(
            decode("!AIVDM,1,1,,B,13aGhtw0R<OJf=6LgQ?Ad1FF05`L,0*24"),
            Err(NmeaError::Unsupported("AIVDM".into()))
        );
        assert!(matches!(
            frame("$GNGNS,074150.799,,,,,NNNN,00,,,0.0,,0000*63"),
            Err(NmeaError::Unsupported(_))
        ));
        assert!(decode("$GPHDT,274.07,T*03").is_ok());
    }

    #[test]
    fn instruments() {
        let x =
            decode("$IIXDR,C,,C,AIRTEMP,A,-1.0,D,HEEL,A,2.9,D,TRIM,P,,B,BARO,A,-3.9,D,RUDDER*29")
                .unwrap();
        let names: Vec<&str> = x.fields.iter().map(|(k, _)| &**k).collect();
        assert_eq!(
            names,
            [
                "talker",
                "sentence",
                "HEEL",
                "HEEL_unit",
                "TRIM",
                "TRIM_unit",
                "RUDDER",
                "RUDDER_unit"
            ]
        );
        let w = decode("$WIMWV,57.5,R,13.0,N,A*26").unwrap();
        assert_eq!(get(&w, "wind_speed_kn"), Some(&Value::Float(13.0)));
        let d = decode("$SDDBT,7.7,f,2.3,M,1.3,F*05").unwrap();
        assert_eq!(get(&d, "depth_m"), Some(&Value::Float(2.3)));
        let t = decode("$INMTW,17.9,C*1B").unwrap();
        assert_eq!(get(&t, "water_temp_c"), Some(&Value::Float(17.9)));
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
