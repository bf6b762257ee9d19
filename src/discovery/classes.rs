//! What Home Assistant should make of a field: the entity's component (`sensor`,
//! `binary_sensor`, `event`), its device class, unit and state class, from the field's name
//! (BTHome's names are Home Assistant's device classes, one to one), its unit suffix
//! (`altitude_m`, `speed_kn`, `water_temp_c`), a transform's `unit`, and its value.
//!
//! **Invariant:** pure and total: every field gets an entity; a name nothing here knows
//! becomes a plain sensor (text or number) or a plain binary sensor (booleans).

use crate::ble::decode::{field_kind, FieldKind};
use crate::reading::Value;

/// The Home Assistant component of an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Sensor,
    BinarySensor,
    /// Buttons and dimmers: each message is an event, not a state.
    Event,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Sensor => "sensor",
            Component::BinarySensor => "binary_sensor",
            Component::Event => "event",
        }
    }
}

/// The entity a field becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    pub component: Component,
    pub device_class: Option<&'static str>,
    pub unit: Option<String>,
    /// `measurement`, `total_increasing`; none for text and binary entities.
    pub state_class: Option<&'static str>,
    /// Events: the event types the entity announces.
    pub event_types: &'static [&'static str],
}

/// Button events (BTHome's and MiBeacon's names).
pub const BUTTON_EVENTS: &[&str] = &[
    "press",
    "double_press",
    "triple_press",
    "long_press",
    "long_double_press",
    "long_triple_press",
    "hold_press",
    "hold_release",
];
/// Dimmer and knob events.
pub const DIMMER_EVENTS: &[&str] = &[
    "rotate_left",
    "rotate_right",
    "rotate_left_pressed",
    "rotate_right_pressed",
];

/// Sensors by field name: device class and default unit (BTHome's object names first).
const SENSORS: &[(&str, Option<&str>, Option<&str>)] = &[
    ("temperature", Some("temperature"), Some("°C")),
    ("dewpoint", Some("temperature"), Some("°C")),
    ("humidity", Some("humidity"), Some("%")),
    ("moisture", Some("moisture"), Some("%")),
    ("pressure", Some("pressure"), Some("hPa")),
    ("illuminance", Some("illuminance"), Some("lx")),
    ("battery", Some("battery"), Some("%")),
    ("voltage", Some("voltage"), Some("V")),
    ("current", Some("current"), Some("A")),
    ("power", Some("power"), Some("W")),
    ("energy", Some("energy"), Some("kWh")),
    ("co2", Some("carbon_dioxide"), Some("ppm")),
    ("pm25", Some("pm25"), Some("µg/m³")),
    ("pm10", Some("pm10"), Some("µg/m³")),
    ("tvoc", Some("volatile_organic_compounds"), Some("µg/m³")),
    ("mass_kg", Some("weight"), Some("kg")),
    ("mass_lb", Some("weight"), Some("lb")),
    ("distance_mm", Some("distance"), Some("mm")),
    ("distance_m", Some("distance"), Some("m")),
    ("duration", Some("duration"), Some("s")),
    ("speed", Some("speed"), Some("m/s")),
    ("gas", Some("gas"), Some("m³")),
    ("volume", Some("volume"), Some("L")),
    ("volume_ml", Some("volume"), Some("mL")),
    ("volume_storage", Some("volume_storage"), Some("L")),
    ("water", Some("water"), Some("L")),
    ("volume_flow_rate", Some("volume_flow_rate"), Some("m³/h")),
    ("precipitation", Some("precipitation"), Some("mm")),
    ("conductivity", Some("conductivity"), Some("µS/cm")),
    ("rssi", Some("signal_strength"), Some("dBm")),
    ("uv_index", None, None),
    ("rotation", None, Some("°")),
    ("count", None, None),
    ("hdop", None, None),
    ("satellites", None, None),
];

/// Units by name suffix (the NMEA and Modbus habit of naming the unit in the field).
const SUFFIXES: &[(&str, Option<&str>, &str)] = &[
    ("_m", Some("distance"), "m"),
    ("_mm", Some("distance"), "mm"),
    ("_kn", Some("speed"), "kn"),
    ("_ms", Some("speed"), "m/s"),
    ("_deg", None, "°"),
    ("_c", Some("temperature"), "°C"),
    ("_pct", None, "%"),
    ("_v", Some("voltage"), "V"),
    ("_a", Some("current"), "A"),
    ("_w", Some("power"), "W"),
    ("_kwh", Some("energy"), "kWh"),
    ("_hpa", Some("pressure"), "hPa"),
];

