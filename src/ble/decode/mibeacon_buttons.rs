//! MiBeacon objects whose meaning depends on the model: buttons, remotes, dimmers, the
//! cube, locks; and the product ids of those models (from xiaomi-ble's
//! `src/xiaomi_ble/devices.py`, Apache-2.0; only the models whose objects differ).
//!
//! Events are text fields naming the event type: `button` (or `button_left`,
//! `button_<command>` for remotes) = "press" | "double_press" | "long_press" | ...,
//! `dimmer` = "press" | "long_press" | "rotate_left" | "rotate_right" |
//! "rotate_left_pressed" | "rotate_right_pressed" with `dimmer_presses`,
//! `dimmer_duration` or `dimmer_steps`, `cube` = "rotate_left" | "rotate_right",
//! `lock_event`, `error_event`.
//!
//! **Invariant:** nothing here panics: byte reads go through `get` or follow a length
//! match by the caller.

use super::Fields;

/// The model of a MiBeacon product id, for the models whose objects differ.
pub(super) fn model(pid: u16) -> Option<&'static str> {
    Some(match pid {
        0x0098 => "HHCCJCY01",
        0x0153 => "YLYK01YL",
        0x01AA => "LYWSDCGQ",
        0x0380 => "DSL-C08",
        0x0387 => "MHO-C401",
        0x03B6 => "YLKG07YL/YLKG08YL",
        0x03BC => "GCLS002",
        0x03BF => "YLYB01YL-BHFRC",
        0x04E1 => "XMMF01JQD",
        0x04E6 => "YLYK01YL-VENFAN",
        0x055B => "LYWSD03MMC",
        0x069F => "ZNMS17LM",
        0x07BF => "YLAI003",
        0x07F6 => "MJYD02YL",
        0x0863 => "SJWS01LM",
        0x098B => "MCCGQ02HL",
        0x0997 => "JTYJGD03MI",
        0x09B0 => "loock.safe.v1",
        0x0A83 => "CGPR1",
        0x0A8D => "RTCGQ02LM",
        0x0DFD => "K9B-3BTN",
        0x1568 => "K9B-1BTN",
        0x1569 => "K9B-2BTN",
        0x1949 => "XMWXKG01YL",
        0x1C10 => "K9BB-1BTN",
        0x2387 => "XMWXKG01LM",
        0x3A61 => "KS1",
        0x3E17 => "KS1BP",
        0x4683 => "XMOSB01XS",
        0x4F59 => "CGDK3",
        0x520B => "KS2BB",
        0x5968 => "XMWS01XS",
        0x6375 => "SJWS02LM",
        0x6A0F => "ES5BB",
        _ => return None,
    })
}

/// 0x1001 (3 bytes: button, value, press type) as the model means it.
pub(super) fn button(v: &[u8], m: Option<&str>, f: &mut Fields) {
    let (Some(&kind), Some(&value), Some(&press)) = (v.first(), v.get(1), v.get(2)) else {
        return;
    };
    let remote = ["on", "off", "brightness", "plus", "M", "min"];
    let venfan = [
        "swing",
        "power",
        "timer_60_minutes",
        "increase_wind_speed",
        "timer_30_minutes",
        "decrease_wind_speed",
    ];
    let bathroom = [
        "stop",
        "air_exchange",
        "fan",
        "increase_speed",
        "decrease_speed",
        "dry",
        "light",
        "swing",
        "heat",
    ];
    // Which of the left/middle/right (or the single) switch buttons `kind` presses.
    let two = [(true, false), (false, true), (true, true)];
    let three = [
        (true, false, false),
        (false, true, false),
        (false, false, true),
        (true, true, false),
        (false, true, true),
        (true, false, true),
        (true, true, true),
    ];
    let (mut event, mut amount) = ("no_press", 0u8);
    let switch_event = match press {
        0 => Some("press"),
        1 => Some("long_press"),
        2 => Some("double_press"),
        _ => None,
    };
    match (press, kind) {
        (0, _) => event = "press",
        (1, _) => event = "double_press",
        (2, _) => event = "long_press",
        (3, 0) => (event, amount) = ("press", value),
        (3, 1) => (event, amount) = ("long_press", value),
        (4, 0) if value <= 127 => (event, amount) = ("rotate_right", value),
        (4, 0) => (event, amount) = ("rotate_left", value.wrapping_neg()),
        (4, k) if k <= 127 => (event, amount) = ("rotate_right_pressed", k),
        (4, k) => (event, amount) = ("rotate_left_pressed", k.wrapping_neg()),
        (5, _) => event = "press",
        (6, _) => event = "long_press",
        _ => {}
    }
    let k = usize::from(kind);
    match m {
        Some("RTCGQ02LM" | "YLAI003" | "JTYJGD03MI" | "SJWS01LM") => f.text("button", event.into()),
        Some("XMMF01JQD") => match kind {
            0 => f.text("cube", "rotate_right".into()),
            1 => f.text("cube", "rotate_left".into()),
            _ => {}
        },
        Some("YLYK01YL") => {
            if let Some(c) = remote.get(k) {
                match kind {
                    0 => f.bool("power_on", true),
                    1 => f.bool("power_on", false),
                    _ => {}
                }
                f.text(&format!("button_{c}"), event.into());
            }
        }
        Some("YLYK01YL-VENFAN") => {
            if let Some(c) = venfan.get(k) {
                f.text(&format!("button_{c}"), event.into());
            }
        }
        Some("YLYB01YL-BHFRC") => {
            if let Some(c) = bathroom.get(k) {
                f.text(&format!("button_{c}"), event.into());
            }
        }
        Some("YLKG07YL/YLKG08YL") => {
            let property = match event {
                "press" => Some("dimmer_presses"),
                "long_press" => Some("dimmer_duration"),
                "no_press" => None,
                _ => Some("dimmer_steps"),
            };
            f.text("dimmer", event.into());
            if let Some(p) = property {
                f.int(p, i64::from(amount));
            }
        }
        Some("K9B-1BTN") => {
            if let (0, Some(e)) = (kind, switch_event) {
                f.text("button", e.into());
            }
        }
        Some("K9B-2BTN") => {
            if let (Some(&(l, r)), Some(e)) = (two.get(k), switch_event) {
                for (on, name) in [(l, "button_left"), (r, "button_right")] {
                    if on {
                        f.text(name, e.into());
                    }
                }
            }
        }
        Some("K9B-3BTN") => {
            if let (Some(&(l, mid, r)), Some(e)) = (three.get(k), switch_event) {
                let names = [
                    (l, "button_left"),
                    (mid, "button_middle"),
                    (r, "button_right"),
                ];
                for (on, name) in names {
                    if on {
                        f.text(name, e.into());
                    }
                }
            }
        }
        _ => {}
    }
}

