//! The soak's result: every reading written is delivered, dead-lettered or dropped by
//! policy, and the table that says so.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Faults done, by kind.
#[derive(Default, Clone)]
pub struct Done {
    pub restarts: u32,
    pub outages: u32,
    pub outage_time: Duration,
    pub resets: u32,
    pub half_open: u32,
    /// When the clock stepped from 1970 to the real time, into the run.
    pub jumped: Option<Duration>,
}

/// The gateway's peak RSS, CPU time and the state directory's peaks, sampled every second.
#[derive(Default, Clone, Copy)]
pub struct Samples {
    pub hwm_kb: u64,
    pub cpu_s: f64,
    /// Sum of the files' sizes.
    pub disk: u64,
    pub db: u64,
    pub wal: u64,
}

pub struct Outcome {
    pub minutes: f64,
    pub seed: u64,
    /// Normal readings written, and poison ones.
    pub normal: u64,
    pub poison: u64,
    /// Unique (input, n) seen, and messages seen, by the subscriber.
    pub delivered: u64,
    pub messages: u64,
    pub poison_delivered: u64,
    /// `queue stats --json` after the gateway stopped.
    pub stats: Value,
    /// Dead letters held: (poison, normal, normal ones the subscriber also received).
    pub dead_held: (u64, u64, u64),
    /// Readings neither received nor held as dead letters.
    pub missing: u64,
    pub done: Done,
    pub samples: Samples,
    pub up: Duration,
    pub connections: usize,
    pub disk_note: String,
    pub drained: Option<Duration>,
    pub exit: Option<std::process::ExitStatus>,
    pub log: String,
}

impl Outcome {
    fn n(&self, key: &str) -> u64 {
        self.stats[key].as_u64().unwrap_or(0)
    }

    pub fn expected(&self) -> u64 {
        self.normal + self.poison
    }

    /// written - delivered - dead letters - dropped by policy: 0 when every reading is
    /// accounted for (negative if a reading was counted twice, e.g. dropped and delivered).
    pub fn unaccounted(&self) -> i64 {
        self.expected() as i64
            - self.delivered as i64
            - self.n("dead") as i64
            - self.n("dropped") as i64
    }

    pub fn ok(&self) -> bool {
        self.unaccounted() == 0
            && self.n("expired") == 0
            && self.poison_delivered == 0
            && self.drained.is_some()
            && self.exit.is_some_and(|e| e.success())
    }

    /// Prints the table.
    pub fn print(&self) {
        let mib = |b: u64| b as f64 / 1048576.0;
        println!();
        println!("soak result: {:.1} min, seed {}", self.minutes, self.seed);
        let row = |what: &str, value: String, note: String| {
            println!("  {what:<34} {value:>10}  {note}");
        };
        let (dp, dn, dd) = self.dead_held;
        row(
            "readings written (expected)",
            self.expected().to_string(),
            format!("{} normal + {} poison", self.normal, self.poison),
        );
        row(
            "delivered (unique n seen)",
            self.delivered.to_string(),
            String::new(),
        );
        row(
            "duplicates (seen - unique)",
            (self.messages - self.delivered).to_string(),
            String::new(),
        );
        row(
            "dead-lettered",
            self.n("dead").to_string(),
            format!(
                "held {}: {dp} poison, {dn} normal ({dd} of them also delivered); {} discarded",
                self.n("dead_held"),
                self.n("dead_discarded")
            ),
        );
        row(
            "dropped by policy",
            self.n("dropped").to_string(),
            format!(
                "{} full, {} expired",
                self.n("dropped_full"),
                self.n("expired")
            ),
        );
        row(
            "unaccounted (must be 0)",
            self.unaccounted().to_string(),
            "= expected - delivered - dead - dropped".into(),
        );
        row(
            "neither delivered nor dead-lettered",
            self.missing.to_string(),
            "= dropped, unless a reading was dropped and delivered".into(),
        );
        row(
            "poison delivered (must be 0)",
            self.poison_delivered.to_string(),
            String::new(),
        );
        let d = &self.done;
        row(
            "broker restarts (SIGTERM)",
            d.restarts.to_string(),
            format!(
                "{} of them outages beyond max_size, {:.0} s in all",
                d.outages,
                d.outage_time.as_secs_f64()
            ),
        );
        row("link resets", d.resets.to_string(), String::new());
        row(
            "half-open periods",
            d.half_open.to_string(),
            "3 keep-alives + up to 2 s each".into(),
        );
        let corrected: u64 = self
            .log
            .lines()
            .filter(|l| l.contains("Clock synchronised"))
            .filter_map(|l| field(l, "corrected")?.parse::<u64>().ok())
            .sum();
        row(
            "clock jump 1970 -> now",
            d.jumped.map_or("not done".into(), |_| "done".into()),
            d.jumped.map_or(String::new(), |t| {
                format!(
                    "at {:.0} s; {corrected} queued stamps corrected",
                    t.as_secs_f64()
                )
            }),
        );
        let s = &self.samples;
        row(
            "peak RSS of the gateway (VmHWM)",
            format!("{:.1} MiB", s.hwm_kb as f64 / 1024.0),
            String::new(),
        );
        row(
            "gateway CPU",
            format!("{:.1} s", s.cpu_s),
            format!(
                "{:.2} % of one core over {:.0} s",
                s.cpu_s * 100.0 / self.up.as_secs_f64(),
                self.up.as_secs_f64()
            ),
        );
        row(
            "state_dir peak",
            format!("{:.1} MiB", mib(s.disk)),
            format!(
                "queue.db {:.1} MiB, -wal {:.1} MiB; {}",
                mib(s.db),
                mib(s.wal),
                self.disk_note
            ),
        );
        row(
            "proxy connections",
            self.connections.to_string(),
            String::new(),
        );
        row(
            "drain at the end",
            self.drained
                .map_or("NO".into(), |t| format!("{:.1} s", t.as_secs_f64())),
            String::new(),
        );
        row(
            "gateway exit (SIGTERM)",
            self.exit
                .and_then(|e| e.code())
                .map_or("killed".into(), |c| c.to_string()),
            String::new(),
        );
        if let Some(line) = self
            .log
            .lines()
            .rev()
            .find(|l| l.contains("Gateway stopped."))
        {
            println!(
                "  gateway's stop line: {}",
                line.split("Gateway stopped.").last().unwrap_or("").trim()
            );
        }
        println!("  gateway's WARN and ERROR lines, by message:");
        for (count, message) in log_summary(&self.log) {
            println!("    {count:>6}  {message}");
        }
    }
}

/// `key=value` of a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.split(&format!(" {key}=")).nth(1)?;
    rest.split_whitespace().next()
}

/// WARN and ERROR lines counted by level and message (the sentence before the fields).
pub fn log_summary(log: &str) -> Vec<(usize, String)> {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines() {
        let Some(level) = ["ERROR", "WARN"]
            .iter()
            .find(|l| line.contains(&format!(" {l} ")))
        else {
            continue;
        };
        // "<time>  WARN sensorgate::uplink: Connection to the broker lost. error=..."
        let rest = line
            .split_once(&format!(" {level} "))
            .map_or("", |(_, r)| r);
        let rest = rest.split_once(": ").map_or(rest, |(_, r)| r);
        let message = match rest.find(". ") {
            Some(i) => &rest[..=i],
            None => rest,
        };
        *by.entry(format!("{level} {message}")).or_default() += 1;
    }
    let mut v: Vec<(usize, String)> = by.into_iter().map(|(m, c)| (c, m)).collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    v
}