/// Device classes a unit implies, for a field whose name says nothing.
const UNITS: &[(&str, &str)] = &[
    ("°C", "temperature"),
    ("°F", "temperature"),
    ("K", "temperature"),
    ("V", "voltage"),
    ("mV", "voltage"),
    ("A", "current"),
    ("mA", "current"),
    ("W", "power"),
    ("kW", "power"),
    ("Wh", "energy"),
    ("kWh", "energy"),
    ("hPa", "pressure"),
    ("kPa", "pressure"),
    ("Pa", "pressure"),
    ("bar", "pressure"),
    ("mbar", "pressure"),
    ("psi", "pressure"),
    ("lx", "illuminance"),
    ("ppm", "carbon_dioxide"),
    ("Hz", "frequency"),
    ("dBm", "signal_strength"),
    ("km/h", "speed"),
    ("m/s", "speed"),
    ("kn", "speed"),
    ("mph", "speed"),
];

/// Binary sensors by field name, and their device class.
const BINARY: &[(&str, Option<&str>)] = &[
    ("battery_low", Some("battery")),
    ("battery_charging", Some("battery_charging")),
    ("carbon_monoxide", Some("carbon_monoxide")),
    ("cold", Some("cold")),
    ("connectivity", Some("connectivity")),
    ("door", Some("door")),
    ("garage_door", Some("garage_door")),
    ("gas_detected", Some("gas")),
    ("heat", Some("heat")),
    ("light", Some("light")),
    ("lock", Some("lock")),
    ("moisture_detected", Some("moisture")),
    ("motion", Some("motion")),
    ("moving", Some("moving")),
    ("occupancy", Some("occupancy")),
    ("opening", Some("opening")),
    ("plug", Some("plug")),
    ("power_on", Some("power")),
    ("presence", Some("presence")),
    ("problem", Some("problem")),
    ("running", Some("running")),
    ("safety", Some("safety")),
    ("smoke", Some("smoke")),
    ("sound", Some("sound")),
    ("tamper", Some("tamper")),
    ("vibration", Some("vibration")),
    ("window", Some("window")),
    ("generic_boolean", None),
];

/// Counters that only grow (a meter's total).
const TOTALS: &[&str] = &["energy", "gas", "water", "count", "precipitation"];

