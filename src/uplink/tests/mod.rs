//! The uplink in-process: the poller and the pump against a scripted fake client
//! ([`fake`]) and a real queue in a temporary directory, with tokio's clock paused. Each
//! test takes milliseconds of wall time whatever the machine's load.

mod fake;
mod live;

use super::{run_on, Parts};
use crate::config::{Config, Connection, MqttConfig, WhenFull};
use crate::mapping::NewMessage;
use crate::metrics::Metrics;
use crate::queue::{lock, SharedQueue};
use crate::queue::{Queue, QueueOptions};
use fake::{Fake, Seen, Step};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const AVAILABILITY: &str = "sensorgate/t/status";

fn config(extra: &str) -> MqttConfig {
    let text = format!(
        "[gateway]\nid = \"t\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\navailability_topic = \"{AVAILABILITY}\"\nack_timeout = \"10m\"\n{extra}"
    );
    Config::parse(std::path::Path::new("t.toml"), &text)
        .unwrap()
        .mqtt
}

/// The uplink running against a fake, over a queue holding rows `r1`, `r2`, ...
struct Rig {
    fake: Fake,
    /// Told by the poller when Home Assistant says "online".
    status: Arc<tokio::sync::Notify>,
    queue: SharedQueue,
    committed: watch::Sender<i64>,
    rows: usize,
    cancel: CancellationToken,
    uplink: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start(cfg: MqttConfig, script: &[Step], rows: usize) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let opts = QueueOptions {
            max_size: 64 << 20,
            when_full: WhenFull::DropOldest,
            synchronous_full: false,
        };
        let queue = Queue::open(&dir.path().join("queue.db"), opts).unwrap();
        let queue: SharedQueue = Arc::new(Mutex::new(queue));
        let (committed, committed_rx) = watch::channel(0);
        let fake = Fake::new(script, AVAILABILITY);
        let cancel = CancellationToken::new();
        let status = Arc::new(tokio::sync::Notify::new());
        let parts = Parts {
            queue: queue.clone(),
            committed: committed_rx,
            live: None,
            metrics: Arc::new(Metrics::default()),
            cancel: cancel.clone(),
            damaged: CancellationToken::new(),
            status_online: Some(status.clone()),
        };
        let (ready, _) = tokio::sync::oneshot::channel();
        let client = Arc::new(fake.clone());
        let uplink = tokio::spawn(run_on(cfg, client, fake.clone(), parts, ready));
        let mut rig = Rig {
            fake,
            status,
            queue,
            committed,
            rows: 0,
            cancel,
            uplink,
            _dir: dir,
        };
        rig.commit(rows);
        rig
    }

    /// Commits `n` more rows, as the pipeline would.
    fn commit(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let mut q = lock(&self.queue);
        let first = q.next_id();
        let batch: Vec<NewMessage> = (0..n)
            .map(|i| NewMessage {
                seq: first + i as i64,
                topic: "t/row".into(),
                payload: format!("r{}", self.rows + i + 1).into_bytes(),
                qos: crate::config::Qos::AtLeastOnce,
                retain: false,
                created_ms: crate::reading::now_ms() as i64,
                unsynced_mono_ms: None,
            })
            .collect();
        q.append(&batch).unwrap();
        self.rows += n;
        self.committed.send_replace(first + n as i64 - 1);
    }

    async fn stop(self) -> fake::Fake {
        self.cancel.cancel();
        self.uplink.await.unwrap();
        self.fake
    }
}

/// `r1` to `rn`.
fn rows(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("r{i}")).collect()
}

