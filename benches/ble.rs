//! BLE: (1) advertisements per second through the decoder set on one core, and through the
//! whole per-advert path (decode, duplicate filter, reading); (2) the gateway binary's CPU
//! time while 50 mocked devices advertise 4 times a second each for 60 s, as a share of one
//! core (target: under 2%). The mock is python-dbusmock's BlueZ on a private bus
//! (tests/support/bluez_mock.py), advertising from a GLib timer inside its own process, so
//! only the gateway's own work is measured (utime + stime from /proc).
//!
//! `cargo bench --bench ble` (add `-- --quick` for a 10 s smoke run). `SENSORGATE_BENCH_BIN`
//! names another gateway binary to measure (e.g. a copy built from an earlier commit), so
//! two builds can be compared in one session.

mod common;

use common::bluez::Bluez;
use common::broker::Broker;
use common::gateway::Gateway;
use common::subscriber::Subscriber;
use sensorgate::ble::advert::{Payload, Processor, Wanted};
use sensorgate::ble::decode::{decode, Advert, Keys};
use sensorgate::ble::values::uuid_from_u16;
use sensorgate::input::InputId;
use sensorgate::metrics::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn h(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// (service uuid or company, data, bindkey): one vector per decoder family.
fn vectors() -> Vec<(Advert<'static>, Option<[u8; 16]>, [u8; 6])> {
    let leak = |s: &str| -> &'static [u8] { Box::leak(h(s).into_boxed_slice()) };
    let key: [u8; 16] = h("231d39c1d7cc1ab1aee224cd096db932").try_into().unwrap();
    let mac80a5 = [0x54, 0x48, 0xe6, 0x8f, 0x80, 0xa5];
    let atc = [0xa4, 0xc1, 0x38, 0x02, 0x83, 0xf4];
    vec![
        (
            Advert::ServiceData {
                uuid: 0xfcd2,
                data: leak("40000902ca0903bf13"),
            },
            None,
            atc,
        ),
        (
            Advert::ServiceData {
                uuid: 0xfcd2,
                data: leak("41e445f3c9962b332211006c7c4519"),
            },
            Some(key),
            mac80a5,
        ),
        (
            Advert::ManufacturerData {
                company: 0x0499,
                data: leak("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F"),
            },
            None,
            atc,
        ),
        (
            Advert::ServiceData {
                uuid: 0x181a,
                data: leak("a4c1380283f400a22f5f0bf819"),
            },
            None,
            atc,
        ),
        (
            Advert::ManufacturerData {
                company: 0x004c,
                data: leak("0215e2c56db5dffb48d2b060d0f5a71096e000000000c5"),
            },
            None,
            atc,
        ),
    ]
}

/// Decodes per second, single thread, median of 5 runs.
fn decode_rate(n: usize) -> f64 {
    let v = vectors();
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut ok = 0usize;
        for i in 0..n {
            let (advert, key, mac) = &v[i % v.len()];
            let keys = Keys {
                bindkey: key.as_ref(),
                mac: *mac,
            };
            ok += usize::from(decode(advert, &keys).is_ok());
        }
        assert!(
            ok * v.len() >= n * (v.len() - 1),
            "vectors must decode ({ok} of {n})"
        );
        rates.push(n as f64 / t0.elapsed().as_secs_f64());
    }
    common::median(rates)
}

/// Adverts per second through decode + duplicate filter + reading (every advert new).
fn processor_rate(n: usize) -> f64 {
    let wanted = Wanted {
        devices: Vec::new(),
        allow_unknown: true,
        min_interval: Duration::ZERO,
    };
    let id = InputId {
        index: 0,
        name: Arc::from("b"),
    };
    let mut p = Processor::new(id, wanted, Arc::new(Metrics::default()));
    let uuid = uuid_from_u16(0xfcd2);
    let t0 = Instant::now();
    let mut made = 0;
    for i in 0..n {
        let dev = [0xaa, 0, 0, 0, (i % 50) as u8, 0];
        let t = 2000 + (i % 997) as u16;
        let data = [0x40, 0x00, (i / 50) as u8, 0x02, t as u8, (t >> 8) as u8];
        made += p
            .advert(
                dev,
                Payload::Service { uuid, data: &data },
                Some(-60),
                Instant::now(),
            )
            .len();
    }
    assert!(made > n / 2);
    n as f64 / t0.elapsed().as_secs_f64()
}

/// The gateway's CPU share while `devices` advertise `hz` times a second for `secs`.
fn gateway_cpu(devices: u32, hz: f64, secs: f64) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Broker::start_bare(&d.join("broker"));
    let bluez = Bluez::start(&d.join("bluez"));
    bluez.add_adapter("hci0");

    let config = format!(
        "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\nhealth_interval = \"0s\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n\
         [[ble]]\nname = \"yard\"\ntopic = \"ble/{{gateway}}/{{input}}/{{device}}\"\nmin_interval = \"0s\"\nallow_unknown = true\n",
        d.join("state").display(), broker.port);
    let mut gw = Gateway::new(d, &config);
    if let Some(bin) = std::env::var_os("SENSORGATE_BENCH_BIN") {
        gw.bin = bin.into();
    }
    gw.env.push(bluez.env());
    gw.env.push(("RUST_LOG", "info".into()));
    gw.start();
    let pid = gw.pid();
    gw.wait_log("BLE scan started.", Duration::from_secs(30));
    let sub = Subscriber::start(broker.port, "ble/#", "ble-bench");

    let cpu0 = common::cpu_seconds(pid);
    let t0 = Instant::now();
    bluez.start_adverts("hci0", devices, hz, secs);
    std::thread::sleep(Duration::from_secs_f64(secs)); // the measured window
    let cpu = common::cpu_seconds(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2)); // late messages; not a sync point for the CPU figure
    let got = sub.messages().len();
    let expected = (f64::from(devices) * hz * secs) as u64;
    println!(
        "gateway CPU: {:.3} s in {:.1} s = {:.2}% of one core ({} devices x {} Hz; {} of {} adverts delivered as messages, {:.0}/s)",
        cpu, wall, 100.0 * cpu / wall, devices, hz, got, expected, got as f64 / wall
    );
    let (rss, hwm) = common::rss_kb(pid);
    println!("gateway RSS {rss} kB (peak {hwm} kB)");
}

fn main() {
    let quick = common::quick();
    let n = if quick { 200_000 } else { 2_000_000 };
    println!("decode: {:.0} adverts/s on one core (BTHome plain + encrypted, Ruuvi 5, ATC1441, iBeacon, round robin)", decode_rate(n));
    println!("decode + filter + reading: {:.0} adverts/s on one core (BTHome, 50 devices, every advert new)", processor_rate(n));
    gateway_cpu(50, 4.0, if quick { 10.0 } else { 60.0 });
}
