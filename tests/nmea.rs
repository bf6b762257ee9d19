//! NMEA 0183 against real receivers: every sentence of the gpsd logs in tests/data/nmea/
//! (see its README: u-blox NEO-M8N and ZED-F9P, SiRF GLONASS and BeiDou receivers, a
//! Hemisphere compass, a Humminbird sounder, a B&G chartplotter's instruments, a Saab AIS
//! transponder) decoded by the gateway and by pynmea2, an independent parser
//! (tests/support/nmea_pynmea2.py, Debian's python3-nmea2); any disagreement fails with the
//! line. Then the gateway binary reading a log from a pseudo-terminal, publishing to a real
//! Mosquitto on `{sentence}` topics.

use crate::support::broker::Broker;
use crate::support::gateway::{base_config, Gateway};
use crate::support::pty::Pty;
use crate::support::subscriber::Subscriber;
use crate::support::wait_until;
use sensorgate::input::format::nmea::{decode, NmeaError};
use sensorgate::reading::Value;
use serde_json::Value as J;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nmea")
}

fn logs() -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    assert!(logs.len() >= 8, "{logs:?}");
    logs
}

/// The sentences of a gpsd log: without its `#` comments and blank lines.
pub fn sentences(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// pynmea2's reading of each sentence of `log`: (line, outcome, fields).
fn pynmea2(log: &Path) -> Vec<(String, String, serde_json::Map<String, J>)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/nmea_pynmea2.py");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(log)
        .output()
        .expect("/usr/bin/python3 (Debian's, with python3-nmea2)");
    assert!(
        out.status.success(),
        "{}: {}",
        log.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: J = serde_json::from_str(l).unwrap();
            let J::Object(fields) = v["fields"].clone() else {
                panic!("{l}")
            };
            (
                v["line"].as_str().unwrap().to_string(),
                v["outcome"].as_str().unwrap().to_string(),
                fields,
            )
        })
        .collect()
}

fn json(v: &Value) -> J {
    match v {
        Value::Int(i) => J::from(*i),
        Value::Float(f) => J::from(*f),
        Value::Bool(b) => J::from(*b),
        Value::Text(t) => J::from(t.as_str()),
    }
}

/// Why `ours` and `theirs` differ, if they do: numbers within 1e-9 (and both whole or both
/// not), everything else equal.
fn differs(name: &str, ours: &J, theirs: &J) -> Option<String> {
    let same = match (ours, theirs) {
        (J::Number(a), J::Number(b)) => {
            a.is_f64() == b.is_f64()
                && (a.as_f64().unwrap() - b.as_f64().unwrap()).abs()
                    <= 1e-9 * a.as_f64().unwrap().abs().max(1.0)
        }
        (a, b) => a == b,
    };
    (!same).then(|| format!("{name}: ours {ours}, pynmea2 {theirs}"))
}

