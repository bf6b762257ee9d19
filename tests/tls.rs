//! `mqtts://` against a Mosquitto TLS listener with certificates made here: server
//! authentication with a private CA, mutual TLS, and the failures an operator must see
//! (expired certificate, wrong name, unknown CA, missing file).

use crate::support::broker::Broker;
use crate::support::gateway::{base_config, Gateway};
use crate::support::subscriber::Subscriber;
use crate::support::{free_port, port_open, wait_until};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

struct Pki {
    ca: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: OpenSSL takes a leaf whose subject equals its issuer for self-signed.
        params
            .distinguished_name
            .push(DnType::CommonName, "sensorgate test CA");
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki {
            ca: Issuer::new(params, key),
            ca_pem,
        }
    }

    /// A leaf certificate for `names`, signed by the CA; `expired` ended in 2021.
    fn leaf(&self, dir: &Path, name: &str, names: &[&str], expired: bool) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// A broker with a plain listener (for the subscriber) and a TLS one with `server` cert.
fn tls_broker(dir: &Path, server: &str, require_client_cert: bool) -> (Broker, u16) {
    let tls_port = free_port();
    let extra = format!(
        "listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/{server}.pem\nkeyfile {d}/{server}.key\n\
         require_certificate {require_client_cert}\n",
        d = dir.display()
    );
    let broker = Broker::start_with(&dir.join("broker"), free_port(), &extra);
    wait_until("the TLS listener is up", LONG, || port_open(tls_port));
    (broker, tls_port)
}

fn gateway(dir: &Path, tls_port: u16, host: &str, mqtt_extra: &str) -> Gateway {
    let config = base_config(dir, "gwtls", &format!("mqtts://{host}:{tls_port}"), mqtt_extra)
        + "[queue]\ncommit_linger = \"20ms\"\n[[synthetic]]\nname = \"s\"\nrate = 100.0\nfields = [\"t\"]\ncount = 20\ntopic = \"tls/{gateway}/{input}\"\n";
    Gateway::new(dir, &config)
}

fn setup() -> (tempfile::TempDir, Pki) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    std::fs::write(tmp.path().join("ca.pem"), pki.ca_pem.clone()).unwrap();
    pki.leaf(tmp.path(), "server", &["127.0.0.1", "localhost"], false);
    pki.leaf(tmp.path(), "client", &["gwtls"], false);
    pki.leaf(tmp.path(), "expired", &["127.0.0.1", "localhost"], true);
    pki.leaf(tmp.path(), "othername", &["broker.example"], false);
    (tmp, pki)
}

#[test]
fn tls_and_mutual_tls_deliver_every_reading() {
    let (tmp, _pki) = setup();
    let d = tmp.path();
    for mutual in [false, true] {
        let run = d.join(if mutual { "mtls" } else { "tls" });
        std::fs::create_dir_all(&run).unwrap();
        let (broker, tls_port) = tls_broker(d, "server", mutual);
        let sub = Subscriber::start(broker.port, "tls/#", &format!("tls-sub-{mutual}"));
        let client = if mutual {
            format!(
                "cert_file = \"{0}/client.pem\"\nkey_file = \"{0}/client.key\"\n",
                d.display()
            )
        } else {
            String::new()
        };
        let extra = format!("ca_file = \"{}/ca.pem\"\n{client}", d.display());
        let mut gw = gateway(&run, tls_port, "localhost", &extra);
        gw.start();
        wait_until("20 readings over TLS", LONG, || sub.messages().len() == 20);
        wait_until("the queue is empty", LONG, || gw.pending() == 0);
    }
}

#[test]
fn certificate_problems_are_reported_and_nothing_is_lost() {
    let (tmp, _pki) = setup();
    let d = tmp.path();
    let ca = format!("ca_file = \"{}/ca.pem\"\n", d.display());
    // (server certificate, host the gateway dials, extra [mqtt] lines, what the error says)
    let cases = [
        ("expired", "localhost", ca.clone(), "expired"),
        ("othername", "localhost", ca.clone(), "not valid for name"),
        ("server", "localhost", String::new(), "unknownissuer"), // system roots only
    ];
    for (i, (server, host, extra, says)) in cases.iter().enumerate() {
        let run = d.join(format!("case{i}"));
        std::fs::create_dir_all(&run).unwrap();
        let (_broker, tls_port) = tls_broker(d, server, false);
        let mut gw = gateway(&run, tls_port, host, extra);
        gw.start();
        wait_until(&format!("the {server} failure is logged"), LONG, || {
            gw.log().lines().any(|l| {
                l.contains("ERROR")
                    && l.contains("TLS or credentials")
                    && l.to_lowercase().contains(says)
            })
        });
        wait_until("all 20 readings wait in the queue", LONG, || {
            gw.pending() == 20
        });
    }
    // Mutual TLS required, and no client certificate offered.
    let run = d.join("nocert");
    std::fs::create_dir_all(&run).unwrap();
    let (_broker, tls_port) = tls_broker(d, "server", true);
    let mut gw = gateway(&run, tls_port, "localhost", &ca);
    gw.start();
    wait_until("the refusal is logged", LONG, || {
        gw.log()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("CertificateRequired"))
    });
    wait_until("all 20 readings wait in the queue", LONG, || {
        gw.pending() == 20
    });
}

#[test]
fn tls_files_are_checked_when_the_config_loads() {
    let (tmp, _pki) = setup();
    let d = tmp.path();
    let base = "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\n";
    let cases = [
        (format!("url = \"mqtts://h\"\nca_file = \"{}/missing.pem\"\n", d.display()), 6, "mqtt.ca_file", "cannot read"),
        (format!("url = \"mqtts://h\"\nca_file = \"{}/client.key\"\n", d.display()), 6, "mqtt.ca_file", "no PEM certificate"),
        (format!("url = \"mqtts://h\"\ncert_file = \"{}/client.pem\"\n", d.display()), 6, "mqtt.cert_file", "needs key_file"),
        (
            format!("url = \"mqtts://h\"\ncert_file = \"{0}/client.pem\"\nkey_file = \"{0}/server.key\"\n", d.display()),
            7,
            "mqtt.key_file",
            "does not fit",
        ),
        (format!("url = \"mqtt://h\"\nca_file = \"{}/ca.pem\"\n", d.display()), 6, "mqtt.ca_file", "need an mqtts:// url"),
    ];
    for (text, line, key, says) in cases {
        let e = sensorgate::config::Config::parse(Path::new("t.toml"), &format!("{base}{text}"))
            .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
        assert!(e.message.contains(says), "{e}");
    }
    let ok = format!("{base}url = \"mqtts://h\"\nca_file = \"{0}/ca.pem\"\ncert_file = \"{0}/client.pem\"\nkey_file = \"{0}/client.key\"\n", d.display());
    let c = sensorgate::config::Config::parse(Path::new("t.toml"), &ok).unwrap();
    assert_eq!(c.mqtt.port, 8883);
    assert!(c.mqtt.tls.is_some());
}
