//! Issue 12, findings 7 and 8: config values at the edges of their ranges, serial lines ended
//! by CR alone, SIGHUP, and a broker that does not speak MQTT 5. Real binary, real Mosquitto,
//! real pseudo-terminals; a scripted TCP server plays the broker without MQTT 5.

use crate::support::broker::Broker;
use crate::support::gateway::{base_config, Gateway, BIN};
use crate::support::pty::Pty;
use crate::support::subscriber::Subscriber;
use crate::support::wait_until;
use nix::sys::signal::Signal;
use proptest::prelude::*;
use sensorgate::config::Config;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

const HEAD: &str = "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n";

fn serial(name: &str, device: &str, extra: &str) -> String {
    format!("[[serial]]\nname = \"{name}\"\ndevice = \"{device}\"\nformat = \"json\"\ntopic = \"t/{{input}}\"\n{extra}")
}

/// Values that once made the gateway panic, spin or flood, or that no broker can take: each
/// is refused when the config loads, at its own line and key.
#[test]
fn values_at_the_edges_are_refused_where_they_are_written() {
    let huge = "\"500000000000y\"";
    let long_id = "g".repeat(100_000);
    let long_topic = format!("t/{}", "x".repeat(70_000));
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("backoff_min", format!("{HEAD}backoff_min = {huge}\n"), "mqtt.backoff_min", "between"),
        ("backoff_max", format!("{HEAD}backoff_max = {huge}\n"), "mqtt.backoff_max", "between"),
        ("connect_timeout", format!("{HEAD}connect_timeout = {huge}\n"), "mqtt.connect_timeout", "between"),
        ("ack_timeout 0s", format!("{HEAD}ack_timeout = \"0s\"\n"), "mqtt.ack_timeout", "between"),
        ("flush_every", format!("{HEAD}connection = \"on_demand\"\nflush_every = {huge}\n"), "mqtt.flush_every", "between"),
        ("batch max_delay", format!("{HEAD}[mqtt.batch]\nmax_delay = {huge}\n"), "mqtt.batch.max_delay", "between"),
        ("commit_linger", format!("{HEAD}[queue]\ncommit_linger = {huge}\n"), "queue.commit_linger", "between"),
        ("max_age", format!("{HEAD}[queue]\nmax_age = {huge}\n"), "queue.max_age", "between"),
        ("max_size", format!("{HEAD}[queue]\nmax_size = \"100000TiB\"\n"), "queue.max_size", "at most"),
        ("health 1ns", "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\nhealth_interval = \"1ns\"\n[mqtt]\nurl = \"mqtt://h\"\n".into(), "gateway.health_interval", "between"),
        ("long gateway id", format!("[gateway]\nid = \"{long_id}\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n"), "gateway.id", "at most"),
        ("long username", format!("{HEAD}username = \"{}\"\n", "u".repeat(70_000)), "mqtt.username", "at most"),
        ("tiny rate", format!("{HEAD}[[synthetic]]\nname = \"s\"\nrate = 1e-300\nfields = [\"x\"]\ntopic = \"t\"\n"), "synthetic[0].rate", "at least"),
        ("reopen_max", format!("{HEAD}{}", serial("a", "/dev/ttyS0", &format!("reopen_max = {huge}\n"))), "serial[0].reopen_max", "between"),
        ("max_interval", format!("{HEAD}{}", serial("a", "/dev/ttyS0", &format!("max_interval = {huge}\n"))), "serial[0].max_interval", "between"),
        ("long rename", format!("{HEAD}{}", serial("a", "/dev/ttyS0", &format!("[serial.fields.x]\nrename = \"{}\"\n", "r".repeat(70_000)))), "serial[0].fields.x.rename", "at most"),
        ("baud 0", format!("{HEAD}{}", serial("a", "/dev/ttyS0", "baud = 0\n")), "serial[0].baud", "between"),
        ("long input name", format!("{HEAD}{}", serial(&"n".repeat(1000), "/dev/ttyS0", "")), "serial[0].name", "at most"),
        ("topic over 65535 bytes", format!("{HEAD}[[serial]]\nname = \"a\"\ndevice = \"/dev/ttyS0\"\nformat = \"json\"\ntopic = \"{long_topic}\"\n"), "serial[0].topic", "65535"),
        ("one device, two inputs", format!("{HEAD}{}{}", serial("a", "/dev/ttyS0", ""), serial("b", "/dev/ttyS0", "")), "serial[1].device", "`a`"),
    ];
    let mut failures = Vec::new();
    for (what, text, key, words) in &cases {
        match Config::parse(Path::new("edge.toml"), text) {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(e) => {
                let shown = e.to_string();
                let seg = key.rsplit('.').next().unwrap();
                let at = text
                    .rfind(&format!("\n{seg} = "))
                    .expect("the key is in the text");
                let line = text[..at].matches('\n').count() + 2;
                if e.key != *key || !shown.contains(words) || e.line != line {
                    let short: String = shown.chars().take(300).collect();
                    failures.push(format!(
                        "{what}: got {short:?} (key {}, line {}); want key {key}, line {line}, words {words:?}",
                        e.key, e.line
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The largest and smallest value of every range, and "0s" for a health interval (off),
/// are accepted.
#[test]
fn the_ends_of_every_range_are_accepted() {
    for text in [
        max_config(Path::new("/x"), "mqtt://h", true),
        min_config(Path::new("/x"), "mqtt://h"),
    ] {
        if let Err(e) = Config::parse(Path::new("ok.toml"), &text) {
            panic!("{e}\n{text}");
        }
    }
    let off = Config::parse(
        Path::new("ok.toml"),
        &HEAD.replace(
            "state_dir = \"/x\"\n",
            "state_dir = \"/x\"\nhealth_interval = \"0s\"\n",
        ),
    )
    .unwrap();
    assert_eq!(off.gateway.health_interval, None);
}

/// Every key at the top of its range (durations, sizes, counts, lengths).
fn max_config(dir: &Path, url: &str, persistent: bool) -> String {
    let id = "g".repeat(128);
    let connection = if persistent {
        "connection = \"persistent\"\n".to_string()
    } else {
        "connection = \"on_demand\"\nflush_every = \"7d\"\n".to_string()
    };
    format!(
        "[gateway]\nid = \"{id}\"\nstate_dir = \"{}\"\nhealth_interval = \"7d\"\n\n\
         [mqtt]\nurl = \"{url}\"\nkeep_alive = \"65535s\"\nconnect_timeout = \"1h\"\n\
         backoff_min = \"1h\"\nbackoff_max = \"1d\"\nack_timeout = \"1h\"\ninflight = 1000\n\
         replay_rate = 1000000\n{connection}\
         [mqtt.batch]\nmax_readings = 10000\nmax_delay = \"1d\"\n\n\
         [queue]\nmax_size = \"1TiB\"\nmax_age = \"3650d\"\ncommit_every = 100000\ncommit_linger = \"1m\"\n\n\
         [[synthetic]]\nname = \"{}\"\nrate = 1000000\ntopic = \"edge/{{gateway}}/{{input}}\"\ncount = 20\n\
         max_interval = \"30d\"\nfields.x = {{ scale = 1.7976931348623157e308, offset = -1.7976931348623157e308, \
         deadband = 1.7976931348623157e308, rename = \"{}\", unit = \"{}\" }}\n\n\
         [[synthetic]]\nname = \"slow\"\nrate = 0.001\nfields = [\"x\"]\ntopic = \"edge/{{input}}\"\n{}",
        dir.join("state").display(),
        "i".repeat(128),
        "r".repeat(128),
        "u".repeat(128),
        ble("1d", "1d", "1h", "1d") + &modbus("1m", "1d", "1h", "1d"),
    )
}

/// A `[[ble]]` input with these durations (none without the feature). Without BlueZ it
/// retries, which is what the edges are about.
fn ble(min_interval: &str, scan_stall: &str, retry_min: &str, retry_max: &str) -> String {
    if !cfg!(feature = "ble") {
        return String::new();
    }
    format!(
        "\n[[ble]]\nname = \"b\"\ntopic = \"edge/{{device}}\"\nmin_interval = \"{min_interval}\"\n\
         scan_stall = \"{scan_stall}\"\nretry_min = \"{retry_min}\"\nretry_max = \"{retry_max}\"\n\
         [[ble.device]]\naddress = \"A4:C1:38:8E:11:22\"\n\
         [[ble.gatt]]\naddress = \"C0:98:E5:49:00:01\"\nservice = \"181a\"\ncharacteristic = \"2a6e\"\n\
         mode = \"read\"\nevery = \"{scan_stall}\"\ndecode = {{ type = \"i16le\", field = \"t\" }}\n"
    )
}

/// Every key at the bottom of its range.
fn min_config(dir: &Path, url: &str) -> String {
    format!(
        "[gateway]\nid = \"g\"\nstate_dir = \"{}\"\nhealth_interval = \"1s\"\n\n\
         [mqtt]\nurl = \"{url}\"\nkeep_alive = \"1s\"\nconnect_timeout = \"1s\"\n\
         backoff_min = \"10ms\"\nbackoff_max = \"1s\"\nack_timeout = \"1s\"\ninflight = 1\n\
         replay_rate = 0.01\n\
         [mqtt.batch]\nmax_readings = 1\nmax_delay = \"0s\"\n\n\
         [queue]\nmax_size = \"64KiB\"\nmax_age = \"1s\"\ncommit_every = 1\ncommit_linger = \"0s\"\n\n\
         [[synthetic]]\nname = \"s\"\nrate = 0.001\ntopic = \"edge/{{input}}\"\ncount = 1\n\
         max_interval = \"1s\"\nfields.x = {{ scale = 5e-324, offset = -0.0, deadband = 0.0, rename = \"r\", unit = \"u\" }}\n{}",
        dir.join("state").display(),
        ble("0s", "500ms", "10ms", "100ms") + &modbus("10ms", "100ms", "10ms", "100ms"),
    )
}

/// A `[[modbus]]` input with these durations, on a TCP port nothing listens on (so it
/// reopens at its backoff), whose registers sit at the top of the address space.
fn modbus(timeout: &str, every: &str, reopen_min: &str, reopen_max: &str) -> String {
    format!(
        "\n[[modbus]]\nname = \"mb\"\nurl = \"tcp://127.0.0.1:1\"\ntimeout = \"{timeout}\"\nevery = \"{every}\"\n\
         reopen_min = \"{reopen_min}\"\nreopen_max = \"{reopen_max}\"\ntopic = \"edge/{{device}}\"\n\
         [[modbus.slave]]\nunit = 255\nregisters = [{{ field = \"a\", kind = \"holding\", address = 65532, type = \"f64\", scale = 1e300 }}, \
         {{ field = \"b\", kind = \"coil\", address = 65535 }}]\n"
    )
}

/// A few seconds of `run` with every key at the top (and, on demand, the bottom) of its
/// range: no panic, no exit, and a clean stop.
#[test]
fn run_at_the_ends_of_every_range_neither_panics_nor_stops() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&dir.path().join("broker"));
    let sub = Subscriber::start(broker.port, "edge/#", "t-edge");
    for (name, text) in [
        (
            "max",
            max_config(&dir.path().join("max"), &broker.url(), true),
        ),
        (
            "max-on-demand",
            max_config(&dir.path().join("od"), &broker.url(), false),
        ),
        ("min", min_config(&dir.path().join("min"), &broker.url())),
    ] {
        let mut gw = Gateway::new(&dir.path().join(name), &text);
        gw.start();
        gw.wait_log("Gateway running.", LONG);
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            assert!(
                gw.is_running(),
                "{name}: the gateway stopped:\n{}",
                gw.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (status, _) = gw.terminate(LONG);
        let log = gw.log();
        assert!(!log.contains("panicked"), "{name}:\n{log}");
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{name}:\n{log}");
    }
    drop(sub);
}

/// Extreme values for the keys of each kind.
fn durations() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0s".to_string()),
        Just("1ns".to_string()),
        Just("500000000000y".to_string()),
        Just("18446744073709551615s".to_string()),
        Just("584542046090y".to_string()),
        (
            0u64..u64::MAX,
            prop::sample::select(vec!["ns", "us", "ms", "s", "m", "h", "d", "w", "y"])
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
        (
            0u64..100_000,
            prop::sample::select(vec!["ms", "s", "m", "h", "d"])
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
    ]
}

fn integers() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            i64::MIN,
            -1,
            0,
            1,
            2,
            255,
            256,
            65_535,
            65_536,
            1 << 20,
            u32::MAX as i64,
            i64::MAX
        ])
        .prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn floats() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "1e-300",
            "1e300",
            "0.0",
            "-0.0",
            "nan",
            "inf",
            "-inf",
            "-1.0",
            "5e-324",
            "1.7976931348623157e308"
        ])
        .prop_map(str::to_string),
        any::<f64>().prop_map(|f| format!("{f:e}")),
    ]
}

