//! Modbus inputs: the slaves of one bus (a serial port for Modbus RTU, a TCP connection for
//! Modbus TCP) polled every `every`, one request at a time, through tokio-modbus.
//!
//! Each poll of a slave sends the reads its plan ([`plan`]) holds and makes one reading of
//! every field that arrived (`device` = the slave's alias, else `unit<id>`); a poll where
//! nothing arrived makes none. A timeout, an exception response or a wrong answer is
//! counted per device ([`Metrics::device_failed`]) and retried at the next period; after a
//! timeout the slave's other reads wait for the next period too (a silent slave costs one
//! timeout per poll, not one per read). After a timeout or a wrong answer the line is left
//! quiet for one more `timeout`, and whatever arrived meanwhile (a late answer) is discarded
//! before the next request ([`line::Line`]), so that no answer is taken for another's. A device's state is logged when it changes: a
//! warning when it starts failing, info when it answers again.
//!
//! **Invariant:** one request at a time per bus (RS-485 is half duplex), and on RTU the
//! line is quiet for the inter-frame gap (3.5 character times; 1.75 ms above 19,200 baud)
//! before each request. The poll period does not drift into a busy loop: a poll that
//! overruns its period delays the next one (`MissedTickBehavior::Delay`).
//!
//! **Invariant:** the bus is never fatal: one that cannot be opened, or fails (the port
//! vanished, the connection closed, the frame decoder gave up), is reopened with backoff
//! from `reopen_min` to `reopen_max`, as serial inputs are.

mod line;
pub mod plan;

use crate::backoff::Backoff;
use crate::config::modbus::{Bus, ModbusConfig, Parity, Slave};
use crate::input::device::{self, Change, Identity};
use crate::input::InputId;
use crate::metrics::{DeviceFailure, Metrics};
use crate::reading::{Reading, Stamp, Value};
use line::Line;
use plan::{Read, Table};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_modbus::client::{rtu, tcp, Client, Context};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::{Request, Response};
use tokio_serial::SerialPortBuilderExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Runs a Modbus input until `cancel` fires or the pipeline is gone.
pub async fn run(
    id: InputId,
    config: ModbusConfig,
    out: mpsc::Sender<Reading>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(config.reopen_min, config.reopen_max);
    let mut failing = vec![false; config.slaves.len()];
    let mut reported = false;
    let bus = describe(&config.bus);
    // Whether an absent serial device was logged (at start, or as it vanished).
    let mut absent = false;
    loop {
        if let Bus::Rtu { device, .. } = &config.bus {
            let say = |e: &std::io::Error| {
                if !absent {
                    warn!(input = %id.name, bus = %bus, error = %e, "Modbus bus device absent; waiting for it.");
                }
            };
            if device::present(device, &cancel, say).await.is_err() {
                return;
            }
        }
        let opened = tokio::select! {
            o = open(&config) => o,
            _ = cancel.cancelled() => return,
        };
        match opened {
            Ok((ctx, stale, identity)) => {
                info!(input = %id.name, bus = %bus, "Modbus bus open.");
                (reported, absent) = (false, false);
                backoff.reset();
                let mut poller = Poller {
                    id: &id,
                    config: &config,
                    metrics: &metrics,
                    ctx,
                    stale,
                    gap: gap(&config.bus),
                    quiet_from: Instant::now(),
                    failing: &mut failing,
                };
                // An RTU bus's device path is watched as a serial input's is (by-id names).
                let moved = async {
                    match (&config.bus, identity) {
                        (Bus::Rtu { device, .. }, Some(opened)) => {
                            device::watch(device, opened).await
                        }
                        _ => std::future::pending().await,
                    }
                };
                let ended = tokio::select! {
                    e = poller.run(&out, &cancel) => e,
                    change = moved => Ended::Device(change),
                };
                match ended {
                    Ended::Stopped => return,
                    Ended::Lost(e) => {
                        warn!(input = %id.name, bus = %bus, error = %e, "Modbus bus lost; reopening.")
                    }
                    Ended::Device(Change::Vanished) => {
                        warn!(input = %id.name, bus = %bus, "Modbus bus device vanished; closed it and waiting for it to return.");
                        absent = true;
                        continue;
                    }
                    Ended::Device(Change::Moved) => {
                        warn!(input = %id.name, bus = %bus, "Modbus bus device path now names another device; reopening.");
                        continue;
                    }
                }
            }
            Err(e) => {
                if !reported {
                    warn!(input = %id.name, bus = %bus, error = %e, "Cannot open the Modbus bus; retrying with backoff.");
                    reported = true;
                } else {
                    debug!(input = %id.name, error = %e, "Modbus bus still unavailable.");
                }
            }
        }
        if backoff.pause(&cancel).await.is_err() {
            return;
        }
    }
}

