//! Serial inputs: a port read line by line, each line parsed by the input's [`LineFormat`].
//!
//! The port is (re)opened with backoff ([`Backoff`]) from `reopen_min` up to `reopen_max`,
//! so a USB adapter that is unplugged and plugged back resumes by itself. Lines longer than
//! `max_line` and lines that are not UTF-8 are counted as bad frames. A line ends as
//! `line_ending` says: by default at CR, LF or CRLF (counted once). With `format = "nmea"`
//! a line goes through [`NmeaInput`] (decoder, `sentences`, `min_interval`) instead of
//! [`LineFormat::parse`]; its limiter starts afresh when the port is reopened.
//!
//! The device path may be a `/dev/serial/by-id/` symlink ([`super::device`]): a path that is
//! absent is waited for, and a port whose path vanished or moved to another device is closed
//! and the path opened again.

use crate::backoff::Backoff;
use crate::config::SerialConfig;
use crate::input::device::{self, Change, Identity};
use crate::input::format::{LineEnding, LineFormat};
use crate::input::nmea::NmeaInput;
use crate::input::InputId;
use crate::metrics::Metrics;
use crate::reading::{Reading, Stamp};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_serial::SerialPortBuilderExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Runs a serial input until `cancel` fires or the pipeline is gone.
pub async fn run(
    id: InputId,
    config: SerialConfig,
    out: mpsc::Sender<Reading>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(config.reopen_min, config.reopen_max);
    let mut reported = false;
    let device = config.device.as_path();
    // Whether the device's absence was logged (at start, or as it vanished).
    let mut absent = false;
    loop {
        let say = |e: &std::io::Error| {
            if !absent {
                warn!(input = %id.name, device = %device.display(), error = %e, "Serial device absent; waiting for it.");
            }
        };
        if device::present(device, &cancel, say).await.is_err() {
            return;
        }
        let opened = tokio_serial::new(device.to_string_lossy(), config.baud)
            .open_native_async()
            .and_then(|port| Ok((Identity::of_open(&port)?, port)));
        match opened {
            Ok((identity, port)) => {
                info!(input = %id.name, device = %device.display(), "Serial port open.");
                (reported, absent) = (false, false);
                backoff.reset();
                let ended = tokio::select! {
                    r = read_lines(port, &id, &config.format, config.line_ending, config.max_line, &out, &metrics) => r,
                    change = device::watch(device, identity) => LinesEnded::Device(change),
                    _ = cancel.cancelled() => return,
                };
                match ended {
                    LinesEnded::PipelineGone => return,
                    LinesEnded::Closed(e) => {
                        warn!(input = %id.name, device = %device.display(), error = %e, "Serial port lost; reopening.");
                    }
                    LinesEnded::Device(Change::Vanished) => {
                        warn!(input = %id.name, device = %device.display(), "Serial device vanished; closed it and waiting for it to return.");
                        absent = true;
                        continue;
                    }
                    LinesEnded::Device(Change::Moved) => {
                        warn!(input = %id.name, device = %device.display(), "Serial device path now names another device; reopening.");
                        continue;
                    }
                }
            }
            Err(e) => {
                if !reported {
                    warn!(input = %id.name, device = %device.display(), error = %e, "Cannot open serial port; retrying with backoff.");
                    reported = true;
                } else {
                    debug!(input = %id.name, error = %e, "Serial port still unavailable.");
                }
            }
        }
        if backoff.pause(&cancel).await.is_err() {
            return;
        }
    }
}

/// Why [`read_lines`] returned.
#[derive(Debug)]
pub enum LinesEnded {
    /// The port ended or failed; reopen it.
    Closed(std::io::Error),
    /// The configured path no longer names the open port's device (`run` only).
    Device(Change),
    /// The pipeline's receiver is gone: shut down.
    PipelineGone,
}

/// Reads lines from `port` and sends one reading per good frame. Cancel-safe at the
/// `read` await: a cancelled call loses at most the partial line it held.
pub async fn read_lines<R: AsyncRead + Unpin>(
    mut port: R,
    id: &InputId,
    format: &LineFormat,
    ending: LineEnding,
    max_line: usize,
    out: &mpsc::Sender<Reading>,
    metrics: &Metrics,
) -> LinesEnded {
    let mut buf = vec![0u8; 4096];
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut overlong = false;
    let mut split = Splitter {
        ending,
        held_cr: false,
    };
    let mut nmea = match format {
        LineFormat::Nmea {
            sentences,
            min_interval,
        } => Some(NmeaInput::new(*sentences, *min_interval)),
        _ => None,
    };
    loop {
        let n = match port.read(&mut buf).await {
            Ok(0) => return LinesEnded::Closed(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) => return LinesEnded::Closed(e),
        };
        for &b in &buf[..n] {
            let ended = split.feed(b, |b| {
                if line.len() < max_line {
                    line.push(b);
                } else {
                    overlong = true;
                }
            });
            if !ended {
                continue;
            }
            let frame = std::mem::take(&mut line);
            if std::mem::take(&mut overlong) {
                bad_frame(id, metrics, &format!("line longer than {max_line} bytes"));
                continue;
            }
            let reading = match &mut nmea {
                Some(n) => n.reading(id, &frame, metrics, tokio::time::Instant::now()),
                None => parse_frame(id, format, &frame, metrics),
            };
            if let Some(reading) = reading {
                if out.send(reading).await.is_err() {
                    return LinesEnded::PipelineGone;
                }
            }
        }
    }
}

