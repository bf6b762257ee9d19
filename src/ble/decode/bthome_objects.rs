//! BTHome v2 object-id table: id -> (property name, encoding, scale).
//!
//! Sources: bthome.io "format" page (home-assistant/bthome.io `src/format.html`,
//! sections "Sensor data", "Binary Sensor data", "Events", "Device information",
//! "Misc data") and the reference implementation's table
//! (Bluetooth-Devices/bthome-ble `src/bthome_ble/const.py`, `MEAS_TYPES`), which
//! is newer than the stored copy of the format page for 0x5F-0x65 and 0x3B (bthome-ble
//! 3.25).
//!
//! Invariants:
//! * `lookup` is total: unknown ids return `None` (the caller must stop parsing,
//!   because an unknown object's length is unknown).
//! * Names are the spec property names in snake_case. Where two spec objects
//!   share a name but differ in unit, the unit is appended (`distance_mm` /
//!   `distance_m`, `mass_kg` / `mass_lb`, `volume` (L) / `volume_ml`). Binary
//!   sensors whose spec name collides with a sensor get a suffix describing the
//!   `true` state: battery -> `battery_low`, power -> `power_on`,
//!   moisture -> `moisture_detected`, gas -> `gas_detected`.
//! * A numeric object with factor 1 decodes to `Value::Int`, any other factor to
//!   `Value::Float` computed as `raw * mul / div` (exact decimal rounding).

/// How an object's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Little-endian integer of `len` bytes scaled by `mul / div`.
    Num {
        len: u8,
        signed: bool,
        mul: i64,
        div: i64,
    },
    /// One byte, 0 = false, anything else = true.
    Binary,
    /// 0x00 packet id (uint8).
    PacketId,
    /// 0x3A button event (uint8 event id).
    Button,
    /// 0x3C dimmer event (event id + steps).
    Dimmer,
    /// 0x3B command event: a length byte (low 5 bits: argument bytes), the opcode, the
    /// arguments.
    Command,
    /// 0x53 UTF-8 text, length-prefixed.
    Text,
    /// 0x54 raw bytes, length-prefixed, reported as lower-case hex.
    Raw,
    /// 0xF1 (4 bytes) / 0xF2 (3 bytes) firmware version, reported "a.b.c[.d]".
    Firmware { len: u8 },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Obj {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
}

const fn u(name: &'static str, len: u8, mul: i64, div: i64) -> Obj {
    Obj {
        name,
        kind: Kind::Num {
            len,
            signed: false,
            mul,
            div,
        },
    }
}
const fn s(name: &'static str, len: u8, mul: i64, div: i64) -> Obj {
    Obj {
        name,
        kind: Kind::Num {
            len,
            signed: true,
            mul,
            div,
        },
    }
}
const fn b(name: &'static str) -> Obj {
    Obj {
        name,
        kind: Kind::Binary,
    }
}
const fn k(name: &'static str, kind: Kind) -> Obj {
    Obj { name, kind }
}