fn describe(bus: &Bus) -> String {
    match bus {
        Bus::Rtu { device, baud, .. } => format!("{} at {baud} baud", device.display()),
        Bus::Tcp { host, port } => format!("tcp://{host}:{port}"),
    }
}

/// The quiet time the line needs between two frames: 3.5 character times of 11 bits
/// (start, 8 data, parity or a second stop, stop), fixed at 1.75 ms above 19,200 baud.
/// TCP needs none.
pub fn gap(bus: &Bus) -> Duration {
    match bus {
        Bus::Rtu { baud, .. } if *baud > 19_200 => Duration::from_micros(1750),
        Bus::Rtu { baud, .. } => Duration::from_micros(38_500_000 / u64::from(*baud)),
        Bus::Tcp { .. } => Duration::ZERO,
    }
}

/// Opens the bus: a client context, the count of stale bytes its line discarded, and (RTU)
/// the device the path named.
async fn open(
    config: &ModbusConfig,
) -> std::io::Result<(Context, Arc<AtomicU64>, Option<Identity>)> {
    match &config.bus {
        Bus::Rtu {
            device,
            baud,
            parity,
            stop_bits,
            data_bits,
        } => {
            let port = tokio_serial::new(device.to_string_lossy(), *baud)
                .parity(match parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .stop_bits(match stop_bits {
                    2 => tokio_serial::StopBits::Two,
                    _ => tokio_serial::StopBits::One,
                })
                .data_bits(match data_bits {
                    7 => tokio_serial::DataBits::Seven,
                    _ => tokio_serial::DataBits::Eight,
                })
                .open_native_async()?;
            let identity = Identity::of_open(&port)?;
            let line = Line::new(port);
            let stale = line.stale.clone();
            Ok((rtu::attach(line), stale, Some(identity)))
        }
        Bus::Tcp { host, port } => {
            let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
            let stream = tokio::time::timeout(config.timeout.max(Duration::from_secs(5)), connect)
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            stream.set_nodelay(true)?;
            let line = Line::new(stream);
            let stale = line.stale.clone();
            Ok((tcp::attach(line), stale, None))
        }
    }
}

/// Why a bus's poll loop ended.
enum Ended {
    /// Cancelled, or the pipeline is gone.
    Stopped,
    /// The bus failed: reopen it.
    Lost(std::io::Error),
    /// The RTU device path no longer names the open port's device.
    Device(Change),
}

/// What one read gave.
enum Answer {
    Words(Vec<u16>),
    Bits(Vec<bool>),
    /// A response of another function (tokio-modbus rejects those first).
    Other,
}

/// One open bus being polled.
struct Poller<'a> {
    id: &'a InputId,
    config: &'a ModbusConfig,
    metrics: &'a Metrics,
    ctx: Context,
    /// Bytes the line discarded before requests (see [`line`]).
    stale: Arc<AtomicU64>,
    gap: Duration,
    /// When the line went quiet after the last frame.
    quiet_from: Instant,
    /// Per slave: whether its last poll failed (for logging changes of state only).
    failing: &'a mut Vec<bool>,
}