/// The entity `field` becomes, given its first value and a transform's `unit`.
pub fn classify(field: &str, value: &Value, unit: Option<&str>) -> Class {
    let name = field.to_ascii_lowercase();
    let plain = |component| Class {
        component,
        device_class: None,
        unit: None,
        state_class: None,
        event_types: &[],
    };
    // Events (the BLE decoders' names): buttons and dimmers, whose event types are known,
    // become event entities; other events (a cube's moves, a lock's) are text sensors of
    // the last event, since an event entity must list its types before the first one.
    match field_kind(&name, value) {
        FieldKind::Event if name == "button" || name.starts_with("button_") => {
            return Class {
                event_types: BUTTON_EVENTS,
                ..plain(Component::Event)
            }
        }
        FieldKind::Event if name == "dimmer" || name.starts_with("dimmer_") => {
            return Class {
                event_types: DIMMER_EVENTS,
                ..plain(Component::Event)
            }
        }
        FieldKind::Event => return plain(Component::Sensor),
        // A press count, a turn's steps: a number of one event, not a measurement.
        FieldKind::EventProperty => return plain(Component::Sensor),
        FieldKind::Binary | FieldKind::State => {}
    }
    let number = matches!(value, Value::Int(_) | Value::Float(_));
    if let Value::Bool(_) = value {
        let class = BINARY.iter().find(|(n, _)| *n == name).and_then(|b| b.1);
        return Class {
            device_class: class,
            ..plain(Component::BinarySensor)
        };
    }
    if !number {
        // Text: a time carried as RFC 3339 is a timestamp; the rest are plain.
        let class = (name == "utc" || name == "timestamp").then_some("timestamp");
        return Class {
            device_class: class,
            ..plain(Component::Sensor)
        };
    }
    let (mut class, mut default_unit) = match SENSORS.iter().find(|(n, ..)| *n == name) {
        Some((_, c, u)) => (*c, u.map(str::to_string)),
        None => match SUFFIXES.iter().find(|(s, ..)| name.ends_with(s)) {
            Some((_, c, u)) => (*c, Some(u.to_string())),
            None => (None, None),
        },
    };
    if let Some(u) = unit {
        // The operator's unit wins; it may also tell the class when the name did not.
        default_unit = Some(u.to_string());
        if class.is_none() {
            class = UNITS.iter().find(|(x, _)| *x == u).map(|(_, c)| *c);
        }
    }
    let total = TOTALS.contains(&name.as_str());
    Class {
        component: Component::Sensor,
        device_class: class,
        unit: default_unit,
        state_class: Some(if total {
            "total_increasing"
        } else {
            "measurement"
        }),
        event_types: &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bthome_names_are_home_assistant_classes() {
        let c = classify("temperature", &Value::Float(21.5), None);
        assert_eq!(c.component, Component::Sensor);
        assert_eq!(c.device_class, Some("temperature"));
        assert_eq!(c.unit.as_deref(), Some("°C"));
        assert_eq!(c.state_class, Some("measurement"));
        let c = classify("co2", &Value::Int(600), None);
        assert_eq!(
            (c.device_class, c.unit.as_deref()),
            (Some("carbon_dioxide"), Some("ppm"))
        );
        let c = classify("energy", &Value::Float(1.5), None);
        assert_eq!(c.state_class, Some("total_increasing"));
    }

    #[test]
    fn booleans_are_binary_sensors_and_buttons_are_events() {
        let c = classify("motion", &Value::Bool(true), None);
        assert_eq!(
            (c.component, c.device_class),
            (Component::BinarySensor, Some("motion"))
        );
        let c = classify("relay_3", &Value::Bool(false), None);
        assert_eq!(
            (c.component, c.device_class),
            (Component::BinarySensor, None)
        );
        let c = classify("button", &Value::Text("press".into()), None);
        assert_eq!(c.component, Component::Event);
        assert!(c.event_types.contains(&"long_press"));
        let c = classify("button_left", &Value::Text("press".into()), None);
        assert_eq!(c.component, Component::Event);
        let c = classify("dimmer", &Value::Text("rotate_left".into()), None);
        assert!(c.event_types.contains(&"rotate_left"));
        let c = classify("lock_event", &Value::Text("unlock outside".into()), None);
        assert_eq!((c.component, c.state_class), (Component::Sensor, None));
        let c = classify("dimmer_steps", &Value::Int(3), None);
        assert_eq!((c.component, c.state_class), (Component::Sensor, None));
    }

    #[test]
    fn a_unit_suffix_or_the_operators_unit_tells_the_class() {
        let c = classify("altitude_m", &Value::Float(12.0), None);
        assert_eq!(
            (c.device_class, c.unit.as_deref()),
            (Some("distance"), Some("m"))
        );
        let c = classify("speed_kn", &Value::Float(3.2), None);
        assert_eq!(
            (c.device_class, c.unit.as_deref()),
            (Some("speed"), Some("kn"))
        );
        let c = classify("course_deg", &Value::Float(3.2), None);
        assert_eq!((c.device_class, c.unit.as_deref()), (None, Some("°")));
        let c = classify("t1", &Value::Float(3.2), Some("°C"));
        assert_eq!(
            (c.device_class, c.unit.as_deref()),
            (Some("temperature"), Some("°C"))
        );
        let c = classify("temperature", &Value::Float(70.0), Some("°F"));
        assert_eq!(
            (c.device_class, c.unit.as_deref()),
            (Some("temperature"), Some("°F"))
        );
        let c = classify("utc", &Value::Text("2026-12-06T12:00:00Z".into()), None);
        assert_eq!(
            (c.component, c.device_class, c.state_class),
            (Component::Sensor, Some("timestamp"), None)
        );
        let c = classify("talker", &Value::Text("GN".into()), None);
        assert_eq!((c.device_class, c.unit, c.state_class), (None, None, None));
    }
}
