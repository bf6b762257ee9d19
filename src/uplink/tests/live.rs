//! The live path in-process: the pipeline and the uplink share a [`Live`], the broker is the
//! fake, the queue a real file, time is paused.

use super::fake::{Fake, Step};
use super::{run_on, Parts, AVAILABILITY};
use crate::config::Config;
use crate::mapping::Mapper;
use crate::metrics::Metrics;
use crate::pipeline::{self, GroupCommit, Routing};
use crate::queue::{lock, SharedQueue};
use crate::queue::{Live, Queue, QueueOptions};
use crate::reading::{Reading, Stamp, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const LINGER: Duration = Duration::from_secs(10);

struct LiveRig {
    fake: Fake,
    queue: SharedQueue,
    metrics: Arc<Metrics>,
    live: Arc<Live>,
    readings: Option<mpsc::Sender<Reading>>,
    pipeline: JoinHandle<()>,
    cancel: CancellationToken,
    uplink: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl LiveRig {
    /// A queue holding `backlog` rows, a pipeline with a linger of `linger`, and the uplink.
    fn start(script: &[Step], backlog: usize, linger: Duration) -> LiveRig {
        let text = format!(
            "[gateway]\nid = \"t\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n\
             availability_topic = \"{AVAILABILITY}\"\nack_timeout = \"10m\"\ninflight = 8\n\
             [queue]\ncommit_linger = \"10s\"\n\
             [[synthetic]]\nname = \"a\"\nrate = 1.0\nfields = [\"n\"]\ntopic = \"t/live\"\n"
        );
        let config = Config::parse(std::path::Path::new("t.toml"), &text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = QueueOptions {
            max_size: 64 << 20,
            when_full: crate::config::WhenFull::DropOldest,
            synchronous_full: false,
        };
        let mut q = Queue::open(&dir.path().join("queue.db"), opts).unwrap();
        let mapper = Mapper::new(&config);
        if backlog > 0 {
            let mut batch = Vec::new();
            let mut seq = 1;
            for n in 0..backlog {
                mapper.map(&reading(n as i64), &mut seq, &mut batch);
            }
            q.append(&batch).unwrap();
        }
        let last = q.next_id() - 1;
        let queue: SharedQueue = Arc::new(Mutex::new(q));
        let (committed, committed_rx) = watch::channel(last);
        let live = Live::shared();
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = mpsc::channel(64);
        let routing = Routing::fixed(
            mapper,
            GroupCommit {
                every: 1000,
                linger,
            },
        );
        let (q2, m2, l2) = (queue.clone(), metrics.clone(), Some(live.clone()));
        let pipeline = tokio::spawn(async move {
            pipeline::run(rx, routing, q2, committed, m2, l2, Default::default())
                .await
                .unwrap();
        });
        let fake = Fake::new(script, AVAILABILITY);
        let cancel = CancellationToken::new();
        let parts = Parts {
            queue: queue.clone(),
            committed: committed_rx,
            live: Some(live.clone()),
            metrics: metrics.clone(),
            cancel: cancel.clone(),
            damaged: CancellationToken::new(),
            status_online: None,
        };
        let (ready, _) = tokio::sync::oneshot::channel();
        let client = Arc::new(fake.clone());
        let uplink = tokio::spawn(run_on(config.mqtt, client, fake.clone(), parts, ready));
        LiveRig {
            fake,
            queue,
            metrics,
            live,
            readings: Some(tx),
            pipeline,
            cancel,
            uplink,
            _dir: dir,
        }
    }

    async fn read(&self, n: i64) {
        let tx = self.readings.as_ref().unwrap();
        tx.send(reading(n)).await.unwrap();
    }

    /// The `n` field of every row published, in order.
    fn published(&self) -> Vec<i64> {
        let s = self.fake.lock();
        s.rows()
            .iter()
            .map(|p| {
                serde_json::from_str::<serde_json::Value>(p).unwrap()["n"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    }

    /// Rows still pending in the queue.
    fn pending(&self) -> Vec<i64> {
        let q = lock(&self.queue);
        q.fetch_after(0, 1000)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect()
    }

    /// Waits until `cond` holds (in paused time this costs no wall time).
    async fn until(&self, what: &str, cond: impl Fn(&LiveRig) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !cond(self) {
            assert!(Instant::now() < deadline, "{what}: not within two minutes");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        self.readings = None;
        self.pipeline.await.unwrap();
        self.cancel.cancel();
        self.uplink.await.unwrap();
    }
}

fn reading(n: i64) -> Reading {
    Reading {
        input: 0,
        stamp: Stamp::now(),
        at: std::time::Instant::now(),
        device: None,
        sentence: None,
        fields: vec![(Arc::from("n"), Value::Int(n))],
    }
}

/// With nothing older pending, a reading leaves at once, long before its commit (the
/// linger is an hour; real time here: under paused time the clock would jump to the linger
/// while a trip runs on a SQLite thread); its acknowledgement comes first, so the commit
/// (at the pipeline's end) skips it and nothing is written; the next number is not handed
/// out again.
#[tokio::test]
async fn a_reading_acknowledged_before_its_commit_is_never_written() {
    let mut rig = LiveRig::start(&[Step::Accept], 0, Duration::from_secs(3600));
    rig.until("taking", |r| r.live.wanted()).await;
    for n in 1..=3 {
        rig.read(n).await;
    }
    rig.until("three rows out and confirmed", |r| {
        r.published().len() == 3 && r.fake.lock().acks_pending() == 0
    })
    .await;
    assert_eq!(Metrics::get(&rig.metrics.committed), 0, "not committed yet");
    rig.readings = None; // the pipeline commits what it holds and ends
    rig.until("the last commit", |r| {
        Metrics::get(&r.metrics.unwritten) == 3
    })
    .await;
    assert!(rig.pending().is_empty());
    assert_eq!(lock(&rig.queue).next_id(), 4);
    assert_eq!(rig.published(), [1, 2, 3]);
    assert_eq!(Metrics::get(&rig.metrics.committed), 0, "nothing written");
    rig.stop().await;
}

/// An acknowledgement slower than the linger: the reading is committed while in flight,
/// not sent again from the queue, and confirmed there when its PUBACK comes.
#[tokio::test(start_paused = true)]
async fn a_reading_acknowledged_after_its_commit_is_confirmed_in_the_queue() {
    let rig = LiveRig::start(&[Step::Accept], 0, LINGER);
    rig.until("taking", |r| r.live.wanted()).await;
    rig.fake.lock().ack_delay = LINGER * 2;
    rig.read(1).await;
    rig.until("committed while in flight", |r| r.pending() == [1])
        .await;
    assert_eq!(rig.published(), [1]);
    rig.until("confirmed", |r| r.pending().is_empty()).await;
    assert_eq!(rig.published(), [1], "sent once");
    assert_eq!(Metrics::get(&rig.metrics.unwritten), 0);
    rig.stop().await;
}

/// A backlog in the queue goes first, and new readings follow it in order.
#[tokio::test(start_paused = true)]
async fn new_readings_wait_behind_a_backlog_in_order() {
    let rig = LiveRig::start(&[Step::Accept], 40, LINGER);
    for n in 40..60 {
        rig.read(n).await;
    }
    rig.until("all out", |r| r.published().len() >= 60).await;
    assert_eq!(rig.published(), (0..60).collect::<Vec<i64>>());
    rig.stop().await;
}

/// The broker drops the connection while readings are in flight from memory: every reading
/// is delivered (from memory or, once committed, from the queue), in order per topic
/// after the reconnection, and nothing stays pending.
#[tokio::test(start_paused = true)]
async fn a_connection_lost_with_readings_in_flight_from_memory_loses_none() {
    let rig = LiveRig::start(
        &[
            Step::DropAfterRowAck(Duration::from_millis(30)),
            Step::Accept,
        ],
        0,
        LINGER,
    );
    rig.until("taking", |r| r.live.wanted()).await;
    rig.fake.lock().ack_delay = Duration::from_millis(20);
    for n in 1..=10 {
        rig.read(n).await;
    }
    rig.until("reconnected", |r| r.fake.lock().attempts().len() == 2)
        .await;
    for n in 11..=20 {
        rig.read(n).await;
    }
    rig.until("every reading out", |r| {
        let p = r.published();
        (1..=20).all(|n| p.contains(&n))
    })
    .await;
    rig.until("nothing pending", |r| r.pending().is_empty())
        .await;
    rig.stop().await;
}
