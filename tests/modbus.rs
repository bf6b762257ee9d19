//! Modbus inputs end to end: pymodbus (a Modbus implementation we did not write) serves
//! slaves over RTU on a socat pseudo-terminal pair, or over TCP; the real gateway polls them
//! and its readings are read back at a real Mosquitto. Register contents are packed by the
//! server with Python's struct from the same values the test expects.

use crate::support::broker::Broker;
use crate::support::free_port;
use crate::support::gateway::{base_config, Gateway};
use crate::support::modbus::{ModbusServer, PtyPair, Transport};
use crate::support::subscriber::Subscriber;
use crate::support::wait_until;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);
const ORDERS: [&str; 4] = ["abcd", "cdab", "badc", "dcba"];

/// (type, value): each is served in every order.
fn typed_values() -> Vec<(&'static str, Value)> {
    vec![
        ("u16", json!(51234)),
        ("i16", json!(-1234)),
        ("u32", json!(3_000_000_000u64)),
        ("i32", json!(-123_456_789)),
        ("u64", json!(18_000_000_000_000_000_123u64)),
        ("i64", json!(-9_000_000_000_000_000_123i64)),
        ("f32", json!(230.5)),
        ("f64", json!(-1234.5625e3)),
    ]
}

fn words(ty: &str) -> u16 {
    match ty {
        "u16" | "i16" => 1,
        "u32" | "i32" | "f32" => 2,
        _ => 4,
    }
}

/// The server's spec and the gateway's `[[modbus.slave]]` tables for the same slaves:
/// unit 1 ("main") with every type in every order, a scaled value, register bits, coils,
/// discrete inputs and one register past the end of its table (an illegal data address);
/// unit 2 (no alias) with one register.
fn slaves() -> (Value, String) {
    let (mut holding, mut regs, mut addr) = (Vec::new(), Vec::new(), 0u16);
    for (ty, v) in typed_values() {
        for order in ORDERS {
            holding.push(json!([addr, ty, order, v]));
            regs.push(format!(
                "{{ field = \"{ty}_{order}\", kind = \"holding\", address = {addr}, type = \"{ty}\", order = \"{order}\" }}"
            ));
            addr += words(ty);
        }
    }
    regs.push("{ field = \"missing\", kind = \"holding\", address = 150 }".into());
    regs.push("{ field = \"temp\", kind = \"input\", address = 0, type = \"i16\", scale = 0.1, offset = -40 }".into());
    regs.push("{ field = \"alarm\", kind = \"input\", address = 5, bit = 1 }".into());
    regs.push("{ field = \"door\", kind = \"input\", address = 5, bit = 2 }".into());
    for (name, kind, a) in [
        ("run", "coil", 0),
        ("fan", "coil", 1),
        ("pump", "coil", 2),
        ("dry", "discrete", 0),
        ("wet", "discrete", 3),
    ] {
        regs.push(format!(
            "{{ field = \"{name}\", kind = \"{kind}\", address = {a} }}"
        ));
    }
    let spec = json!({"slaves": [
        {"unit": 1, "size": 100, "holding": holding,
         "input": [[0, "i16", "abcd", 123], [5, "u16", "abcd", 0b1010]],
         "coils": [[0, true], [1, false], [2, true]], "discrete": [[0, true], [3, false]]},
        {"unit": 2, "holding": [[0, "u16", "abcd", 7]]},
    ]});
    let toml = format!(
        "[[modbus.slave]]\nunit = 1\nalias = \"main\"\nregisters = [\n  {}\n]\n\n\
         [[modbus.slave]]\nunit = 2\nregisters = [{{ field = \"x\", kind = \"holding\", address = 0 }}]\n",
        regs.join(",\n  ")
    );
    (spec, toml)
}

