//! MiBeacon object table: object id -> fields, with the values and scaling of
//! Bluetooth-Devices/xiaomi-ble `src/xiaomi_ble/parser.py` (1.21, Apache-2.0) and, for the
//! objects only it knows (0x5403, the PTX display's 0x6012 and 0x605D), of
//! custom-components/ble_monitor `ble_parser/xiaomi.py` (MIT). Written from their
//! descriptions, not translated line by line.
//!
//! Names follow BTHome / Home Assistant: measurements by device class (`temperature`,
//! `illuminance`, `mass_kg`, ...), binary sensors as booleans named for their `true` state
//! (`motion`, `occupancy`, `opening`, `moisture_detected`, `smoke`, `lock` = unlocked,
//! `battery_low`, `power_on`, ...), events as text naming the event type (`button` =
//! "press", `dimmer` = "rotate_left", `lock_event` = "locked", ...); see
//! [`super::field_kind`].
//!
//! Invariants:
//! * [`object`] never panics: every byte is read through `get` or after a length match.
//! * It returns whether the id/length is known; a known object may yield no field (an
//!   object the reference decodes only for other models, a "no press" state, a mode).
//! * Model-specific meanings (buttons, humidity truncation, light vs lux) follow the
//!   product id through [`super::mibeacon_buttons::model`]; unknown products get the
//!   generic meaning.

use super::mibeacon_buttons::{self, model};
use super::{sint_le, uint_le, Fields};