/// 0x4A0C/0x4A0D/0x4A0E: a press; XMWS01XS names the button (0 left, 1 right).
pub(super) fn xmws01xs(b0: Option<u8>, m: Option<&str>, event: &str, f: &mut Fields) {
    match (m, b0) {
        (Some("XMWS01XS"), Some(0)) => f.text("button_left", event.into()),
        (Some("XMWS01XS"), Some(1)) => f.text("button_right", event.into()),
        (Some("XMWS01XS"), _) => {}
        _ => f.text("button", event.into()),
    }
}

/// 0x4E0C/0x4E0D/0x4E0E: presses of XMWXKG01YL (1 left, 2 right, 3 both), K9BB-1BTN
/// (0x4E0C only: 1 press, 8 long, 15 double) and XMWXKG01LM.
pub(super) fn xmwxkg(b0: Option<u8>, m: Option<&str>, event: &str, f: &mut Fields) {
    match (m, b0) {
        (Some("XMWXKG01YL"), Some(b @ 1..=3)) => {
            if b & 1 != 0 {
                f.text("button_left", event.into());
            }
            if b & 2 != 0 {
                f.text("button_right", event.into());
            }
        }
        (Some("K9BB-1BTN"), Some(b)) if event == "press" => {
            let e = match b {
                1 => "press",
                8 => "long_press",
                15 => "double_press",
                _ => return,
            };
            f.text("button", e.into());
        }
        (Some("XMWXKG01LM"), _) => f.text("button", event.into()),
        _ => {}
    }
}

/// 0x560C/0x560D/0x560E: KS1 and KS1BP name one of four buttons; KS2BB has one.
pub(super) fn ks(b0: Option<u8>, m: Option<&str>, event: &str, f: &mut Fields) {
    let quad = |b: Option<u8>| match b {
        Some(1) => Some("button_left"),
        Some(2) => Some("button_mid_left"),
        Some(3) => Some("button_mid_right"),
        Some(4) => Some("button_right"),
        _ => None,
    };
    match m {
        Some("KS2BB") => f.text("button", event.into()),
        Some("KS1" | "KS1BP") => match (quad(b0), event) {
            (Some(name), _) => f.text(name, event.into()),
            // An unknown button: the reference reports a press on `button` and skips the rest.
            (None, "press") => f.text("button", event.into()),
            (None, _) => {}
        },
        _ => {}
    }
}

