//! A Modbus bus for the tests: a pseudo-terminal pair made by `socat` (the gateway opens one
//! end by its link name, the server the other), and pymodbus serving the slaves of a spec
//! (`modbus_server.py`) over RTU on that pair or over TCP on a free port.

use super::{signal, wait_exit, wait_until};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/modbus_server.py"
);

/// `socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B`: two linked pseudo-terminals
/// whose paths stay the same when it is stopped and started again.
pub struct PtyPair {
    pub gateway_end: PathBuf,
    pub server_end: PathBuf,
    child: Option<Child>,
}

impl PtyPair {
    pub fn start(dir: &Path) -> PtyPair {
        let mut p = PtyPair {
            gateway_end: dir.join("bus-gw"),
            server_end: dir.join("bus-srv"),
            child: None,
        };
        p.restart();
        p
    }

    /// Starts socat (again) and waits for both links.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "socat already running");
        let link = |p: &Path| format!("pty,raw,echo=0,link={}", p.display());
        let child = Command::new("socat")
            .args([
                "-d",
                "-d",
                &link(&self.gateway_end),
                &link(&self.server_end),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat must be installed (see .ci/run)");
        self.child = Some(child);
        wait_until("socat makes both links", Duration::from_secs(10), || {
            self.gateway_end.exists() && self.server_end.exists()
        });
    }

    /// Stops socat: both terminals vanish (and socat removes the links).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, Signal::SIGTERM);
            wait_exit(&mut c, Duration::from_secs(5));
        }
        wait_until("socat removes its links", Duration::from_secs(10), || {
            !self.gateway_end.exists() && !self.server_end.exists()
        });
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// pymodbus serving the slaves of `spec` (see `modbus_server.py` for its form).
pub struct ModbusServer {
    control: PathBuf,
    child: Child,
}

pub enum Transport<'a> {
    /// RTU on this serial device at this baud rate.
    Rtu(&'a Path, u32),
    /// TCP on 127.0.0.1 at this port.
    Tcp(u16),
}

impl ModbusServer {
    pub fn start(dir: &Path, spec: &serde_json::Value, transport: Transport) -> ModbusServer {
        let control = dir.join("modbus-control");
        std::fs::create_dir_all(&control).unwrap();
        let _ = std::fs::remove_file(control.join("ready"));
        let spec_file = dir.join("modbus-spec.json");
        std::fs::write(&spec_file, spec.to_string()).unwrap();
        let log = std::fs::File::create(dir.join("modbus-server.log")).unwrap();
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(SERVER).arg(&spec_file);
        match transport {
            Transport::Rtu(device, baud) => cmd.arg("rtu").arg(device).arg(baud.to_string()),
            Transport::Tcp(port) => cmd.arg("tcp").arg(port.to_string()),
        };
        let child = cmd
            .arg(&control)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("python3 with pymodbus (python3-pymodbus, python3-serial-asyncio)");
        let ready = control.join("ready");
        wait_until("the Modbus server serves", Duration::from_secs(20), || {
            ready.exists()
        });
        ModbusServer { control, child }
    }

    /// Makes `unit` stop answering (true) or answer again (false).
    pub fn silence(&self, unit: u8, silent: bool) {
        let flag = self.control.join(format!("silent-{unit}"));
        if silent {
            std::fs::write(flag, "").unwrap();
        } else {
            std::fs::remove_file(flag).unwrap();
        }
    }

    /// Makes the server send `unit` answers with a wrong CRC (true) or right ones (false).
    pub fn corrupt(&self, unit: u8, corrupt: bool) {
        let flag = self.control.join(format!("corrupt-{unit}"));
        if corrupt {
            std::fs::write(flag, "").unwrap();
        } else {
            std::fs::remove_file(flag).unwrap();
        }
    }

    /// Makes the server answer `unit` only after `delay` (Some), or at once again (None).
    pub fn delay(&self, unit: u8, delay: Option<Duration>) {
        let flag = self.control.join(format!("slow-{unit}"));
        match delay {
            Some(d) => std::fs::write(flag, d.as_secs_f64().to_string()).unwrap(),
            None => std::fs::remove_file(flag).unwrap(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ModbusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
