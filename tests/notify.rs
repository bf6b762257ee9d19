//! The systemd notify protocol, with a datagram socket as `$NOTIFY_SOCKET`: READY, STATUS,
//! WATCHDOG pings while the gateway makes progress, none while its queue is wedged (another
//! process holds SQLite's write lock), pings again once it recovers, STOPPING on SIGTERM.

use crate::support::gateway::{base_config, Gateway};
use crate::support::wait_until;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// Every datagram received, in order.
pub(crate) fn listen(path: &std::path::Path) -> Arc<Mutex<Vec<String>>> {
    let sock = UnixDatagram::bind(path).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            sink.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    got
}

pub(crate) fn count(got: &Mutex<Vec<String>>, what: &str) -> usize {
    got.lock()
        .unwrap()
        .iter()
        .filter(|d| d.lines().any(|l| l.starts_with(what)))
        .count()
}

#[test]
fn ready_status_watchdog_and_a_wedge_that_stops_the_pings() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("notify.sock");
    let got = listen(&socket);
    let url = format!("mqtt://127.0.0.1:{}", crate::support::free_port()); // no broker: queue only
    let config = base_config(tmp.path(), "gwn", &url, "")
        + "[queue]\ncommit_linger = \"20ms\"\n[[synthetic]]\nname = \"s\"\nrate = 200.0\nfields = [\"t\"]\ntopic = \"x/{input}\"\n";
    let mut gw = Gateway::new(tmp.path(), &config);
    gw.start_with_env(&[
        ("NOTIFY_SOCKET", socket.to_str().unwrap()),
        ("WATCHDOG_USEC", "1500000"), // pings every 0.5 s; wedged after 0.75 s without progress
    ]);

    wait_until("READY=1", LONG, || count(&got, "READY=1") == 1);
    wait_until("three watchdog pings", LONG, || {
        count(&got, "WATCHDOG=1") >= 3
    });
    wait_until("a status line with the backlog", LONG, || {
        got.lock()
            .unwrap()
            .iter()
            .any(|d| d.contains("STATUS=offline; pending") && !d.contains("pending 0,"))
    });

    // Wedge the queue: hold SQLite's write lock from this process.
    let db = rusqlite::Connection::open(tmp.path().join("state/queue.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    wait_until("the gateway reports the wedge", LONG, || {
        count(&got, "STATUS=") > 0
            && got
                .lock()
                .unwrap()
                .iter()
                .any(|d| d.contains("WEDGED: queue commit"))
    });
    let at_wedge = got.lock().unwrap().len();
    wait_until("three more status lines", LONG, || {
        got.lock().unwrap().len() >= at_wedge + 3
    });
    let during: Vec<String> = got.lock().unwrap()[at_wedge..].to_vec();
    assert!(
        during.iter().all(|d| !d.contains("WATCHDOG=1")),
        "no pings while wedged: {during:?}"
    );

    db.execute_batch("COMMIT").unwrap();
    let pings = count(&got, "WATCHDOG=1");
    wait_until("pings resume", LONG, || count(&got, "WATCHDOG=1") > pings);
    assert!(gw.is_running(), "a wedge that clears is not fatal");

    let (status, _) = gw.terminate(Duration::from_secs(10));
    assert!(status.expect("exits").success());
    wait_until("STOPPING=1", LONG, || count(&got, "STOPPING=1") == 1);
}