/// Decodes one object of product `pid`; false when the id/length is not known.
pub(super) fn object(id: u16, v: &[u8], pid: u16, f: &mut Fields) -> bool {
    let m = model(pid);
    let b0 = v.first().copied();
    let float32 =
        |b: &[u8]| -> Option<f64> { Some(f64::from(f32::from_le_bytes(b.try_into().ok()?))) };
    // Python's round(): the nearest decimal, ties to even on the exact binary value, which
    // is what formatting with a precision does.
    let round = |x: f64, digits: usize| format!("{x:.digits$}").parse().unwrap_or(x);
    match (id, v.len()) {
        // Motion (MUE4094RT): an event only, the device never sends "clear".
        (0x0003, _) => f.text("motion_event", "motion_detected".into()),
        (0x0006, 5) => fingerprint(v, f),
        (0x0007, 1..) => door(v[0], f),
        (0x0008, 1..) => {
            let armed = v[0] ^ 1 != 0;
            f.bool("armed", armed);
            if m == Some("DSL-C08") {
                f.bool("lock", armed);
                f.text("lock_event", "lock_outside_the_door".into());
                f.text("lock_method", "manual".into());
            }
        }
        (0x000A, 2) => {
            let t = sint_le(v);
            if t != 0 {
                f.float("temperature", t as f64 / 100.0);
            }
        }
        (0x000B, 9) => mibeacon_buttons::lock(v, m, f),
        (0x000F, 3) => {
            let lux = uint_le(v) as i64;
            f.bool("motion", true);
            match m {
                Some("MJYD02YL" | "RTCGQ02LM") => f.bool("light", lux >= 100),
                Some("CGPR1") => f.int("illuminance", lux),
                _ => {}
            }
        }
        (0x0010, 1..) => {
            let on = v[0] == 0;
            f.bool("toothbrush", on);
            if let Some(&n) = v.get(1) {
                f.int(if on { "counter" } else { "score" }, i64::from(n));
            }
        }
        (0x1001, 3) => mibeacon_buttons::button(v, m, f),
        (0x1004, 2) => f.float("temperature", sint_le(v) as f64 / 10.0),
        (0x1005, 2..) => {
            f.bool("power_on", v[0] != 0);
            f.float("temperature", f64::from(v[1]));
        }
        (0x1006, 2) => {
            let h = uint_le(v) as f64 / 10.0;
            // These two report in jagged 0.1 steps; the reference keeps whole percent.
            let h = if matches!(m, Some("LYWSD03MMC" | "MHO-C401")) {
                h.trunc()
            } else {
                h
            };
            f.float("humidity", h);
        }
        (0x1007, 3) => {
            let lux = uint_le(v) as i64;
            match m {
                // 100 means light, anything else dark.
                Some("MJYD02YL" | "MCCGQ02HL") => f.bool("light", lux == 100),
                _ => f.int("illuminance", lux),
            }
        }
        (0x1008, 1..) => f.int("moisture", i64::from(v[0])),
        (0x1009, 2) => f.int("conductivity", uint_le(v) as i64),
        // Some devices append a second byte; only the first is the battery %.
        (0x100A, 1..=2) => {
            let pct = f64::from(v[0]);
            // The reference estimates the voltage from the percentage: one AAA cell for
            // these two models, a CR2032 for the others.
            let (lo, hi) = match m {
                Some("LYWSDCGQ" | "CGDK3") => (0.8, 1.6),
                _ => (2.2, 3.1),
            };
            f.int("battery", i64::from(v[0]));
            f.float("voltage", lo + (hi - lo) * (pct / 100.0));
        }
        (0x100D, 4) => {
            f.float("temperature", sint_le(&v[0..2]) as f64 / 10.0);
            f.float("humidity", uint_le(&v[2..4]) as f64 / 10.0);
        }
        (0x100E, 1) => {
            if m == Some("DSL-C08") {
                f.bool("lock", (v[0] & 1) ^ 1 != 0);
                f.bool("childlock", (v[0] >> 3) ^ 1 != 0);
            }
        }
        (0x100F, 1) => {
            if m == Some("loock.safe.v1") {
                f.bool("door", v[0] == 1);
            }
        }
        (0x1010, 2) => f.float("formaldehyde", uint_le(v) as f64 / 100.0),
        (0x1012, 1..) => f.bool("power_on", v[0] != 0),
        (0x1013, 1..) => f.int("consumable", i64::from(v[0])),
        (0x1014, 1..) => f.bool("moisture_detected", v[0] > 0),
        (0x1015, 1..) => f.bool("smoke", v[0] > 0),
        // Seconds without motion; up to 30 s counts as motion, as in the Mi Home app.
        (0x1017, 4) => f.bool("motion", uint_le(v) <= 30),
        (0x1018, 1..) => f.bool("light", v[0] != 0),
        (0x1019, 1..) => match v[0] {
            0 => f.bool("opening", true),
            1 => {
                f.bool("opening", false);
                f.bool("door_left_open", false);
            }
            2 => {
                f.bool("opening", true);
                f.bool("door_left_open", true);
            }
            _ => {}
        },
        (0x101B, _) => f.bool("motion", false),
        (0x2000, 5) => {
            let t1 = sint_le(&v[0..2]) as f64;
            let t2 = sint_le(&v[2..4]) as f64;
            // The reference's approximation of the app's body temperature (36.5..37.8 °C);
            // 0.69314 is its fitted constant, kept as published (not ln 2).
            #[allow(clippy::approx_constant)]
            let body = 3.71934 * 1e-11 * (0.69314 * t1 / 100.0).exp()
                - (1.02801 * 1e-8 * (0.53871 * t2 / 100.0).exp())
                + 36.413;
            f.float("temperature", body);
            f.int("battery", i64::from(v[4]));
        }
        (0x3003, 1..) => {
            match v[0] {
                0 => f.bool("toothbrush", true),
                1 => f.bool("toothbrush", false),
                _ => {}
            }
            if let (6, Some(&s)) = (v.len(), v.get(5)) {
                f.int("score", i64::from(s));
            }
        }
        (0x4801, 4) => match float32(v) {
            Some(t) => f.float("temperature", round(t, 1)),
            None => return false,
        },
        (0x4802 | 0x4C02 | 0x6012, 1) => f.float("humidity", f64::from(v[0])),
        (0x4803 | 0x4C03 | 0x5003 | 0x5403, 1..) => f.int("battery", i64::from(v[0])),
        (0x4804 | 0x4A12, 1..) => opening_state(v[0], f),
        (0x4805, 4) => match float32(v) {
            Some(lux) => f.float("illuminance", lux),
            None => return false,
        },
        (0x4806, 1) => {
            let name = match m {
                Some("SJWS02LM") => "bottom_submersion",
                _ => "moisture_detected",
            };
            f.bool(name, v[0] > 0);
        }
        (0x487B, 1) => {
            if m == Some("SJWS02LM") {
                f.bool("top_splash", v[0] > 0);
            }
        }
        (0x4808, 4) => match float32(v) {
            Some(h) => f.float("humidity", round(h, 1)),
            None => return false,
        },
        (0x480C, 1) => match v[0] {
            0 => f.bool("opening", true),
            1 => f.bool("opening", false),
            _ => {}
        },
        (0x4818, 2) => f.bool("motion", uint_le(v) <= 30),
        (0x483C, 1) => f.bool("occupancy", v[0] > 0),
        (0x483D, 4) => f.int("pressure_present_duration", uint_le(v) as i64),
        (0x483E, 4) => f.int("pressure_not_present_duration", uint_le(v) as i64),
        (0x484E, 1..) => {
            // XMOSB01XS: 0 and 2 are both "clear".
            let occupied = match m {
                Some("XMOSB01XS") => v[0] == 1,
                _ => v[0] > 0,
            };
            f.bool("occupancy", occupied);
        }
        (0x4851, 1..) => f.int("duration_detected", i64::from(v[0])),
        (0x4852, 1..) => f.int("duration_cleared", i64::from(v[0])),
        (0x4A01 | 0x4E01, 1..) => f.bool("battery_low", v[0] != 0),
        (0x4A08, 4) => match float32(v) {
            Some(lux) => {
                f.bool("motion", true);
                f.float("illuminance", lux);
            }
            None => return false,
        },
        (0x4A0C, _) => mibeacon_buttons::xmws01xs(b0, m, "press", f),
        (0x4A0D, _) => mibeacon_buttons::xmws01xs(b0, m, "double_press", f),
        (0x4A0E, _) => mibeacon_buttons::xmws01xs(b0, m, "long_press", f),
        (0x4A0F, 1..) => {
            if v[0] == 1 {
                f.bool("opening", true);
                f.bool("device_forcibly_removed", true);
            }
        }
        (0x4A13, 1..) => {
            if v[0] == 1 {
                f.text("button", "press".into());
            }
        }
        (0x4A1A, 1..) => {
            if v[0] == 1 {
                f.bool("opening", true);
                f.bool("door_left_open", true);
            }
        }
        (0x4A68, 1) => {
            if m == Some("SJWS02LM") {
                match v[0] {
                    e @ (0 | 1) => f.bool("bottom_submersion", e == 0),
                    e @ (2 | 3) => f.bool("top_splash", e == 2),
                    _ => {}
                }
            }
        }
        (0x4C01, 4) => match float32(v) {
            Some(t) => f.float("temperature", round(t, 2)),
            None => return false,
        },
        (0x4C08, 4) => match float32(v) {
            Some(h) => f.float("humidity", h),
            None => return false,
        },
        // Modes and a device reset: decoded by the reference, published by nobody.
        (0x4C14 | 0x5414 | 0x4E1C, _) => {}
        (0x4E0C, _) => mibeacon_buttons::xmwxkg(b0, m, "press", f),
        (0x4E0D, _) => mibeacon_buttons::xmwxkg(b0, m, "double_press", f),
        (0x4E0E, _) => mibeacon_buttons::xmwxkg(b0, m, "long_press", f),
        (0x4E16, 9) => {
            let mass = uint_le(&v[1..5]);
            // The S200 sends this once the weight is final.
            if mass != 0 {
                f.float("mass_kg", mass as f64 / 100.0);
                f.bool("stabilized", true);
                f.int("profile_id", i64::from(v[0]));
            }
        }
        (0x5413, 1..) => {
            if m == Some("ES5BB") {
                f.bool("occupancy_close_range", v[0] > 0);
            }
        }
        (0x5422, 1) => {
            let s = match v[0] {
                0 => "Charging",
                1 => "Not Charging",
                2 => "Full",
                _ => "Unknown",
            };
            f.text("charging_state", s.into());
        }
        (0x560C, _) => mibeacon_buttons::ks(b0, m, "press", f),
        (0x560D, _) => mibeacon_buttons::ks(b0, m, "double_press", f),
        (0x560E, _) => mibeacon_buttons::ks(b0, m, "long_press", f),
        (0x5810, 1) => f.bool("asleep", v[0] ^ 1 != 0),
        (0x605D, 1) => f.float("temperature", f64::from(v[0])),
        (0x6461, 1) => f.bool("wearing", v[0] ^ 1 != 0),
        (0x6E16, 9) => body_scale(v, f),
        _ => return false,
    }
    true
}

