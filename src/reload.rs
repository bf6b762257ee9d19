//! Signals: SIGTERM and SIGINT stop the gateway; SIGHUP (`systemctl reload`) reloads the
//! config.
//!
//! A reload reads and validates the file again. An invalid file is logged at ERROR and the
//! running config kept. A valid one that changes something is handed to `gateway::run`,
//! which applies it part by part: inputs added, changed or removed start or stop alone
//! (the others keep reading), a change to `[mqtt]` reconnects the uplink, `[queue]` and
//! `[gateway]` apply in place; the queue stays open. What cannot apply in-process is
//! refused or named: a new `state_dir` (the backlog would stay behind in the old queue)
//! keeps the running config, and a new `[log] level` waits for a restart.
//!
//! **Invariant:** a reload never loses a reading: an input stops as it does for SIGTERM,
//! and what it read is committed by the pipeline, which keeps running.

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
    if gateway_changed(old, new) {
        parts.push("gateway".to_string());
    }
    if mqtt_changed(old, new) {
        parts.push("mqtt".to_string());
    }
    if queue_changed(old, new) {
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

/// Whether `[gateway]` changes in a way the running parts see (its id is in topics, the
/// health message's interval).
pub fn gateway_changed(old: &Config, new: &Config) -> bool {
    old.gateway.id != new.gateway.id || old.gateway.health_interval != new.gateway.health_interval
}

/// Whether `[mqtt]` changes: the uplink reconnects. TLS files may have changed on disk (a
/// renewed certificate) with the same config text: with TLS the link is always rebuilt. The
/// rustls config itself has no useful equality.
pub fn mqtt_changed(old: &Config, new: &Config) -> bool {
    let bare = |c: &Config| {
        let mut m = c.mqtt.clone();
        m.tls = None;
        format!("{m:?}")
    };
    bare(old) != bare(new) || new.mqtt.tls.is_some()
}

/// Whether `[queue]` changes: applied to the open queue, the pipeline and housekeeping.
pub fn queue_changed(old: &Config, new: &Config) -> bool {
    format!("{:?}", old.queue) != format!("{:?}", new.queue)
}

/// `name (added)`, `name (removed)`, `name (changed)`, in the new config's order. An input
/// that only moved in the list is the same input (readings carry its slot, not its place).
fn input_changes(old: &[InputConfig], new: &[InputConfig]) -> Vec<String> {
    let find = |list: &[InputConfig], name: &str| list.iter().position(|i| &*i.name == name);
    let mut out = Vec::new();
    for n in new {
        match find(old, &n.name) {
            None => out.push(format!("{} (added)", n.name)),
            Some(j) if format!("{:?}", old[j]) != format!("{n:?}") => {
                out.push(format!("{} (changed)", n.name))
            }
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
                info!(config = %path.display(), %changed, "Config reloaded; applying what changed (the queue stays open).");
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
        assert!(input_changes(&base.inputs, &swapped.inputs).is_empty());
        assert_eq!(compare(&base, &swapped), Change::None);
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

    /// A change of an input's `fields` or `max_interval` alone is a change of the input:
    /// it restarts in a new slot, so its deadbands start afresh.
    #[test]
    fn a_change_of_fields_alone_changes_the_input() {
        let text = |rule: &str| {
            format!(
                "[gateway]\nid = \"g\"\nstate_dir = \"/x\"\n[mqtt]\nurl = \"mqtt://h\"\n\
                 [[synthetic]]\nname = \"a\"\nrate = 1.0\ntopic = \"t/a\"\n{rule}"
            )
        };
        let parse = |rule: &str| Config::parse(Path::new("r.toml"), &text(rule)).unwrap();
        let base = parse("fields.x = { deadband = 0.5 }\n");
        for other in [
            "fields.x = { deadband = 0.6 }\n",
            "fields.x = { deadband = 0.5, unit = \"K\" }\n",
            "fields.x = { deadband = 0.5 }\nmax_interval = \"1m\"\n",
            "fields = [\"x\"]\n",
        ] {
            assert_eq!(
                input_changes(&base.inputs, &parse(other).inputs),
                ["a (changed)"],
                "{other}"
            );
        }
        let same = parse("fields.x = { deadband = 0.5 }\n");
        assert_eq!(compare(&base, &same), Change::None);
    }
}
