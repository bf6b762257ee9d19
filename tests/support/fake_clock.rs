//! A wall clock that a test moves: libfaketime (the `faketime` package, see .ci/run) reads an
//! offset from the real clock from a file at every call (`FAKETIME_NO_CACHE`), so that
//! writing the file steps the gateway's wall clock. The monotonic clock stays real, as on a
//! Pi without a real-time clock.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The path of libfaketime's library, if the `faketime` package is installed.
pub fn libfaketime() -> Option<String> {
    let out = Command::new("dpkg")
        .args(["-L", "libfaketime"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.ends_with("/libfaketime.so.1"))
        .map(str::to_string)
}

/// 1970-01-02 00:00:00 UTC: a Pi's clock after a boot without network.
pub const BOOT_1970: i64 = 86_400;

/// A clock file for libfaketime, and the environment that makes a process read it.
pub struct FakeClock {
    file: PathBuf,
    lib: String,
}

impl FakeClock {
    /// The clock reads `at` (Unix seconds) now and runs on from there.
    pub fn starting_at(dir: &Path, lib: String, at: i64) -> FakeClock {
        let clock = FakeClock {
            file: dir.join("faketime"),
            lib,
        };
        clock.set(at);
        clock
    }

    /// Steps the clock so that it reads `at` (Unix seconds) now.
    pub fn set(&self, at: i64) {
        let offset = at - real_now_s();
        let text = if offset < 0 {
            format!("{offset}")
        } else {
            format!("+{offset}")
        };
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }

    /// The environment for the gateway process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", self.lib.clone()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".into()),
            ("DONT_FAKE_MONOTONIC", "1".into()),
        ]
    }
}

/// The real time, in Unix seconds.
pub fn real_now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
