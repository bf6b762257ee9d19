//! A TCP proxy between the gateway and the broker: faults, byte counts and a shaped link.
//!
//! Faults:
//! - `pass`: bytes flow both ways;
//! - `black_hole`: every connection open now (and every new one until `pass`) stays open
//!   but its bytes are read and dropped in both directions, including bytes already inside
//!   the proxy: a half-open link, no FIN, no RST;
//! - `reset_all`: every open connection is closed at once.
//!
//! Counting ([`Proxy::bytes`]): per direction (up = client to upstream, i.e. gateway to
//! broker; down = the reverse), the payload bytes and the "segments", where a segment is one
//! chunk that one `read()` returned. That approximates TCP segments: a read may gather several
//! segments that arrived together, a loopback segment may be larger than an Ethernet MSS, and
//! pure ACKs (no payload) are never seen. [`Traffic::wire_bytes`] adds 40 bytes of TCP/IP
//! headers per counted segment. Counting happens on the read side, before any shaping, so the
//! chunks are the ones the sender's kernel delivered, not the ones the shaper releases.
//! Bytes are counted even while black-holed: the sender did transmit them.
//!
//! Shaping ([`Proxy::start_shaped`]): each direction behaves as a link of `bits_per_second`
//! (serialisation: a chunk's bytes leave one after another at that rate, in order, after the
//! bytes read before them) followed by a one-way `delay` (propagation: so a round trip adds
//! 2 × delay). The delay is a pipeline: bytes read at t are released at t + delay however many
//! chunks are in flight; nothing sleeps per read. Throttled bytes are released in pieces of
//! about 20 ms of link time, so at most `bits_per_second / 8` bytes leave per second.
//!
//! Each direction of a connection is a reader and a writer joined by a queue of chunks stamped
//! with their release time; the queue holds at most [`QUEUE_BYTES`] (then reading waits, and the
//! sender's kernel buffers). It runs on its own thread with its own tokio runtime and stops when
//! dropped. [`in_memory`] runs the same relay between two in-memory streams on the caller's
//! runtime, so that tests of the shaping run under paused time.

use super::runtime::Background;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Bytes read but not yet released, per direction of a connection, at most.
pub const QUEUE_BYTES: usize = 1 << 20;

/// The largest chunk one read takes.
const READ_BUF: usize = 16384;

/// The link a shaped proxy imitates, per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// One-way delay: a round trip through the proxy takes at least twice this.
    pub delay: Duration,
    /// Link rate; `None` is as fast as loopback.
    pub bits_per_second: Option<u64>,
}

/// Counted traffic since the start or the last [`Proxy::reset_counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Client to upstream (gateway to broker).
    pub up_bytes: u64,
    pub up_segments: u64,
    /// Upstream to client (broker to gateway).
    pub down_bytes: u64,
    pub down_segments: u64,
}

impl Traffic {
    /// Bytes of TCP and IPv4 headers (20 + 20, no options) counted per segment.
    pub const HEADER_BYTES: u64 = 40;

    pub fn bytes(&self) -> u64 {
        self.up_bytes + self.down_bytes
    }

    pub fn segments(&self) -> u64 {
        self.up_segments + self.down_segments
    }

    /// Payload bytes plus 40 bytes per segment, both directions.
    pub fn wire_bytes(&self) -> u64 {
        self.bytes() + Self::HEADER_BYTES * self.segments()
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Up,
    Down,
}

struct Conn {
    holed: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

struct Shared {
    black_hole: AtomicBool,
    conns: Mutex<Vec<Conn>>,
    accepted: AtomicUsize,
    upstream: u16,
    link: Arc<Link>,
}

/// What every connection's relay shares: the shape of the link and the counts.
struct Link {
    shape: Shape,
    traffic: Mutex<Traffic>,
}

impl Link {
    fn count(&self, dir: Direction, n: usize) {
        let mut t = self.traffic.lock().unwrap();
        match dir {
            Direction::Up => {
                t.up_bytes += n as u64;
                t.up_segments += 1;
            }
            Direction::Down => {
                t.down_bytes += n as u64;
                t.down_segments += 1;
            }
        }
    }
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    _thread: Background,
}

impl Proxy {
    /// An unshaped proxy to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Proxy {
        Proxy::start_shaped(upstream, Shape::default())
    }

    /// A proxy to `127.0.0.1:upstream` that imitates the link `shape` in both directions.
    pub fn start_shaped(upstream: u16, shape: Shape) -> Proxy {
        assert_ne!(shape.bits_per_second, Some(0), "a link of 0 bit/s");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            black_hole: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            upstream,
            link: Arc::new(Link {
                shape,
                traffic: Mutex::new(Traffic::default()),
            }),
        });
        let s = shared.clone();
        // Dropping the proxy drops its runtime, which ends every connection's task.
        let thread = Background::spawn("proxy", move || async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            accept_loop(listener, s).await;
        });
        Proxy {
            port,
            shared,
            _thread: thread,
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

    /// Bytes and segments read so far, over all connections (see the module notes).
    pub fn bytes(&self) -> Traffic {
        *self.shared.link.traffic.lock().unwrap()
    }

    /// Payload bytes plus 40 bytes per segment, both directions.
    pub fn wire_bytes(&self) -> u64 {
        self.bytes().wire_bytes()
    }

    /// Starts counting from zero.
    pub fn reset_counters(&self) {
        *self.shared.link.traffic.lock().unwrap() = Traffic::default();
    }
}