fn sizes() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "64KiB",
            "1TiB",
            "1.5TiB",
            "99999999999999999999TiB",
            "18446744073709551615"
        ])
        .prop_map(str::to_string),
        (
            0u64..u64::MAX,
            prop::sample::select(vec!["", "KiB", "MiB", "GiB", "TiB", "GB"])
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
    ]
}

fn lengths() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![
        0usize, 1, 23, 128, 129, 256, 257, 1024, 65_535, 65_536, 100_000,
    ])
}

/// (table, key, kind): every duration, size, number and length in the config.
const KEYS: &[(&str, &str, char)] = &[
    ("gateway", "health_interval", 'd'),
    ("mqtt", "keep_alive", 'd'),
    ("mqtt", "connect_timeout", 'd'),
    ("mqtt", "backoff_min", 'd'),
    ("mqtt", "backoff_max", 'd'),
    ("mqtt", "ack_timeout", 'd'),
    ("mqtt", "flush_every", 'd'),
    ("mqtt", "inflight", 'i'),
    ("mqtt", "replay_rate", 'f'),
    ("mqtt", "client_id", 's'),
    ("mqtt", "username", 's'),
    ("mqtt", "availability_topic", 's'),
    ("mqtt", "birth_payload", 's'),
    ("mqtt.batch", "max_readings", 'i'),
    ("mqtt.batch", "max_delay", 'd'),
    ("queue", "max_size", 'z'),
    ("queue", "max_age", 'd'),
    ("queue", "commit_every", 'i'),
    ("queue", "commit_linger", 'd'),
    ("serial", "baud", 'i'),
    ("serial", "max_line", 'i'),
    ("serial", "reopen_min", 'd'),
    ("serial", "reopen_max", 'd'),
    ("serial", "topic", 's'),
    ("serial", "name", 's'),
    ("serial", "max_interval", 'd'),
    ("serial", "fields.x.scale", 'f'),
    ("serial", "fields.x.offset", 'f'),
    ("serial", "fields.x.deadband", 'f'),
    ("serial", "fields.x.rename", 's'),
    ("serial", "fields.x.unit", 's'),
    ("synthetic", "max_interval", 'd'),
    ("synthetic", "rate", 'f'),
    ("synthetic", "count", 'i'),
    ("ble", "min_interval", 'd'),
    ("ble", "scan_stall", 'd'),
    ("ble", "retry_min", 'd'),
    ("ble", "retry_max", 'd'),
    ("ble", "max_interval", 'd'),
    ("modbus", "timeout", 'd'),
    ("modbus", "every", 'd'),
    ("modbus", "reopen_min", 'd'),
    ("modbus", "reopen_max", 'd'),
    ("modbus", "baud", 'i'),
    ("modbus", "stop_bits", 'i'),
    ("modbus", "name", 's'),
    ("modbus", "topic", 's'),
];

