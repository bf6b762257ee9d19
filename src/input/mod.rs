//! Inputs turn bytes from the world into [`Reading`]s.
//!
//! Each input is a free async function `(config, out, cancel)` run as its own task.
//! **Invariant:** an input never blocks the others and is never fatal: a device that
//! vanishes is reopened with backoff; a frame that does not parse is counted, logged at
//! debug with the input's name, and skipped. An input returns when `cancel` fires or the
//! pipeline is gone.

pub mod serial;
pub mod synthetic;

use crate::reading::Reading;
use tokio::sync::mpsc;

/// Sends a reading; `false` means the pipeline is gone and the input should stop.
pub async fn send(out: &mpsc::Sender<Reading>, reading: Reading) -> bool {
    out.send(reading).await.is_ok()
}