/// Checks every field of a reading of unit 1 against the values the server was given.
fn check_main(r: &Value) {
    for (ty, v) in typed_values() {
        for order in ORDERS {
            let got = &r[format!("{ty}_{order}")];
            match ty {
                // A u64 above i64::MAX is published as a float.
                "u64" => assert_eq!(
                    got.as_f64(),
                    Some(v.as_u64().unwrap() as f64),
                    "{ty}_{order}"
                ),
                "f32" | "f64" => assert_eq!(got.as_f64(), v.as_f64(), "{ty}_{order}"),
                _ => assert_eq!(got, &v, "{ty}_{order}"),
            }
        }
    }
    assert_eq!(r["temp"].as_f64(), Some(123.0 * 0.1 - 40.0));
    assert_eq!((&r["alarm"], &r["door"]), (&json!(true), &json!(false)));
    let bits = ["run", "fan", "pump", "dry", "wet"].map(|k| r[k].clone());
    assert_eq!(bits, [true, false, true, true, false].map(|b| json!(b)));
    assert!(
        r.get("missing").is_none(),
        "an exception leaves the field out: {r}"
    );
}

struct Rig {
    _broker: Broker,
    sub: Subscriber,
    health: Subscriber,
    gw: Gateway,
}

/// A broker, two subscribers (readings and health) and the gateway with one `[[modbus]]`
/// on `bus` (`device = ...` or `url = ...`) holding `slaves`.
fn rig(dir: &Path, bus: &str, slaves: &str) -> Rig {
    let broker = Broker::start_in(dir);
    let sub = Subscriber::start(broker.port, "site/#", "t-modbus");
    let health = Subscriber::start(broker.port, "sensorgate/gw/#", "t-health");
    let cfg = base_config(dir, "gw", &broker.url(), "")
        .replace("health_interval = \"0s\"", "health_interval = \"1s\"")
        + &format!(
            "[queue]\ncommit_linger = \"20ms\"\n\n[[modbus]]\nname = \"meter\"\n{bus}\n\
             every = \"300ms\"\ntimeout = \"200ms\"\nreopen_min = \"100ms\"\nreopen_max = \"500ms\"\n\
             topic = \"site/{{gateway}}/{{input}}/{{device}}\"\n\n{slaves}"
        );
    let mut gw = Gateway::new(dir, &cfg);
    gw.start();
    Rig {
        _broker: broker,
        sub,
        health,
        gw,
    }
}

impl Rig {
    /// The readings of `device` so far.
    fn readings(&self, device: &str) -> Vec<Value> {
        let topic = format!("site/gw/meter/{device}");
        self.sub
            .messages()
            .into_iter()
            .filter(|(t, _)| *t == topic)
            .map(|(_, p)| serde_json::from_str(&p).unwrap())
            .collect()
    }

    /// Waits until `device` has made `n` readings in all.
    fn wait_readings(&self, device: &str, n: usize) {
        wait_until(&format!("{n} readings of {device}"), LONG, || {
            self.readings(device).len() >= n
        });
    }

    /// The failures the last health message counts for `device` of input meter.
    fn failures(&self, device: &str) -> Value {
        let mut health = self.health.messages().into_iter();
        let last = health
            .rfind(|(t, _)| t == "sensorgate/gw/health")
            .map(|(_, p)| p);
        let h: Value = last.map_or(Value::Null, |p| serde_json::from_str(&p).unwrap());
        h["devices"][format!("meter/{device}")].clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.gw.log().matches(needle).count()
    }
}

const FAILING: &str = "Modbus device failing; retrying every period. input=meter device=";
const AGAIN: &str = "Modbus device answers again. input=meter device=";