impl Poller<'_> {
    async fn run(&mut self, out: &mpsc::Sender<Reading>, cancel: &CancellationToken) -> Ended {
        let mut tick = tokio::time::interval(self.config.every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => return Ended::Stopped,
            }
            for (s, slave) in self.config.slaves.iter().enumerate() {
                let polled = tokio::select! {
                    p = self.poll(s, slave) => p,
                    _ = cancel.cancelled() => return Ended::Stopped,
                };
                let fields = match polled {
                    Ok(fields) => fields,
                    Err(e) => return Ended::Lost(e),
                };
                if fields.is_empty() {
                    continue;
                }
                let reading = Reading {
                    input: self.id.index,
                    stamp: Stamp::now(),
                    at: std::time::Instant::now(),
                    device: Some(slave.device.clone()),
                    sentence: None,
                    fields,
                };
                if out.send(reading).await.is_err() {
                    return Ended::Stopped;
                }
            }
        }
    }

    /// Polls slave number `s`: the fields that arrived, in the config's order. An error is
    /// the bus's, not the slave's.
    async fn poll(&mut self, s: usize, slave: &Slave) -> std::io::Result<Vec<(Arc<str>, Value)>> {
        self.ctx.set_slave(tokio_modbus::Slave(slave.unit));
        let mut values: Vec<Option<Value>> = vec![None; slave.fields.len()];
        let mut failure: Option<String> = None;
        for read in &slave.reads {
            tokio::time::sleep_until(self.quiet_from + self.gap).await;
            let answer =
                tokio::time::timeout(self.config.timeout, request(&mut self.ctx, read)).await;
            self.quiet_from = Instant::now();
            let stale = self.stale.swap(0, Relaxed);
            if stale > 0 {
                debug!(input = %self.id.name, device = %slave.device, bytes = stale, "Discarded bytes that arrived before a request (a late answer).");
            }
            let (kind, why) = match answer {
                Ok(Ok(Ok(answer))) => match decode(slave, read, &answer, &mut values) {
                    true => continue,
                    false => (DeviceFailure::Error, "a short answer".to_string()),
                },
                Ok(Ok(Err(exception))) => {
                    (DeviceFailure::Exception, format!("exception: {exception}"))
                }
                Ok(Err(tokio_modbus::Error::Protocol(e))) => (DeviceFailure::Error, e.to_string()),
                Ok(Err(tokio_modbus::Error::Transport(e))) => {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        // The decoder gave up on the answer (CRC errors): the slave's fault,
                        // but the decoder is now closed, so the bus is opened again.
                        self.failed(s, slave, read, DeviceFailure::Error, &e.to_string());
                    }
                    return Err(e);
                }
                Err(_) => (
                    DeviceFailure::Timeout,
                    format!("no answer within {:?}", self.config.timeout),
                ),
            };
            self.failed(s, slave, read, kind, &why);
            failure = Some(why);
            if kind != DeviceFailure::Exception {
                // A late or stray answer may still come: let it, and discard it.
                self.quiet_from += self.config.timeout;
            }
            if kind == DeviceFailure::Timeout {
                break; // a silent slave: its other reads wait for the next period
            }
        }
        match failure {
            None if self.failing[s] => {
                self.failing[s] = false;
                info!(input = %self.id.name, device = %slave.device, unit = slave.unit, "Modbus device answers again.");
            }
            Some(why) if !self.failing[s] => {
                self.failing[s] = true;
                warn!(input = %self.id.name, device = %slave.device, unit = slave.unit, error = %why, "Modbus device failing; retrying every period.");
            }
            _ => {}
        }
        Ok(slave
            .fields
            .iter()
            .zip(values)
            .filter_map(|(f, v)| Some((f.name.clone(), v?)))
            .collect())
    }

    fn failed(&self, s: usize, slave: &Slave, read: &Read, kind: DeviceFailure, why: &str) {
        let input = &self.id.name;
        self.metrics.device_failed(input, &slave.device, kind);
        if self.failing[s] {
            debug!(input = %input, device = %slave.device, table = read.table.name(), address = read.address, count = read.count, error = %why, "Modbus read failed.");
        }
    }
}

/// Sends `read` and returns its answer. Through `Client::call` rather than the `Reader`
/// methods, which assert (in debug builds) that the slave sent as many values as asked:
/// a slave that does not is counted here, not a panic.
async fn request(ctx: &mut Context, read: &Read) -> tokio_modbus::Result<Answer> {
    let (a, n) = (read.address, read.count);
    let request = match read.table {
        Table::Holding => Request::ReadHoldingRegisters(a, n),
        Table::Input => Request::ReadInputRegisters(a, n),
        Table::Coil => Request::ReadCoils(a, n),
        Table::Discrete => Request::ReadDiscreteInputs(a, n),
    };
    Ok(ctx.call(request).await?.map(|response| match response {
        Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => Answer::Words(w),
        Response::ReadCoils(b) | Response::ReadDiscreteInputs(b) => Answer::Bits(b),
        _ => Answer::Other,
    }))
}

/// Puts the fields of `read` from `answer` into `values`; false if the answer does not
/// hold what was asked (as many registers; bits padded to whole bytes at most).
fn decode(slave: &Slave, read: &Read, answer: &Answer, values: &mut [Option<Value>]) -> bool {
    let count = usize::from(read.count);
    let fits = match answer {
        Answer::Words(w) => w.len() == count,
        Answer::Bits(b) => (count..=count.div_ceil(8) * 8).contains(&b.len()),
        Answer::Other => false,
    };
    if !fits {
        return false;
    }
    for &i in &read.fields {
        let f = &slave.fields[i];
        values[i] = match answer {
            Answer::Words(w) => plan::decode_words(f, read.address, w),
            Answer::Bits(b) => plan::decode_bits(f, read.address, b),
            Answer::Other => None,
        };
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_is_three_and_a_half_characters_up_to_19200_baud() {
        let rtu = |baud| Bus::Rtu {
            device: "/dev/null".into(),
            baud,
            parity: Parity::None,
            stop_bits: 1,
            data_bits: 8,
        };
        assert_eq!(gap(&rtu(9600)), Duration::from_micros(4010));
        assert_eq!(gap(&rtu(19_200)), Duration::from_micros(2005));
        assert_eq!(gap(&rtu(115_200)), Duration::from_micros(1750));
        let tcp = Bus::Tcp {
            host: "h".into(),
            port: 502,
        };
        assert_eq!(gap(&tcp), Duration::ZERO);
    }
}
