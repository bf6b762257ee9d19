//! Serial devices by stable name: a `/dev/serial/by-id/`-style symlink that appears after
//! the gateway started, vanishes, and moves between pseudo-terminals (a different adapter
//! plugged in), against the real binary and a real Mosquitto.

use crate::support::broker::Broker;
use crate::support::gateway::{base_config, Gateway};
use crate::support::pty::Pty;
use crate::support::subscriber::Subscriber;
use crate::support::wait_until;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// Points `link` at `target`, replacing what it pointed at in one step (as udev does).
fn point(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

fn seen(sub: &Subscriber, text: &str) -> bool {
    sub.messages()
        .iter()
        .any(|(_, p)| p.contains(&format!("\"v\":\"{text}\"")))
}

#[test]
fn a_by_id_path_is_waited_for_followed_when_it_moves_and_dropped_when_it_vanishes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path());
    let sub = Subscriber::start(broker.port, "site/#", "t-hotplug");
    let by_id = dir.path().join("by-id");
    std::fs::create_dir(&by_id).unwrap();
    let link = by_id.join("usb-FTDI_FT232R_A50285BI-if00-port0");
    let cfg = base_config(dir.path(), "gwh", &broker.url(), "")
        + &format!(
            "[queue]\ncommit_linger = \"10ms\"\n\n[[serial]]\nname = \"soil\"\ndevice = \"{}\"\n\
             format = \"kv\"\ntopic = \"site/{{gateway}}/{{input}}\"\nqos = 1\n\
             reopen_min = \"50ms\"\nreopen_max = \"200ms\"\n",
            link.display()
        );
    let mut gw = Gateway::new(dir.path(), &cfg);
    gw.start();

    // Absent at start: waited for, and read once it appears.
    gw.wait_log("Serial device absent; waiting for it.", LONG);
    let mut a = Pty::open();
    point(&link, &a.path);
    gw.wait_log_count("Serial port open.", 1, LONG);
    a.line("v=a1");
    wait_until("a1 from the first adapter", LONG, || seen(&sub, "a1"));

    // The path moves to another tty (another adapter) while the first is still open: the
    // gateway leaves the first and reads the second.
    let mut b = Pty::open();
    point(&link, &b.path);
    gw.wait_log(
        "Serial device path now names another device; reopening.",
        LONG,
    );
    gw.wait_log_count("Serial port open.", 2, LONG);
    a.line("v=a2");
    b.line("v=b1");
    wait_until("b1 from the adapter the path now names", LONG, || {
        seen(&sub, "b1")
    });

    // The path vanishes while its tty lives on (unplugged, and the kernel keeps the node a
    // moment): the port is closed, and nothing written to it afterwards is read.
    std::fs::remove_file(&link).unwrap();
    gw.wait_log(
        "Serial device vanished; closed it and waiting for it to return.",
        LONG,
    );
    b.line("v=b2");
    // A different adapter on the old tty's name is not the configured one: only the
    // by-id path decides. It returns, now naming a third tty.
    let mut c = Pty::open();
    point(&link, &c.path);
    gw.wait_log_count("Serial port open.", 3, LONG);
    c.line("v=c1");
    wait_until("c1 after the path returned", LONG, || seen(&sub, "c1"));

    let got: Vec<String> = sub.messages().into_iter().map(|(_, p)| p).collect();
    assert!(
        !seen(&sub, "a2"),
        "read from a tty the path no longer names: {got:?}"
    );
    assert!(
        !seen(&sub, "b2"),
        "read from a tty after its path vanished: {got:?}"
    );
    gw.terminate(LONG);
    drop((a, b, c));
}