fn value(kind: char) -> BoxedStrategy<String> {
    match kind {
        'd' => durations().prop_map(|d| format!("\"{d}\"")).boxed(),
        'i' => integers().boxed(),
        'f' => floats().boxed(),
        'z' => sizes().prop_map(|s| format!("\"{s}\"")).boxed(),
        _ => lengths()
            .prop_map(|n| format!("\"{}\"", "a".repeat(n)))
            .boxed(),
    }
}

/// A config with some keys set to extreme values (the gateway id too).
fn extreme_config() -> impl Strategy<Value = String> {
    let values: Vec<_> = KEYS
        .iter()
        .map(|(_, _, kind)| prop::option::weighted(0.25, value(*kind)))
        .collect();
    (values, lengths(), any::<bool>()).prop_map(|(values, id_len, on_demand)| {
        // The table's keys: the extreme ones drawn, then `defaults` for the others.
        let set = |table: &str, defaults: &[(&str, &str)]| -> String {
            let drawn: Vec<(&str, &String)> = KEYS
                .iter()
                .zip(&values)
                .filter_map(|((t, k, _), v)| (*t == table).then_some((*k, v.as_ref()?)))
                .collect();
            let mut text: String = drawn.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            for (k, v) in defaults {
                if !drawn.iter().any(|(d, _)| d == k) {
                    text += &format!("{k} = {v}\n");
                }
            }
            text
        };
        let connection = if on_demand {
            "connection = \"on_demand\"\n"
        } else {
            ""
        };
        let ble = if cfg!(feature = "ble") {
            format!(
                "[[ble]]\n{}",
                set(
                    "ble",
                    &[
                        ("name", "\"b\""),
                        ("topic", "\"b/{device}\""),
                        ("allow_unknown", "true")
                    ]
                )
            )
        } else {
            String::new()
        };
        format!(
            "[gateway]\nid = \"{}\"\nstate_dir = \"/tmp/sensorgate-edge\"\n{}\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n{connection}{}\n[mqtt.batch]\n{}\n[queue]\n{}\n\
             [[serial]]\n{}\n[[synthetic]]\n{}\n{ble}\n[[modbus]]\n{}\n\
             [[modbus.slave]]\nunit = 1\nregisters = [{{ field = \"a\", kind = \"input\", address = 0 }}]\n",
            "g".repeat(id_len),
            set("gateway", &[]),
            set("mqtt", &[]),
            set("mqtt.batch", &[]),
            set("queue", &[]),
            set(
                "serial",
                &[
                    ("name", "\"s0\""),
                    ("device", "\"/dev/null\""),
                    ("format", "\"json\""),
                    ("topic", "\"s/{input}\"")
                ]
            ),
            set(
                "synthetic",
                &[
                    ("name", "\"y0\""),
                    ("rate", "1.0"),
                    ("fields", "[\"x\"]"),
                    ("topic", "\"y\"")
                ]
            ),
            set(
                "modbus",
                &[
                    ("name", "\"m0\""),
                    ("device", "\"/dev/zero\""),
                    ("topic", "\"m/{device}\"")
                ]
            ),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, .. ProptestConfig::default() })]

    /// `sensorgate check` (the real binary) on extreme values: exit 0 or 2, never a panic;
    /// a refusal names file, line, column and key.
    #[test]
    fn check_on_extreme_values_exits_0_or_2(text in extreme_config()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(BIN).args(["check", "-c"]).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        prop_assert!(code == Some(0) || code == Some(2), "exit {code:?}: {err}");
        if code == Some(2) {
            let located = format!("invalid config: {}:", path.display());
            prop_assert!(err.contains(&located), "{err}");
        }
    }
}

