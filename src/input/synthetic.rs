//! Synthetic inputs: readings generated at a fixed rate, for the demo config, benchmarks
//! and soak tests. Each field follows its own bounded random walk; the first field starts
//! near 20 and the others near 50, so the demo looks like a thermometer and a hygrometer.

use crate::config::SyntheticConfig;
use crate::input::InputId;
use crate::reading::{Reading, Stamp, Value};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Runs until `cancel` fires, `count` readings were sent, or the pipeline is gone.
pub async fn run(
    id: InputId,
    config: SyntheticConfig,
    out: mpsc::Sender<Reading>,
    cancel: CancellationToken,
) {
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut values: Vec<f64> = (0..config.fields.len())
        .map(|i| if i == 0 { 20.0 } else { 50.0 })
        .collect();
    let mut sent = 0u64;
    while config.count.is_none_or(|c| sent < c) {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = cancel.cancelled() => return,
        }
        for v in &mut values {
            *v = (*v + (fastrand::f64() - 0.5) * 0.2).clamp(-40.0, 100.0);
        }
        let fields = config
            .fields
            .iter()
            .zip(&values)
            .map(|(name, v)| (name.clone(), Value::Float((v * 100.0).round() / 100.0)))
            .collect();
        let reading = Reading {
            input: id.index,
            stamp: Stamp::now(),
            at: std::time::Instant::now(),
            device: None,
            sentence: None,
            fields,
        };
        if out.send(reading).await.is_err() {
            return;
        }
        sent += 1;
    }
}