#[test]
fn every_logged_sentence_decodes_as_pynmea2_reads_it() {
    let mut checked = std::collections::BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    for log in logs() {
        let lines = sentences(&log);
        let theirs = pynmea2(&log);
        assert_eq!(lines.len(), theirs.len(), "{}", log.display());
        for (line, (their_line, outcome, their_fields)) in lines.iter().zip(&theirs) {
            assert_eq!(line, their_line);
            let name = log.file_name().unwrap().to_string_lossy();
            let mut fail = |why: String| failures.push(format!("{name}: {line}\n    {why}"));
            let ours = decode(line);
            let our_outcome = match &ours {
                Ok(_) => "ok",
                Err(NmeaError::Bad(_)) => "bad",
                Err(NmeaError::Proprietary) => "proprietary",
                Err(NmeaError::Unsupported(_)) => "unsupported",
            };
            if our_outcome != outcome {
                fail(format!("ours {ours:?}, pynmea2 {outcome}"));
                continue;
            }
            let Ok(s) = ours else { continue };
            *checked.entry(s.kind.name().to_string()).or_default() += 1;
            let mut seen = std::collections::HashSet::new();
            for (k, v) in &s.fields {
                if !seen.insert(k.to_string()) {
                    fail(format!("{k} twice"));
                }
                match their_fields.get(&**k) {
                    None => fail(format!("{k} = {v:?}: pynmea2 has none")),
                    Some(t) => {
                        if let Some(d) = differs(k, &json(v), t) {
                            fail(d);
                        }
                    }
                }
            }
            for k in their_fields.keys().filter(|k| !seen.contains(*k)) {
                fail(format!("{k}: pynmea2 has {}, ours none", their_fields[k]));
            }
            // The same sentence with a wrong checksum is a bad frame.
            let (body, sum) = line.rsplit_once('*').unwrap();
            let wrong = u8::from_str_radix(sum, 16).unwrap() ^ 0x01;
            let tampered = format!("{body}*{wrong:02X}");
            if !matches!(decode(&tampered), Err(NmeaError::Bad(_))) {
                fail(format!("{tampered} was not a bad frame"));
            }
            if !matches!(decode(body), Err(NmeaError::Bad(_))) {
                fail(format!("{body} without its checksum was not a bad frame"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every decoded type met in a real log (GGA ... XDR).
    let kinds: Vec<&str> = checked.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "DBT", "DPT", "GGA", "GLL", "GSA", "GSV", "HDT", "MTW", "MWV", "RMC", "VTG", "XDR",
            "ZDA"
        ],
        "{checked:?}"
    );
}

/// `$`, the address and fields, and the checksum they need.
fn framed(body: &str) -> String {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}")
}

/// The number after `name=` in the gateway's stop line.
fn counter(log: &str, name: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("Gateway stopped."))?;
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The u-blox log through a pseudo-terminal into the gateway binary: GGA, RMC and GSA
/// (the filter) reach Mosquitto on `{sentence}` topics once each (min_interval is an hour),
/// a lost fix goes at once, and a bad checksum and a proprietary sentence are counted.
#[test]
fn a_receiver_log_reaches_the_broker_on_sentence_topics() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&tmp.path().join("broker"));
    let sub = Subscriber::start(broker.port, "site/#", "nmea-sub");
    let mut pty = Pty::open();
    let config = base_config(tmp.path(), "gw1", &broker.url(), "")
        + &format!(
            "[queue]\ncommit_linger = \"20ms\"\n\
             [[serial]]\nname = \"gps\"\ndevice = \"{}\"\nformat = \"nmea\"\n\
             topic = \"site/{{gateway}}/{{input}}/{{sentence}}\"\n\
             sentences = [\"GGA\", \"RMC\", \"GSA\"]\nmin_interval = \"1h\"\n",
            pty.path.display()
        );
    let mut gw = Gateway::new(tmp.path(), &config);
    gw.start();
    gw.wait_log("Serial port open", LONG);
    let log = sentences(&data_dir().join("neo-m8n.log"));
    let count = |kind: &str| log.iter().filter(|l| l[3..].starts_with(kind)).count() as u64;
    let (gga, rmc, gsa) = (count("GGA"), count("RMC"), count("GSA"));
    assert!(gga > 20 && rmc > 20 && gsa > 40, "{gga} {rmc} {gsa}");
    pty.line("$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*45");
    pty.line("$PUBX,00,171926.00,4404.14063,N*00"); // a bad checksum too: a bad frame
    pty.line(&framed("PGRMZ,246,f,3"));
    for line in &log {
        pty.line(line);
    }
    // Last: the fix is lost; GGA goes out within the hour.
    pty.line(&framed("GNGGA,171950.00,,,,,0,00,99.99,,,,,,"));
    wait_until("GGA twice, RMC and GSA once", LONG, || {
        sub.messages().len() == 4
    });
    let msgs = sub.messages();
    let topics: Vec<&str> = msgs.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "site/gw1/gps/RMC",
            "site/gw1/gps/GGA",
            "site/gw1/gps/GSA",
            "site/gw1/gps/GGA"
        ],
        "{msgs:?}"
    );
    let json = |i: usize| serde_json::from_str::<J>(&msgs[i].1).unwrap();
    let first = json(1);
    assert_eq!(
        (first["talker"].as_str(), first["sentence"].as_str()),
        (Some("GN"), Some("GGA"))
    );
    assert_eq!(first["fix_quality"], 1);
    assert_eq!(first["altitude_m"], 1147.2);
    assert!(
        (first["lat"].as_f64().unwrap() - 44.069).abs() < 0.001,
        "{first}"
    );
    assert!(
        (first["lon"].as_f64().unwrap() + 121.314).abs() < 0.001,
        "{first}"
    );
    assert_eq!(json(0)["utc"], "2015-03-18T17:19:26Z");
    assert_eq!(json(2)["fix_type"], 3);
    let lost = json(3);
    assert_eq!(lost["fix_quality"], 0);
    assert!(
        lost.get("lat").is_none(),
        "empty fields are omitted: {lost}"
    );
    let (status, _) = gw.terminate(Duration::from_secs(10));
    assert!(status.expect("exits").success());
    let text = gw.log();
    assert!(
        text.lines().any(|l| l.contains("Skipped a malformed frame")
            && l.contains("input=gps")
            && l.contains("checksum")),
        "{text}"
    );
    assert_eq!(counter(&text, "bad_frames"), Some(2), "{text}");
    assert_eq!(counter(&text, "proprietary_frames"), Some(1));
    // Held back: all but the first of each type (GSA: two a second, both without a system id).
    assert_eq!(
        counter(&text, "limited_frames"),
        Some((gga - 1) + (rmc - 1) + (gsa - 1))
    );
}
