//! Logging: to journald when the process runs under systemd with stderr connected to the
//! journal (`$JOURNAL_STREAM`), to stderr through tracing-subscriber otherwise. The same
//! `RUST_LOG`-style filter applies to both; `[log] level` is the default when `RUST_LOG` is
//! unset (then tokio-modbus's own lines, one per skipped frame, are off: [`QUIET`]). On stderr, ANSI colour only when it is a terminal and `NO_COLOR` is unset or empty
//! (no-color.org): a file or a pipe gets plain text.
//!
//! In the journal, an event's fields (`input`, `topic`, `error`, ...) become journal fields
//! (`INPUT=`, `TOPIC=`, `ERROR=`), so `journalctl -u sensorgate INPUT=wx` works; the message
//! is the sentence, and the tracing level maps to the syslog priority.

use std::fmt::Write;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Where the logs went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Journal,
    Stderr,
}

pub fn init(default_level: Option<&str>) -> Sink {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter(default_level));
    if systemd_journal_logger::connected_to_journal() {
        if let Ok(journal) = systemd_journal_logger::JournalLog::new() {
            let journal = journal.with_syslog_identifier("sensorgate".into());
            tracing_subscriber::registry()
                .with(JournalLayer { journal }.with_filter(filter()))
                .init();
            return Sink::Journal;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .init();
    Sink::Stderr
}

/// Libraries whose own log lines repeat at every poll of a failing device: tokio-modbus warns
/// of each frame it skips (a wrong CRC), which the Modbus input counts and logs once per
/// change of state instead. Off unless `RUST_LOG` asks for them.
const QUIET: &str = "tokio_modbus=off";

/// The filter without `RUST_LOG`: `[log] level` (default "info"), libraries in [`QUIET`] off.
fn default_filter(level: Option<&str>) -> EnvFilter {
    EnvFilter::try_new(format!("{},{QUIET}", level.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET}")))
}

/// Whether stderr gets ANSI colour: only a terminal, and only without a non-empty `NO_COLOR`.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Sends each tracing event to journald as one entry with its fields as journal fields.
struct JournalLayer {
    journal: systemd_journal_logger::JournalLog,
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let entry = Entry::of(event);
        let meta = event.metadata();
        let kvs: Vec<(&str, &str)> = entry
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // A log line that cannot be written must not take the gateway down.
        let _ = self.journal.journal_send(
            &log::Record::builder()
                .level(log_level(*meta.level()))
                .target(meta.target())
                .module_path(meta.module_path())
                .file(meta.file())
                .line(meta.line())
                .key_values(&kvs)
                .args(format_args!("{}", entry.message))
                .build(),
        );
    }
}

fn log_level(l: tracing::Level) -> log::Level {
    match l {
        tracing::Level::ERROR => log::Level::Error,
        tracing::Level::WARN => log::Level::Warn,
        tracing::Level::INFO => log::Level::Info,
        tracing::Level::DEBUG => log::Level::Debug,
        tracing::Level::TRACE => log::Level::Trace,
    }
}

/// An event as a message and its other fields, as text.
#[derive(Debug, Default, PartialEq)]
pub struct Entry {
    pub message: String,
    pub fields: Vec<(String, String)>,
}

impl Entry {
    pub fn of(event: &Event<'_>) -> Entry {
        let mut e = Entry::default();
        event.record(&mut e);
        e
    }
}

impl Visit for Entry {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.push((field.name().to_string(), text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Captures entries the way the journal layer sees them.
    struct Capture(Arc<Mutex<Vec<Entry>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            self.0.lock().unwrap().push(Entry::of(event));
        }
    }

    #[test]
    fn tokio_modbus_is_quiet_by_default_and_the_gateway_is_not() {
        for level in [None, Some("debug"), Some("not a filter [")] {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let subscriber = tracing_subscriber::registry()
                .with(Capture(seen.clone()).with_filter(default_filter(level)));
            tracing::subscriber::with_default(subscriber, || {
                tracing::warn!(target: "tokio_modbus::codec::rtu", "Failed to decode response frame");
                tracing::warn!(target: "sensorgate::input::modbus", "Modbus device failing.");
            });
            let seen = seen.lock().unwrap();
            let messages: Vec<&str> = seen.iter().map(|e| e.message.as_str()).collect();
            assert_eq!(messages, ["Modbus device failing."], "{level:?}");
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new(""))));
    }

    #[test]
    fn fields_become_journal_fields_and_the_sentence_the_message() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let e = std::io::Error::other("gone");
            tracing::warn!(input = "wx", topic = %"site/gw1/wx", error = %e, "Serial port lost; reopening.");
        });
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0],
            Entry {
                message: "Serial port lost; reopening.".into(),
                fields: vec![
                    ("input".into(), "wx".into()),
                    ("topic".into(), "site/gw1/wx".into()),
                    ("error".into(), "gone".into()),
                ],
            }
        );
    }
}
