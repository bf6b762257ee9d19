//! Signals: SIGTERM and SIGINT stop the gateway; SIGHUP (`systemctl reload`) reloads the
//! config.
//!
//! A reload reads and validates the file again. An invalid file is logged at ERROR and the
//! running config kept. A valid one that changes something is handed to the CLI's run loop,
//! which stops the gateway's components in their usual order (inputs, pipeline, uplink; the
//! queue is closed cleanly, so its reopening skips the integrity check) and starts them again
//! with the new config, in the same process: changed topics, inputs and MQTT settings all
//! apply. What cannot apply in-process is refused or named: a new `state_dir` (the backlog
//! would stay behind in the old queue) keeps the running config, and a new `[log] level`
//! waits for a restart.
//!
//! **Invariant:** a reload never loses a reading: the components stop exactly as they do
//! for SIGTERM (the pipeline commits what it holds before the uplink goes).

use crate::config::{Config, InputConfig};
use std::path::PathBuf;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// What a reload would change.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing the gateway uses.
    None,
    /// Something that cannot apply without a restart of the service; the running config
    /// stays.
    Refused(String),
    /// The parts that change (e.g. `inputs wx (changed)`, `mqtt`), and notes for what applies
    /// only at the next restart.
    Apply {
        parts: Vec<String>,
        notes: Vec<String>,
    },
}

/// Compares the running config with a new one.
pub fn compare(old: &Config, new: &Config) -> Change {
    if old.gateway.state_dir != new.gateway.state_dir {
        return Change::Refused(format!(
            "gateway.state_dir changed from {} to {}: the backlog would stay behind",
            old.gateway.state_dir.display(),
            new.gateway.state_dir.display()
        ));
    }
    let mut parts = Vec::new();
    if old.gateway.id != new.gateway.id
        || old.gateway.health_interval != new.gateway.health_interval
    {
        parts.push("gateway".to_string());
    }
    // TLS files may have changed on disk (a renewed certificate) with the same config text:
    // with TLS the link is always rebuilt. The rustls config itself has no useful equality.
    let bare = |c: &Config| {
        let mut m = c.mqtt.clone();
        m.tls = None;
        format!("{m:?}")
    };
    if bare(old) != bare(new) || new.mqtt.tls.is_some() {
        parts.push("mqtt".to_string());
    }
    if format!("{:?}", old.queue) != format!("{:?}", new.queue) {
        parts.push("queue".to_string());
    }
    let inputs = input_changes(&old.inputs, &new.inputs);
    if !inputs.is_empty() {
        parts.push(format!("inputs {}", inputs.join(", ")));
    }
    let mut notes = Vec::new();
    if old.log_level != new.log_level {
        notes.push("log.level applies at the next restart".to_string());
    }
    if parts.is_empty() {
        return match notes.is_empty() {
            true => Change::None,
            false => Change::Refused(notes.join("; ")),
        };
    }
    Change::Apply { parts, notes }
}

/// `name (added)`, `name (removed)`, `name (changed)`, in the new config's order.
fn input_changes(old: &[InputConfig], new: &[InputConfig]) -> Vec<String> {
    let find = |list: &[InputConfig], name: &str| list.iter().position(|i| &*i.name == name);
    let mut out = Vec::new();
    for (i, n) in new.iter().enumerate() {
        match find(old, &n.name) {
            None => out.push(format!("{} (added)", n.name)),
            Some(j) if format!("{:?}", old[j]) != format!("{n:?}") => {
                out.push(format!("{} (changed)", n.name))
            }
            // Readings carry their input's index: a move in the list changes the mapping.
            Some(j) if j != i => out.push(format!("{} (moved)", n.name)),
            Some(_) => {}
        }
    }
    for o in old {
        if find(new, &o.name).is_none() {
            out.push(format!("{} (removed)", o.name));
        }
    }
    out
}

/// Handles SIGTERM, SIGINT and SIGHUP until the first two: cancels `shutdown` on them, and on
/// SIGHUP sends a valid, changed config from `path` to `reload`.
pub async fn listen(
    path: PathBuf,
    mut running: Config,
    shutdown: CancellationToken,
    reload: watch::Sender<Option<Config>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("Cannot install signal handlers.");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {
                info!("SIGTERM: stopping.");
                break;
            }
            _ = int.recv() => {
                info!("SIGINT: stopping.");
                break;
            }
            _ = hup.recv() => {}
        }
        // A config file and, with TLS, its certificates: a few small reads, done in place.
        let new = match Config::load(&path) {
            Ok(new) => new,
            Err(e) => {
                error!(config = %path.display(), error = %e, "SIGHUP: the new config is invalid; keeping the running one.");
                continue;
            }
        };
        match compare(&running, &new) {
            Change::None => {
                info!(config = %path.display(), "SIGHUP: the config is unchanged; nothing to apply.")
            }
            Change::Refused(why) => {
                error!(config = %path.display(), reason = %why, "SIGHUP: the new config cannot apply without a restart (systemctl restart sensorgate); keeping the running one.")
            }
            Change::Apply { parts, notes } => {
                let changed = parts.join("; ");
                info!(config = %path.display(), %changed, "Config reloaded; restarting the inputs, the pipeline and the uplink with it.");
                for note in notes {
                    warn!(config = %path.display(), note = %note, "Part of the new config waits for a restart.");
                }
                crate::service::reloading();
                running = new.clone();
                if reload.send(Some(new)).is_err() {
                    break; // the run loop is gone: the gateway is stopping anyway
                }
            }
        }
    }
    crate::service::stop_requested();
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n{extra}\n\
             [[synthetic]]\nname = \"a\"\nrate = 1.0\nfields = [\"x\"]\ntopic = \"t/a\"\n\
             [[synthetic]]\nname = \"b\"\nrate = 1.0\nfields = [\"x\"]\ntopic = \"t/b\"\n"
        );
        Config::parse(Path::new("r.toml"), &text).unwrap()
    }

    #[test]
    fn a_reload_names_what_changes() {
        let base = config("");
        assert_eq!(compare(&base, &config("")), Change::None);
        assert_eq!(
            compare(&base, &config("keep_alive = \"30s\"\n")),
            Change::Apply {
                parts: vec!["mqtt".into()],
                notes: vec![]
            }
        );
        let moved = config("").inputs.into_iter().rev().collect::<Vec<_>>();
        let mut swapped = config("");
        swapped.inputs = moved;
        assert_eq!(
            input_changes(&base.inputs, &swapped.inputs),
            ["b (moved)", "a (moved)"]
        );
        let mut fewer = config("");
        fewer.inputs.truncate(1);
        assert_eq!(input_changes(&base.inputs, &fewer.inputs), ["b (removed)"]);
        let mut other_dir = config("");
        other_dir.gateway.state_dir = "/y".into();
        assert!(matches!(compare(&base, &other_dir), Change::Refused(_)));
        let mut level = config("");
        level.log_level = Some("debug".into());
        assert!(matches!(compare(&base, &level), Change::Refused(_)));
    }
}