/// Look up a BTHome v2 object id.
pub(crate) fn lookup(id: u8) -> Option<Obj> {
    Some(match id {
        0x00 => k("packet_id", Kind::PacketId),
        0x01 => u("battery", 1, 1, 1),
        0x02 => s("temperature", 2, 1, 100),
        0x03 => u("humidity", 2, 1, 100),
        0x04 => u("pressure", 3, 1, 100),
        0x05 => u("illuminance", 3, 1, 100),
        0x06 => u("mass_kg", 2, 1, 100),
        0x07 => u("mass_lb", 2, 1, 100),
        0x08 => s("dewpoint", 2, 1, 100),
        0x09 => u("count", 1, 1, 1),
        0x0A => u("energy", 3, 1, 1000),
        0x0B => u("power", 3, 1, 100),
        0x0C => u("voltage", 2, 1, 1000),
        0x0D => u("pm25", 2, 1, 1),
        0x0E => u("pm10", 2, 1, 1),
        0x0F => b("generic_boolean"),
        0x10 => b("power_on"),
        0x11 => b("opening"),
        0x12 => u("co2", 2, 1, 1),
        0x13 => u("tvoc", 2, 1, 1),
        0x14 => u("moisture", 2, 1, 100),
        0x15 => b("battery_low"),
        0x16 => b("battery_charging"),
        0x17 => b("carbon_monoxide"),
        0x18 => b("cold"),
        0x19 => b("connectivity"),
        0x1A => b("door"),
        0x1B => b("garage_door"),
        0x1C => b("gas_detected"),
        0x1D => b("heat"),
        0x1E => b("light"),
        0x1F => b("lock"),
        0x20 => b("moisture_detected"),
        0x21 => b("motion"),
        0x22 => b("moving"),
        0x23 => b("occupancy"),
        0x24 => b("plug"),
        0x25 => b("presence"),
        0x26 => b("problem"),
        0x27 => b("running"),
        0x28 => b("safety"),
        0x29 => b("smoke"),
        0x2A => b("sound"),
        0x2B => b("tamper"),
        0x2C => b("vibration"),
        0x2D => b("window"),
        0x2E => u("humidity", 1, 1, 1),
        0x2F => u("moisture", 1, 1, 1),
        0x3A => k("button", Kind::Button),
        0x3B => k("command", Kind::Command),
        0x3C => k("dimmer", Kind::Dimmer),
        0x3D => u("count", 2, 1, 1),
        0x3E => u("count", 4, 1, 1),
        0x3F => s("rotation", 2, 1, 10),
        0x40 => u("distance_mm", 2, 1, 1),
        0x41 => u("distance_m", 2, 1, 10),
        0x42 => u("duration", 3, 1, 1000),
        0x43 => u("current", 2, 1, 1000),
        0x44 => u("speed", 2, 1, 100),
        0x45 => s("temperature", 2, 1, 10),
        0x46 => u("uv_index", 1, 1, 10),
        0x47 => u("volume", 2, 1, 10),
        0x48 => u("volume_ml", 2, 1, 1),
        0x49 => u("volume_flow_rate", 2, 1, 1000),
        0x4A => u("voltage", 2, 1, 10),
        0x4B => u("gas", 3, 1, 1000),
        0x4C => u("gas", 4, 1, 1000),
        0x4D => u("energy", 4, 1, 1000),
        0x4E => u("volume", 4, 1, 1000),
        0x4F => u("water", 4, 1, 1000),
        // Seconds since the Unix epoch (UTC).
        0x50 => u("timestamp", 4, 1, 1),
        0x51 => u("acceleration", 2, 1, 1000),
        0x52 => u("gyroscope", 2, 1, 1000),
        0x53 => k("text", Kind::Text),
        0x54 => k("raw", Kind::Raw),
        0x55 => u("volume_storage", 4, 1, 1000),
        0x56 => u("conductivity", 2, 1, 1),
        0x57 => s("temperature", 1, 1, 1),
        0x58 => s("temperature", 1, 35, 100),
        0x59 => s("count", 1, 1, 1),
        0x5A => s("count", 2, 1, 1),
        0x5B => s("count", 4, 1, 1),
        0x5C => s("power", 4, 1, 100),
        0x5D => s("current", 2, 1, 1000),
        0x5E => u("direction", 2, 1, 100),
        // const.py and its test use factor 0.1; the stored format page says 1.
        0x5F => u("precipitation", 2, 1, 10),
        0x60 => u("channel", 1, 1, 1),
        0x61 => u("rotational_speed", 2, 1, 1),
        0x62 => s("speed", 4, 1, 1_000_000),
        0x63 => s("acceleration", 4, 1, 1_000_000),
        0x64 => u("light_level", 1, 1, 1),
        0x65 => u("settings_revision", 1, 1, 1),
        0xF0 => u("device_type_id", 2, 1, 1),
        0xF1 => k("firmware_version", Kind::Firmware { len: 4 }),
        0xF2 => k("firmware_version", Kind::Firmware { len: 3 }),
        _ => return None,
    })
}

/// Button event names (bthome.io "Events" table; 0x00 = no event).
pub(crate) fn button_event(id: u8) -> Option<&'static str> {
    Some(match id {
        0x01 => "press",
        0x02 => "double_press",
        0x03 => "triple_press",
        0x04 => "long_press",
        0x05 => "long_double_press",
        0x06 => "long_triple_press",
        0x80 => "hold_press",
        0x81 => "hold_release",
        _ => return None,
    })
}

/// Command event names (bthome-ble `event.py`, `COMMAND_EVENTS`).
pub(crate) fn command_event(id: u8) -> Option<&'static str> {
    Some(match id {
        0x00 => "off",
        0x01 => "on",
        0x02 => "toggle",
        0x03 => "step_up",
        0x04 => "step_down",
        _ => return None,
    })
}

/// Dimmer event names (0x00 = no event).
pub(crate) fn dimmer_event(id: u8) -> Option<&'static str> {
    match id {
        0x01 => Some("rotate_left"),
        0x02 => Some("rotate_right"),
        _ => None,
    }
}
