//! `[[modbus]]` configs: the issue's example is valid and plans its reads; each bad config
//! names the file, the line, the key and the reason (as in `config_errors`).

use sensorgate::config::modbus::{Bus, Parity};
use sensorgate::config::{Config, InputKind};
use sensorgate::input::modbus::plan::{Decode, Order, Table, Type};
use std::path::Path;

const HEAD: &str = "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n";

/// The example of issue 16, as README.md documents it.
const EXAMPLE: &str = r#"
[[modbus]]
name = "meter"
device = "/dev/serial/by-id/usb-FTDI_FT232R_A50285BI-if00-port0"
baud = 9600
parity = "none"
stop_bits = 1
timeout = "500ms"
every = "10s"
topic = "site/{gateway}/{input}/{device}"

[[modbus.slave]]
unit = 1
alias = "main_meter"
registers = [
  { field = "voltage",  kind = "input",   address = 0,  type = "f32",  order = "abcd" },
  { field = "current",  kind = "input",   address = 6,  type = "f32",  order = "cdab" },
  { field = "energy",   kind = "holding", address = 342, type = "u32", scale = 0.01 },
  { field = "temp",     kind = "holding", address = 10, type = "i16",  scale = 0.1, offset = -40 },
  { field = "running",  kind = "coil",    address = 0 },
]

[[modbus.slave]]
unit = 2
registers = [ { field = "alarm", kind = "holding", address = 0, bit = 3 } ]
"#;

#[test]
fn the_issue_example_is_valid_and_plans_its_reads() {
    let c = Config::parse(Path::new("sensorgate.toml"), &format!("{HEAD}{EXAMPLE}")).unwrap();
    let InputKind::Modbus(m) = &c.inputs[0].kind else {
        panic!("{:?}", c.inputs[0].kind)
    };
    assert_eq!(
        m.bus,
        Bus::Rtu {
            device: "/dev/serial/by-id/usb-FTDI_FT232R_A50285BI-if00-port0".into(),
            baud: 9600,
            parity: Parity::None,
            stop_bits: 1,
            data_bits: 8,
        }
    );
    assert_eq!(m.every, std::time::Duration::from_secs(10));
    let main = &m.slaves[0];
    assert_eq!((main.unit, &*main.device), (1, "main_meter"));
    assert_eq!(&*m.slaves[1].device, "unit2", "no alias: unit<id>");
    assert_eq!(m.slaves[1].fields[0].decode, Decode::RegisterBit(3));
    let current = &main.fields[1];
    assert!(matches!(
        current.decode,
        Decode::Number {
            ty: Type::F32,
            order: Order::Cdab,
            scaled: false,
            ..
        }
    ));
    let temp = &main.fields[3];
    assert!(matches!(
        temp.decode,
        Decode::Number { ty: Type::I16, scaled: true, offset, .. } if offset == -40.0
    ));
    // input 0..2 and 6..8 are apart; holding 10 and 342 too; one coil.
    let reads: Vec<_> = main
        .reads
        .iter()
        .map(|r| (r.table, r.address, r.count))
        .collect();
    assert_eq!(
        reads,
        [
            (Table::Coil, 0, 1),
            (Table::Input, 0, 2),
            (Table::Input, 6, 2),
            (Table::Holding, 10, 1),
            (Table::Holding, 342, 2),
        ]
    );
    assert_eq!(
        c.inputs[0]
            .route
            .topic
            .render_device("g", "meter", Some("main_meter"), None),
        "site/g/meter/main_meter"
    );
    let shown = sensorgate::describe::describe(&c);
    assert!(
        shown.contains("modbus RTU on /dev/serial/by-id/usb-FTDI_FT232R_A50285BI-if00-port0 at 9600 baud 8N1, every 10s, timeout 500ms, slaves main_meter (unit 1, 5 fields in 5 reads), unit2 (unit 2, 1 fields in 1 reads)"),
        "{shown}"
    );
    assert!(shown.contains("e.g. site/g/meter/main_meter"), "{shown}");
}

#[test]
fn a_tcp_bus_takes_a_url() {
    let text = format!(
        "{HEAD}[[modbus]]\nname = \"plc\"\nurl = \"tcp://10.0.0.5\"\ntopic = \"t/{{device}}\"\n\
         [[modbus.slave]]\nunit = 0\nregisters = [{{ field = \"a\", kind = \"holding\", address = 0 }}]\n"
    );
    let c = Config::parse(Path::new("sensorgate.toml"), &text).unwrap();
    let InputKind::Modbus(m) = &c.inputs[0].kind else {
        panic!()
    };
    assert_eq!(
        m.bus,
        Bus::Tcp {
            host: "10.0.0.5".into(),
            port: 502
        }
    );
}

