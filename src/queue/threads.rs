//! The threads that run the gateway's SQLite work: two threads of its own, not tokio's
//! blocking pool.
//!
//! tokio's pool also resolves host names (rumqttc's `lookup_host`), and a lookup that hangs
//! (no DNS over a dead cellular link) keeps its thread after the connect attempt gave up: on
//! a small pool a few of them could leave no thread for the queue, and a large pool spreads
//! SQLite's memory over one malloc arena per thread (a replay peaked 8 MB higher on tokio's
//! default). Two threads are enough: one writer's trip (a commit, a delete, the expiry) and
//! the uplink's read on its own connection are all that can run at once.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use tokio::sync::oneshot;

const THREADS: usize = 2;

type Job = Box<dyn FnOnce() + Send>;

static JOBS: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

fn jobs() -> &'static mpsc::Sender<Job> {
    JOBS.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..THREADS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("sg-sqlite-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match job {
                        // A job that panics drops its result's sender (the caller sees
                        // `Panicked`); the thread lives on.
                        Ok(job) => {
                            let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                        }
                        Err(_) => return,
                    }
                })
                .expect("cannot start a SQLite thread");
        }
        tx
    })
}

/// The trip panicked; its result is lost.
#[derive(Debug, thiserror::Error)]
#[error("a queue task panicked")]
pub struct Panicked;

/// A trip under way: resolves to its result.
pub struct Trip<T>(oneshot::Receiver<T>);

impl<T> Future for Trip<T> {
    type Output = Result<T, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_err(|_| Panicked)
    }
}

/// Runs `f` on one of the SQLite threads.
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Trip<T> {
    let (tx, rx) = oneshot::channel();
    // The threads never exit while the sender lives (it is static), so this cannot fail.
    let _ = jobs().send(Box::new(move || {
        let _ = tx.send(f());
    }));
    Trip(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trips_return_results_and_survive_panics() {
        assert_eq!(spawn(|| 6 * 7).await.unwrap(), 42);
        // More panics than threads: each is caught, so the threads are all still there.
        for _ in 0..THREADS + 1 {
            assert!(spawn(|| -> u8 { panic!("boom") }).await.is_err());
        }
        let after = tokio::time::timeout(std::time::Duration::from_secs(10), spawn(|| 1)).await;
        assert_eq!(after.expect("a thread still runs trips").unwrap(), 1);
    }
}