/// Who a key id names (0x0006 fingerprints; 0x000B locks, whose ids carry the method).
pub(super) fn key_type(id: u32, lock: bool) -> String {
    match id {
        0 => return "administrator".into(),
        0xFFFF_FFFF => return "unknown operator".into(),
        0xDEAD_BEEF => return "invalid operator".into(),
        _ => {}
    }
    if !lock {
        return id.to_string();
    }
    if id <= 0x07FF_FFFF {
        return format!("Bluetooth key {id}");
    }
    // The other methods number their keys up to 65535 in the low half.
    const METHODS: [(u32, &str); 8] = [
        (0x8001_FFFF, "Fingerprint key id"),
        (0x8002_FFFF, "Password key id"),
        (0x8003_FFFF, "Keys key id"),
        (0x8004_FFFF, "NFC key id"),
        (0x8005_FFFF, "Two-step verification key id"),
        (0x8006_FFFF, "Human face key id"),
        (0x8007_FFFF, "Finger veins key id"),
        (0x8008_FFFF, "Palm print key id"),
    ];
    let what = METHODS
        .iter()
        .find(|(max, _)| id <= *max)
        .map_or("key id", |(_, w)| w);
    format!("{what} {}", id & 0xFFFF)
}

/// 0x000B (9 bytes: action | method << 4, key id (4), timestamp (4)).
pub(super) fn lock(v: &[u8], m: Option<&str>, f: &mut Fields) {
    let Some(&b) = v.first() else { return };
    let Some(id) = v.get(1..5).map(|k| super::uint_le(k) as u32) else {
        return;
    };
    // (unlocked, which lock, event)
    let action = match b & 0x0F {
        0b0000 => (true, "lock", "unlock_outside_the_door"),
        0b0001 => (false, "lock", "locked"),
        0b0010 => (false, "antilock", "turn_on_antilock"),
        0b0011 => (true, "antilock", "release_the_antilock"),
        0b0100 => (true, "lock", "unlock_inside_the_door"),
        0b0101 => (false, "lock", "lock_inside_the_door"),
        0b0110 => (false, "childlock", "turn_on_child_lock"),
        0b0111 => (true, "childlock", "turn_off_child_lock"),
        0b1000 => (false, "lock", "lock_outside_the_door"),
        0b1111 => (true, "lock", "abnormal"),
        _ => return,
    };
    let method = match b >> 4 {
        0b0000 => "bluetooth",
        0b0001 => "password",
        0b0010 => "biometrics",
        0b0011 => "key_method",
        0b0100 => "turntable_method",
        0b0101 => "nfc_method",
        0b0110 => "one_time_password",
        0b0111 => "two_step_verification",
        0b1000 => "coercion_method",
        0b1001 => "homekit",
        0b1010 => "manual",
        0b1011 => "automatic",
        0b1111 => "abnormal",
        _ => return,
    };
    let error = lock_error(id);
    let (unlocked, which, event) = action;
    // Only ZNMS17LM has a child lock and an anti-lock; the others' actions all move the lock.
    let which = if m == Some("ZNMS17LM") { which } else { "lock" };
    f.bool(which, unlocked);
    if error.is_none() {
        f.text("key_id", key_type(id, true));
    }
    f.text("lock_event", event.into());
    f.text("lock_method", method.into());
    if let Some(e) = error {
        f.text("error_event", e.into());
    }
}

fn lock_error(id: u32) -> Option<&'static str> {
    Some(match id {
        0xC0DE_0000 => "frequent_unlocking_with_incorrect_password",
        0xC0DE_0001 => "frequent_unlocking_with_wrong_fingerprints",
        0xC0DE_0002 => "operation_timeout_password_input_timeout",
        0xC0DE_0003 => "lock_picking",
        0xC0DE_0004 => "reset_button_is_pressed",
        0xC0DE_0005 => "the_wrong_key_is_frequently_unlocked",
        0xC0DE_0006 => "foreign_body_in_the_keyhole",
        0xC0DE_0007 => "the_key_has_not_been_taken_out",
        0xC0DE_0008 => "error_nfc_frequently_unlocks",
        0xC0DE_0009 => "timeout_is_not_locked_as_required",
        0xC0DE_000A => "failure_to_unlock_frequently_in_multiple_ways",
        0xC0DE_000B => "unlocking_the_face_frequently_fails",
        0xC0DE_000C => "failure_to_unlock_the_vein_frequently",
        0xC0DE_000D => "hijacking_alarm",
        0xC0DE_000E => "unlock_inside_the_door_after_arming",
        0xC0DE_000F => "palmprints_frequently_fail_to_unlock",
        0xC0DE_0010 => "the_safe_was_moved",
        0xC0DE_1000 => "the_battery_level_is_less_than_10_percent",
        0xC0DE_1001 => "the_battery_level_is_less_than_5_percent",
        0xC0DE_1002 => "the_fingerprint_sensor_is_abnormal",
        0xC0DE_1003 => "the_accessory_battery_is_low",
        0xC0DE_1004 => "mechanical_failure",
        0xC0DE_1005 => "the_lock_sensor_is_faulty",
        _ => return None,
    })
}