/// `check > /dev/full`: an error and exit 1, not a panic.
#[test]
fn check_into_a_full_stdout_is_an_error_not_a_panic() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c", demo])
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked") && err.contains("stdout"), "{err}");
}

/// Finding 8a: an instrument that ends its lines with CR alone, another with CRLF, a third
/// with LF: every line is one reading (CRLF counts once), with the default `line_ending`.
#[test]
fn lines_ended_by_cr_alone_become_readings() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&dir.path().join("broker"));
    let sub = Subscriber::start(broker.port, "cr/#", "t-cr");
    let mut pty = Pty::open();
    let cfg = base_config(dir.path(), "gwcr", &broker.url(), "")
        + &format!(
            "[queue]\ncommit_linger = \"20ms\"\n\n[[serial]]\nname = \"old\"\ndevice = \"{}\"\nformat = \"kv\"\ntopic = \"cr/{{input}}\"\n",
            pty.path.display()
        );
    let mut gw = Gateway::new(dir.path(), &cfg);
    gw.start();
    gw.wait_log("Serial port open.", LONG);
    let mut w = pty.writer();
    w.write_all(b"n=1\rn=2\rn=3\r\nn=4\r\nn=5\nn=6\r").unwrap();
    w.flush().unwrap();
    pty.line("n=7");
    wait_until("7 readings at the broker", LONG, || {
        sub.messages().len() >= 7
    });
    std::thread::sleep(Duration::from_millis(300));
    let ns: Vec<i64> = sub
        .messages()
        .iter()
        .map(|(_, p)| {
            serde_json::from_str::<serde_json::Value>(p).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        ns,
        [1, 2, 3, 4, 5, 6, 7],
        "one reading per line, CRLF counted once"
    );
    let (status, _) = gw.terminate(LONG);
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let log = gw.log();
    assert!(
        log.contains("readings=7 ") && log.contains("bad_frames=0"),
        "{log}"
    );
}

