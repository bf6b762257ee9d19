//! Bad configs: each file and the message it must give (file, line, key, reason).

use sensorgate::config::Config;
use std::path::Path;

const GOOD: &str = r#"[gateway]
id = "gw1"
state_dir = "/var/lib/sensorgate"

[mqtt]
url = "mqtt://127.0.0.1:1883"
keep_alive = "5s"

[[serial]]
name = "wx"
device = "/dev/ttyUSB0"
baud = 9600
format = "json"
topic = "site/{gateway}/{input}"
qos = 1
"#;

/// (what is wrong, the file, the line, the key, words the message must contain)
const BAD: &[(&str, &str, usize, &str, &str)] = &[
    ("unknown key", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\ncolour = 1\n[mqtt]\nurl = \"mqtt://h\"\n", 4, "gateway.colour", "unknown field"),
    ("missing url", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nkeep_alive = \"5s\"\n", 4, "mqtt", "missing field `url`"),
    ("bad duration", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\nkeep_alive = \"5 parsecs\"\n", 6, "mqtt.keep_alive", "not a duration"),
    ("bare number duration", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\nkeep_alive = \"5\"\n", 6, "mqtt.keep_alive", "not a duration"),
    ("keep-alive too long", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\nkeep_alive = \"30h\"\n", 6, "mqtt.keep_alive", "65535"),
    ("wrong type", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\ninflight = \"many\"\n", 6, "mqtt.inflight", "invalid type"),
    ("http url", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"http://h\"\n", 5, "mqtt.url", "not an MQTT URL"),
    ("bad port", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h:70000\"\n", 5, "mqtt.url", "not a port"),
    ("slash in id", "[gateway]\nid = \"a/b\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n", 2, "gateway.id", "no `/`"),
    ("bad size", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[queue]\nmax_size = \"lots\"\n", 7, "queue.max_size", "not a size"),
    ("tiny size", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[queue]\nmax_size = \"1KiB\"\n", 7, "queue.max_size", "at least 64KiB"),
    ("bad policy", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[queue]\nwhen_full = \"panic\"\n", 7, "queue.when_full", "drop_oldest"),
    ("bad format", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"xml\"\ntopic = \"t\"\n", 9, "serial[0].format", "json, kv, csv, regex, raw or nmea"),
    ("csv without columns", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"csv\"\ntopic = \"t\"\n", 9, "serial[0].columns", "needs `columns"),
    ("bad regex", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"regex\"\npattern = \"(?P<t>[0-9\"\ntopic = \"t\"\n", 10, "serial[0].pattern", "regex parse error"),
    ("regex without names", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"regex\"\npattern = \"([0-9]+)\"\ntopic = \"t\"\n", 10, "serial[0].pattern", "no named capture"),
    ("columns on json", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"json\"\ncolumns = [\"a\"]\ntopic = \"t\"\n", 10, "serial[0].columns", "belongs to format \"csv\""),
    ("wildcard topic", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"json\"\ntopic = \"site/#\"\n", 10, "serial[0].topic", "wildcard"),
    ("unknown placeholder", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"json\"\ntopic = \"s/{sensor}\"\n", 10, "serial[0].topic", "{sensor}"),
    ("qos 2", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"json\"\ntopic = \"t\"\nqos = 2\n", 11, "serial[0].qos", "QoS 2 is not supported"),
    ("duplicate input", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"raw\"\ntopic = \"t\"\n[[synthetic]]\nname = \"a\"\nrate = 1.0\nfields = [\"x\"]\ntopic = \"t\"\n", 12, "synthetic[0].name", "declared twice"),
    ("zero rate", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[synthetic]]\nname = \"s\"\nrate = 0.0\nfields = [\"x\"]\ntopic = \"t\"\n", 8, "synthetic[0].rate", "more than 0"),
    ("unknown key in input", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"raw\"\ntopic = \"t\"\nparity = \"odd\"\n", 11, "serial.parity", "unknown field"),
    ("unknown profile", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\nprofile = \"wifi\"\n", 6, "mqtt.profile", "\"satellite\""),
    ("mqtt 4.0", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\nprotocol = \"4.0\"\n", 6, "mqtt.protocol", "\"3.1.1\" or \"5\""),
    ("flush_every while persistent", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\nflush_every = \"15m\"\n", 6, "mqtt.flush_every", "on_demand"),
    ("bad batch encoding", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[mqtt.batch]\nencoding = \"xml\"\n", 7, "mqtt.batch.encoding", "\"cbor\""),
    ("bad compression", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[mqtt.batch]\ncompression = \"gzip\"\n", 7, "mqtt.batch.compression", "\"zstd\""),
    ("huge batch", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[mqtt.batch]\nmax_readings = 20000\n", 7, "mqtt.batch.max_readings", "10000"),
    ("negative replay rate", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\nreplay_rate = -5\n", 6, "mqtt.replay_rate", "at least 0.01"),
    ("short v5 keep-alive", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\nkeep_alive = \"2s\"\nprotocol = \"5\"\n", 6, "mqtt.keep_alive", "at least 5s"),
    ("missing password file", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\npassword_file = \"/nonexistent/pw\"\n", 6, "mqtt.password_file", "cannot read"),
    ("not toml", "[gateway\nid = 1\n", 1, "gateway", "unclosed table"),
    ("device in a serial topic", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"raw\"\ntopic = \"t/{device}\"\n", 10, "serial[0].topic", "{device} belongs to [[ble]]"),
    ("ble lists nothing", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[ble]]\nname = \"b\"\ntopic = \"t/{device}\"\n", 7, "ble[0].allow_unknown", "would publish nothing"),
    ("bad ble address", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[ble]]\nname = \"b\"\ntopic = \"t/{device}\"\n[[ble.device]]\naddress = \"A4:C1:38:8E:11\"\n", 10, "ble[0].device[0].address", "Bluetooth address"),
    ("short bindkey", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[ble]]\nname = \"b\"\ntopic = \"t/{device}\"\n[[ble.device]]\naddress = \"A4:C1:38:8E:11:22\"\nbindkey = \"231d39\"\n", 11, "ble[0].device[0].bindkey", "32 hex digits"),
    ("duplicate ble address", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[ble]]\nname = \"b\"\ntopic = \"t/{device}\"\n[[ble.device]]\naddress = \"A4:C1:38:8E:11:22\"\n[[ble.device]]\naddress = \"a4:c1:38:8e:11:22\"\n", 12, "ble[0].device[1].address", "listed twice"),
    ("two ble on one adapter", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[ble]]\nname = \"b\"\ntopic = \"t/{device}\"\nadapter = \"hci0\"\nallow_unknown = true\n[[ble]]\nname = \"c\"\ntopic = \"u/{device}\"\nadapter = \"hci0\"\nallow_unknown = true\n", 14, "ble[1].adapter", "ble[0] already scans adapter hci0"),
    ("two ble on the first adapter", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[ble]]\nname = \"b\"\ntopic = \"t/{device}\"\nallow_unknown = true\n[[ble]]\nname = \"c\"\ntopic = \"u/{device}\"\nallow_unknown = true\n", 11, "ble[1].name", "already scans the first adapter"),
    ("bad min_interval", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[ble]]\nname = \"b\"\ntopic = \"t/{device}\"\nmin_interval = \"often\"\nallow_unknown = true\n", 9, "ble[0].min_interval", "not a duration"),
    ("unknown key in ble.device", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[ble]]\nname = \"b\"\ntopic = \"t/{device}\"\n[[ble.device]]\naddress = \"A4:C1:38:8E:11:22\"\ncolour = \"red\"\n", 11, "ble.device.colour", "unknown field"),
    ("bad gatt mode", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[ble]]\nname = \"b\"\ntopic = \"t/{device}\"\n[[ble.gatt]]\naddress = \"C0:98:E5:49:00:01\"\nservice = \"181a\"\ncharacteristic = \"2a6e\"\nmode = \"indicate\"\ndecode = { type = \"i16le\", field = \"t\" }\n", 13, "ble[0].gatt[0].mode", "notify"),
    ("read without every", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[ble]]\nname = \"b\"\ntopic = \"t/{device}\"\n[[ble.gatt]]\naddress = \"C0:98:E5:49:00:01\"\nservice = \"181a\"\ncharacteristic = \"2a6e\"\nmode = \"read\"\ndecode = { type = \"i16le\", field = \"t\" }\n", 13, "ble[0].gatt[0].every", "needs `every"),
    ("bad gatt type", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[ble]]\nname = \"b\"\ntopic = \"t/{device}\"\n[[ble.gatt]]\naddress = \"C0:98:E5:49:00:01\"\nservice = \"181a\"\ncharacteristic = \"2a6e\"\nmode = \"notify\"\ndecode = { type = \"i24le\", field = \"t\" }\n", 14, "ble[0].gatt[0].decode", "i16le"),
    ("bad characteristic uuid", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[ble]]\nname = \"b\"\ntopic = \"t/{device}\"\n[[ble.gatt]]\naddress = \"C0:98:E5:49:00:01\"\nservice = \"181a\"\ncharacteristic = \"2a6\"\nmode = \"notify\"\ndecode = { type = \"i16le\", field = \"t\" }\n", 12, "ble[0].gatt[0].characteristic", "must be a UUID"),
    ("unknown nmea sentence", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"gps\"\ndevice = \"/dev/x\"\nformat = \"nmea\"\ntopic = \"t/{sentence}\"\nsentences = [\"GGA\", \"GPRMC\"]\n", 11, "serial[0].sentences", "`GPRMC` is not a sentence type"),
    ("no nmea sentence", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"gps\"\ndevice = \"/dev/x\"\nformat = \"nmea\"\ntopic = \"t\"\nsentences = []\n", 11, "serial[0].sentences", "at least one"),
    ("bad nmea min_interval", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"gps\"\ndevice = \"/dev/x\"\nformat = \"nmea\"\ntopic = \"t\"\nmin_interval = \"2 days\"\n", 11, "serial[0].min_interval", "between 0s and 1d"),
    ("sentences on json", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"json\"\ntopic = \"t\"\nsentences = [\"GGA\"]\n", 11, "serial[0].sentences", "belongs to format \"nmea\""),
    ("sentence in a json topic", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"json\"\ntopic = \"t/{sentence}\"\n", 10, "serial[0].topic", "{sentence} belongs to [[serial]] inputs with format = \"nmea\""),
    ("sentence in a synthetic topic", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n[[synthetic]]\nname = \"s\"\nrate = 1.0\nfields = [\"x\"]\ntopic = \"t/{sentence}\"\n", 10, "synthetic[0].topic", "{sentence} belongs to"),
];

