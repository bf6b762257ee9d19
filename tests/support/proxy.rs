//! A TCP fault proxy between the gateway and the broker.
//!
//! - `pass`: bytes flow both ways;
//! - `black_hole`: every connection open now (and every new one until `pass`) stays open
//!   but its bytes are read and dropped in both directions: a half-open link, no FIN, no RST;
//! - `reset_all`: every open connection is closed at once.
//!
//! It runs on its own thread with its own tokio runtime and stops when dropped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Conn {
    holed: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

struct Shared {
    black_hole: AtomicBool,
    conns: Mutex<Vec<Conn>>,
    accepted: AtomicUsize,
    upstream: u16,
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            black_hole: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            upstream,
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                tokio::select! {
                    _ = accept_loop(listener, s.clone()) => {}
                    _ = stop_rx => {}
                }
                for c in s.conns.lock().unwrap().drain(..) {
                    c.task.abort();
                }
            });
        });
        Proxy {
            port,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn black_hole(&self) {
        self.shared.black_hole.store(true, Ordering::SeqCst);
        for c in self.shared.conns.lock().unwrap().iter() {
            c.holed.store(true, Ordering::SeqCst);
        }
    }

    /// New connections pass again; connections already black-holed stay black-holed.
    pub fn pass(&self) {
        self.shared.black_hole.store(false, Ordering::SeqCst);
    }

    pub fn reset_all(&self) {
        for c in self.shared.conns.lock().unwrap().drain(..) {
            c.task.abort();
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections still open (including black-holed ones).
    pub fn open_connections(&self) -> usize {
        self.shared
            .conns
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.task.is_finished())
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let holed = Arc::new(AtomicBool::new(shared.black_hole.load(Ordering::SeqCst)));
        let h = holed.clone();
        let upstream = shared.upstream;
        let task = tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::select! {
                _ = pipe(cr, sw, h.clone()) => {}
                _ = pipe(sr, cw, h) => {}
            }
        });
        shared.conns.lock().unwrap().push(Conn {
            holed,
            task: task.abort_handle(),
        });
    }
}

/// Copies bytes until EOF; while `holed`, reads and drops them (and never ends on its own:
/// a black hole sends no FIN).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    holed: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16384];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                if holed.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                return;
            }
            Ok(n) => n,
        };
        if holed.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