/// Finds the ends of lines in a byte stream, one byte at a time.
struct Splitter {
    ending: LineEnding,
    /// The last byte was a CR (auto, cr: an LF now is skipped; crlf: an LF now ends the line).
    held_cr: bool,
}

impl Splitter {
    /// Feeds one byte: hands the bytes that belong to the line to `data` and returns true
    /// when `b` ends the line.
    fn feed(&mut self, b: u8, mut data: impl FnMut(u8)) -> bool {
        let after_cr = std::mem::replace(&mut self.held_cr, b == b'\r');
        match self.ending {
            LineEnding::Lf => {
                if b == b'\n' {
                    return true;
                }
            }
            LineEnding::Auto | LineEnding::Cr => {
                let ends = b == b'\r' || (b == b'\n' && self.ending == LineEnding::Auto);
                if b == b'\n' && after_cr {
                    return false; // the LF of a CRLF: that line has already ended
                }
                if ends {
                    return true;
                }
            }
            LineEnding::CrLf => {
                if b == b'\n' && after_cr {
                    return true;
                }
                if after_cr {
                    data(b'\r'); // a CR alone belongs to the line
                }
                if b == b'\r' {
                    return false; // held until the next byte says what it is
                }
            }
        }
        data(b);
        false
    }
}

/// Parses one raw line into a reading; counts and logs a bad frame.
pub fn parse_frame(
    id: &InputId,
    format: &LineFormat,
    frame: &[u8],
    metrics: &Metrics,
) -> Option<Reading> {
    let text = frame_text(id, frame, metrics)?;
    match format.parse(text) {
        Ok(fields) => Some(Reading {
            input: id.index,
            stamp: Stamp::now(),
            at: std::time::Instant::now(),
            device: None,
            sentence: None,
            fields,
        }),
        Err(e) => {
            bad_frame(id, metrics, &e.0);
            None
        }
    }
}

/// The text of a line: None for a blank line, and for one that is not UTF-8 (counted).
pub(crate) fn frame_text<'a>(id: &InputId, frame: &'a [u8], metrics: &Metrics) -> Option<&'a str> {
    let frame = frame.strip_suffix(b"\r").unwrap_or(frame);
    let Ok(text) = std::str::from_utf8(frame) else {
        bad_frame(id, metrics, "not UTF-8");
        return None;
    };
    if text.trim().is_empty() {
        return None; // blank lines between frames are not errors
    }
    Some(text)
}

pub(crate) fn bad_frame(id: &InputId, metrics: &Metrics, why: &str) {
    Metrics::add(&metrics.bad_frames, 1);
    debug!(input = %id.name, reason = why, "Skipped a malformed frame.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_become_readings_and_bad_frames_are_counted() {
        let data: &[u8] = b"{\"a\":1}\r\nnot json\n\n\xff\xfe\n{\"b\":2}\n0123456789012345678901234567890123456789\n{\"c\":3}\n{\"partial\":";
        let (tx, mut rx) = mpsc::channel(16);
        let metrics = Metrics::default();
        let id = InputId {
            index: 3,
            name: Arc::from("wx"),
        };
        let ended = read_lines(
            data,
            &id,
            &LineFormat::Json,
            LineEnding::Lf,
            32,
            &tx,
            &metrics,
        )
        .await;
        assert!(matches!(ended, LinesEnded::Closed(_)));
        drop(tx);
        let mut got = Vec::new();
        while let Some(r) = rx.recv().await {
            assert_eq!(r.input, 3);
            got.push(r.fields[0].0.to_string());
        }
        assert_eq!(got, ["a", "b", "c"]);
        assert_eq!(Metrics::get(&metrics.bad_frames), 3);
    }

    /// The lines `ending` finds in `data`, as text.
    fn split(ending: LineEnding, data: &[u8]) -> Vec<String> {
        let mut s = Splitter {
            ending,
            held_cr: false,
        };
        let (mut lines, mut line) = (Vec::new(), Vec::new());
        for &b in data {
            if s.feed(b, |b| line.push(b)) {
                lines.push(String::from_utf8(std::mem::take(&mut line)).unwrap());
            }
        }
        lines
    }

    #[test]
    fn each_line_ending_splits_as_documented() {
        let data = b"a\rb\r\nc\nd\n\re\r";
        assert_eq!(split(LineEnding::Auto, data), ["a", "b", "c", "d", "", "e"]);
        assert_eq!(split(LineEnding::Lf, data), ["a\rb\r", "c", "d"]);
        assert_eq!(split(LineEnding::Cr, data), ["a", "b", "c\nd\n", "e"]);
        assert_eq!(split(LineEnding::CrLf, data), ["a\rb"]);
        assert_eq!(
            split(LineEnding::CrLf, b"a\rb\r\nc\nd\r\n"),
            ["a\rb", "c\nd"]
        );
        // A CRLF split between two reads still counts once.
        assert_eq!(split(LineEnding::Auto, b"x\r"), ["x"]);
        assert_eq!(split(LineEnding::Auto, b"x\r\ny\r"), ["x", "y"]);
    }
}
