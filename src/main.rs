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
    /// Delete every pending message; counted as dropped.
    Purge {
        #[command(flatten)]
        config: ConfigArg,
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
        let (reload_tx, mut reload_rx) = tokio::sync::watch::channel(None);
        tokio::spawn(sensorgate::reload::listen(
            c.config.clone(),
            config.clone(),
            shutdown.clone(),
            reload_tx,
        ));
        let mut config = config;
        loop {
            let round = shutdown.child_token();
            let run = sensorgate::gateway::run(config.clone(), round.clone(), ready);
            tokio::pin!(run);
            let next = tokio::select! {
                r = &mut run => return r,
                Ok(()) = reload_rx.changed() => reload_rx.borrow_and_update().clone(),
            };
            // Stop everything in the usual order, then start again with the new config.
            round.cancel();
            run.await?;
            if shutdown.is_cancelled() {
                return Ok(()); // SIGTERM during the reload
            }
            if let Some(next) = next {
                config = next;
            }
        }
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
    match command {
        QueueCommand::Stats { config, json } => {
            let config = Config::load(&config.config)?;
            let path = existing_queue(&config)?;
            let stats = queue::read_stats(&path, Stamp::now().wall_ms)?;
            if json {
                println!("{}", serde_json::to_string(&stats)?);
            } else {
                println!("queue        {}", path.display());
                println!("pending      {}", stats.pending);
                println!("bytes        {}", stats.bytes);
                println!("reclaimable  {}", stats.reclaimable_bytes);
                println!("oldest_age_s {:.1}", stats.oldest_age_s);
                println!(
                    "dropped      {} ({} full, {} expired)",
                    stats.dropped, stats.dropped_full, stats.expired
                );
                println!("last_seq     {}", stats.last_seq);
            }
        }
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
            println!("purged {n} messages");
        }
    }
    Ok(ExitCode::SUCCESS)
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
        for r in &rows {
            let line = serde_json::json!({
                "seq": r.id,
                "topic": &*r.topic,
                "payload": String::from_utf8_lossy(&r.payload),
                "qos": r.qos.as_u8(),
                "retain": r.retain,
                "age_s": (now - r.created_ms) as f64 / 1000.0,
            });
            writeln!(out, "{line}")?;
        }
        left -= rows.len();
        after = rows.last().map_or(after, |r| r.id);
    }
    out.flush()?;
    Ok(())
}
