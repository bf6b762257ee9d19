//! PUBACK correlation against a scripted broker: a row is deleted only by its own PUBACK,
//! whatever order the acks come in, and rows whose ack never came are sent again after a
//! reconnect.

use crate::support::fake_broker::{FakeBroker, Received};
use crate::support::gateway::{base_config, Gateway};
use crate::support::wait_until;
use std::collections::BTreeSet;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn gw_seq(r: &Received) -> i64 {
    let v: serde_json::Value = serde_json::from_str(&r.payload).unwrap();
    v["_seq"].as_i64().unwrap()
}

fn pending_seqs(gw: &Gateway) -> BTreeSet<i64> {
    gw.export()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

#[test]
fn rows_are_deleted_only_by_their_own_puback() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = FakeBroker::start("sensorgate/gwp/status");
    let config = base_config(tmp.path(), "gwp", &broker.url(), "ack_timeout = \"10m\"\n")
        + "[queue]\ncommit_every = 1000\ncommit_linger = \"20ms\"\n\n\
           [[synthetic]]\nname = \"s\"\nrate = 1000.0\nfields = [\"t\"]\ncount = 10\n\
           topic = \"p/{gateway}/{input}\"\nqos = 1\n";
    let mut gw = Gateway::new(tmp.path(), &config);
    gw.start();

    let rows = |conn: usize| -> Vec<Received> {
        broker
            .received()
            .into_iter()
            .filter(|r| r.conn == conn && r.topic == "p/gwp/s")
            .collect()
    };
    wait_until("10 rows published", LONG, || rows(1).len() == 10);
    let published = rows(1);
    let all: BTreeSet<i64> = published.iter().map(gw_seq).collect();
    assert_eq!(all.len(), 10);
    assert!(published.iter().all(|r| r.qos == 1 && r.pkid != 0));
    // Every row has reached the broker and no PUBACK has come: the queue holds all ten.
    assert_eq!(pending_seqs(&gw), all);

    // Acknowledge out of order: last, first, then a middle one. After each ack exactly that
    // row leaves the queue.
    let mut expect = all.clone();
    for i in [9, 0, 4] {
        broker.ack(published[i].pkid);
        expect.remove(&gw_seq(&published[i]));
        wait_until("the acked row is deleted", LONG, || {
            gw.pending() == expect.len() as u64
        });
        assert_eq!(pending_seqs(&gw), expect, "after acking row {i}");
    }

    // Ack the rest except row 2, then drop the connection: only row 2 is sent again.
    for (i, r) in published.iter().enumerate() {
        if ![9, 0, 4, 2].contains(&i) {
            broker.ack(r.pkid);
        }
    }
    wait_until("only row 2 is pending", LONG, || gw.pending() == 1);
    assert_eq!(pending_seqs(&gw), BTreeSet::from([gw_seq(&published[2])]));
    broker.drop_connection();
    wait_until("row 2 resent on the new connection", LONG, || {
        rows(2).len() == 1
    });
    let resent = &rows(2)[0];
    assert_eq!(gw_seq(resent), gw_seq(&published[2]));
    assert_eq!(
        resent.payload, published[2].payload,
        "the resend is the same message"
    );
    broker.ack(resent.pkid);
    wait_until("the queue is empty", LONG, || gw.pending() == 0);
    assert_eq!(rows(2).len(), 1, "nothing else was resent");

    // The birth message came after each CONNACK, before any row.
    let births: Vec<_> = broker
        .received()
        .into_iter()
        .filter(|r| r.topic == "sensorgate/gwp/status")
        .collect();
    assert_eq!(
        births
            .iter()
            .map(|r| r.payload.as_str())
            .collect::<Vec<_>>(),
        ["online", "online"]
    );
    let (status, _) = gw.terminate(Duration::from_secs(10));
    assert!(status.expect("exits").success());
    let last = broker.received().pop().unwrap();
    assert_eq!(
        (last.topic.as_str(), last.payload.as_str()),
        ("sensorgate/gwp/status", "offline")
    );
}
