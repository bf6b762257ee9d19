//! A scripted MQTT 3.1.1 server for protocol cases a real broker cannot be made to show:
//! it acknowledges a publish only when the test says so (in any order, or never), and drops
//! the connection on command, or stops reading it. Publishes on `auto_ack` topics (every
//! topic for `"#"`) are acknowledged at once.
//! [`FakeBroker::start_flapping`] accepts every connection and closes it right after its
//! CONNACK, as a broker that refuses the client after letting it in.

use super::runtime::Background;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Received {
    pub conn: usize,
    pub pkid: u16,
    pub qos: u8,
    pub topic: String,
    pub payload: String,
}

enum Cmd {
    Ack(u16),
    Drop,
    Stall,
}

pub struct FakeBroker {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    cmds: Arc<Mutex<Option<mpsc::UnboundedSender<Cmd>>>>,
    connections: Arc<AtomicUsize>,
    _server: Background,
}

impl FakeBroker {
    pub fn start(auto_ack: &str) -> FakeBroker {
        FakeBroker::start_with(auto_ack, false)
    }

    /// A broker that closes every connection right after its CONNACK.
    pub fn start_flapping() -> FakeBroker {
        FakeBroker::start_with("", true)
    }

    fn start_with(auto_ack: &str, flap: bool) -> FakeBroker {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let cmds = Arc::new(Mutex::new(None));
        let connections = Arc::new(AtomicUsize::new(0));
        let (r, c, auto) = (received.clone(), cmds.clone(), auto_ack.to_string());
        let counted = connections.clone();
        let server = Background::spawn("fake-broker", move || async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            let mut n = 0;
            while let Ok((sock, _)) = listener.accept().await {
                n += 1;
                counted.fetch_add(1, Ordering::SeqCst);
                let (tx, rx) = mpsc::unbounded_channel();
                *c.lock().unwrap() = Some(tx);
                if flap {
                    flap_once(sock).await;
                    continue;
                }
                // One connection at a time, like a broker with one client id.
                serve(sock, n, &auto, r.clone(), rx).await;
            }
        });
        FakeBroker {
            port,
            received,
            cmds,
            connections,
            _server: server,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Publishes received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn ack(&self, pkid: u16) {
        if let Some(tx) = &*self.cmds.lock().unwrap() {
            let _ = tx.send(Cmd::Ack(pkid));
        }
    }

    /// Stops reading the current connection (its socket buffers fill up and the client's
    /// writes block) until [`FakeBroker::drop_connection`].
    pub fn stall(&self) {
        if let Some(tx) = &*self.cmds.lock().unwrap() {
            let _ = tx.send(Cmd::Stall);
        }
    }

    /// Closes the current connection.
    pub fn drop_connection(&self) {
        if let Some(tx) = &*self.cmds.lock().unwrap() {
            let _ = tx.send(Cmd::Drop);
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

async fn read_packet(sock: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let header = sock.read_u8().await.ok()?;
    let mut len = 0usize;
    for i in 0..4 {
        let b = sock.read_u8().await.ok()?;
        len |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    sock.read_exact(&mut body).await.ok()?;
    Some((header, body))
}

/// Answers the CONNECT with a CONNACK, then closes the connection.
async fn flap_once(mut sock: TcpStream) {
    if let Some((header, _)) = read_packet(&mut sock).await {
        if header >> 4 == 1 {
            let _ = sock.write_all(&[0x20, 2, 0, 0]).await;
        }
    }
}

async fn serve(
    mut sock: TcpStream,
    conn: usize,
    auto_ack: &str,
    received: Arc<Mutex<Vec<Received>>>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let puback = |pkid: u16| vec![0x40, 2, (pkid >> 8) as u8, pkid as u8];
    let mut stalled = false;
    loop {
        let reply = tokio::select! {
            p = read_packet(&mut sock), if !stalled => {
                let Some((header, body)) = p else { return };
                match header >> 4 {
                    1 => Some(vec![0x20, 2, 0, 0]), // CONNECT -> CONNACK
                    3 => {
                        let qos = (header >> 1) & 3;
                        let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
                        let topic = String::from_utf8_lossy(&body[2..2 + tlen]).into_owned();
                        let mut at = 2 + tlen;
                        let pkid = if qos > 0 {
                            at += 2;
                            u16::from_be_bytes([body[at - 2], body[at - 1]])
                        } else {
                            0
                        };
                        let payload = String::from_utf8_lossy(&body[at..]).into_owned();
                        let auto = (topic == auto_ack || auto_ack == "#") && qos > 0;
                        received.lock().unwrap().push(Received { conn, pkid, qos, topic, payload });
                        auto.then(|| puback(pkid))
                    }
                    12 => Some(vec![0xd0, 0]), // PINGREQ -> PINGRESP
                    14 => return,              // DISCONNECT
                    _ => None,
                }
            }
            c = cmds.recv() => match c {
                Some(Cmd::Ack(pkid)) => Some(puback(pkid)),
                Some(Cmd::Stall) => {
                    stalled = true;
                    None
                }
                Some(Cmd::Drop) | None => return,
            }
        };
        if let Some(bytes) = reply {
            if sock.write_all(&bytes).await.is_err() {
                return;
            }
        }
    }
}