#[test]
fn the_issue_config_is_valid() {
    let c = Config::parse(Path::new("sensorgate.toml"), GOOD).unwrap();
    assert_eq!(c.mqtt.client_id, "sensorgate-gw1");
    assert_eq!(c.mqtt.availability_topic, "sensorgate/gw1/status");
    assert_eq!(c.queue_path(), Path::new("/var/lib/sensorgate/queue.db"));
}

/// The `[[ble]]` example of issue 3, as README.md documents it.
#[cfg(feature = "ble")]
#[test]
fn the_ble_example_is_valid() {
    let text = format!(
        "{GOOD}\n[[ble]]\nname = \"yard\"\nadapter = \"hci0\"\ntopic = \"site/{{gateway}}/{{input}}/{{device}}\"\n\
         min_interval = \"60s\"\nallow_unknown = true\n\n[[ble.device]]\naddress = \"A4:C1:38:8E:11:22\"\n\
         alias = \"greenhouse\"\nbindkey = \"231d39c1d7cc1ab1aee224cd096db932\"\n\n[[ble.gatt]]\n\
         address = \"C0:98:E5:49:00:01\"\nservice = \"0000181a-0000-1000-8000-00805f9b34fb\"\n\
         characteristic = \"00002a6e-0000-1000-8000-00805f9b34fb\"\nmode = \"notify\"\n\
         decode = {{ type = \"i16le\", scale = 0.01, field = \"temperature\" }}\n"
    );
    let c = Config::parse(Path::new("sensorgate.toml"), &text).unwrap();
    let ble = match &c.inputs[1].kind {
        sensorgate::config::InputKind::Ble(b) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(ble.adapter.as_deref(), Some("hci0"));
    assert_eq!(ble.devices[0].address, [0xa4, 0xc1, 0x38, 0x8e, 0x11, 0x22]);
    assert_eq!(ble.devices[0].alias.as_deref(), Some("greenhouse"));
    assert_eq!(ble.devices[0].bindkey.unwrap()[0], 0x23);
    assert_eq!(ble.gatt[0].mode, sensorgate::config::GattMode::Notify);
    assert_eq!(ble.gatt[0].characteristic >> 96, 0x2a6e);
    assert_eq!(
        c.inputs[1]
            .route
            .topic
            .render_device("gw1", "yard", Some("greenhouse"), None),
        "site/gw1/yard/greenhouse"
    );
}

/// The NMEA example of README.md: a GPS on `{sentence}` topics, two types, one a minute.
#[test]
fn the_nmea_example_is_valid() {
    use sensorgate::input::format::{nmea::Kind, LineFormat};
    let text = format!(
        "{GOOD}\n[[serial]]\nname = \"gps\"\ndevice = \"/dev/ttyACM0\"\nbaud = 9600\nformat = \"nmea\"\n\
         topic = \"site/{{gateway}}/{{input}}/{{sentence}}\"\nsentences = [\"GGA\", \"RMC\"]\nmin_interval = \"60s\"\n"
    );
    let c = Config::parse(Path::new("sensorgate.toml"), &text).unwrap();
    let sensorgate::config::InputKind::Serial(s) = &c.inputs[1].kind else {
        panic!("{:?}", c.inputs[1].kind)
    };
    let LineFormat::Nmea {
        sentences,
        min_interval,
    } = &s.format
    else {
        panic!("{:?}", s.format)
    };
    assert!(sentences.contains(Kind::Gga) && sentences.contains(Kind::Rmc));
    assert!(!sentences.contains(Kind::Gsv));
    assert_eq!(*min_interval, Some(std::time::Duration::from_secs(60)));
    let labels = sensorgate::topic::Labels {
        device: None,
        sentence: Some("GGA"),
    };
    assert_eq!(
        c.inputs[1]
            .route
            .topic
            .render_labels("gw1", "gps", labels, None),
        "site/gw1/gps/GGA"
    );
}

#[test]
fn every_bad_config_names_file_line_key_and_reason() {
    let mut failures = Vec::new();
    for (what, text, line, key, words) in BAD {
        match Config::parse(Path::new("bad.toml"), text) {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(e) => {
                let shown = e.to_string();
                if e.file != "bad.toml"
                    || e.line != *line
                    || e.key != *key
                    || !shown.contains(words)
                {
                    failures.push(format!("{what}: got {shown:?} (line {}, key {:?}); want line {line}, key {key:?}, words {words:?}", e.line, e.key));
                }
                assert!(shown.starts_with(&format!("bad.toml:{}:", e.line)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A `[[serial]]` input of ten lines, for the `fields` cases below to continue.
const SERIAL_KV: &str = "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n\
    [[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"kv\"\ntopic = \"t\"\n";
const SERIAL_CSV: &str = "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n\
    [[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"csv\"\ncolumns = [\"t\", \"h\"]\ntopic = \"t\"\n";
const SYNTHETIC: &str = "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n\
    [[synthetic]]\nname = \"s\"\nrate = 1.0\ntopic = \"t\"\n";

/// Per-field transforms: (what is wrong, the input before, what follows it, line, key, words).
const BAD_FIELDS: &[(&str, &str, &str, usize, &str, &str)] = &[
    (
        "rename onto a field kept",
        SERIAL_KV,
        "fields.a = { rename = \"b\" }\nfields.b = { scale = 2 }\n",
        11,
        "serial[0].fields.a.rename",
        "already the name of field `b`",
    ),
    (
        "two renames onto one name",
        SERIAL_KV,
        "[serial.fields.t]\nrename = \"b\"\n[serial.fields.u]\nrename = \"b\"\n",
        14,
        "serial[0].fields.u.rename",
        "already the name of field `t`",
    ),
    (
        "rename onto a csv column",
        SERIAL_CSV,
        "fields.t = { rename = \"h\" }\n",
        12,
        "serial[0].fields.t.rename",
        "another field of this input",
    ),
    (
        "rename onto a generated field",
        SYNTHETIC,
        "fields.a = { rename = \"b\" }\nfields.b = {}\n",
        10,
        "synthetic[0].fields.a.rename",
        "already the name of field `b`",
    ),
    (
        "empty rename",
        SERIAL_KV,
        "fields.a = { rename = \"\" }\n",
        11,
        "serial[0].fields.a.rename",
        "non-empty",
    ),
    (
        "rename to a gateway field",
        SERIAL_KV,
        "fields.a = { rename = \"_seq\" }\n",
        11,
        "serial[0].fields.a.rename",
        "the gateway's own",
    ),
    (
        "empty field name",
        SERIAL_KV,
        "fields.\"\" = { scale = 2 }\n",
        11,
        "serial[0].fields.",
        "non-empty",
    ),
    (
        "rule for no column",
        SERIAL_CSV,
        "fields.x = { scale = 2 }\n",
        12,
        "serial[0].fields.x",
        "not a field of this input (it has t, h)",
    ),
    (
        "zero scale",
        SERIAL_KV,
        "fields.t = { scale = 0 }\n",
        11,
        "serial[0].fields.t.scale",
        "other than 0",
    ),
    (
        "nan scale",
        SERIAL_KV,
        "fields.t = { scale = nan }\n",
        11,
        "serial[0].fields.t.scale",
        "finite",
    ),
    (
        "infinite offset",
        SERIAL_KV,
        "[serial.fields.t]\noffset = -inf\n",
        12,
        "serial[0].fields.t.offset",
        "finite",
    ),
    (
        "negative deadband",
        SERIAL_KV,
        "fields.t = { deadband = -1 }\n",
        11,
        "serial[0].fields.t.deadband",
        "0 or more",
    ),
    (
        "drop and scale",
        SERIAL_KV,
        "fields.t = { drop = true, scale = 2 }\n",
        11,
        "serial[0].fields.t.scale",
        "dropped",
    ),
    (
        "empty unit",
        SERIAL_KV,
        "fields.t = { unit = \"\" }\n",
        11,
        "serial[0].fields.t.unit",
        "non-empty",
    ),
    (
        "unknown key in a rule",
        SERIAL_KV,
        "fields.t = { colour = 1 }\n",
        11,
        "serial.fields.t",
        "unknown field `colour`",
    ),
    (
        "scale as text",
        SERIAL_KV,
        "fields.t = { scale = \"x\" }\n",
        11,
        "serial.fields.t",
        "expected f64",
    ),
    (
        "fields as a list",
        SERIAL_KV,
        "fields = [\"a\"]\n",
        11,
        "serial.fields",
        "a table of field names",
    ),
    (
        "max_interval of 0s",
        SERIAL_KV,
        "max_interval = \"0s\"\n",
        11,
        "serial[0].max_interval",
        "between 1s and 30d",
    ),
    (
        "max_interval not a duration",
        SYNTHETIC,
        "fields = [\"a\"]\nmax_interval = \"soon\"\n",
        11,
        "synthetic[0].max_interval",
        "not a duration",
    ),
];

#[test]
fn every_bad_field_rule_names_file_line_key_and_reason() {
    let mut failures = Vec::new();
    for (what, input, rest, line, key, words) in BAD_FIELDS {
        match Config::parse(Path::new("bad.toml"), &format!("{input}{rest}")) {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(e) => {
                let shown = e.to_string();
                if e.file != "bad.toml"
                    || e.line != *line
                    || e.key != *key
                    || !shown.contains(words)
                {
                    failures.push(format!("{what}: got {shown:?} (line {}, key {:?}); want line {line}, key {key:?}, words {words:?}", e.line, e.key));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The transforms of the README's example, as the gateway reads them; a `[[synthetic]]`
/// names its fields with their rules; a rename may swap two names.
#[test]
fn the_fields_example_is_valid() {
    use std::time::Duration;
    let text = format!(
        "{SERIAL_KV}max_interval = \"15m\"\n\
         fields.t = {{ rename = \"temp\", scale = 0.1, offset = -40, unit = \"°C\", deadband = 0.2 }}\n\
         fields.debug = {{ drop = true }}\n\
         fields.\"wind.speed\" = {{ scale = 0.514 }}\n\
         [serial.fields.h]\nrename = \"t\"\n\
         [[synthetic]]\nname = \"s\"\nrate = 1.0\ntopic = \"u\"\nfields.b = {{ scale = 2 }}\nfields.a = {{}}\n"
    );
    let c = Config::parse(Path::new("sensorgate.toml"), &text).unwrap();
    let rules = &c.inputs[0].route.fields;
    let t = rules.get("t").unwrap();
    assert_eq!(t.rename.as_deref(), Some("temp"));
    assert_eq!((t.scale, t.offset, t.deadband), (0.1, -40.0, Some(0.2)));
    assert_eq!(t.unit.as_deref(), Some("°C"));
    assert!(rules.get("debug").unwrap().drop);
    assert_eq!(rules.get("h").unwrap().rename.as_deref(), Some("t"));
    assert_eq!(rules.get("wind.speed").unwrap().scale, 0.514);
    assert_eq!(rules.max_interval, Some(Duration::from_secs(900)));
    assert!(rules.gated());
    let synthetic = &c.inputs[1];
    match &synthetic.kind {
        sensorgate::config::InputKind::Synthetic(s) => {
            let names: Vec<&str> = s.fields.iter().map(|f| &**f).collect();
            assert_eq!(names, ["a", "b"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(synthetic.route.fields.get("b").unwrap().scale, 2.0);
    assert!(!synthetic.route.fields.gated());
}

#[cfg(feature = "ble")]
#[test]
fn a_bad_ble_field_rule_names_its_key() {
    let text = "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n\
        [[ble]]\nname = \"b\"\ntopic = \"t/{device}\"\nallow_unknown = true\n\
        fields.temperature = { deadband = -0.1 }\n";
    let e = Config::parse(Path::new("bad.toml"), text).unwrap_err();
    assert_eq!(
        (e.line, e.key.as_str()),
        (10, "ble[0].fields.temperature.deadband")
    );
    let good = text.replace("-0.1", "0.2") + "max_interval = \"1h\"\n";
    let c = Config::parse(Path::new("good.toml"), &good).unwrap();
    assert_eq!(
        c.inputs[0]
            .route
            .fields
            .get("temperature")
            .unwrap()
            .deadband,
        Some(0.2)
    );
}
