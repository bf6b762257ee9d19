//! The command line: `check`, exit codes, `queue stats`, SIGTERM, the availability topic,
//! per-field topics and bad frames, through the real binary.

use crate::support::broker::Broker;
use crate::support::gateway::{base_config, Gateway, BIN};
use crate::support::pty::Pty;
use crate::support::subscriber::Subscriber;
use crate::support::wait_until;
use std::process::Command;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

#[test]
fn check_accepts_the_demo_and_rejects_a_bad_file_with_exit_2() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml");
    let out = Command::new(BIN)
        .args(["check", "-c", demo])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("greenhouse: synthetic"), "{text}");
    assert!(text.contains("demo/demo/greenhouse"), "{text}");

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\nkeep_alive = \"soon\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:6:", bad.display())) && err.contains("mqtt.keep_alive"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["check", "-c", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sensorgate "));
    // SENSORGATE_CONFIG stands in for -c.
    let out = Command::new(BIN)
        .arg("check")
        .env("SENSORGATE_CONFIG", demo)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn sigterm_stops_quickly_and_keeps_unsent_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{}", crate::support::free_port()); // nobody listens
    let config = base_config(tmp.path(), "gwt", &url, "")
        + "[queue]\ncommit_linger = \"20ms\"\n[[synthetic]]\nname = \"s\"\nrate = 500.0\nfields = [\"t\", \"h\"]\ntopic = \"x/{input}\"\n";
    let mut gw = Gateway::new(tmp.path(), &config);
    gw.start();
    wait_until("readings queue up", LONG, || gw.pending() >= 200);
    let (status, took) = gw.terminate(Duration::from_secs(10));
    assert!(status.expect("exits").success());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let stats = gw.stats().unwrap();
    assert!(stats["pending"].as_u64().unwrap() >= 200);
    assert_eq!(stats["dropped"], 0);
    assert!(stats["bytes"].as_u64().unwrap() > 0);
    assert!(stats["oldest_age_s"].as_f64().unwrap() >= 0.0);
    // The text form, peek and a purge that needs --yes.
    let (code, text, _) = gw.cli(&["queue", "stats"]);
    assert_eq!(code, 0);
    assert!(text.contains("pending"));
    let (code, peek, _) = gw.cli(&["queue", "peek", "-n", "2"]);
    assert_eq!((code, peek.lines().count()), (0, 2));
    let (code, _, err) = gw.cli(&["queue", "purge"]);
    assert_ne!(code, 0);
    assert!(err.contains("--yes"));
    let (code, _, _) = gw.cli(&["queue", "purge", "--yes"]);
    assert_eq!(code, 0);
    let stats = gw.stats().unwrap();
    assert_eq!(stats["pending"], 0);
    assert!(
        stats["dropped"].as_u64().unwrap() >= 200,
        "a purge is counted"
    );
    // A damaged file is the gateway's to move aside (it may be writing it): purge refuses.
    let db = tmp.path().join("state/queue.db");
    std::fs::write(&db, b"not a database".repeat(500)).unwrap();
    let (code, _, err) = gw.cli(&["queue", "purge", "--yes"]);
    assert_ne!(code, 0);
    assert!(err.contains("queue.db"), "{err}");
    let names: Vec<String> = std::fs::read_dir(tmp.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("corrupt")),
        "nothing moved aside: {names:?}"
    );
}

#[test]
fn per_field_topics_availability_and_bad_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&tmp.path().join("broker"));
    let sub = Subscriber::start(broker.port, "#", "cli-sub");
    let mut pty = Pty::open();
    let mut pty2 = Pty::open();
    let config = base_config(tmp.path(), "gw1", &broker.url(), "")
        + &format!(
            "[queue]\ncommit_linger = \"20ms\"\n\
             [[serial]]\nname = \"wx\"\ndevice = \"{}\"\nformat = \"json\"\ntopic = \"site/{{gateway}}/{{input}}/{{field}}\"\n\
             [[serial]]\nname = \"kv\"\ndevice = \"{}\"\nformat = \"kv\"\ntopic = \"site/{{gateway}}/{{input}}\"\nqos = 0\n",
            pty.path.display(),
            pty2.path.display()
        );
    let mut gw = Gateway::new(tmp.path(), &config);
    gw.start();
    wait_until("both ports open", LONG, || {
        gw.log().matches("Serial port open").count() == 2
    });
    wait_until("online is published", LONG, || {
        sub.messages()
            .contains(&("sensorgate/gw1/status".into(), "online".into()))
    });
    pty.line("this is not json");
    pty.line(r#"{"seq": 17, "temp": 21.5}"#);
    pty2.line("temp=21.5 hum=40 state=ok");
    wait_until("three messages", LONG, || {
        sub.messages()
            .iter()
            .filter(|(t, _)| t.starts_with("site/"))
            .count()
            == 3
    });
    let msgs = sub.messages();
    assert!(
        msgs.contains(&("site/gw1/wx/seq".into(), "17".into())),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&("site/gw1/wx/temp".into(), "21.5".into())),
        "{msgs:?}"
    );
    let kv = &msgs.iter().find(|(t, _)| t == "site/gw1/kv").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(kv).unwrap();
    assert_eq!(
        (v["temp"].as_f64(), v["hum"].as_i64(), v["state"].as_str()),
        (Some(21.5), Some(40), Some("ok"))
    );
    assert_eq!(v["_gw"], "gw1");
    assert!(v["_seq"].as_i64().unwrap() > 0 && v["_ts"].as_i64().unwrap() > 0);
    assert!(
        gw.log().contains("Skipped a malformed frame"),
        "bad frame logged at debug"
    );
    assert!(gw
        .log()
        .lines()
        .any(|l| l.contains("malformed") && l.contains("input=wx")));
    wait_until("the queue is empty", LONG, || gw.pending() == 0);
    let (status, _) = gw.terminate(Duration::from_secs(10));
    assert!(status.expect("exits").success());
    wait_until("offline is published", LONG, || {
        sub.messages().last() == Some(&("sensorgate/gw1/status".into(), "offline".into()))
    });
}

#[test]
fn the_will_says_offline_when_the_gateway_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(&tmp.path().join("broker"));
    let sub = Subscriber::start(broker.port, "sensorgate/#", "will-sub");
    let config = base_config(tmp.path(), "gwk", &broker.url(), "");
    let mut gw = Gateway::new(tmp.path(), &config);
    gw.start();
    let status = |payload: &str| ("sensorgate/gwk/status".to_string(), payload.to_string());
    wait_until("online", LONG, || {
        sub.messages().contains(&status("online"))
    });
    gw.kill(); // no DISCONNECT: the broker publishes the will
    wait_until("the will's offline", LONG, || {
        sub.messages().last() == Some(&status("offline"))
    });
    // Retained: a subscriber that comes later learns the state too.
    let late = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-t",
            "sensorgate/gwk/status",
            "-C",
            "1",
            "-W",
            "10",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&late.stdout).trim(), "offline");
}