/// Finding 8b: SIGHUP with a broken config logs an ERROR and keeps the running one; SIGHUP
/// with a changed topic applies it (the broker sees the new topic) without a restart.
#[test]
fn sighup_reloads_a_good_config_and_keeps_the_running_one_on_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&dir.path().join("broker"));
    let sub = Subscriber::start(broker.port, "hup/#", "t-hup");
    let cfg = |topic: &str| {
        base_config(dir.path(), "gwhup", &broker.url(), "")
            + &format!(
                "[queue]\ncommit_linger = \"20ms\"\n\n[[synthetic]]\nname = \"wx\"\nrate = 20.0\nfields = [\"t\"]\ntopic = \"{topic}\"\n"
            )
    };
    let mut gw = Gateway::new(dir.path(), &cfg("hup/old"));
    gw.start();
    wait_until("readings on hup/old", LONG, || {
        sub.messages().iter().any(|(t, _)| t == "hup/old")
    });
    let pid = gw.pid();

    std::fs::write(
        &gw.config,
        cfg("hup/old").replace("rate = 20.0", "rate = -1.0"),
    )
    .unwrap();
    signal_pid(pid, Signal::SIGHUP);
    gw.wait_log("keeping the running one", LONG);
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("keeping the running one"))
        .unwrap();
    assert!(
        line.contains("ERROR") && line.contains("synthetic[0].rate"),
        "{line}"
    );
    let before = sub.messages().len();
    wait_until(
        "more readings on hup/old after the bad reload",
        LONG,
        || sub.messages().len() > before + 5,
    );
    assert!(gw.is_running());

    std::fs::write(&gw.config, cfg("hup/new")).unwrap();
    signal_pid(pid, Signal::SIGHUP);
    wait_until("readings on hup/new", LONG, || {
        sub.messages().iter().any(|(t, _)| t == "hup/new")
    });
    assert!(gw.is_running());
    assert_eq!(gw.pid(), pid, "the same process");
    let log = gw.log();
    assert!(log.contains("Config reloaded"), "{log}");
    let (status, _) = gw.terminate(LONG);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", gw.log());
}

