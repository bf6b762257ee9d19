//! Pseudo-terminal pairs standing in for serial devices. The test writes frames to the
//! master; the gateway opens the slave's path as its serial device. The test also keeps
//! the slave open, so the terminal (and the bytes buffered in it) outlives a gateway that is
//! killed and restarted.

use nix::pty::openpty;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

pub struct Pty {
    master: File,
    _slave: OwnedFd,
    pub path: PathBuf,
}

impl Pty {
    pub fn open() -> Pty {
        let p = openpty(None, None).expect("openpty");
        let mut t = tcgetattr(&p.slave).unwrap();
        cfmakeraw(&mut t);
        tcsetattr(&p.slave, SetArg::TCSANOW, &t).unwrap();
        let path = nix::unistd::ttyname(&p.slave).expect("ttyname");
        Pty {
            master: File::from(p.master),
            _slave: p.slave,
            path,
        }
    }

    /// Writes one line (a newline is added).
    pub fn line(&mut self, text: &str) {
        self.master
            .write_all(format!("{text}\n").as_bytes())
            .unwrap();
        self.master.flush().unwrap();
    }

    /// A second handle on the master, for a writer thread.
    pub fn writer(&self) -> File {
        self.master.try_clone().unwrap()
    }
}
