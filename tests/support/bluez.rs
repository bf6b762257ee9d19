//! A private D-Bus "system" bus (`dbus-daemon` with a generated config) and a BlueZ mock on
//! it (python-dbusmock with `bluez_mock.py`, run by /usr/bin/python3, which has the dbus
//! and gi modules). The gateway child gets the bus in `DBUS_SYSTEM_BUS_ADDRESS`; the test
//! drives the mock through `org.bluez.Mock` methods on its own connection. Everything is
//! killed on drop.

use super::{signal, wait_exit, wait_until};
use dbus::arg::{RefArg, Variant};
use dbus::blocking::Connection;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CALL: Duration = Duration::from_secs(10);
pub const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/bluez_mock.py");

pub struct Bluez {
    dir: PathBuf,
    /// `unix:path=...`: the value of DBUS_SYSTEM_BUS_ADDRESS for the gateway.
    pub address: String,
    bus: Child,
    mock: Option<Child>,
    conn: Connection,
}

impl Bluez {
    /// Starts the bus and the mock (with no adapter).
    pub fn start(dir: &Path) -> Bluez {
        std::fs::create_dir_all(dir).unwrap();
        let sock = dir.join("bus.sock");
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                "<busconfig><type>system</type><listen>unix:path={}</listen><auth>EXTERNAL</auth>\
                 <policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/>\
                 <allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>",
                sock.display()
            ),
        )
        .unwrap();
        let bus = Command::new("dbus-daemon")
            .args(["--nofork", "--config-file"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon must be installed (see .ci/run)");
        let address = format!("unix:path={}", sock.display());
        wait_until("the private bus listens", Duration::from_secs(10), || {
            sock.exists()
        });
        let mut channel = dbus::channel::Channel::open_private(&address).expect("open the bus");
        channel.register().expect("register on the bus");
        let mut b = Bluez {
            dir: dir.to_path_buf(),
            address,
            bus,
            mock: None,
            conn: Connection::from(channel),
        };
        b.start_mock();
        b
    }

    /// The environment variable the gateway needs.
    pub fn env(&self) -> (&'static str, String) {
        ("DBUS_SYSTEM_BUS_ADDRESS", self.address.clone())
    }

    /// Starts the mock bluetoothd and waits until it owns `org.bluez`.
    pub fn start_mock(&mut self) {
        assert!(self.mock.is_none(), "mock already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("bluez_mock.log"))
            .unwrap();
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "dbusmock", "--system", "--template", TEMPLATE])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("/usr/bin/python3 with python3-dbusmock (see .ci/run)");
        self.mock = Some(child);
        wait_until("the mock owns org.bluez", Duration::from_secs(20), || {
            self.has_owner()
        });
    }

    /// SIGKILL of the mock: bluetoothd crashing; `org.bluez` loses its owner.
    pub fn kill_mock(&mut self) {
        if let Some(mut c) = self.mock.take() {
            signal(&c, Signal::SIGKILL);
            let _ = c.wait();
        }
        wait_until("org.bluez has no owner", Duration::from_secs(10), || {
            !self.has_owner()
        });
    }

    fn has_owner(&self) -> bool {
        let p = self
            .conn
            .with_proxy("org.freedesktop.DBus", "/org/freedesktop/DBus", CALL);
        let r: Result<(bool,), _> =
            p.method_call("org.freedesktop.DBus", "NameHasOwner", ("org.bluez",));
        r.map(|(b,)| b).unwrap_or(false)
    }

    fn mock_call<A: dbus::arg::AppendAll>(&self, method: &str, args: A) {
        let p = self.conn.with_proxy("org.bluez", "/", CALL);
        let r: Result<(), dbus::Error> = p.method_call("org.bluez.Mock", method, args);
        r.unwrap_or_else(|e| panic!("org.bluez.Mock.{method}: {e}"));
    }

    pub fn add_adapter(&self, name: &str) {
        let p = self.conn.with_proxy("org.bluez", "/", CALL);
        let r: Result<(String,), _> =
            p.method_call("org.bluez.Mock", "AddAdapter", (name, "sensorgate test"));
        r.unwrap_or_else(|e| panic!("AddAdapter: {e}"));
    }

    pub fn remove_adapter(&self, name: &str) {
        self.mock_call("RemoveAdapterWithDevices", (name,));
    }

    /// Service data under a 16-bit UUID (one advertisement).
    pub fn advertise_service(
        &self,
        adapter: &str,
        address: &str,
        uuid: u16,
        data: &[u8],
        rssi: i16,
    ) {
        let uuid = format!("0000{uuid:04x}-0000-1000-8000-00805f9b34fb");
        self.mock_call(
            "AdvertiseService",
            (adapter, address, uuid.as_str(), data.to_vec(), rssi),
        );
    }

    /// A device BlueZ finds for the first time with this service data: the data arrive in
    /// `InterfacesAdded` only, as bluetoothd sends a new device.
    pub fn discover_service(
        &self,
        adapter: &str,
        address: &str,
        uuid: u16,
        data: &[u8],
        rssi: i16,
    ) {
        let uuid = format!("0000{uuid:04x}-0000-1000-8000-00805f9b34fb");
        self.mock_call(
            "DiscoverService",
            (adapter, address, uuid.as_str(), data.to_vec(), rssi),
        );
    }

    pub fn advertise_manufacturer(
        &self,
        adapter: &str,
        address: &str,
        company: u16,
        data: &[u8],
        rssi: i16,
    ) {
        self.mock_call(
            "AdvertiseManufacturer",
            (adapter, address, company, data.to_vec(), rssi),
        );
    }

    /// A device with one service holding one read/notify characteristic.
    pub fn add_gatt_device(
        &self,
        adapter: &str,
        address: &str,
        service: &str,
        characteristic: &str,
        value: &[u8],
    ) {
        self.mock_call(
            "AddGattDevice",
            (adapter, address, service, characteristic, value.to_vec()),
        );
    }

    pub fn set_gatt_value(&self, adapter: &str, address: &str, value: &[u8]) {
        self.mock_call("SetGattValue", (adapter, address, value.to_vec()));
    }

    /// `count` BTHome devices advertising `hz` times a second each for `seconds`.
    pub fn start_adverts(&self, adapter: &str, count: u32, hz: f64, seconds: f64) {
        self.mock_call("StartAdverts", (adapter, count, hz, seconds));
    }

    /// How often `method` of the adapter was called (dbusmock's call log).
    pub fn adapter_calls(&self, adapter: &str, method: &str) -> usize {
        self.calls(&format!("/org/bluez/{adapter}"), method)
    }

    /// How often `method` of the characteristic of a device made by
    /// [`Bluez::add_gatt_device`] was called (`StartNotify`: subscribed).
    pub fn gatt_calls(&self, adapter: &str, address: &str, method: &str) -> usize {
        let dev = address.replace(':', "_").to_uppercase();
        let path = format!("/org/bluez/{adapter}/dev_{dev}/service0010/char0011");
        self.calls(&path, method)
    }

    /// How often `method` of the mock object at `path` was called.
    fn calls(&self, path: &str, method: &str) -> usize {
        let p = self.conn.with_proxy("org.bluez", path, CALL);
        type Calls = Vec<(u64, String, Vec<Variant<Box<dyn RefArg>>>)>;
        let r: Result<(Calls,), _> = p.method_call("org.freedesktop.DBus.Mock", "GetCalls", ());
        let (calls,) = r.unwrap_or_else(|e| panic!("GetCalls: {e}"));
        calls.iter().filter(|(_, m, _)| m == method).count()
    }

    pub fn mock_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bluez_mock.log")).unwrap_or_default()
    }
}

impl Drop for Bluez {
    fn drop(&mut self) {
        if let Some(mut c) = self.mock.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        signal(&self.bus, Signal::SIGTERM);
        if wait_exit(&mut self.bus, Duration::from_secs(5)).is_none() {
            let _ = self.bus.kill();
        }
        if std::thread::panicking() {
            eprintln!("--- bluez mock log ---\n{}", self.mock_log());
        }
    }
}