/// The waits between connection attempts.
fn waits(attempts: &[Instant]) -> Vec<Duration> {
    attempts.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn home_assistants_status_topic_is_subscribed_to_and_online_tells_discovery() {
    use super::face::LinkEvent;
    let mut cfg = config("");
    cfg.status_topic = Some("homeassistant/status".into());
    let rig = Rig::start(cfg, &[Step::Accept], 0);
    let subscribed = |s: &fake::State| {
        s.log
            .iter()
            .any(|(_, e)| matches!(e, Seen::Subscribe(t) if t == "homeassistant/status"))
    };
    rig.fake.until(subscribed).await;
    let message = |topic: &str, payload: &str| LinkEvent::Message {
        topic: topic.into(),
        payload: payload.into(),
    };
    rig.fake.deliver(message("homeassistant/status", "offline"));
    rig.fake.deliver(message("elsewhere", "online"));
    rig.fake.until(|s| s.ready.is_empty()).await;
    let told = tokio::time::timeout(Duration::from_secs(5), rig.status.notified());
    assert!(
        told.await.is_err(),
        "only \"online\" on the status topic tells"
    );
    rig.fake.deliver(message("homeassistant/status", "online"));
    let told = tokio::time::timeout(Duration::from_secs(5), rig.status.notified());
    assert!(told.await.is_ok(), "Home Assistant's birth was not told");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_backoff_doubles_with_jitter_up_to_its_maximum() {
    let cfg = config("backoff_min = \"1s\"\nbackoff_max = \"20s\"");
    let rig = Rig::start(cfg, &[Step::Refuse; 8], 0);
    rig.fake.until(|s| s.attempts().len() == 8).await;
    let fake = rig.stop().await;
    let waits = waits(&fake.lock().attempts());
    let mut fractions = Vec::new();
    for (k, wait) in waits.iter().enumerate() {
        let backoff = Duration::from_secs(1 << k).min(Duration::from_secs(20));
        // Jitter takes up to half of the backoff off, never adds to it.
        assert!(
            *wait >= backoff / 2 && *wait <= backoff,
            "wait {k} of {waits:?}: {wait:?} is not within [{:?}, {backoff:?}]",
            backoff / 2
        );
        fractions.push(wait.as_secs_f64() / backoff.as_secs_f64());
    }
    assert!(
        fractions.iter().any(|f| (f - fractions[0]).abs() > 1e-6),
        "no jitter: {waits:?}"
    );
}

/// Three refusals (the backoff is at 8 s), then a connection that `step` ends, then one
/// more refusal: the wait after the drop.
async fn wait_after_drop(step: Step, rows: usize) -> Duration {
    let cfg = config("backoff_min = \"1s\"\nbackoff_max = \"60s\"\nkeep_alive = \"4s\"");
    let script = [Step::Refuse, Step::Refuse, Step::Refuse, step, Step::Refuse];
    let rig = Rig::start(cfg, &script, rows);
    rig.fake.until(|s| s.attempts().len() == 5).await;
    let fake = rig.stop().await;
    let s = fake.lock();
    if rows > 0 {
        assert_eq!(
            s.rows(),
            self::rows(1..=rows),
            "the row went out on the connection"
        );
    }
    let dropped = s.log.iter().find(|(_, e)| matches!(e, Seen::Dropped));
    let dropped = dropped.expect("the connection was dropped").0;
    s.attempts()[4] - dropped
}

#[tokio::test(start_paused = true)]
async fn the_backoff_returns_to_its_minimum_only_after_a_connection_proved_stable() {
    // Up for longer than the keep-alive, with a row's PUBACK: the episode is over.
    let stable = wait_after_drop(Step::DropAfterRowAck(Duration::from_secs(5)), 1).await;
    assert!(
        stable <= Duration::from_secs(1),
        "after a stable connection: {stable:?}"
    );
    // A row's PUBACK, but dropped before a keep-alive interval: the backoff goes on (8 s,
    // less jitter).
    let short = wait_after_drop(Step::DropAfterRowAck(Duration::from_secs(1)), 1).await;
    assert!(
        short >= Duration::from_secs(4),
        "after a short connection: {short:?}"
    );
    // Up for long, but only the birth message confirmed: a CONNACK alone resets nothing.
    let idle = wait_after_drop(Step::DropAfterConnAck(Duration::from_secs(10)), 0).await;
    assert!(
        idle >= Duration::from_secs(4),
        "after a connection that delivered no row: {idle:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn never_more_than_the_window_is_in_flight_even_with_acks_out_of_order() {
    let cfg = config("inflight = 8");
    let rig = Rig::start(cfg, &[Step::Accept], 200);
    // Every fifth publish is acknowledged long after the ones behind it.
    rig.fake.lock().slow = Some((5, Duration::from_millis(300)));
    rig.fake.until(|s| s.rows().len() == 200).await;
    let fake = rig.stop().await;
    let s = fake.lock();
    assert_eq!(s.rows(), rows(1..=200), "rows leave in row-id order");
    // The window counts from the oldest request not acknowledged, not the number
    // outstanding; and it is used in full.
    assert_eq!(s.max_span, 8, "the widest span of requests in flight");
}

#[tokio::test(start_paused = true)]
async fn replay_rate_paces_messages_after_a_second_of_burst() {
    let cfg = config("inflight = 64\nreplay_rate = 20.0");
    let rig = Rig::start(cfg, &[Step::Accept], 100);
    rig.fake.until(|s| s.rows().len() == 100).await;
    let fake = rig.stop().await;
    let s = fake.lock();
    let times: Vec<Instant> = s
        .published()
        .into_iter()
        .filter(|(_, o)| o.topic != AVAILABILITY)
        .map(|(t, _)| t)
        .collect();
    // Over any stretch, at most a second's worth (the burst) plus the rate.
    for i in 0..times.len() {
        for j in i..times.len() {
            let allowed = 20.0 + 20.0 * (times[j] - times[i]).as_secs_f64() + 1e-6;
            assert!(
                (j - i + 1) as f64 <= allowed,
                "{} messages in {:?}",
                j - i + 1,
                times[j] - times[i]
            );
        }
    }
    // And no slower than the rate: 80 messages after the burst take 4 s.
    let took = times[99] - times[0];
    assert!(
        took <= Duration::from_millis(4100),
        "100 messages took {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_on_demand_window_sends_what_was_committed_says_it_sleeps_and_disconnects() {
    let mut cfg = config("");
    let flush_every = Duration::from_secs(60);
    cfg.connection = Connection::OnDemand { flush_every };
    let mut rig = Rig::start(cfg, &[Step::Accept, Step::Accept], 5);
    // A row committed while the window is open waits for the next one.
    rig.fake.until(|s| !s.rows().is_empty()).await;
    rig.commit(1);
    let disconnects = |s: &fake::State| {
        let log = s.log.iter();
        log.filter(|(_, e)| matches!(e, Seen::Disconnect)).count()
    };
    rig.fake.until(|s| disconnects(s) == 2).await;
    let fake = rig.stop().await;
    let s = fake.lock();
    // Each window: attempt, birth, its rows, the sleep message, DISCONNECT.
    let mut windows: Vec<Vec<String>> = Vec::new();
    for (_, e) in &s.log {
        match e {
            Seen::Attempt => windows.push(Vec::new()),
            Seen::Publish(o) if o.topic == AVAILABILITY => {
                let payload = String::from_utf8_lossy(&o.payload);
                let what = if payload == "online" {
                    "birth"
                } else {
                    "sleep"
                };
                windows.last_mut().unwrap().push(what.into());
            }
            Seen::Publish(o) => {
                let payload = String::from_utf8_lossy(&o.payload).into_owned();
                windows.last_mut().unwrap().push(payload);
            }
            Seen::Disconnect => windows.last_mut().unwrap().push("disconnect".into()),
            Seen::Dropped => panic!("no connection was dropped"),
            Seen::Subscribe(_) => {}
        }
    }
    let expect = |rows: Vec<String>| {
        let mut w = vec!["birth".to_string()];
        w.extend(rows);
        w.extend(["sleep".into(), "disconnect".into()]);
        w
    };
    assert_eq!(windows, vec![expect(rows(1..=5)), expect(rows(6..=6))]);
    // Off the air in between: the next window opens `flush_every` after the first.
    let between = s.attempts()[1] - s.attempts()[0];
    assert!(
        between >= flush_every && between < flush_every + Duration::from_secs(1),
        "the second window opened {between:?} after the first"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_says_goodbye_on_the_availability_topic_then_disconnects() {
    let rig = Rig::start(config(""), &[Step::Accept], 3);
    rig.fake.until(|s| s.rows().len() == 3).await;
    let fake = rig.stop().await;
    let s = fake.lock();
    let tail: Vec<String> = s.log[s.log.len() - 2..]
        .iter()
        .map(|(_, e)| match e {
            Seen::Publish(o) => format!("{} {}", o.topic, String::from_utf8_lossy(&o.payload)),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        tail,
        [format!("{AVAILABILITY} offline"), "Disconnect".into()]
    );
}
