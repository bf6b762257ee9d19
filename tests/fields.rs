//! Per-field transforms end to end: the gateway binary reads a pseudo-terminal and
//! publishes to a real Mosquitto; scale, offset, rename and drop show in the payload, the
//! deadband holds readings back, and the count of those shows in the health message and in
//! `sensorgate queue stats --json`.

use crate::support::broker::Broker;
use crate::support::gateway::{base_config, Gateway};
use crate::support::pty::Pty;
use crate::support::subscriber::Subscriber;
use crate::support::wait_until;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

#[test]
fn transforms_shape_the_payload_and_the_deadband_holds_readings_back() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&tmp.path().join("broker"));
    let sub = Subscriber::start(broker.port, "#", "fields-sub");
    let mut pty = Pty::open();
    let config = base_config(tmp.path(), "gw1", &broker.url(), "")
        .replace("health_interval = \"0s\"", "health_interval = \"1s\"")
        + &format!(
            "[queue]\ncommit_linger = \"20ms\"\n\
             [[serial]]\nname = \"wx\"\ndevice = \"{}\"\nformat = \"kv\"\n\
             topic = \"site/{{gateway}}/{{input}}\"\n\
             fields.t = {{ rename = \"temp\", scale = 0.1, offset = -40, unit = \"°C\", deadband = 0.5 }}\n\
             fields.junk = {{ drop = true }}\n",
            pty.path.display()
        );
    let mut gw = Gateway::new(tmp.path(), &config);
    gw.start();
    gw.wait_log("Serial port open", LONG);
    // 21.5 °C; then 21.7 and 21.9, within 0.5 of it (a change of the dropped field does not
    // count); 22.1, past it; then the same temperature with another humidity (no deadband:
    // any change counts).
    for line in [
        "t=615 h=40 junk=1",
        "t=617 h=40 junk=2",
        "t=619 h=40 junk=3",
        "t=621 h=40",
        "t=621 h=41",
    ] {
        pty.line(line);
    }
    let readings = || -> Vec<serde_json::Value> {
        sub.messages()
            .iter()
            .filter(|(t, _)| t == "site/gw1/wx")
            .map(|(_, p)| serde_json::from_str(p).unwrap())
            .collect()
    };
    wait_until("the last reading arrives", LONG, || {
        readings().last().is_some_and(|v| v["h"] == 41)
    });
    // Delivery follows the order of reading: nothing held back can come later.
    let got = readings();
    let shown: Vec<(f64, i64)> = got
        .iter()
        .map(|v| (v["temp"].as_f64().unwrap(), v["h"].as_i64().unwrap()))
        .collect();
    assert_eq!(shown, [(21.5, 40), (22.1, 40), (22.1, 41)], "{got:?}");
    for v in &got {
        assert!(v.get("t").is_none() && v.get("junk").is_none(), "{v}");
    }
    let health = || -> Option<serde_json::Value> {
        let msgs = sub.messages();
        let (_, p) = msgs
            .iter()
            .rev()
            .find(|(t, _)| t == "sensorgate/gw1/health")?;
        serde_json::from_str(p).ok()
    };
    wait_until("the health message counts 2 held back", LONG, || {
        health().is_some_and(|h| h["held_back"] == 2)
    });
    // The queue file counts them with its next write, or at the latest at the clean stop.
    let (status, _) = gw.terminate(LONG);
    assert!(status.expect("exits").success());
    let stats = gw.stats().expect("queue stats");
    assert_eq!(stats["held_back"], 2, "{stats}");
    let (code, text, _) = gw.cli(&["queue", "stats"]);
    assert_eq!(code, 0);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["held_back", "2"]),
        "{text}"
    );
    // `check` shows the rules.
    let (code, text, _) = gw.cli(&["check"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("field t: scale 0.1, offset -40, published as temp, unit °C, deadband 0.5"),
        "{text}"
    );
    assert!(text.contains("field junk: dropped"), "{text}");
}
