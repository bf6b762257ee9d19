//! The `sensorgate` command: `run`, `check`, `queue`.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use sensorgate::config::{Config, LoadError, DEFAULT_PATH};
use sensorgate::queue;
use sensorgate::reading::Stamp;
use sensorgate::service::ready;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Exit code for an invalid config (`check`, and `run` refusing to start).
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "sensorgate",
    version,
    about = "Serial and BLE sensors to MQTT, through a durable on-disk queue."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The config file.
    #[arg(short, long, env = "SENSORGATE_CONFIG", default_value = DEFAULT_PATH)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or SIGINT; SIGHUP reloads the config.
    Run(ConfigArg),
    /// Validate the config and print the inputs and topic rules it resolves to.
    Check(ConfigArg),
    /// Inspect the queue (safe while the gateway runs).
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Decode sensor data with the gateway's decoders, without running it.
    Decode {
        #[command(subcommand)]
        command: DecodeCommand,
    },
    /// BLE tools that use the adapter, without a config.
    Ble {
        #[command(subcommand)]
        command: BleCommand,
    },
}

#[derive(Subcommand)]
enum BleCommand {
    /// Listen for advertisements and list the devices heard: address, name, RSSI, the
    /// decoder and the fields it would publish, or why it is not decoded; then the
    /// `[[ble.device]]` tables to paste into the config.
    Scan(sensorgate::ble::cli::ScanBle),
}

