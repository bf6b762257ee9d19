//! Device paths of serial inputs and Modbus buses: `/dev/ttyUSB0`, or the stable names
//! udev keeps under `/dev/serial/by-id/` and `/dev/serial/by-path/`, which are symlinks that
//! appear and vanish with the adapter.
//!
//! A port is opened through its configured path; what that path named then is remembered as
//! an [`Identity`] (the device node's device number and inode, taken from the open file
//! itself, so a symlink that moves during the open cannot mislead it). While the port is
//! open, [`watch`] checks the path every [`CHECK_EVERY`]: when it no longer names the opened
//! device (the symlink vanished, or now points at another adapter's tty), the port is given
//! up and the path is waited for and opened again.
//!
//! **Invariant:** with a by-id path configured, a reading comes only from the adapter that
//! path names: a different adapter that the kernel gives the old adapter's `ttyUSB0` has
//! another by-id name, so the configured path is absent until the right one returns.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often an open port's path is checked, and a missing path looked for.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The device file a path named when it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The device number of the node (major, minor): which tty.
    rdev: u64,
    /// The node itself: a tty node made again (a new adapter) is another inode.
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            rdev: meta.rdev(),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// What the open file `port` is.
    pub fn of_open(port: &impl AsRawFd) -> io::Result<Identity> {
        let fd = port.as_raw_fd();
        std::fs::metadata(format!("/proc/self/fd/{fd}")).map(|m| Identity::of(&m))
    }

    /// What `path` names now (following symlinks).
    pub fn of_path(path: &Path) -> io::Result<Identity> {
        std::fs::metadata(path).map(|m| Identity::of(&m))
    }
}

/// Why [`watch`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The path names nothing any more.
    Vanished,
    /// The path names another device.
    Moved,
}

/// Returns once `path` no longer names `opened`; checks every [`CHECK_EVERY`].
pub async fn watch(path: &Path, opened: Identity) -> Change {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tick.tick().await;
        match Identity::of_path(path) {
            Ok(now) if now == opened => {}
            Ok(_) => return Change::Moved,
            Err(_) => return Change::Vanished,
        }
    }
}

/// Waits until `path` exists (checking every [`CHECK_EVERY`]); `Err` when `cancel` fires.
/// Returns at once when it exists. `absent` runs once if it does not, with the reason, to
/// say so.
pub async fn present(
    path: &Path,
    cancel: &CancellationToken,
    absent: impl FnOnce(&io::Error),
) -> Result<(), ()> {
    match std::fs::metadata(path) {
        Ok(_) => return Ok(()),
        Err(e) => absent(&e),
    }
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return Err(()),
        }
        if std::fs::metadata(path).is_ok() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_symlink_names_what_it_points_at() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        let link = dir.path().join("by-id");
        symlink(&a, &link).unwrap();
        let opened = std::fs::File::open(&link).unwrap();
        let id = Identity::of_open(&opened).unwrap();
        assert_eq!(Identity::of_path(&link).unwrap(), id);
        assert_eq!(Identity::of_path(&a).unwrap(), id);
        assert_ne!(Identity::of_path(&b).unwrap(), id);
        std::fs::remove_file(&link).unwrap();
        symlink(&b, &link).unwrap();
        assert_ne!(Identity::of_path(&link).unwrap(), id);
    }

    #[tokio::test(start_paused = true)]
    async fn watch_tells_a_move_and_a_vanishing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        let link = dir.path().join("by-id");
        symlink(&a, &link).unwrap();
        let id = Identity::of_path(&link).unwrap();
        let moved = {
            let link = link.clone();
            tokio::spawn(async move { watch(&link, id).await })
        };
        tokio::time::sleep(CHECK_EVERY * 3).await;
        assert!(!moved.is_finished(), "nothing changed yet");
        std::fs::remove_file(&link).unwrap();
        symlink(&b, &link).unwrap();
        assert_eq!(moved.await.unwrap(), Change::Moved);
        std::fs::remove_file(&link).unwrap();
        let id = Identity::of_path(&b).unwrap();
        assert_eq!(watch(&link, id).await, Change::Vanished);
    }

    #[tokio::test(start_paused = true)]
    async fn present_waits_for_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("by-id");
        let cancel = CancellationToken::new();
        let mut said = 0;
        let waiting = {
            let (link, cancel) = (link.clone(), cancel.clone());
            tokio::spawn(async move { present(&link, &cancel, |_| {}).await })
        };
        tokio::time::sleep(CHECK_EVERY * 2).await;
        assert!(!waiting.is_finished());
        std::fs::write(&link, "").unwrap();
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(present(&link, &cancel, |_| said += 1).await, Ok(()));
        assert_eq!(said, 0, "a path that exists is not reported absent");
        std::fs::remove_file(&link).unwrap();
        cancel.cancel();
        assert_eq!(present(&link, &cancel, |_| said += 1).await, Err(()));
        assert_eq!(said, 1);
    }
}