#[test]
fn rtu_registers_of_every_type_and_order_coils_and_bits_reach_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let pair = PtyPair::start(dir.path());
    let (spec, slaves) = slaves();
    let _server = ModbusServer::start(dir.path(), &spec, Transport::Rtu(&pair.server_end, 19200));
    let bus = format!("device = \"{}\"\nbaud = 19200", pair.gateway_end.display());
    let rig = rig(dir.path(), &bus, &slaves);
    rig.wait_readings("main", 3);
    rig.wait_readings("unit2", 3);
    for r in rig.readings("main") {
        check_main(&r);
    }
    assert_eq!(rig.readings("unit2")[0]["x"], json!(7));
    // The exception at register 150 is counted at every poll, and logged once.
    wait_until("3 exceptions counted for main", LONG, || {
        rig.failures("main")["exceptions"].as_u64() >= Some(3)
    });
    assert_eq!(rig.failures("main")["timeouts"], json!(0));
    assert_eq!(rig.count(&format!("{FAILING}main ")), 1, "{}", rig.gw.log());
    assert!(rig.gw.log().contains("Illegal data address"));
    assert_eq!(rig.count(&format!("{FAILING}unit2 ")), 0);
}

#[test]
fn tcp_slaves_are_polled_like_rtu_ones() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (spec, slaves) = slaves();
    let _server = ModbusServer::start(dir.path(), &spec, Transport::Tcp(port));
    let rig = rig(
        dir.path(),
        &format!("url = \"tcp://127.0.0.1:{port}\""),
        &slaves,
    );
    rig.wait_readings("main", 2);
    rig.wait_readings("unit2", 2);
    for r in rig.readings("main") {
        check_main(&r);
    }
    assert_eq!(rig.readings("unit2")[0]["x"], json!(7));
}

#[test]
fn a_tcp_server_that_goes_away_is_connected_to_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (spec, slaves) = slaves();
    let server = ModbusServer::start(dir.path(), &spec, Transport::Tcp(port));
    let rig = rig(
        dir.path(),
        &format!("url = \"tcp://127.0.0.1:{port}\""),
        &slaves,
    );
    rig.wait_readings("main", 2);
    drop(server);
    rig.gw.wait_log("Modbus bus lost; reopening.", LONG);
    rig.gw
        .wait_log("Cannot open the Modbus bus; retrying with backoff.", LONG);
    let before = rig.readings("main").len();
    let _server = ModbusServer::start(dir.path(), &spec, Transport::Tcp(port));
    rig.wait_readings("main", before + 3);
    assert_eq!(rig.count("Modbus bus open."), 2, "{}", rig.gw.log());
    for r in rig.readings("main") {
        check_main(&r);
    }
}

#[test]
fn a_slave_that_stops_answering_is_counted_and_logged_once_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let pair = PtyPair::start(dir.path());
    let (spec, slaves) = slaves();
    let server = ModbusServer::start(dir.path(), &spec, Transport::Rtu(&pair.server_end, 9600));
    let bus = format!("device = \"{}\"", pair.gateway_end.display());
    let rig = rig(dir.path(), &bus, &slaves);
    rig.wait_readings("unit2", 2);
    server.silence(2, true);
    wait_until("3 timeouts counted for unit2", LONG, || {
        rig.failures("unit2")["timeouts"].as_u64() >= Some(3)
    });
    // Its neighbour on the bus goes on.
    let (main, unit2) = (rig.readings("main").len(), rig.readings("unit2").len());
    rig.wait_readings("main", main + 3);
    assert!(
        rig.readings("unit2").len() <= unit2 + 1,
        "at most one in flight"
    );
    server.silence(2, false);
    rig.gw.wait_log(&format!("{AGAIN}unit2 "), LONG);
    let unit2 = rig.readings("unit2").len();
    rig.wait_readings("unit2", unit2 + 3);
    assert_eq!(
        rig.count(&format!("{FAILING}unit2 ")),
        1,
        "{}",
        rig.gw.log()
    );
    assert_eq!(rig.count(&format!("{AGAIN}unit2 ")), 1);
    assert!(rig.gw.log().contains(&format!(
        "{FAILING}unit2 unit=2 error=no answer within 200ms"
    )));
    assert_eq!(rig.failures("unit2")["exceptions"], json!(0));
}

