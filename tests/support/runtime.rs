//! A task on a thread of its own with its own current-thread tokio runtime, stopped and
//! joined when dropped: the shape of every in-process server of the tests (the proxy, the
//! fake broker, the MQTT 5 subscriber), which must run while the test thread blocks.

use std::future::Future;

pub struct Background {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Runs the future `task()` makes (on the new thread, so it may hold sockets made there)
    /// until it ends or this is dropped; dropping the runtime then ends every task it spawned.
    pub fn spawn<F, T>(name: &str, task: F) -> Background
    where
        F: FnOnce() -> T + Send + 'static,
        T: Future<Output = ()>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    tokio::select! {
                        _ = task() => {}
                        _ = stopped => {}
                    }
                });
            })
            .unwrap();
        Background {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
