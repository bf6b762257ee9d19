//! Ingest: readings committed to the queue per second through the real pipeline (mapping,
//! channel, group commit, `synchronous=FULL`), against a bare rusqlite loop inserting the
//! same rows in the same batch size into the same schema, in the same run.
//!
//! `cargo bench --bench ingest` (add `-- --quick` for a smoke run). Runs alternate
//! gateway/bare so that machine noise hits both; the ratio of medians is reported.

mod common;

use rusqlite::{params, Connection};
use sensorgate::config::{Config, WhenFull};
use sensorgate::mapping::Mapper;
use sensorgate::metrics::Metrics;
use sensorgate::pipeline::{self, GroupCommit, Routing};
use sensorgate::queue::{Queue, QueueOptions};
use sensorgate::reading::{Reading, Stamp};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BATCH: usize = 500;

fn config(dir: &Path) -> Config {
    let text = format!(
        "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\
         [[synthetic]]\nname = \"s\"\nrate = 1.0\nfields = [\"temperature\", \"humidity\", \"pressure\"]\n\
         topic = \"site/{{gateway}}/{{input}}\"\n",
        dir.display()
    );
    Config::parse(Path::new("bench.toml"), &text).unwrap()
}

fn readings(n: usize) -> Vec<Reading> {
    let stamp = Stamp::now();
    (0..n).map(|i| common::reading(i, stamp)).collect()
}

/// Readings per second through the gateway's pipeline.
fn gateway(n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let opts = QueueOptions {
        max_size: u64::MAX,
        when_full: WhenFull::DropOldest,
        synchronous_full: true,
    };
    let queue = Arc::new(Mutex::new(Queue::open(&cfg.queue_path(), opts).unwrap()));
    let input = readings(n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t0 = Instant::now();
    rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let (wtx, _wrx) = tokio::sync::watch::channel(0);
        let p = tokio::spawn(pipeline::run(
            rx,
            Routing::fixed(
                Mapper::new(&cfg),
                GroupCommit {
                    every: BATCH,
                    linger: Duration::from_secs(1),
                },
            ),
            queue.clone(),
            wtx,
            Arc::new(Metrics::default()),
            None,
            Default::default(),
        ));
        for r in input {
            tx.send(r).await.unwrap();
        }
        drop(tx);
        p.await.unwrap().unwrap();
    });
    let secs = t0.elapsed().as_secs_f64();
    let stats = queue.lock().unwrap().stats(0).unwrap();
    assert_eq!(stats.pending, n as u64);
    n as f64 / secs
}

/// The same rows (the payloads the mapper produces) inserted by a bare loop.
fn bare(n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mapper = Mapper::new(&cfg);
    let mut msgs = Vec::with_capacity(n);
    let mut seq = 1;
    for r in readings(n) {
        mapper.map(&r, &mut seq, &mut msgs);
    }
    let conn = Connection::open(dir.path().join("bare.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
         payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, created_ms INTEGER NOT NULL)",
    )
    .unwrap();
    let t0 = Instant::now();
    let mut conn = conn;
    for chunk in msgs.chunks(BATCH) {
        let tx = conn.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT INTO outbox (id, topic, payload, qos, retain, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                .unwrap();
            for m in chunk {
                st.execute(params![m.seq, m.topic, m.payload, 1, false, m.created_ms])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let (n, runs) = if common::quick() {
        (20_000, 1)
    } else {
        (200_000, 5)
    };
    println!("ingest: {n} readings of 3 fields, batches of {BATCH}, synchronous=FULL, {runs} alternating runs");
    let (mut g, mut b) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let x = gateway(n);
        let y = bare(n);
        println!(
            "  run {i}: gateway {x:>9.0}/s   bare rusqlite {y:>9.0}/s   ratio {:.2}",
            x / y
        );
        g.push(x);
        b.push(y);
    }
    let (g, b) = (common::median(g), common::median(b));
    println!("ingest median: gateway {g:.0} readings/s, bare loop {b:.0} rows/s, ratio {:.2} (target >= 0.80)", g / b);
}