#[derive(Subcommand)]
enum DecodeCommand {
    /// Decode BLE advertisement data; prints the fields as one JSON object, exit 1 when no
    /// decoder accepts the bytes.
    Ble(sensorgate::ble::cli::DecodeBle),
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Backlog size, age and drop counts.
    Stats {
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The oldest pending messages, one JSON object per line.
    Peek {
        #[command(flatten)]
        config: ConfigArg,
        /// How many messages.
        #[arg(short = 'n', long, default_value_t = 10)]
        limit: usize,
    },
    /// Every pending message, one JSON object per line (oldest first).
    Export {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Dead letters: messages that can never be delivered as they are.
    Dead {
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// Delete every pending message; counted as dropped.
    Purge {
        #[command(flatten)]
        config: ConfigArg,
        /// Required: purging loses data.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum DeadCommand {
    /// One line per dead letter: sequence number, size, when, topic and why.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Every dead letter, one JSON object per line (payload as text where it is UTF-8,
    /// otherwise `payload_hex`).
    Export {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Move dead letters back to the queue under new sequence numbers; refused while a
    /// gateway runs on the same state_dir (its pipeline numbers new messages itself).
    Requeue {
        #[command(flatten)]
        config: ConfigArg,
        /// Sequence numbers to requeue; all when none are given.
        seq: Vec<i64>,
    },
    /// Delete dead letters for good.
    Purge {
        #[command(flatten)]
        config: ConfigArg,
        /// Sequence numbers to delete; all when none are given.
        seq: Vec<i64>,
        /// Required: purging loses data.
        #[arg(long)]
        yes: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(c) => run(c),
        Command::Check(c) => check(c),
        Command::Queue { command } => queue_command(command),
        Command::Decode {
            command: DecodeCommand::Ble(args),
        } => sensorgate::ble::cli::run(&args),
        Command::Ble {
            command: BleCommand::Scan(args),
        } => ble_scan(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(load) = e.downcast_ref::<LoadError>() {
                eprintln!("sensorgate: invalid config: {load}");
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("sensorgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "ble")]
fn ble_scan(args: &sensorgate::ble::cli::ScanBle) -> anyhow::Result<ExitCode> {
    let listen = std::time::Duration::from_secs(args.seconds);
    let (adapter, heard) = sensorgate::input::ble::survey(args.adapter.as_deref(), listen)?;
    print!("{}", heard.render(&adapter, args.seconds));
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "ble"))]
fn ble_scan(_: &sensorgate::ble::cli::ScanBle) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this sensorgate was built without BLE support (cargo feature `ble`)")
}

fn run(c: ConfigArg) -> anyhow::Result<ExitCode> {
    let config = Config::load(&c.config)?;
    sensorgate::logging::init(config.log_level.as_deref());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        // SIGHUP hands a new, valid config over this channel (see reload.rs).
        let (reload_tx, reload_rx) = tokio::sync::watch::channel(None);
        tokio::spawn(sensorgate::reload::listen(
            c.config.clone(),
            config.clone(),
            shutdown.clone(),
            reload_tx,
        ));
        let lock = queue::StateLock::take(&config.gateway.state_dir)?;
        sensorgate::gateway::run(config, &lock, shutdown, reload_rx, ready).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn check(c: ConfigArg) -> anyhow::Result<ExitCode> {
    let config = Config::load(&c.config)?;
    write_stdout(&sensorgate::describe::describe(&config))?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to stdout; a full disk or a closed pipe is an error (exit 1), not a panic.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

fn queue_command(command: QueueCommand) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    match command {
        QueueCommand::Stats { config, json } => {
            let config = Config::load(&config.config)?;
            let path = existing_queue(&config)?;
            let stats = queue::read_stats(&path, Stamp::now().wall_ms)?;
            // The running gateway's writes to the card, where /proc tells them.
            let gateway = queue::holder(&config.gateway.state_dir).and_then(|pid| {
                let (written, secs) = sensorgate::metrics::disk_writes(pid)?;
                Some(serde_json::json!({
                    "pid": pid,
                    "bytes_written": written,
                    "bytes_written_per_day": sensorgate::metrics::per_day(written, secs),
                }))
            });
            if json {
                let mut value = serde_json::to_value(&stats)?;
                value["gateway"] = gateway.unwrap_or(serde_json::Value::Null);
                writeln!(std::io::stdout(), "{value}")?;
            } else {
                write_stdout(&format!(
                    "queue        {}\npending      {}\nbytes        {}\nreclaimable  {}\n\
                     oldest_age_s {:.1}\ndropped      {} ({} full, {} expired)\n\
                     last_seq     {}\ndead         {} ({} held, {} discarded)\n\
                     unwritten    {}\nheld_back    {}\n",
                    path.display(),
                    stats.pending,
                    stats.bytes,
                    stats.reclaimable_bytes,
                    stats.oldest_age_s,
                    stats.dropped,
                    stats.dropped_full,
                    stats.expired,
                    stats.last_seq,
                    stats.dead,
                    stats.dead_held,
                    stats.dead_discarded,
                    stats.unwritten,
                    stats.held_back
                ))?;
                if let Some(g) = gateway {
                    write_stdout(&format!(
                        "written      {} bytes by the running gateway (pid {}), {} a day\n",
                        g["bytes_written"],
                        g["pid"],
                        match g["bytes_written_per_day"].as_u64() {
                            Some(b) => format!("{b} bytes"),
                            None => "unknown yet".to_string(),
                        }
                    ))?;
                }
            }
        }
        QueueCommand::Dead { command } => dead_command(command)?,
        QueueCommand::Peek { config, limit } => dump(&config, Some(limit))?,
        QueueCommand::Export { config } => dump(&config, None)?,
        QueueCommand::Purge { config, yes } => {
            let config = Config::load(&config.config)?;
            if !yes {
                anyhow::bail!("purge deletes every pending message; pass --yes to confirm");
            }
            existing_queue(&config)?;
            // Not `open_queue`: a damaged file is the gateway's to move aside (it may be
            // running and writing it); here it is an error.
            let mut q = sensorgate::queue::Queue::open(
                &config.queue_path(),
                sensorgate::gateway::queue_options(&config),
            )?;
            let n = q.purge()?;
            writeln!(std::io::stdout(), "purged {n} messages")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn dead_command(command: DeadCommand) -> anyhow::Result<()> {
    use std::io::Write;
    let open_writer = |config: &Config| -> anyhow::Result<queue::Queue> {
        existing_queue(config)?;
        Ok(queue::Queue::open(
            &config.queue_path(),
            sensorgate::gateway::queue_options(config),
        )?)
    };
    match command {
        DeadCommand::List { config } => dump_dead(&config, false)?,
        DeadCommand::Export { config } => dump_dead(&config, true)?,
        DeadCommand::Requeue { config, seq } => {
            let config = Config::load(&config.config)?;
            // A running gateway numbers new rows itself: requeued ones would collide.
            let _lock = queue::StateLock::take(&config.gateway.state_dir)
                .context("requeue needs the gateway stopped")?;
            let mut q = open_writer(&config)?;
            let ids = (!seq.is_empty()).then_some(seq.as_slice());
            let new = q.requeue_dead(ids, Stamp::now().wall_ms)?;
            writeln!(std::io::stdout(), "requeued {} messages", new.len())?;
        }
        DeadCommand::Purge { config, seq, yes } => {
            let config = Config::load(&config.config)?;
            if !yes {
                anyhow::bail!("purge deletes dead letters for good; pass --yes to confirm");
            }
            let mut q = open_writer(&config)?;
            let ids = (!seq.is_empty()).then_some(seq.as_slice());
            writeln!(
                std::io::stdout(),
                "purged {} dead letters",
                q.purge_dead(ids)?
            )?;
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

fn dump_dead(config: &ConfigArg, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let config = Config::load(&config.config)?;
    let path = existing_queue(&config)?;
    let reader = queue::Reader::open(&path)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut after = i64::MIN;
    loop {
        let rows = reader.dead_after(after, 1000)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        for d in &rows {
            let topic = String::from_utf8_lossy(&d.topic);
            let when =
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(d.dead_ms.max(0) as u64);
            let when = humantime::format_rfc3339_seconds(when);
            if json {
                let mut line = serde_json::json!({
                    "seq": d.id,
                    "topic": topic,
                    "qos": d.qos,
                    "retain": d.retain,
                    "created_ms": d.created_ms,
                    "dead_at": when.to_string(),
                    "reason": d.reason,
                });
                match std::str::from_utf8(&d.payload) {
                    Ok(p) => line["payload"] = p.into(),
                    Err(_) => {
                        let hex: String = d.payload.iter().map(|b| format!("{b:02x}")).collect();
                        line["payload_hex"] = hex.into();
                    }
                }
                writeln!(out, "{line}")?;
            } else {
                writeln!(
                    out,
                    "{}\t{} B\t{}\t{}\t{}",
                    d.id,
                    d.topic.len() + d.payload.len(),
                    when,
                    topic,
                    d.reason
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn existing_queue(config: &Config) -> anyhow::Result<PathBuf> {
    let path = config.queue_path();
    if !path.exists() {
        anyhow::bail!(
            "no queue at {} (has the gateway run with this config?)",
            path.display()
        );
    }
    Ok(path)
}

fn dump(config: &ConfigArg, limit: Option<usize>) -> anyhow::Result<()> {
    use std::io::Write;
    let config = Config::load(&config.config)?;
    let path = existing_queue(&config)?;
    let now = Stamp::now().wall_ms;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut after = 0;
    let mut left = limit.unwrap_or(usize::MAX);
    while left > 0 {
        let rows = queue::read_oldest(&path, after, left.min(1000))?;
        if rows.is_empty() {
            break;
        }
        let (lo, hi) = (rows[0].id, rows[rows.len() - 1].id);
        let clocks: std::collections::HashMap<i64, &str> =
            queue::read_clocks(&path, lo, hi)?.into_iter().collect();
        for r in &rows {
            let mut line = serde_json::json!({
                "seq": r.id,
                "topic": &*r.topic,
                "payload": String::from_utf8_lossy(&r.payload),
                "qos": r.qos.as_u8(),
                "retain": r.retain,
                "age_s": (now - r.created_ms) as f64 / 1000.0,
            });
            if let Some(clock) = clocks.get(&r.id) {
                line["clock"] = (*clock).into();
            }
            writeln!(out, "{line}")?;
        }
        left -= rows.len();
        after = rows.last().map_or(after, |r| r.id);
    }
    out.flush()?;
    Ok(())
}