#[test]
fn a_late_answer_is_not_taken_for_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let pair = PtyPair::start(dir.path());
    let (spec, slaves) = slaves();
    let server = ModbusServer::start(dir.path(), &spec, Transport::Rtu(&pair.server_end, 9600));
    let bus = format!("device = \"{}\"", pair.gateway_end.display());
    let rig = rig(dir.path(), &bus, &slaves);
    rig.wait_readings("unit2", 2);
    // Unit 2 answers 150 ms after the gateway gave up on it (timeout 200 ms).
    server.delay(2, Some(Duration::from_millis(350)));
    wait_until("3 timeouts counted for unit2", LONG, || {
        rig.failures("unit2")["timeouts"].as_u64() >= Some(3)
    });
    let main = rig.readings("main").len();
    rig.wait_readings("main", main + 3);
    for r in rig.readings("main") {
        check_main(&r);
    }
    assert_eq!(rig.failures("main")["errors"], json!(0), "{}", rig.gw.log());
    assert_eq!(rig.failures("main")["timeouts"], json!(0));
    assert!(rig
        .gw
        .log()
        .contains("Discarded bytes that arrived before a request"));
    server.delay(2, None);
    rig.gw.wait_log(&format!("{AGAIN}unit2 "), LONG);
}

#[test]
fn answers_with_a_wrong_crc_are_counted_and_the_bus_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let pair = PtyPair::start(dir.path());
    let (spec, slaves) = slaves();
    let server = ModbusServer::start(dir.path(), &spec, Transport::Rtu(&pair.server_end, 9600));
    let bus = format!("device = \"{}\"", pair.gateway_end.display());
    let rig = rig(dir.path(), &bus, &slaves);
    rig.wait_readings("unit2", 2);
    server.corrupt(2, true);
    // tokio-modbus skips a frame whose CRC is wrong and looks for one further on: the
    // request ends as a timeout (or as an error, when it gives up on the bytes).
    let failed =
        |f: &Value| f["timeouts"].as_u64().unwrap_or(0) + f["errors"].as_u64().unwrap_or(0);
    wait_until("3 failures counted for unit2", LONG, || {
        failed(&rig.failures("unit2")) >= 3
    });
    let unit2 = rig.readings("unit2").len();
    let main = rig.readings("main").len();
    rig.wait_readings("main", main + 3);
    assert!(
        rig.readings("unit2").len() <= unit2 + 1,
        "no reading from a wrong CRC"
    );
    server.corrupt(2, false);
    rig.gw.wait_log(&format!("{AGAIN}unit2 "), LONG);
    rig.wait_readings("unit2", unit2 + 2);
    assert_eq!(rig.readings("unit2").last().unwrap()["x"], json!(7));
    for r in rig.readings("main") {
        check_main(&r);
    }
    assert_eq!(
        rig.count(&format!("{FAILING}unit2 ")),
        1,
        "{}",
        rig.gw.log()
    );
}

#[test]
fn a_bus_that_vanishes_is_reopened_when_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut pair = PtyPair::start(dir.path());
    let (spec, slaves) = slaves();
    let _server = ModbusServer::start(dir.path(), &spec, Transport::Rtu(&pair.server_end, 9600));
    let bus = format!("device = \"{}\"", pair.gateway_end.display());
    let rig = rig(dir.path(), &bus, &slaves);
    rig.wait_readings("main", 2);
    pair.stop();
    // The port fails (an I/O error), or its path is seen gone first; either way the gateway
    // closes it and waits for the path to return.
    wait_until("the bus closed and its device waited for", LONG, || {
        let log = rig.gw.log();
        log.contains("Modbus bus device vanished; closed it and waiting for it to return.")
            || (log.contains("Modbus bus lost; reopening.")
                && log.contains("Modbus bus device absent; waiting for it."))
    });
    let before = rig.readings("main").len();
    pair.restart();
    rig.wait_readings("main", before + 3);
    assert_eq!(rig.count("Modbus bus open."), 2, "{}", rig.gw.log());
    for r in rig.readings("main") {
        check_main(&r);
    }
}