/// SIGHUP applies part by part: an input that changes restarts alone (the serial port
/// beside it stays open, the broker connection stays up, the queue stays open); a change to
/// `[mqtt]` reconnects, with the queue and the serial port still open. Lines written to the
/// port around both reloads all arrive.
#[test]
fn a_reload_restarts_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&dir.path().join("broker"));
    let sub = Subscriber::start(broker.port, "pr/#", "t-pr");
    let mut pty = Pty::open();
    let device = pty.path.clone();
    let cfg = |topic_b: &str, keep_alive: &str| {
        base_config(dir.path(), "gwpr", &broker.url(), "").replace(
            "keep_alive = \"2s\"",
            &format!("keep_alive = \"{keep_alive}\""),
        ) + &format!(
            "[queue]\ncommit_linger = \"20ms\"\n\n\
             [[serial]]\nname = \"a\"\ndevice = \"{}\"\nformat = \"kv\"\ntopic = \"pr/a\"\n\n\
             [[synthetic]]\nname = \"b\"\nrate = 20.0\nfields = [\"t\"]\ntopic = \"{topic_b}\"\n",
            device.display()
        )
    };
    let got_n = |n: i64| {
        sub.messages().iter().any(|(t, p)| {
            t == "pr/a"
                && serde_json::from_str::<serde_json::Value>(p).unwrap()["n"].as_i64() == Some(n)
        })
    };
    let count = |gw: &Gateway, line: &str| gw.log().matches(line).count();
    let mut gw = Gateway::new(dir.path(), &cfg("pr/b", "2s"));
    gw.start();
    gw.wait_log("Serial port open.", LONG);
    pty.line("n=1");
    wait_until("n=1 on pr/a and readings on pr/b", LONG, || {
        got_n(1) && sub.messages().iter().any(|(t, _)| t == "pr/b")
    });

    std::fs::write(&gw.config, cfg("pr/b2", "2s")).unwrap();
    signal_pid(gw.pid(), Signal::SIGHUP);
    wait_until("readings on pr/b2", LONG, || {
        sub.messages().iter().any(|(t, _)| t == "pr/b2")
    });
    pty.line("n=2");
    wait_until("n=2 on pr/a", LONG, || got_n(2));
    assert_eq!(count(&gw, "Serial port open."), 1, "{}", gw.log());
    assert_eq!(count(&gw, "Connected to the broker."), 1, "{}", gw.log());
    assert_eq!(count(&gw, "Queue open."), 1, "{}", gw.log());

    std::fs::write(&gw.config, cfg("pr/b2", "3s")).unwrap();
    signal_pid(gw.pid(), Signal::SIGHUP);
    wait_until("a second connection", LONG, || {
        count(&gw, "Connected to the broker.") == 2
    });
    pty.line("n=3");
    wait_until("n=3 on pr/a", LONG, || got_n(3));
    assert_eq!(count(&gw, "Serial port open."), 1, "{}", gw.log());
    assert_eq!(count(&gw, "Queue open."), 1, "{}", gw.log());
    let (status, _) = gw.terminate(LONG);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", gw.log());
}

