//! The test proxy itself: its counters (through it to a one-connection echo server), its
//! one-way delay (a pipeline, not a sleep per read) and its rate limit (its relay under paused
//! time).

use crate::support::proxy::{in_memory, Proxy, Shape, Traffic};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

/// A server on a free port that echoes one connection's bytes back until EOF.
fn echo_once() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 16384];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    port
}

fn connect(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

#[test]
fn counts_bytes_and_reads_per_direction() {
    let proxy = Proxy::start(echo_once());
    let mut s = connect(&proxy);
    let mut back = [0u8; 100];
    // One write at a time, each echoed before the next: each is one read on either side.
    for i in 0..5u8 {
        s.write_all(&[i; 100]).unwrap();
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, [i; 100]);
    }
    let t = proxy.bytes();
    assert_eq!(
        t,
        Traffic {
            up_bytes: 500,
            up_segments: 5,
            down_bytes: 500,
            down_segments: 5,
        }
    );
    assert_eq!(proxy.wire_bytes(), 1000 + 40 * 10);
    proxy.reset_counters();
    assert_eq!(proxy.bytes(), Traffic::default());
    s.write_all(b"x").unwrap();
    s.read_exact(&mut back[..1]).unwrap();
    assert_eq!(proxy.wire_bytes(), 2 + 40 * 2);
}

/// Echoes what the server's end of an in-memory link receives, until EOF.
async fn echo(mut server: DuplexStream) {
    let mut buf = [0u8; 16384];
    loop {
        match server.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if server.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

// The shaping under paused time: the relay of a real connection, on in-memory streams, where
// a timer fires exactly when due however loaded the machine is.

#[tokio::test(start_paused = true)]
async fn delay_is_one_way_and_pipelined() {
    let delay = Duration::from_millis(150);
    let (mut s, server, counts) = in_memory(Shape {
        delay,
        bits_per_second: None,
    });
    tokio::spawn(echo(server));
    let mut byte = [0u8; 1];
    let t0 = Instant::now();
    s.write_all(b"a").await.unwrap();
    s.read_exact(&mut byte).await.unwrap();
    assert_eq!(t0.elapsed(), 2 * delay, "one round trip");

    // Five bytes written 30 ms apart arrive 2 × delay after each was written: a sleep per
    // read would add the delays up (the last byte back after 5 × 2 × delay).
    let gap = Duration::from_millis(30);
    let t0 = Instant::now();
    for b in b"bcdef" {
        s.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(gap).await; // paused time: the clock moves on, nothing waits
    }
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"bcdef");
    assert_eq!(t0.elapsed(), 2 * delay + 4 * gap, "five paced bytes");
    assert_eq!(counts.bytes().up_bytes, 6);
    assert_eq!(counts.bytes().down_bytes, 6);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_is_per_direction() {
    // 6,000 bytes at 24,000 bit/s (3,000 bytes/s) take 2 s each way; the echo runs both
    // directions at once, so the last byte is back after 2 s and one piece (60 bytes, 20 ms
    // of link time), not 4 s.
    let (mut s, server, counts) = in_memory(Shape {
        delay: Duration::ZERO,
        bits_per_second: Some(24_000),
    });
    tokio::spawn(echo(server));
    let data: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
    let t0 = Instant::now();
    s.write_all(&data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    let mut got = 0;
    let mut at_one_second = None;
    while got < back.len() {
        got += s.read(&mut back[got..]).await.unwrap();
        if at_one_second.is_none() && t0.elapsed() >= Duration::from_secs(1) {
            at_one_second = Some(got);
        }
    }
    assert_eq!(back, data);
    assert_eq!(
        t0.elapsed(),
        Duration::from_millis(2020),
        "6,000 bytes at 24,000 bit/s"
    );
    // Never ahead of the rate: by the first read after 1 s, at most 1 s of bytes.
    let early = at_one_second.expect("reads went on past 1 s");
    assert!(early <= 3000, "{early} bytes back within 1 s");
    let t = counts.bytes();
    assert_eq!((t.up_bytes, t.down_bytes), (6000, 6000));
    assert!(t.up_segments >= 1 && t.down_segments >= 1);
    assert_eq!(t.wire_bytes(), 12_000 + 40 * t.segments());
}