/// A `[[modbus]]` on a serial device with one slave of `registers`, from line 6.
fn rtu(registers: &str) -> String {
    format!(
        "{HEAD}[[modbus]]\nname = \"m\"\ndevice = \"/dev/x\"\ntopic = \"t/{{device}}\"\n\
         [[modbus.slave]]\nunit = 1\nregisters = [\n{registers}\n]\n"
    )
}

#[test]
fn every_bad_modbus_config_names_file_line_key_and_reason() {
    let reg = |r: &str| rtu(r);
    let bad: Vec<(&str, String, usize, &str, &str)> = vec![
        ("unknown type", reg("{ field = \"a\", kind = \"holding\", address = 0, type = \"u24\" }"), 13, "modbus[0].slave[0].registers[0].type", "`u24` is not one of u16"),
        ("unknown order", reg("{ field = \"a\", kind = \"holding\", address = 0, type = \"u32\", order = \"bcda\" }"), 13, "modbus[0].slave[0].registers[0].order", "abcd, cdab, badc, dcba"),
        ("unknown kind", reg("{ field = \"a\", kind = \"register\", address = 0 }"), 13, "modbus[0].slave[0].registers[0].kind", "holding, input, coil, discrete"),
        ("past 65535", reg("{ field = \"a\", kind = \"holding\", address = 0 },\n{ field = \"b\", kind = \"input\", address = 65535, type = \"u32\" }"), 14, "modbus[0].slave[0].registers[1].address", "end by 65535"),
        ("negative address", reg("{ field = \"a\", kind = \"coil\", address = -1 }"), 13, "modbus[0].slave[0].registers[0].address", "between 0 and 65535"),
        ("bit on a u32", reg("{ field = \"a\", kind = \"holding\", address = 0, type = \"u32\", bit = 3 }"), 13, "modbus[0].slave[0].registers[0].type", "16-bit register"),
        ("bit 16", reg("{ field = \"a\", kind = \"holding\", address = 0, bit = 16 }"), 13, "modbus[0].slave[0].registers[0].bit", "between 0 and 15"),
        ("type on a coil", reg("{ field = \"a\", kind = \"coil\", address = 0, type = \"u16\" }"), 13, "modbus[0].slave[0].registers[0].type", "booleans"),
        ("scale 0", reg("{ field = \"a\", kind = \"input\", address = 0, scale = 0.0 }"), 13, "modbus[0].slave[0].registers[0].scale", "other than 0"),
        ("duplicate field", reg("{ field = \"a\", kind = \"input\", address = 0 },\n{ field = \"a\", kind = \"holding\", address = 0 }"), 14, "modbus[0].slave[0].registers[1].field", "names two registers"),
        ("unknown register key", reg("{ field = \"a\", kind = \"input\", address = 0, unit = \"V\" }"), 13, "modbus.slave.registers", "unknown field `unit`"),
        ("no registers", reg(""), 12, "modbus[0].slave[0].registers", "lists no register"),
        ("duplicate unit", format!("{}[[modbus.slave]]\nunit = 1\nregisters = [{{ field = \"b\", kind = \"coil\", address = 0 }}]\n", reg("{ field = \"a\", kind = \"coil\", address = 0 }")), 16, "modbus[0].slave[1].unit", "unit 1 is listed twice"),
        ("duplicate alias", format!("{}[[modbus.slave]]\nunit = 2\nalias = \"unit1\"\nregisters = [{{ field = \"b\", kind = \"coil\", address = 0 }}]\n", reg("{ field = \"a\", kind = \"coil\", address = 0 }")), 17, "modbus[0].slave[1].alias", "names two slaves"),
        ("unit 0 on RTU", reg("{ field = \"a\", kind = \"coil\", address = 0 }").replace("unit = 1", "unit = 0"), 11, "modbus[0].slave[0].unit", "between 1 and 247"),
        ("device and url", reg("{ field = \"a\", kind = \"coil\", address = 0 }").replace("device = \"/dev/x\"", "device = \"/dev/x\"\nurl = \"tcp://h:502\""), 8, "modbus[0].device", "not both"),
        ("neither device nor url", reg("{ field = \"a\", kind = \"coil\", address = 0 }").replace("device = \"/dev/x\"\n", ""), 7, "modbus[0].device", "or `url"),
        ("bad url", reg("{ field = \"a\", kind = \"coil\", address = 0 }").replace("device = \"/dev/x\"", "url = \"http://h\""), 8, "modbus[0].url", "tcp://host"),
        ("baud on tcp", reg("{ field = \"a\", kind = \"coil\", address = 0 }").replace("device = \"/dev/x\"", "url = \"tcp://h\"\nbaud = 9600"), 9, "modbus[0].baud", "serial bus"),
        ("bad parity", reg("{ field = \"a\", kind = \"coil\", address = 0 }").replace("device = \"/dev/x\"", "device = \"/dev/x\"\nparity = \"mark\""), 9, "modbus[0].parity", "\"even\""),
        ("no slave", format!("{HEAD}[[modbus]]\nname = \"m\"\ndevice = \"/dev/x\"\ntopic = \"t\"\n"), 7, "modbus[0].slave", "lists no [[modbus.slave]]"),
        ("timeout too short", reg("{ field = \"a\", kind = \"coil\", address = 0 }").replace("device = \"/dev/x\"", "device = \"/dev/x\"\ntimeout = \"1ms\""), 9, "modbus[0].timeout", "10ms"),
        ("one device, two inputs", format!("{}[[serial]]\nname = \"s\"\ndevice = \"/dev/x\"\nformat = \"raw\"\ntopic = \"u\"\n", reg("{ field = \"a\", kind = \"coil\", address = 0 }")), 8, "modbus[0].device", "already read by input `s`"),
    ];
    let mut failures = Vec::new();
    for (what, text, line, key, words) in &bad {
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
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn device_in_topics_is_still_refused_for_serial_inputs() {
    let text = format!(
        "{HEAD}[[serial]]\nname = \"a\"\ndevice = \"/dev/x\"\nformat = \"raw\"\ntopic = \"t/{{device}}\"\n"
    );
    let e = Config::parse(Path::new("bad.toml"), &text).unwrap_err();
    assert!(e.to_string().contains("[[modbus]]"), "{e}");
}

#[test]
fn a_reload_restarts_a_modbus_input_only_when_it_changed() {
    use sensorgate::reload::{compare, Change};
    let parse = |text: &str| Config::parse(Path::new("sensorgate.toml"), text).unwrap();
    let old = parse(&format!("{HEAD}{EXAMPLE}"));
    assert_eq!(
        compare(&old, &parse(&format!("{HEAD}{EXAMPLE}"))),
        Change::None
    );
    let moved = EXAMPLE.replace("address = 342", "address = 344");
    match compare(&old, &parse(&format!("{HEAD}{moved}"))) {
        Change::Apply { parts, .. } => assert_eq!(parts, ["inputs meter (changed)"]),
        other => panic!("{other:?}"),
    }
}

/// Per-field transforms on a Modbus bus: the registers' field names are the fields; a rule
/// for another name is a typo, named at its line.
#[test]
fn modbus_fields_take_transforms_by_their_register_names() {
    let rules = "max_interval = \"15m\"\nfields.voltage = { unit = \"V\", deadband = 0.5 }\n\
                 fields.temp = { rename = \"cabinet_temp\" }\n";
    let text = format!(
        "{HEAD}{}",
        EXAMPLE.replace(
            "[[modbus.slave]]\nunit = 1",
            &format!("{rules}\n[[modbus.slave]]\nunit = 1")
        )
    );
    let c = Config::parse(Path::new("sensorgate.toml"), &text).unwrap();
    let f = &c.inputs[0].route.fields;
    assert_eq!(f.max_interval, Some(std::time::Duration::from_secs(900)));
    assert_eq!(f.unit_of("voltage"), Some("V"));
    assert_eq!(
        f.get("temp").unwrap().rename.as_deref(),
        Some("cabinet_temp")
    );
    let bad = text.replace("fields.temp =", "fields.tmep =");
    let e = Config::parse(Path::new("sensorgate.toml"), &bad).unwrap_err();
    let line = bad
        .lines()
        .position(|l| l.starts_with("fields.tmep"))
        .unwrap()
        + 1;
    assert_eq!(
        (e.line, e.key.as_str()),
        (line, "modbus[0].fields.tmep"),
        "{e}"
    );
    assert!(e.message.contains("not a field of this input"), "{e}");
}