/// A reload that changes the only input: its pipeline commits what it holds and ends, and
/// the one started for the new input numbers on after that commit (not before it, which
/// would hand out the same sequence numbers twice and stop the gateway on its first commit).
#[test]
fn a_reload_of_the_only_input_numbers_on_after_its_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{}", crate::support::free_port()); // no broker
    let cfg = |rate: u32| {
        base_config(dir.path(), "gwone", &url, "")
            + &format!(
                "[[synthetic]]\nname = \"s\"\nrate = {rate}.0\nfields = [\"t\"]\ntopic = \"one\"\n"
            )
    };
    let mut gw = Gateway::new(dir.path(), &cfg(20));
    gw.start();
    gw.wait_log("Gateway running.", LONG);
    // Each reload stops the input while its pipeline holds the readings of its linger (a
    // synthetic input reads once as it starts).
    for (n, rate) in [21, 22, 23, 24, 25, 26].into_iter().enumerate() {
        wait_until("a reading since the last reload", LONG, || {
            gw.log().matches("Pipeline drained").count() == n
        });
        std::fs::write(&gw.config, cfg(rate)).unwrap();
        signal_pid(gw.pid(), Signal::SIGHUP);
        wait_until("the reload", LONG, || {
            gw.log().matches("Pipeline drained").count() == n + 1 || !gw.is_running()
        });
    }
    let (status, _) = gw.terminate(LONG);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", gw.log());
}