/// The counts of an [`in_memory`] link.
pub struct Counts(Arc<Link>);

impl Counts {
    /// As [`Proxy::bytes`].
    pub fn bytes(&self) -> Traffic {
        *self.0.traffic.lock().unwrap()
    }
}

/// One connection through a link shaped as `shape`, relayed on the caller's runtime between
/// two in-memory streams: (the client's end, the server's end, the counts). No socket, no
/// thread: under paused time the shaping is exact to the millisecond.
pub fn in_memory(shape: Shape) -> (DuplexStream, DuplexStream, Counts) {
    let (client, proxy_client) = tokio::io::duplex(QUEUE_BYTES);
    let (proxy_server, server) = tokio::io::duplex(QUEUE_BYTES);
    let link = Arc::new(Link {
        shape,
        traffic: Mutex::new(Traffic::default()),
    });
    let holed = Arc::new(AtomicBool::new(false));
    tokio::spawn(relay(proxy_client, proxy_server, link.clone(), holed));
    (client, server, Counts(link))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let holed = Arc::new(AtomicBool::new(shared.black_hole.load(Ordering::SeqCst)));
        let h = holed.clone();
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(("127.0.0.1", s.upstream)).await else {
                return;
            };
            relay(client, server, s.link.clone(), h).await;
        });
        shared.conns.lock().unwrap().push(Conn {
            holed,
            task: task.abort_handle(),
        });
    }
}

/// Relays one connection both ways until either direction ends.
async fn relay<C, S>(client: C, server: S, link: Arc<Link>, holed: Arc<AtomicBool>)
where
    C: AsyncRead + AsyncWrite,
    S: AsyncRead + AsyncWrite,
{
    let (cr, cw) = tokio::io::split(client);
    let (sr, sw) = tokio::io::split(server);
    tokio::select! {
        _ = pipe(cr, sw, Direction::Up, &link, &holed) => {}
        _ = pipe(sr, cw, Direction::Down, &link, &holed) => {}
    }
}

/// Bytes on their way through one direction.
struct Chunk {
    data: Vec<u8>,
    /// When the chunk's first byte leaves (read time, queued behind earlier bytes on a
    /// throttled link, plus the delay).
    first: Instant,
    _budget: OwnedSemaphorePermit,
}

/// Copies one direction until EOF (after releasing what was read before it) or a write error.
/// While `holed`, reads and drops bytes, and never ends on its own: a black hole sends no FIN.
async fn pipe(
    from: impl AsyncRead,
    to: impl AsyncWrite,
    dir: Direction,
    link: &Link,
    holed: &AtomicBool,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    // The reader drops `tx` when it returns at EOF, so the writer ends after the last chunk.
    let read_then_wait = async {
        read_side(from, tx, dir, link, holed).await;
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = read_then_wait => {}
        _ = write_side(rx, to, link.shape, holed) => {}
    }
}

async fn read_side(
    from: impl AsyncRead,
    tx: mpsc::UnboundedSender<Chunk>,
    dir: Direction,
    link: &Link,
    holed: &AtomicBool,
) {
    let mut from = std::pin::pin!(from);
    let budget = Arc::new(Semaphore::new(QUEUE_BYTES));
    let shape = link.shape;
    // When the (imitated) link has sent everything read so far.
    let mut link_free = Instant::now();
    let mut buf = vec![0u8; READ_BUF];
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
        link.count(dir, n);
        if holed.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(permit) = budget.clone().acquire_many_owned(n as u32).await else {
            return;
        };
        let start = link_free.max(Instant::now());
        link_free = start + transmit_time(n, shape.bits_per_second);
        let chunk = Chunk {
            data: buf[..n].to_vec(),
            first: start + shape.delay,
            _budget: permit,
        };
        if tx.send(chunk).is_err() {
            return;
        }
    }
}

async fn write_side(
    mut rx: mpsc::UnboundedReceiver<Chunk>,
    to: impl AsyncWrite,
    shape: Shape,
    holed: &AtomicBool,
) {
    let mut to = std::pin::pin!(to);
    // About 20 ms of link time per piece on a throttled link.
    let piece = shape
        .bits_per_second
        .map_or(READ_BUF, |bps| ((bps / 8 / 50) as usize).clamp(1, READ_BUF));
    while let Some(chunk) = rx.recv().await {
        let mut sent = 0;
        for p in chunk.data.chunks(piece) {
            // A piece leaves once the link has carried it: its last byte's time.
            let release = chunk.first + transmit_time(sent + p.len(), shape.bits_per_second);
            sent += p.len();
            if release > Instant::now() {
                tokio::time::sleep_until(release).await;
            }
            if holed.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(p).await.is_err() {
                return;
            }
        }
    }
}

/// How long `n` bytes take at `bits_per_second` (zero when unthrottled).
fn transmit_time(n: usize, bits_per_second: Option<u64>) -> Duration {
    match bits_per_second {
        None => Duration::ZERO,
        Some(bps) => Duration::from_nanos((n as u128 * 8 * 1_000_000_000 / bps as u128) as u64),
    }
}