/// 0x4804 / 0x4A12: 1 opened, 2 closed (which also clears the alarms).
fn opening_state(b: u8, f: &mut Fields) {
    match b {
        1 => f.bool("opening", true),
        2 => {
            f.bool("opening", false);
            f.bool("door_left_open", false);
            f.bool("device_forcibly_removed", false);
        }
        _ => {}
    }
}

/// 0x0007: the door of a lock or safe and its alarms.
fn door(b: u8, f: &mut Fields) {
    match b {
        0 => {
            f.bool("door", true);
            f.bool("door_stuck", false);
            f.bool("knock_on_the_door", false);
        }
        1 => {
            f.bool("door", false);
            f.bool("door_left_open", false);
            f.bool("pry_the_door", false);
        }
        2 => {
            f.bool("door", true);
            f.bool("door_left_open", true);
        }
        3 => {
            f.bool("door", false);
            f.bool("knock_on_the_door", true);
        }
        4 => {
            f.bool("door", true);
            f.bool("pry_the_door", true);
        }
        5 => {
            f.bool("door", false);
            f.bool("door_stuck", true);
        }
        _ => {}
    }
}

/// 0x0006: key id (4, LE) and match result (1).
fn fingerprint(v: &[u8], f: &mut Fields) {
    let result = match v[4] {
        0 => Some("match_successful"),
        1 => Some("match_failed"),
        2 => Some("timeout"),
        3 => Some("low_quality_too_light_fuzzy"),
        4 => Some("insufficient_area"),
        5 => Some("skin_is_too_dry"),
        6 => Some("skin_is_too_wet"),
        _ => None,
    };
    f.bool("fingerprint", v[4] == 0);
    f.text(
        "key_id",
        mibeacon_buttons::key_type(uint_le(&v[0..4]) as u32, false),
    );
    if let Some(r) = result {
        f.text("fingerprint_event", r.into());
    }
}

/// 0x6E16 (S400 body composition scale): profile, then mass, heart rate and impedance
/// packed in a u32.
fn body_scale(v: &[u8], f: &mut Fields) {
    let data = uint_le(&v[1..5]) as u32;
    let mut mass = data & 0x7FF;
    let heart = (data >> 11) & 0x7F;
    let impedance = data >> 18;
    if mass == 0x7FF {
        mass = 0; // S400 Pro: no weight
    }
    f.int("profile_id", i64::from(v[0]));
    if mass == 0 && heart == 0 && impedance == 0 {
        f.bool("stabilized", false);
        return;
    }
    if mass != 0 {
        f.float("mass_kg", f64::from(mass) / 10.0);
    }
    if heart > 0 && heart < 127 {
        f.int("heart_rate", i64::from(heart + 50));
    }
    if mass == 0 && heart == 0 {
        f.float("impedance_high", f64::from(impedance) / 10.0);
        f.bool("stabilized", true);
    } else if impedance != 0 {
        f.float("impedance_low", f64::from(impedance) / 10.0);
        f.bool("stabilized", false);
    } else {
        f.bool("stabilized", true);
    }
}