fn signal_pid(pid: u32, sig: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

/// A TCP server that plays a broker without MQTT 5: it reads the CONNECT and answers with
/// `reply`, then closes the connection (as aedes does); with an empty `reply` it answers
/// nothing and holds the socket open (as amqtt does).
struct Scripted {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scripted {
    fn start(reply: &'static [u8]) -> Scripted {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut sock, _)) => {
                        sock.set_nonblocking(false).unwrap();
                        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut buf = [0u8; 1024];
                        let _ = sock.read(&mut buf);
                        if reply.is_empty() {
                            held.push(sock);
                        } else {
                            let _ = sock.write_all(reply);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Scripted {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Finding 8c: a broker that answers an MQTT 5 CONNECT the 3.1.1 way (CONNACK code 1,
/// "unacceptable protocol version", like aedes) or not at all (like amqtt): the log names
/// the protocol version and the fix.
#[test]
fn a_broker_without_mqtt5_is_named_in_the_log() {
    for (what, reply) in [
        ("code 1", &[0x20u8, 0x02, 0x00, 0x01][..]),
        ("silence", &[][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = Scripted::start(reply);
        let cfg = base_config(
            dir.path(),
            "gw311",
            &format!("mqtt://127.0.0.1:{}", server.port),
            "protocol = \"5\"\n",
        )
        .replace("keep_alive = \"2s\"", "keep_alive = \"5s\"")
        .replace("connect_timeout = \"2s\"", "connect_timeout = \"1s\"");
        let mut gw = Gateway::new(dir.path(), &cfg);
        gw.start();
        wait_until(&format!("{what}: a hint at the protocol"), LONG, || {
            gw.log().contains("protocol = \"3.1.1\"")
        });
        let log = gw.log();
        let line = log
            .lines()
            .find(|l| l.contains("protocol = \"3.1.1\""))
            .unwrap();
        assert!(line.contains("MQTT 5"), "{what}: {line}");
        gw.terminate(LONG);
        drop(server);
    }
}

/// A reload under systemd: RELOADING=1 (with MONOTONIC_USEC), then READY=1 once the
/// components run again; never STOPPING=1, which would tell systemd the service is going.
#[test]
fn a_reload_tells_systemd_reloading_then_ready() {
    use crate::notify::{count, listen};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let got = listen(&socket);
    let url = format!("mqtt://127.0.0.1:{}", crate::support::free_port()); // no broker
    let cfg = |rate: &str| {
        base_config(dir.path(), "gwrl", &url, "")
            + &format!(
                "[[synthetic]]\nname = \"s\"\nrate = {rate}\nfields = [\"t\"]\ntopic = \"x\"\n"
            )
    };
    let mut gw = Gateway::new(dir.path(), &cfg("5.0"));
    gw.start_with_env(&[("NOTIFY_SOCKET", socket.to_str().unwrap())]);
    wait_until("READY=1", LONG, || count(&got, "READY=1") == 1);
    std::fs::write(&gw.config, cfg("6.0")).unwrap();
    signal_pid(gw.pid(), Signal::SIGHUP);
    wait_until("READY=1 after the reload", LONG, || {
        count(&got, "READY=1") == 2
    });
    let all = got.lock().unwrap().clone();
    let reloading = all
        .iter()
        .position(|d| d.contains("RELOADING=1"))
        .expect("RELOADING=1");
    assert!(all[reloading].contains("MONOTONIC_USEC="), "{all:?}");
    assert_eq!(count(&got, "STOPPING=1"), 0, "{all:?}");
    let (status, _) = gw.terminate(LONG);
    assert!(status.expect("exits").success(), "{}", gw.log());
    wait_until("STOPPING=1 on SIGTERM", LONG, || {
        count(&got, "STOPPING=1") == 1
    });
}
